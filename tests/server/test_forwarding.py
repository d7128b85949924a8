"""Writes sent to a follower travel to the leader through Raft (etcd's proposal forwarding).

The follower tags each command with a request id and answers once it has applied the entry
itself; a command the leader never appends (leader gone, transfer) fails as outcome unknown
after the forward timeout instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.raft.errors import NotLeader
from confer.raft.storage import MemoryStorage
from confer.raft.types import MessageType, StateRole
from confer.server.local import LocalCluster
from confer.server.node import NodeOptions, OutcomeUnknown, RaftNode
from confer.v1 import kv_pb2, kv_pb2_grpc
from testing import ProcessCluster

OPTIONS = NodeOptions(tick_interval=0.02, forward_timeout=0.5)


def run(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test function to completion."""
    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return wrapper


@contextlib.asynccontextmanager
async def started(size: int = 3, options: NodeOptions = OPTIONS
                  ) -> AsyncIterator[tuple[LocalCluster, RaftNode, list[RaftNode]]]:
    """A running cluster whose followers all know the leader; stopped on the way out."""
    c = LocalCluster(size, options=options, seed=3)
    await c.start()
    try:
        lead = await c.wait_leader()
        # Let every follower hear from the leader.
        deadline = time.monotonic() + 5
        while any(n.leader != lead.id for n in c.nodes.values()):
            assert time.monotonic() < deadline, "followers did not learn the leader"
            await asyncio.sleep(0.01)
        yield c, lead, [n for n in c.nodes.values() if n is not lead]
    finally:
        await c.stop()


def applied(node: RaftNode) -> list[bytes]:
    return node.fsm.applied  # type: ignore[attr-defined,no-any-return]


@run
async def test_a_forwarded_write_is_applied_once_and_answered_with_the_followers_result() -> None:
    async with started() as (c, lead, (f1, f2)):
        sent: list[object] = []
        real_send = f1.transport.send

        def spy(messages: list[object]) -> None:
            sent.extend(messages)
            real_send(messages)  # type: ignore[arg-type]

        f1.transport.send = spy  # type: ignore[method-assign]
        # Many concurrent writes to a follower travel in one PROP message.
        results = await asyncio.gather(*(f1.propose(b"w%d" % i, forward=True)
                                         for i in range(20)))
        props = [m for m in sent if m.type == MessageType.PROP]  # type: ignore[attr-defined]
        assert len(props) == 1 and len(props[0].entries) == 20  # type: ignore[attr-defined]
        mine = await lead.propose(b"leader", forward=True)
        theirs = await f2.propose(b"other", forward=True)
        await asyncio.sleep(0.1)
        for node in c.nodes.values():
            # Untagged, once each, in the same order everywhere.
            assert applied(node) == applied(lead)
            assert sorted(applied(node)) == sorted([b"w%d" % i for i in range(20)]
                                                   + [b"leader", b"other"])
        # ListStateMachine answers the payload's position: the follower computed the
        # same result the leader did for the same entry.
        for i, r in enumerate(results):
            assert applied(lead)[r - 1] == b"w%d" % i
        assert applied(lead)[mine - 1] == b"leader"
        assert applied(lead)[theirs - 1] == b"other"


@run
async def test_a_follower_refuses_a_write_it_may_not_forward() -> None:
    async with started() as (_, lead, (f1, _)):
        with pytest.raises(NotLeader) as err:
            await f1.propose(b"x")
        assert err.value.leader == lead.id


@run
async def test_a_write_forwarded_to_a_lost_leader_fails_as_outcome_unknown_in_time() -> None:
    async with started() as (c, lead, (f1, _)):
        c.network.isolate(lead.id)  # the follower's PROP never arrives
        t0 = time.monotonic()
        with pytest.raises(OutcomeUnknown):
            await asyncio.wait_for(f1.propose(b"lost", forward=True), 5)
        assert time.monotonic() - t0 < 2 * OPTIONS.forward_timeout  # type: ignore[operator]
        c.network.heal()
        await asyncio.sleep(0.2)
        assert all(b"lost" not in applied(n) for n in c.nodes.values())


