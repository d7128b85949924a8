"""Linearizable reads in the node driver: one ReadIndex request at a time, for every read
that arrived until it is made (one message from a follower to the leader, one answer), made
again if unanswered, and a read still sees every write acknowledged before it began, through
a leader change too."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from confer.raft.fsm import ListStateMachine
from confer.raft.types import Message, MessageType
from confer.server.consensus import Consensus
from confer.server.local import LocalCluster
from confer.server.node import NodeOptions, RaftNode
from confer.server.transport import LocalNetwork

READS = 50


class CountingNetwork(LocalNetwork):
    """A LocalNetwork that records every message it carries."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[Message] = []

    def _deliver(self, frm: int, messages: list[Message]) -> None:
        self.sent.extend(messages)
        super()._deliver(frm, messages)

    def count(self, kind: MessageType, frm: int) -> int:
        return sum(1 for m in self.sent if m.type == kind and m.frm == frm)


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    c = LocalCluster(3, options=NodeOptions(tick_interval=0.02))
    c.network = CountingNetwork()
    yield c


def _follower(c: LocalCluster, leader: RaftNode) -> RaftNode:
    return next(n for n in c.nodes.values() if n.id != leader.id)


def _applied(node: RaftNode) -> list[bytes]:
    fsm = node.fsm
    assert isinstance(fsm, ListStateMachine)
    return fsm.applied


async def _reads(node: RaftNode, n: int) -> list[int]:
    # Created without yielding in between: they all reach the node before its loop runs.
    tasks = [asyncio.create_task(node.read_barrier()) for _ in range(n)]
    return await asyncio.wait_for(asyncio.gather(*tasks), 10)


async def _started(c: LocalCluster) -> RaftNode:
    await c.start()
    leader = await c.wait_leader()
    # An entry of the leader's term is committed before it serves any read.
    await asyncio.wait_for(leader.propose(b"first"), 10)
    return leader


def test_a_followers_reads_in_one_loop_turn_share_one_read_index_request(
        cluster: LocalCluster) -> None:
    async def main() -> None:
        leader = await _started(cluster)
        try:
            follower = _follower(cluster, leader)
            net = cluster.network
            assert isinstance(net, CountingNetwork)
            await asyncio.wait_for(leader.propose(b"acknowledged"), 10)
            before = net.count(MessageType.READ_INDEX, follower.id)
            indexes = await _reads(follower, READS)
            assert net.count(MessageType.READ_INDEX, follower.id) - before == 1
            assert len(set(indexes)) == 1
            assert follower.applied_index >= indexes[0]
            assert b"acknowledged" in _applied(follower)
        finally:
            await cluster.stop()

    asyncio.run(main())


def test_reads_arriving_while_a_request_is_answered_share_the_next_one(
        cluster: LocalCluster) -> None:
    async def main() -> None:
        leader = await _started(cluster)
        try:
            follower = _follower(cluster, leader)
            net = cluster.network
            assert isinstance(net, CountingNetwork)
            before = net.count(MessageType.READ_INDEX, follower.id)
            waves = []
            for _ in range(4):  # each wave reaches the node while the first is in flight
                waves += [asyncio.create_task(follower.read_barrier()) for _ in range(10)]
                await asyncio.sleep(0)
            await asyncio.wait_for(asyncio.gather(*waves), 10)
            assert net.count(MessageType.READ_INDEX, follower.id) - before == 2
        finally:
            await cluster.stop()

    asyncio.run(main())


def test_an_unanswered_read_index_request_is_made_again(cluster: LocalCluster) -> None:
    async def main() -> None:
        leader = await _started(cluster)
        try:
            follower = _follower(cluster, leader)
            net = cluster.network
            assert isinstance(net, CountingNetwork)
            net._blocked.add((follower.id, leader.id))  # the request is lost
            reads = asyncio.gather(*(follower.read_barrier() for _ in range(5)))
            deadline = time.monotonic() + 10
            while not net.count(MessageType.READ_INDEX, follower.id):
                assert time.monotonic() < deadline, "no ReadIndex request made"
                await asyncio.sleep(0.01)
            net.heal()
            await asyncio.wait_for(reads, 10)  # asked again half an election timeout on
            assert net.count(MessageType.READ_INDEX, follower.id) >= 2
        finally:
            await cluster.stop()

    asyncio.run(main())


def test_the_leaders_reads_in_one_loop_turn_share_one_heartbeat_round(
        cluster: LocalCluster) -> None:
    async def main() -> None:
        leader = await _started(cluster)
        try:
            net = cluster.network
            assert isinstance(net, CountingNetwork)
            before = net.count(MessageType.HEARTBEAT, leader.id)
            await _reads(leader, READS)
            # One heartbeat per follower for the round (a tick may add its own beat).
            assert net.count(MessageType.HEARTBEAT, leader.id) - before <= 4
        finally:
            await cluster.stop()

    asyncio.run(main())


def test_a_read_sees_every_write_acknowledged_before_it_through_a_leader_change(
        cluster: LocalCluster) -> None:
    async def main() -> None:
        leader = await _started(cluster)
        try:
            for round_ in range(2):
                written = b"w%d" % round_
                await asyncio.wait_for(leader.propose(written), 10)
                await cluster.stop_node(leader.id)
                survivors = list(cluster.nodes.values())
                new_leader = await cluster.wait_leader(timeout=20)
                for node in survivors:
                    # Reads on each survivor, leader and follower alike, through the
                    # request path's barrier (which waits for a leader and retries).
                    barrier = Consensus(lambda node=node: node, 0.02).read_barrier
                    await asyncio.gather(*(barrier(time.monotonic() + 20)
                                           for _ in range(10)))
                    assert written in _applied(node)
                await cluster.start_node(leader.id)
                leader = new_leader
        finally:
            await cluster.stop()

    asyncio.run(main())
