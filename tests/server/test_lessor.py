"""The leader's lease clock (confer.server.leases.Lessor) on a fake node and a fake clock.

The process tests (test_leases.py) show the behaviour end to end; these pin down the rules:
the take-over reset, renewal from the time received, refusals while a revocation is in
flight, and what happens when a revocation fails.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from types import SimpleNamespace
from typing import Any

import pytest

from confer.kv import KVStore, LeaseGrant, Put, decode_command
from confer.raft.errors import NotLeader
from confer.raft.types import Entry, StateRole
from confer.server import leases
from confer.server.config import ServerConfig
from confer.server.leases import Lessor


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class FakeServer:
    """What the Lessor uses: the store, the Raft role and term, and a Consensus's read
    barrier and ``propose_here`` (applied at once, or failed on request)."""

    def __init__(self) -> None:
        self.fsm = SimpleNamespace(kv=KVStore())
        self.cfg = ServerConfig(tick_ms=100, election_ticks=10)
        self.cluster_listeners: list[Any] = []
        self.raft = SimpleNamespace(role=StateRole.FOLLOWER, term=1)
        self.node = SimpleNamespace(basic_status=lambda: self.raft, leader=2)
        self.index = 0
        self.fail_with: Exception | None = None
        self.proposed: list[object] = []
        self.barrier_hook: Any = None

    def lead(self, term: int) -> None:
        self.raft.role, self.raft.term, self.node.leader = StateRole.LEADER, term, 1

    def follow(self, term: int) -> None:
        self.raft.role, self.raft.term, self.node.leader = StateRole.FOLLOWER, term, 2

    async def read_barrier(self, deadline: float) -> None:
        await asyncio.sleep(0)
        if self.barrier_hook is not None:
            self.barrier_hook()

    async def propose_here(self, data: bytes, timeout: float) -> Any:
        await asyncio.sleep(0)
        self.proposed.append(decode_command(data))
        if self.fail_with is not None:
            raise self.fail_with
        self.index += 1
        return self.fsm.kv.apply(Entry(self.index, self.raft.term, data))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(leases, "time", fake)
    return fake


def run(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop (fixtures still work)."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return wrapper


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def make(ttls: dict[int, int]) -> tuple[FakeServer, Lessor]:
    server = FakeServer()
    lessor = Lessor(server.fsm.kv, server, lambda: server.node,  # type: ignore[arg-type]
                    election_timeout=1.0)
    for lease, ttl in ttls.items():
        server.fsm.kv.execute(LeaseGrant(ttl, lease))
        server.fsm.kv.execute(Put(b"/k/%d" % lease, b"", lease=lease))
    return server, lessor


def test_min_ttl_is_one_and_a_half_election_timeouts_rounded_up() -> None:
    _, lessor = make({})
    assert lessor.election_timeout == 1.0 and lessor.min_ttl == 2


@run
async def test_taking_over_gives_every_lease_a_full_ttl(clock: Clock) -> None:
    server, lessor = make({1: 10, 2: 3})
    clock.now += 50  # time passes while following: it does not count
    server.lead(term=2)
    assert lessor.leading()
    assert await lessor.time_to_live(1, 5) == (10.0, 10)
    lessor._expire_due(clock.now + 2.9)
    await settle()
    assert server.proposed == []
    clock.now += 3
    lessor._expire_due(clock.now)
    await settle()
    assert [c.id for c in server.proposed] == [2]  # type: ignore[attr-defined]
    assert server.fsm.kv.lease_ttl(2) is None and server.fsm.kv.get(b"/k/2") is None
    assert lessor.stats.expired == 1
    # A new term resets again, even without a step down in between.
    clock.now += 5
    server.raft.term = 3
    assert lessor.leading()
    assert await lessor.time_to_live(1, 5) == (10.0, 10)
    assert lessor.stats.takeovers == 2


@run
async def test_renewal_counts_from_when_it_was_received_and_needs_leadership(
        clock: Clock) -> None:
    server, lessor = make({1: 10})
    with pytest.raises(NotLeader):
        await lessor.renew(1, 5)
    server.lead(term=2)
    received = clock.now + 4
    clock.now = received

    def slow_barrier() -> None:
        clock.now += 1  # the ReadIndex round takes a second

    server.barrier_hook = slow_barrier
    assert await lessor.renew(1, 5) == 10
    assert await lessor.time_to_live(1, 5) == (received + 10 - clock.now, 10)
    # Leadership lost during the round: not acknowledged.
    server.barrier_hook = lambda: server.follow(term=3)
    with pytest.raises(NotLeader):
        await lessor.renew(1, 5)
    server.barrier_hook = None
    server.lead(term=4)
    assert await lessor.renew(99, 5) == 0  # no such lease


@run
async def test_renewals_are_refused_while_the_revocation_is_in_flight(clock: Clock) -> None:
    server, lessor = make({1: 5})
    server.lead(term=2)
    lessor.leading()
    clock.now += 5
    server.fail_with = TimeoutError()  # outcome unknown: it may still be applied
    lessor._expire_due(clock.now)
    await settle()
    assert len(server.proposed) == 1 and server.fsm.kv.lease_ttl(1) == 5
    assert await lessor.renew(1, 5) == 0  # expired as far as clients are concerned
    assert await lessor.time_to_live(1, 5) == (0.0, 5)
    server.fail_with = None
    clock.now += lessor.revoke_timeout  # the retry comes due
    lessor._expire_due(clock.now)
    await settle()
    assert len(server.proposed) == 2 and server.fsm.kv.lease_ttl(1) is None


@run
async def test_a_revocation_refused_for_leadership_is_retried_or_left_to_the_next_leader(
        clock: Clock) -> None:
    server, lessor = make({1: 5, 2: 5})
    server.lead(term=2)
    lessor.leading()
    clock.now += 5
    server.fail_with = NotLeader(0)  # e.g. the driver has not caught up with the core yet
    lessor._expire_due(clock.now)
    await settle()
    assert len(server.proposed) == 2
    assert await lessor.renew(1, 5) == 5  # nothing in flight: renewals are accepted again
    server.fail_with = None
    clock.now += lessor.revoke_timeout / 5  # the retries come due
    lessor._expire_due(clock.now)
    await settle()
    assert server.fsm.kv.lease_ttl(1) == 5  # renewed meanwhile
    assert server.fsm.kv.lease_ttl(2) is None  # retried
    # Stepping down forgets every deadline; the next term starts from the full TTL.
    server.follow(term=3)
    assert not lessor.leading()
    clock.now += 100
    server.lead(term=4)
    lessor._expire_due(clock.now)
    await settle()
    assert server.fsm.kv.lease_ttl(1) == 5


@run
async def test_frequent_renewals_do_not_grow_the_expiry_queue(clock: Clock) -> None:
    server, lessor = make({1: 10})
    server.lead(term=2)
    lessor.leading()
    for _ in range(200):
        clock.now += 0.01
        assert await lessor.renew(1, 5) == 10
    assert len(lessor._heap) == 1
    clock.now += 9.9
    lessor._expire_due(clock.now)  # the early entry is queued again at the new deadline
    await settle()
    assert server.proposed == [] and len(lessor._heap) == 1