@run
async def test_a_write_lost_with_its_leader_fails_once_the_next_leaders_entries_apply() -> None:
    # The write fails because the new leader's first entry was applied without it
    # (everything the old leader appended comes before that entry), not because a timeout
    # ran out: the forward timeout is long, and ticks of 0.1 s leave the election timeout
    # allowed after a leader change (10 ticks) far longer than a loaded loop's delays.
    options = dataclasses.replace(OPTIONS, tick_interval=0.1, forward_timeout=60.0)
    async with started(options=options) as (c, lead, (f1, f2)):
        # Only f2 campaigns (no split vote, whose leaderless while would let the election
        # timeout run out first): f1's own timeout never fires.
        f1.node.raft.randomized_election_timeout = 10**9
        c.network.isolate(lead.id)  # the leader is gone: the follower's PROP never arrives
        with pytest.raises(OutcomeUnknown, match="before the entries of term"):
            await asyncio.wait_for(f1.propose(b"lost", forward=True), 30)
        new = await c.wait_leader(exclude=lead.id)
        assert new is f2
        assert await f1.propose(b"retried", forward=True) == len(applied(f1))
        assert b"lost" not in applied(new)


@run
async def test_writes_forwarded_during_a_leadership_transfer_are_dropped_or_applied() -> None:
    async with started() as (c, lead, (f1, f2)):
        lead.transfer_leadership(f2.id)
        outcomes = await asyncio.gather(
            *(f1.propose(b"t%d" % i, forward=True) for i in range(10)),
            return_exceptions=True)
        new = await c.wait_leader(exclude=lead.id)
        assert new.id == f2.id and lead.role == StateRole.FOLLOWER
        await asyncio.sleep(0.1)
        for i, out in enumerate(outcomes):
            cmd = b"t%d" % i
            if isinstance(out, BaseException):
                # Never a silent loss of an acknowledged write, never a duplicate.
                assert isinstance(out, OutcomeUnknown | NotLeader), out
            else:
                assert applied(f1)[out - 1] == cmd
            assert applied(new).count(cmd) <= 1
        assert await f1.propose(b"after", forward=True) == len(applied(f1))


# -- through the gRPC APIs of a process cluster ------------------------------------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    with ProcessCluster(3, tmp_path_factory.mktemp("forwarding")) as c:
        for n in c.nodes.values():
            n.wait_ready()
        c.leader()
        yield c


def followers(c: ProcessCluster) -> list[str]:
    leader = c.leader()
    return [n.client_addr for i, n in c.nodes.items() if i != leader]


def revision(addr: str) -> int:
    with grpc.insecure_channel(addr) as ch:
        return kv_pb2_grpc.ClusterStub(ch).Status(kv_pb2.StatusRequest(), timeout=5).revision


def test_a_put_to_a_follower_is_applied_once_with_the_revision_it_answers(
        cluster: ProcessCluster) -> None:
    addr = followers(cluster)[0]
    leader_addr = cluster.nodes[cluster.leader()].client_addr
    before = revision(leader_addr)
    with grpc.insecure_channel(addr) as ch:
        kv = kv_pb2_grpc.KVStub(ch)
        resp = kv.Put(kv_pb2.PutRequest(path="/fwd/native", value=b"v1"), timeout=10)
        assert resp.header.revision == before + 1
        got = kv.Range(kv_pb2.RangeRequest(path="/fwd/native"), timeout=10).kvs[0]
        assert (got.mod_revision, got.version, got.value) == (before + 1, 1, b"v1")
        txn = kv.Txn(kv_pb2.TxnRequest(
            compare=[kv_pb2.Compare(path="/fwd/native", target=kv_pb2.Compare.VERSION,
                                    result=kv_pb2.Compare.EQUAL, version=1)],
            success=[kv_pb2.RequestOp(put=kv_pb2.PutRequest(path="/fwd/native", value=b"v2",
                                                            prev_kv=True))]), timeout=10)
        assert txn.succeeded and txn.header.revision == before + 2
        assert txn.responses[0].put.prev_kv.value == b"v1"
    # etcd's API, through the other follower: same store, next revision.
    with grpc.insecure_channel(followers(cluster)[1]) as ch:
        etcd = rpc_pb2_grpc.KVStub(ch)
        put = etcd.Put(rpc_pb2.PutRequest(key=b"/fwd/etcd", value=b"e", prev_kv=True),
                       timeout=10)
        assert put.header.revision == before + 3
        deleted = etcd.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"/fwd/native"), timeout=10)
        assert deleted.deleted == 1 and deleted.header.revision == before + 4
    # Each write made exactly one revision, on every member.
    for n in cluster.nodes.values():
        deadline = time.monotonic() + 5
        while revision(n.client_addr) != before + 4:
            assert time.monotonic() < deadline, f"node {n.node_id} at {revision(n.client_addr)}"
            time.sleep(0.05)


