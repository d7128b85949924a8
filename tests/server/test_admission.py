"""Back-pressure in the node driver: a bounded number of writes in flight per node, refused
before the log (and answered etcd's "too many requests") beyond it; a bounded number of
entries per round of the loop, shared between a leader's own writes and those its followers
forward; and members that snapshot one after another rather than all at once.

The bounds are checked on the driver's own queues, between two rounds of its loop (nothing
else runs on the event loop meanwhile), so no outcome depends on timing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

import pytest

from confer.envelope import wrap_forwarded
from confer.raft.types import Entry, Message, MessageType
from confer.server.api.errors import TooManyRequests
from confer.server.etcd.common import etcd_status
from confer.server.local import LocalCluster
from confer.server.node import Overloaded, RaftNode

from .test_forwarding import OPTIONS, applied, run, started


async def _settled(*futures: asyncio.Future[object]) -> list[object]:
    return await asyncio.gather(*futures, return_exceptions=True)


async def _until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


@run
async def test_a_node_refuses_writes_beyond_its_bound_and_takes_them_again_after() -> None:
    options = dataclasses.replace(OPTIONS, max_inflight=5)
    async with started(3, options) as (_, lead, _followers):
        # Six writes start before the loop runs a round: the sixth finds five in flight.
        outcomes = await _settled(*(asyncio.ensure_future(lead.propose(b"w%d" % i))
                                    for i in range(6)))
        assert not any(isinstance(o, BaseException) for o in outcomes[:5]), outcomes
        assert isinstance(outcomes[5], Overloaded), outcomes
        assert b"w5" not in applied(lead)  # refused before the log
        await lead.propose(b"again")  # nothing in flight any more: taken
        assert applied(lead)[-1] == b"again"


@run
async def test_a_leader_that_cannot_commit_stops_taking_writes() -> None:
    """With its followers gone nothing commits: the leader's log holds at most its bound of
    uncommitted writes, and refuses the next one at once instead of queueing it."""
    options = dataclasses.replace(OPTIONS, max_inflight=4)
    async with started(3, options) as (c, lead, followers):
        for f in followers:
            await c.stop_node(f.id)
        waiting = [asyncio.ensure_future(lead.propose(b"w%d" % i)) for i in range(4)]
        await _until(lambda: lead.node.uncommitted >= 4, "the writes were not appended")
        with pytest.raises(Overloaded):
            await lead.propose(b"one too many")
        for w in waiting:
            w.cancel()
        await _settled(*waiting)


def test_overload_is_answered_as_etcds_too_many_requests() -> None:
    refused = TooManyRequests(Overloaded(1, 5000, 2).reason)
    assert etcd_status(refused) == etcd_status(TooManyRequests("x"))
    assert "too many requests" in str(refused)


def _forwarded(count: int, tag: bytes) -> Message:
    """A PROP as a follower sends it: ``count`` tagged writes."""
    return Message(MessageType.PROP, entries=[
        Entry(0, 0, wrap_forwarded(i + 1, tag + b"%d" % i)) for i in range(count)])


def _queue_local(lead: RaftNode, count: int) -> list[asyncio.Future[object]]:
    return [asyncio.ensure_future(lead.propose(b"local%d" % i)) for i in range(count)]


@run
async def test_a_round_takes_a_bounded_share_of_forwarded_and_local_writes() -> None:
    options = dataclasses.replace(OPTIONS, max_round_entries=8)
    async with started(3, options) as (_, lead, _followers):
        local = _queue_local(lead, 12)
        await asyncio.sleep(0)  # the proposals are queued (the loop has not run a round)
        assert len(lead._proposals) == 12
        # Three PROPs of 3 entries wait too. Called between two rounds, as the loop does:
        lead._inbox += [_forwarded(3, b"a"), _forwarded(3, b"b"), _forwarded(3, b"c")]
        last = lead.node.raft.log.last_index()
        taken = lead._step_inbox()
        # Local writes may claim half the round, so forwarded ones get the other half:
        # one PROP of 3 and a second (3 + 3 > 4 would exceed the share, so it waits).
        assert taken == 3 and len(lead._inbox) == 2
        lead._submit_proposals(taken)
        assert len(lead._proposals) == 12 - 5  # the rest of the round: 8 - 3
        assert lead.node.raft.log.last_index() == last + 8
        # The loop carries on with the rest, in order; every write is applied once.
        await _settled(*local)
        await _until(lambda: len([d for d in applied(lead) if d[:1] in (b"a", b"b", b"c")]) >= 9,
                     "the forwarded writes were not applied")
        done = applied(lead)
        assert [d for d in done if d.startswith(b"local")] == [b"local%d" % i for i in range(12)]
        assert [d for d in done if d[:1] in (b"a", b"b", b"c")] == [
            t + b"%d" % i for t in (b"a", b"b", b"c") for i in range(3)]


@run
async def test_forwarded_writes_take_the_whole_round_when_no_local_write_waits() -> None:
    options = dataclasses.replace(OPTIONS, max_round_entries=8)
    async with started(3, options) as (_, lead, _followers):
        lead._inbox += [_forwarded(4, b"a"), _forwarded(4, b"b"), _forwarded(4, b"c")]
        assert lead._step_inbox() == 8
        assert len(lead._inbox) == 1


@run
async def test_one_forwarded_batch_larger_than_a_round_still_goes_through() -> None:
    options = dataclasses.replace(OPTIONS, max_round_entries=4)
    async with started(3, options) as (_, lead, _followers):
        lead._inbox.append(_forwarded(10, b"a"))
        assert lead._step_inbox() == 10
        assert not lead._inbox


@run
async def test_the_members_of_a_cluster_snapshot_at_different_indexes() -> None:
    """Each member's first snapshot waits snapshot_every / 2 x its rank / voters entries
    more, so three members do not snapshot together (they once all did, at the same index:
    a stall of every member's loop at once)."""
    options = dataclasses.replace(OPTIONS, snapshot_every=30, keep_entries=5)
    c = LocalCluster(3, options=options, seed=3)
    await c.start()
    try:
        lead = await c.wait_leader()
        assert sorted(n._snapshot_offset() for n in c.nodes.values()) == [0, 5, 10]
        for i in range(60):  # one at a time: the applied index moves by one per round
            await lead.propose(b"w%d" % i)
        await _until(lambda: all(c.storages[i].snapshot().meta.index for i in c.ids),
                     "not every member snapshotted")
        first = sorted(c.storages[i].snapshot().meta.index for i in c.ids)
        assert len(set(first)) == 3, first
    finally:
        await c.stop()
