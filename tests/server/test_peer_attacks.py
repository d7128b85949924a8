"""Issue 12, findings 1-7: whatever reaches a member's ports from outside the cluster, or
from a member's impersonator, changes nothing and stops nothing.

Each test runs one in-process member (a single voter, which leads), attacks it the way the
issue reproduced it, with a raw gRPC client, and then checks that the member still answers
reads and writes, its store and membership are unchanged, health says SERVING, and it
restarts from its data dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import msgpack
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from confer.envelope import wrap_forwarded
from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.kv import Put, encode_command
from confer.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    SnapshotMeta,
)
from confer.server.app import ConferServer
from confer.server.codec import FORMAT_VERSION, encode_messages
from confer.server.config import ServerConfig
from confer.server.members import Member, encode_publish
from confer.v1 import kv_pb2, kv_pb2_grpc, peer_pb2, peer_pb2_grpc

if TYPE_CHECKING:
    from confer.server.peer_transport import PeerStats

DEADLINE = 20.0
"""Seconds any wait for a condition may take (generous: the machine is shared)."""
MEMBER = 2
"""A learner the tests add, at an address where nothing listens: the attacker claims its id."""
OUTSIDER = 77


def run(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))
    return wrapper


async def wait_until(predicate: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@dataclass
class Target:
    """A running member and stubs on its two ports."""

    srv: ConferServer
    client: grpc.aio.Channel
    peer: grpc.aio.Channel
    cluster_id: int = 0

    @property
    def kv(self) -> kv_pb2_grpc.KVStub:
        return kv_pb2_grpc.KVStub(self.client)

    async def keys(self) -> dict[bytes, bytes]:
        got = await rpc_pb2_grpc.KVStub(self.client).Range(
            rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0"), timeout=10)
        return {kv.key: kv.value for kv in got.kvs}

    async def members(self) -> dict[int, tuple[str, bool]]:
        got = await kv_pb2_grpc.ClusterStub(self.client).MemberList(
            kv_pb2.MemberListRequest(), timeout=10)
        return {m.id: (m.client_addr, m.is_learner) for m in got.members}

    def batch(self, messages: bytes | list[Message], frm: int = MEMBER,
              cluster_id: int | None = None) -> peer_pb2.RaftBatch:
        data = messages if isinstance(messages, bytes) else encode_messages(messages)
        cid = self.cluster_id if cluster_id is None else cluster_id
        return peer_pb2.RaftBatch(cluster_id=cid, to=self.srv.node_id, messages=data,
                                  from_addr="127.0.0.1:9", **{"from": frm})

    async def send(self, *batches: peer_pb2.RaftBatch) -> grpc.StatusCode:
        """Stream ``batches`` to the peer port; the status the stream ended with."""
        try:
            await peer_pb2_grpc.PeerStub(self.peer).Raft(iter(batches), timeout=10)
        except grpc.aio.AioRpcError as e:
            return e.code()
        return grpc.StatusCode.OK

    def stats(self) -> PeerStats:
        assert self.srv._transport is not None
        return self.srv._transport.stats

    async def assert_healthy(self, keys: dict[bytes, bytes],
                             members: dict[int, tuple[str, bool]]) -> None:
        """Still leading, serving reads and writes, the store and membership as expected."""
        await wait_until(self.srv.consensus.is_leader, "the member to lead again")
        await self.kv.Put(kv_pb2.PutRequest(path="/after", value=b"ok"), timeout=10)
        assert await self.keys() == {**keys, b"/after": b"ok"}
        assert await self.members() == members
        health = await health_pb2_grpc.HealthStub(self.client).Check(
            health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


async def _start(cfg: ServerConfig) -> ConferServer:
    srv = ConferServer(cfg)
    try:
        await srv.start()
        await wait_until(srv.consensus.is_leader, "a leader")
    except BaseException:
        await srv.stop()
        raise
    return srv


@contextlib.asynccontextmanager
async def attacked(tmp_path: Path) -> AsyncIterator[Target]:
    """A single-voter member with a key written and a learner (``MEMBER``) added; stopped on
    the way out, then restarted from its data dir to check that it still starts, leads and
    holds what it held."""
    cfg = ServerConfig(data_dir=tmp_path / "node", listen_client="127.0.0.1:0",
                       listen_peer="127.0.0.1:0", tick_ms=20)
    srv = await _start(cfg)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.client_port}") as client, \
                grpc.aio.insecure_channel(f"127.0.0.1:{srv.peer_port}") as peer:
            target = Target(srv, client, peer)
            await target.kv.Put(kv_pb2.PutRequest(path="/before", value=b"1"), timeout=10)
            added = await kv_pb2_grpc.ClusterStub(client).MemberAdd(kv_pb2.MemberAddRequest(
                id=MEMBER, name="m2", peer_addr="127.0.0.1:9", is_learner=True), timeout=10)
            target.cluster_id = added.header.cluster_id
            yield target
            keys = await target.keys()
    finally:
        await srv.stop()
    again = await _start(cfg)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{again.client_port}") as client:
            assert await Target(again, client, client).keys() == keys
    finally:
        await again.stop()


BEFORE = {b"/before": b"1"}


def members_before(t: Target) -> dict[int, tuple[str, bool]]:
    # The learner never started: no client address published.
    return {1: (t.srv.cfg.client_url, False), MEMBER: ("", True)}


def put(key: bytes, value: bytes = b"x") -> bytes:
    return encode_command(Put(key, value))


async def unary(channel: grpc.aio.Channel, method: str, request: bytes = b"",
                metadata: tuple[tuple[str, str], ...] = ()) -> grpc.StatusCode:
    call = channel.unary_unary(method)
    try:
        await call(request, timeout=10, metadata=metadata)
    except grpc.aio.AioRpcError as e:
        return e.code()
    return grpc.StatusCode.OK


# -- finding 1: the client port served the peer protocol ------------------------------------------
@run
async def test_1_peer_services_only_on_the_peer_port_and_client_services_only_on_the_client_port(
        tmp_path: Path) -> None:
    async with attacked(tmp_path) as t:
        assert t.srv.client_port != t.srv.peer_port
        raft = t.client.stream_unary("/confer.v1.Peer/Raft")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await raft(iter([t.batch([]).SerializeToString()]), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert await unary(t.client, "/confer.internal.Leader/Call",
                           msgpack.packb(["member_remove", [1]])) == grpc.StatusCode.UNIMPLEMENTED
        for method in ("/confer.v1.KV/Put", "/etcdserverpb.KV/Range",
                       "/confer.v1.Cluster/MemberAdd", "/confer.v1.ConferService/Init"):
            assert await unary(t.peer, method) == grpc.StatusCode.UNIMPLEMENTED, method
        # The internal Leader service admits members only: a caller naming none, or naming
        # an outsider, is refused before the operation runs.
        call = msgpack.packb(["member_remove", [MEMBER]])
        assert await unary(t.peer, "/confer.internal.Leader/Call",
                           call) == grpc.StatusCode.PERMISSION_DENIED
        outsider = (("confer-member-id", str(OUTSIDER)),
                    ("confer-cluster-id", str(t.cluster_id)))
        assert await unary(t.peer, "/confer.internal.Leader/Call", call,
                           outsider) == grpc.StatusCode.PERMISSION_DENIED
        renew = t.peer.stream_stream("/confer.internal.Leader/Renew")(timeout=10)
        await renew.write(msgpack.packb(1))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await renew.read()
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await t.assert_healthy(BEFORE, members_before(t))


def test_equal_peer_and_client_addresses_are_refused() -> None:
    from confer.server.config import ConfigError

    with pytest.raises(ConfigError, match="separate ports"):
        ServerConfig(listen_client="127.0.0.1:7379", listen_peer="127.0.0.1:7379").validate()


# -- finding 2: no cluster id and no membership check --------------------------------------------
@run
async def test_2_a_non_member_without_cluster_id_cannot_propose(tmp_path: Path) -> None:
    async with attacked(tmp_path) as t:
        prop = Message(MessageType.PROP, to=1, frm=OUTSIDER,
                       entries=[Entry(0, 0, put(b"/stolen")),
                                Entry(0, 0, wrap_forwarded(1, put(b"/stolen2")))])
        for cluster_id in (0, t.cluster_id, t.cluster_id ^ 1):
            code = await t.send(t.batch([prop], frm=OUTSIDER, cluster_id=cluster_id))
            assert code == grpc.StatusCode.PERMISSION_DENIED
        # A member's id with no cluster id, or another cluster's, is refused too.
        for cluster_id in (0, t.cluster_id ^ 1):
            prop.frm = MEMBER
            code = await t.send(t.batch([prop], frm=MEMBER, cluster_id=cluster_id))
            assert code == grpc.StatusCode.PERMISSION_DENIED
        await t.assert_healthy(BEFORE, members_before(t))
        assert t.stats().refused_batches == 5


# -- finding 3: a fake leader took the node over ---------------------------------------------------
@run
async def test_3_a_fake_leader_from_outside_changes_nothing(tmp_path: Path) -> None:
    async with attacked(tmp_path) as t:
        st = t.srv.node.basic_status()  # type: ignore[union-attr]
        add_77 = ConfChange(ConfChangeType.ADD_VOTER, OUTSIDER).encode()
        app = Message(MessageType.APP, to=1, frm=OUTSIDER, term=st.term + 1,
                      log_term=t.srv.node.storage.term(st.last_index),  # type: ignore[union-attr]
                      index=st.last_index, commit=st.last_index + 2, entries=[
                          Entry(st.last_index + 1, st.term + 1, put(b"/forged")),
                          Entry(st.last_index + 2, st.term + 1, add_77, EntryType.CONF_CHANGE)])
        assert await t.send(t.batch([app], frm=OUTSIDER)) == grpc.StatusCode.PERMISSION_DENIED
        assert t.srv.node.term == st.term  # type: ignore[union-attr]
        assert t.srv.node.conf_state == ConfState(  # type: ignore[union-attr]
            frozenset({1}), frozenset({MEMBER}))
        await t.assert_healthy(BEFORE, members_before(t))


# -- finding 4: one undecodable message stopped the Raft loop --------------------------------------
def raw_message(**fields: object) -> list[object]:
    """A wire message (codec.py's field order) from MEMBER to node 1, with ``fields``
    replaced."""
    m: dict[str, object] = dict(t=int(MessageType.HEARTBEAT), to=1, frm=MEMBER, term=1,
                                log_term=0, index=0, ents=[], commit=0, reject=False,
                                reject_hint=0, meta=None, snap_offset=0, snap_data=b"",
                                snap_done=False, context=b"")
    m.update(fields)
    return list(m.values())


MALFORMED: list[object] = [
    [FORMAT_VERSION, raw_message(term="1")],  # a string where an int is expected
    [FORMAT_VERSION, raw_message(commit=-1)],
    [FORMAT_VERSION, raw_message(t=99)],  # no such message type
    [FORMAT_VERSION, raw_message(t=int(MessageType.HUP))],  # local only
    [FORMAT_VERSION, raw_message()[:-1]],  # a field short
    [FORMAT_VERSION, raw_message(t=int(MessageType.APP), ents=[[1, 1, 7, b"x"]])],
    [FORMAT_VERSION, raw_message(t=int(MessageType.APP), ents=[["1", 1, 0, b"x"]])],
    [FORMAT_VERSION, raw_message(to=3)],
    [FORMAT_VERSION, raw_message(reject="yes")],
    [FORMAT_VERSION, raw_message(t=int(MessageType.SNAP), meta=[1, 1, "voters", []])],
    [FORMAT_VERSION, raw_message(t=int(MessageType.SNAP))],  # no metadata
    [2, raw_message()],  # unknown format
    {"not": "a batch"},
]


@run
async def test_4_malformed_messages_are_dropped_before_the_core(tmp_path: Path) -> None:
    async with attacked(tmp_path) as t:
        term = t.srv.node.term  # type: ignore[union-attr]
        batches = [t.batch(msgpack.packb(raw)) for raw in MALFORMED]
        batches.append(t.batch(b"\xc1 not msgpack"))
        assert await t.send(*batches) == grpc.StatusCode.OK  # dropped, not refused
        assert t.srv.node.term == term  # type: ignore[union-attr]
        await t.assert_healthy(BEFORE, members_before(t))
        assert t.stats().malformed_batches == len(batches)


# -- finding 5: a term of 2^64-1 broke the node for good -------------------------------------------
@run
async def test_5_a_term_beyond_int64_is_refused(tmp_path: Path) -> None:
    async with attacked(tmp_path) as t:
        beat = msgpack.packb([FORMAT_VERSION, raw_message(term=2**64 - 1)])
        assert await t.send(t.batch(beat)) == grpc.StatusCode.OK
        await t.assert_healthy(BEFORE, members_before(t))
        assert t.srv.node.term < 2**63  # type: ignore[union-attr]
        assert t.stats().malformed_batches == 1


# -- finding 6: a garbage snapshot was persisted, and no restart worked ---------------------------
@run
async def test_6_a_snapshot_that_does_not_decode_is_never_persisted(tmp_path: Path) -> None:
    async with attacked(tmp_path) as t:
        st = t.srv.node.basic_status()  # type: ignore[union-attr]
        meta = SnapshotMeta(st.last_index + 10, st.term + 1,
                            ConfState(frozenset({1}), frozenset({MEMBER})))
        snap = Message(MessageType.SNAP, to=1, frm=MEMBER, term=st.term + 1, snapshot=meta,
                       snap_data=b"\x93\x01garbage" * 100, snap_done=True)
        assert await t.send(t.batch([snap])) == grpc.StatusCode.OK
        # A member's message at a higher term makes the node follow it (as Raft must); it
        # then elects itself again, since the learner never leads.
        node = t.srv.node
        assert node is not None
        await wait_until(lambda: node.term > st.term and node.role == node.basic_status().role,
                         "the snapshot's term to be seen")
        await t.assert_healthy(BEFORE, members_before(t))
        assert t.srv.storage.snapshot().meta.index == 0  # type: ignore[union-attr]
        assert t.stats().bad_snapshots == 1


# -- finding 7: Peer/Propose skipped every client check --------------------------------------------
@run
async def test_7_proposals_through_a_peer_are_checked_like_client_writes(tmp_path: Path) -> None:
    async with attacked(tmp_path) as t:
        for channel in (t.peer, t.client):
            assert await unary(channel, "/confer.v1.Peer/Propose",
                               b"\n\x02\x01\x90") == grpc.StatusCode.UNIMPLEMENTED
        evil = Member(1, "evil", "127.0.0.1:9", "10.6.6.6:1")
        bad = [
            wrap_forwarded(1, put(b"/big", b"v" * (8 << 20))),  # over max-value-bytes
            wrap_forwarded(2, put(b"")),  # no key
            wrap_forwarded(3, put(b"/k" * 4000)),  # over max-key-bytes
            wrap_forwarded(4, encode_publish(evil)),  # forged: member 1's attributes
            wrap_forwarded(5, b"\x01\xc1"),  # undecodable command
            wrap_forwarded(6, wrap_forwarded(7, put(b"/nested"))),
            put(b"/bare"),  # not wrapped as a forwarded proposal
        ]
        cc = ConfChange(ConfChangeType.ADD_VOTER, OUTSIDER).encode()
        prop = Message(MessageType.PROP, to=1, frm=MEMBER,
                       entries=[*(Entry(0, 0, d) for d in bad),
                                Entry(0, 0, cc, EntryType.CONF_CHANGE)])
        assert await t.send(t.batch([prop])) == grpc.StatusCode.OK
        # The member's own valid writes and publication still go through.
        mine = Member(MEMBER, "m2", "127.0.0.1:9", "127.0.0.1:10")
        good = Message(MessageType.PROP, to=1, frm=MEMBER, entries=[
            Entry(0, 0, wrap_forwarded(8, put(b"/via-peer", b"fine"))),
            Entry(0, 0, wrap_forwarded(9, encode_publish(mine)))])
        assert await t.send(t.batch([good])) == grpc.StatusCode.OK
        await wait_until(lambda: t.srv.fsm.kv.revision >= 3, "the valid proposal")
        members = {**members_before(t), MEMBER: ("127.0.0.1:10", True)}
        await t.assert_healthy({**BEFORE, b"/via-peer": b"fine"}, members)
        assert t.stats().dropped_proposals == len(bad) + 1
