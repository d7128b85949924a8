"""The examples under the deterministic simulator's faults, and what the simulation catches in
state machines that break the rules."""

from __future__ import annotations

import random
import time

import pytest

from confer.replicated import SimulationFailed, StateMachine, command, simulate
from examples.counter import Counter
from examples.jobqueue import JobQueue
from examples.ratelimit import RateLimiter


@pytest.mark.parametrize("seed", [1, 2])
def test_counter(seed: int) -> None:
    run = simulate(Counter, seed=seed, ops=[("incr", 1), ("incr", 5)])
    assert run.commands > 0 and run.acknowledged > 0
    assert run.final.value >= run.commands  # every increment is at least 1


def test_jobqueue() -> None:
    def op(rng: random.Random) -> tuple[object, ...]:
        return rng.choice([("put", f"job {rng.random():.6f}"), ("take", "w", 0.05),
                           ("ack", rng.randint(1, 40))])

    run = simulate(JobQueue, seed=3, ops=op)
    queue = run.final
    assert set(queue.leases) <= set(queue.jobs)  # an acknowledged job holds no lease
    assert all(job_id < queue.next_id for job_id in queue.jobs)


def test_ratelimiter() -> None:
    run = simulate(RateLimiter, seed=4, ops=[("acquire", "a", 1.0), ("acquire", "b", 3.0)])
    assert all(0 <= tokens <= 10 for tokens, _ in run.final.buckets.values())


class WallClock(StateMachine):
    stamps: list[float] = []  # noqa: RUF012 - copied per instance

    @command
    def stamp(self) -> None:
        self.stamps.append(time.time())  # the rule broken: a clock of its own


class Forgetful(StateMachine):
    total: int = 0
    count: int = 0

    @command
    def add(self, n: int) -> None:
        self.total += n
        self.count += 1

    def snapshot(self) -> bytes:
        return str(self.total).encode()  # the rule broken: count is not in the snapshot

    def restore(self, data: bytes) -> None:
        self.total = int(data)


def test_a_command_that_reads_the_wall_clock_is_caught() -> None:
    with pytest.raises(SimulationFailed, match="not deterministic") as info:
        simulate(WallClock, seed=5, ops=[("stamp",)], steps=60)
    assert "confer.replicated.simulate(WallClock, seed=5" in str(info.value)


def test_a_snapshot_that_loses_state_is_caught() -> None:
    with pytest.raises(SimulationFailed, match="snapshot\\(\\) or restore\\(\\) loses"):
        simulate(Forgetful, seed=6, ops=[("add", 2)], steps=60)


def test_bad_ops_are_refused_like_a_callers_arguments() -> None:
    with pytest.raises(SimulationFailed, match="must be int, not str"):
        simulate(Counter, seed=7, ops=[("incr", "x")], steps=20)


class InPlace(StateMachine):
    jobs: dict[int, list[int]] = {}  # noqa: RUF012 - copied per instance

    @command
    def touch(self, n: int) -> None:
        job = self.jobs.setdefault(n % 3, [])
        job.append(n)  # the rule broken: a value mutated in place (a snapshot shares it)


class Replacing(InPlace):
    @command
    def touch(self, n: int) -> None:
        self.jobs[n % 3] = [*self.jobs.get(n % 3, []), n]  # the rule kept: replaced


def test_a_command_that_mutates_what_an_incremental_snapshot_shares_is_caught() -> None:
    with pytest.raises(SimulationFailed, match="mutates in place"):
        simulate(InPlace, seed=8, ops=[("touch", 0), ("touch", 1), ("touch", 2)], steps=80)
    run = simulate(Replacing, seed=8, ops=[("touch", 0), ("touch", 1), ("touch", 2)], steps=80)
    assert run.commands > 0
