"""What the peer side accepts: the strict message codec, the checks of forwarded proposals,
and admission (cluster id and membership), including the legitimate newcomers: a node that
joins, a node that waits for Init or its first contact, and a restarted node."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import msgpack
import pytest

from confer.envelope import wrap_forwarded
from confer.kv import Compare, DeleteRange, Put, Txn, encode_command
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
from confer.server.codec import FORMAT_VERSION, MalformedBatch, decode_messages, encode_messages
from confer.server.config import ServerConfig
from confer.server.fsm import ServerStateMachine
from confer.server.members import Member, encode_publish
from confer.server.peer_checks import ProposalChecks
from confer.server.peer_transport import GrpcPeerTransport
from confer.v1 import kv_pb2, kv_pb2_grpc, peer_pb2
from testing.procs import free_port

from .test_peer_attacks import raw_message, run, wait_until


# -- the codec -------------------------------------------------------------------------
def test_every_message_the_core_sends_decodes_as_it_was() -> None:
    meta = SnapshotMeta(9, 3, ConfState(frozenset({1, 2}), frozenset({3})))
    sent = [
        Message(MessageType.APP, to=1, frm=2, term=3, log_term=2, index=7, commit=6,
                entries=[Entry(8, 3, b"\x01x"), Entry(9, 3, b"cc", EntryType.CONF_CHANGE)]),
        Message(MessageType.APP_RESP, to=1, frm=2, term=3, index=4, reject=True,
                reject_hint=3, log_term=1),
        Message(MessageType.SNAP, to=1, frm=2, term=3, snapshot=meta, snap_offset=5,
                snap_data=b"abc", snap_done=True),
        Message(MessageType.HEARTBEAT, to=1, frm=2, term=2**63 - 1, context=b"\0" * 8),
        Message(MessageType.PROP, to=1, frm=2, entries=[Entry(0, 0, b"p")]),
        Message(MessageType.TRANSFER_LEADER, to=1, frm=3, term=3),
    ]
    assert decode_messages(encode_messages(sent), 1) == sent


@pytest.mark.parametrize("fields", [
    {"term": 2**63}, {"term": -1}, {"index": 2**64 - 1}, {"commit": True}, {"commit": 1.5},
    {"log_term": None}, {"snap_offset": "0"}, {"context": "text"}, {"snap_data": 3},
    {"snap_done": 1}, {"to": 2}, {"to": "1"}, {"t": "16"}, {"t": int(MessageType.BEAT)},
    {"t": int(MessageType.CHECK_QUORUM)}, {"ents": "x"}, {"ents": [[1, 1, 0]]},
    {"ents": [[1, 1, 0, "text"]]}, {"ents": [[1, 2**63, 0, b""]]},
    {"meta": [1, 1]},
    {"meta": [1, 1, [], []]}, {"meta": [1, 1, [1], [1]]}, {"meta": [1, 1, [0], []]},
    {"meta": [1, 1, [1], None]},
], ids=repr)
def test_a_malformed_message_fails_the_whole_batch(fields: dict[str, object]) -> None:
    good = raw_message()
    data = msgpack.packb([FORMAT_VERSION, good, raw_message(**fields)])
    with pytest.raises(MalformedBatch):
        decode_messages(data, 1)
    assert len(decode_messages(msgpack.packb([FORMAT_VERSION, good, good]), 1)) == 2


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x91\x02", msgpack.packb([1, 2]),
                                  msgpack.packb({"a": 1}), msgpack.packb([])], ids=repr)
def test_a_batch_that_is_not_a_message_list_is_malformed(data: bytes) -> None:
    with pytest.raises(MalformedBatch):
        decode_messages(data, 1)


# -- the transport: sender must match, forwarded proposals are checked -------------------
def _transport(admit: bool = True) -> tuple[GrpcPeerTransport, list[Message]]:
    got: list[Message] = []
    t = GrpcPeerTransport(1, "127.0.0.1:1", lambda _: None, lambda: 5,
                          lambda _s, _c: None if admit else "no",
                          ProposalChecks(16, 16).refusal)
    t.set_handler(got.append)
    return t, got


def _batch(messages: list[Message], frm: int = 2) -> peer_pb2.RaftBatch:
    return peer_pb2.RaftBatch(cluster_id=5, to=1, messages=encode_messages(messages),
                              **{"from": frm})


def test_a_message_must_come_from_the_batch_sender_but_a_transfer_names_its_target() -> None:
    t, got = _transport()
    t.deliver(_batch([Message(MessageType.HEARTBEAT, to=1, frm=3, term=1)]))
    assert got == [] and t.stats.malformed_batches == 1
    transfer = Message(MessageType.TRANSFER_LEADER, to=1, frm=3, term=1)
    t.deliver(_batch([transfer]))
    assert got == [transfer]


def test_a_prop_keeps_only_the_entries_that_pass_the_checks() -> None:
    t, got = _transport()
    ok = Entry(0, 0, wrap_forwarded(1, encode_command(Put(b"/k", b"v"))))
    too_big = Entry(0, 0, wrap_forwarded(2, encode_command(Put(b"/k", b"v" * 17))))
    t.deliver(_batch([Message(MessageType.PROP, to=1, frm=2, entries=[ok, too_big])]))
    assert [m.entries for m in got] == [[ok]] and t.stats.dropped_proposals == 1
    t.deliver(_batch([Message(MessageType.PROP, to=1, frm=2, entries=[too_big])]))
    assert len(got) == 1 and t.stats.dropped_proposals == 2  # nothing left: not delivered


def fwd(data: bytes) -> Entry:
    return Entry(0, 0, wrap_forwarded(7, data))


CHECKS = ProposalChecks(max_key_bytes=8, max_value_bytes=8)


@pytest.mark.parametrize("entry", [
    fwd(encode_command(Put(b"/k", b"v"))),
    fwd(encode_command(DeleteRange(b"/a", b"/b"))),
    fwd(encode_command(Txn([Compare(b"/k" * 20)], [Put(b"/k", b"12345678")], []))),
    fwd(encode_publish(Member(2, "n2", "", "127.0.0.1:2"))),
], ids=["put", "delete", "txn", "own publish"])
def test_forwarded_writes_within_the_rules_pass(entry: Entry) -> None:
    assert CHECKS.refusal(entry, 2) is None


@pytest.mark.parametrize("entry, why", [
    (fwd(encode_command(Put(b"/k", b"123456789"))), "at most 8"),
    (fwd(encode_command(Put(b"/k" * 5, b""))), "at most 8"),
    (fwd(encode_command(DeleteRange(b"/k" * 5))), "at most 8"),
    (fwd(encode_command(Txn([], [], [Txn([], [Put(b"/k", b"123456789")], [])]))), "at most 8"),
    (fwd(encode_command(Put(b"", b"v"))), "key is not provided"),
    (fwd(b"\x01\xc1"), "undecodable"),
    (fwd(encode_publish(Member(3, "n3", "", "10.0.0.1:1"))), "its own"),
    (fwd(b"\xff\xc1"), "undecodable member publication"),
    (fwd(b"\x07"), "unknown kind"),
    (fwd(wrap_forwarded(8, encode_command(Put(b"/k")))), "FORWARDED"),
    (Entry(0, 0, encode_command(Put(b"/k"))), "must be a FORWARDED"),
    (Entry(0, 0, b"\xfe\x00"), "shorter than its header"),
    (Entry(0, 0, ConfChange(ConfChangeType.ADD_VOTER, 9).encode(), EntryType.CONF_CHANGE),
     "membership change"),
], ids=["value", "key", "delete key", "nested txn", "no key", "bad command", "forged publish",
        "bad publish", "unknown kind", "nested forward", "bare", "short", "conf change"])
def test_forwarded_writes_that_break_a_rule_are_refused(entry: Entry, why: str) -> None:
    refusal = CHECKS.refusal(entry, 2)
    assert refusal is not None and why in refusal


def test_a_snapshot_is_valid_only_if_it_restores() -> None:
    fsm = ServerStateMachine()
    assert ServerStateMachine.snapshot_is_valid(fsm.snapshot())
    for bad in (b"", b"\x93\x01garbage", msgpack.packb([1, 2, 3]), fsm.snapshot()[:-3]):
        assert not ServerStateMachine.snapshot_is_valid(bad)


# -- admission -------------------------------------------------------------------------
def test_an_empty_node_takes_the_cluster_of_its_first_contact(tmp_path: Path) -> None:
    srv = ConferServer(ServerConfig(data_dir=tmp_path, wait_init=True))
    assert srv.admit_peer(5, 0) is not None  # no cluster id: never
    assert srv.admit_peer(5, 0xC1, first_contact=False) is not None  # internal calls: no
    assert srv.admit_peer(5, 0xC1) is None
    assert srv.cluster_id() == 0xC1
    assert srv.admit_peer(6, 0xC1) is None  # that cluster's members, until the log says
    refusal = srv.admit_peer(6, 0xC2)
    assert refusal is not None and "cluster c2, this is cluster c1" in refusal


def _cfg(tmp_path: Path, name: str, **kw: object) -> ServerConfig:
    return ServerConfig(name=name, data_dir=tmp_path / name, tick_ms=20,
                        listen_client=f"127.0.0.1:{free_port()}",
                        listen_peer=f"127.0.0.1:{free_port()}", **kw)  # type: ignore[arg-type]


async def _refused(srv: ConferServer, sender: int, cluster_id: int) -> bool:
    batch = peer_pb2.RaftBatch(cluster_id=cluster_id, to=srv.node_id, messages=encode_messages(
        [Message(MessageType.HEARTBEAT, to=srv.node_id, frm=sender, term=1)]),
        **{"from": sender})
    async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.peer_port}") as ch:
        try:
            await ch.stream_unary("/confer.v1.Peer/Raft")(
                iter([batch.SerializeToString()]), timeout=10)
        except grpc.aio.AioRpcError as e:
            return e.code() == grpc.StatusCode.PERMISSION_DENIED
    return False


@run
async def test_a_joining_node_learns_its_cluster_from_the_member_that_adds_it(
        tmp_path: Path) -> None:
    """Node b joins a (--join): it takes the cluster id and the members from a's answer,
    keeps them in member.json until its log names the members, is promoted (its promotion
    goes to the leader's peer port over the internal Leader service), and refuses
    outsiders; it restarts without joining again."""
    a_cfg = _cfg(tmp_path, "a")
    a = ConferServer(a_cfg)
    b: ConferServer | None = None
    try:
        await a.start()
        await wait_until(a.consensus.is_leader, "a to lead")
        b_cfg = _cfg(tmp_path, "b", join=a_cfg.listen_client)
        b = ConferServer(b_cfg)
        await b.start()
        ident = json.loads((b_cfg.data_dir / "member.json").read_text())
        assert ident["cluster_id"] == a.cluster_id()
        # b admits a (named in the answer) before its log names any member: else it would
        # never catch up, nor be promoted.
        await wait_until(lambda: a.node is not None
                         and a.node.conf_state.voters == {1, b.node_id}, "b to be promoted")
        ident = json.loads((b_cfg.data_dir / "member.json").read_text())
        assert "join_peers" not in ident  # its log names the members now
        async with grpc.aio.insecure_channel(b_cfg.listen_client) as ch:
            await kv_pb2_grpc.KVStub(ch).Put(kv_pb2.PutRequest(path="/via-b", value=b"1"),
                                            timeout=10)
        assert await _refused(b, 77, a.cluster_id())
        assert await _refused(a, 77, a.cluster_id())
        assert await _refused(b, 1, a.cluster_id() ^ 1)
        await b.stop()
        b = ConferServer(b_cfg)  # restarts from its data dir: no second join
        await b.start()
        revision = a.fsm.kv.revision
        await wait_until(lambda: b is not None and b.fsm.kv.revision >= revision,
                         "b to catch up")
        assert b.cluster_id() == a.cluster_id()
    finally:
        if b is not None:
            await b.stop()
        await a.stop()


@run
async def test_a_restarted_member_knows_its_cluster_at_once(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "solo")
    srv = ConferServer(cfg)
    await srv.start()
    cluster_id = srv.cluster_id()
    await srv.stop()
    assert cluster_id and json.loads((cfg.data_dir / "member.json").read_text())[
        "cluster_id"] == cluster_id
    again = ConferServer(cfg)
    again._load_identity()  # what start() reads first, before any entry is applied
    assert again.cluster_id() == cluster_id