def test_a_put_to_a_follower_whose_leader_froze_ends_as_unknown_not_hanging(
        tmp_path: Path) -> None:
    # Ticks of 50 ms, election timeout 0.5 s: once the others elect a new leader (~1 s), a
    # write forwarded to the frozen one gives up one election timeout later.
    with ProcessCluster(3, tmp_path) as c:
        for n in c.nodes.values():
            n.wait_ready()
        leader = c.leader()
        addr = followers(c)[0]
        with grpc.insecure_channel(addr) as ch:
            kv = kv_pb2_grpc.KVStub(ch)
            kv.Put(kv_pb2.PutRequest(path="/warm", value=b"up"), timeout=10)
            pid = c.nodes[leader].pid
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)  # alive but silent: the follower still trusts it
            try:
                t0 = time.monotonic()
                with pytest.raises(grpc.RpcError) as err:
                    kv.Put(kv_pb2.PutRequest(path="/frozen", value=b"x"), timeout=20)
                took = time.monotonic() - t0
                assert err.value.code() == grpc.StatusCode.UNKNOWN, err.value
                assert "outcome unknown" in (err.value.details() or "")
                assert took < 5, took
                # The others elect a new leader and take writes through the follower again.
                deadline = time.monotonic() + 20
                while True:
                    try:
                        kv.Put(kv_pb2.PutRequest(path="/after", value=b"y"), timeout=5)
                        break
                    except grpc.RpcError:
                        assert time.monotonic() < deadline
                        time.sleep(0.1)
            finally:
                os.kill(pid, signal.SIGCONT)


# -- batching under load --------------------------------------------------------------------
async def rounds_for(waves: int, concurrent: int, window: float) -> tuple[int, float]:
    """(Raft loop rounds of the leader that handled a Ready, seconds) for ``concurrent``
    clients each writing ``waves`` times in a row through a follower."""
    options = NodeOptions(tick_interval=1.0, batch_window=window)
    c = LocalCluster(3, options=options, seed=3)
    await c.start()
    try:
        c.nodes[1].campaign()  # ticks are slow here: no waiting for an election timeout
        lead = await c.wait_leader()
        follower = next(n for n in c.nodes.values() if n is not lead)
        while follower.leader != lead.id:
            await asyncio.sleep(0.01)
        rounds = 0
        real = lead._handle_ready

        async def counting(rd):  # type: ignore[no-untyped-def]
            nonlocal rounds
            rounds += 1
            await real(rd)

        lead._handle_ready = counting  # type: ignore[method-assign]
        async def client(i: int) -> None:
            for w in range(waves):
                await follower.propose(b"w%d-%d" % (w, i), forward=True)
                await asyncio.sleep(0.001 * (i % 7))  # think time: arrivals spread out

        t0 = time.monotonic()
        await asyncio.gather(*(client(i) for i in range(concurrent)))
        return rounds, time.monotonic() - t0
    finally:
        await c.stop()


def test_a_lone_writer_is_never_held_back_by_the_batching_window() -> None:
    _, took = asyncio.run(rounds_for(20, 1, window=0.25))
    assert took < 2, took  # 20 sequential writes, none waiting out the window


def test_under_load_rounds_are_spaced_to_carry_more_writes() -> None:
    eager, _ = asyncio.run(rounds_for(10, 60, window=0.0))
    batched, _ = asyncio.run(rounds_for(10, 60, window=0.05))
    assert batched < eager, (batched, eager)


class _TimedSyncStorage(MemoryStorage):
    """MemoryStorage whose sync takes ``delay`` seconds and records the thread it ran on."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.sync_threads: list[str] = []

    def sync(self) -> None:
        self.sync_threads.append(threading.current_thread().name)
        time.sleep(self.delay)


# The limit is far above any scheduling delay of a busy test machine (a moving average of
# fsync times must exceed it), and the slow fsync twice the limit: the outcome does not depend
# on the machine's load.
SYNC_LIMIT = 0.03


@pytest.mark.parametrize(("delay", "slow"), [(0.0, False), (2 * SYNC_LIMIT, True)])
@run
async def test_fsync_runs_on_the_loop_while_fast_and_in_a_thread_once_slow(delay: float,
                                                                           slow: bool) -> None:
    storage = _TimedSyncStorage(delay)
    options = dataclasses.replace(OPTIONS, inline_sync_limit=SYNC_LIMIT)
    c = LocalCluster(1, storage_factory=lambda _id: storage, options=options, seed=3)
    await c.start()
    try:
        lead = await c.wait_leader()
        for i in range(20):
            await lead.propose(b"w%d" % i)
    finally:
        await c.stop()
    on_loop = [name == "MainThread" for name in storage.sync_threads]
    assert on_loop[0]  # no fsync measured yet: tried inline first
    # Fast: every fsync on the loop. Slow: moved to a thread after the first ones.
    assert on_loop[-10:] == [not slow] * 10
