"""Nemeses: faults injected on a schedule drawn from the run's seed, each healed in bounded time.

One fault at a time: wait a quiet interval, inject, hold it for a while, heal, record the
interval on the timeline. Blocking process and gRPC calls run in a worker thread so that the
clients on the event loop keep running (and keep recording) while faults come and go.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from chaos.cluster import ChaosCluster

Heal = Callable[[], Awaitable[None]]


@dataclass
class Fault:
    detail: str
    heal: Heal


class Nemesis:
    """Runs faults of the given kinds until a deadline; records each on ``timeline``."""

    def __init__(self, cluster: ChaosCluster, rng: random.Random, kinds: list[str], t0: int,
                 *, quiet: tuple[float, float] = (1.0, 3.0),
                 hold: tuple[float, float] = (2.0, 5.0)) -> None:
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown nemesis {', '.join(unknown)}; "
                             f"choose from {', '.join(KINDS)}")
        self.cluster = cluster
        self.rng = rng
        self.kinds = kinds
        self.t0 = t0
        self.quiet = quiet
        self.hold = hold
        self.timeline: list[dict[str, Any]] = []
        self.errors: list[str] = []

    def now(self) -> int:
        return time.monotonic_ns() - self.t0

    async def run(self, deadline: float) -> None:
        """Inject faults until ``deadline`` (time.monotonic); everything is healed on return."""
        while True:
            await asyncio.sleep(self.rng.uniform(*self.quiet))
            if time.monotonic() + self.hold[1] > deadline or not self.kinds:
                return
            kind = self.rng.choice(self.kinds)
            entry: dict[str, Any] = {"name": kind, "start": self.now(), "end": None,
                                     "detail": ""}
            self.timeline.append(entry)
            try:
                fault = await KINDS[kind](self)
            except Exception as e:  # a fault that cannot be injected now is skipped
                entry.update(end=self.now(), detail=f"not injected: {e}")
                self.errors.append(f"{kind}: {e}")
                continue
            entry["detail"] = fault.detail
            try:
                await asyncio.sleep(self.rng.uniform(*self.hold))
            finally:
                await fault.heal()
                entry["end"] = self.now()

    # -- helpers -------------------------------------------------------------------------------
    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    def pick(self, among: list[int]) -> int:
        if not among:
            raise RuntimeError("no running member to pick")
        return self.rng.choice(among)


# -- the faults ------------------------------------------------------------------------------
async def kill(n: Nemesis, *, leader: bool = False) -> Fault:
    c = n.cluster
    victim = await n.call(c.leader) if leader else n.pick(c.running())
    c.kill(victim)

    async def heal() -> None:
        c.restart(victim)

    return Fault(f"kill -9 node {victim}{' (leader)' if leader else ''}", heal)


async def pause(n: Nemesis, *, leader: bool = False) -> Fault:
    c = n.cluster
    victim = await n.call(c.leader) if leader else n.pick(c.running())
    c.pause(victim)

    async def heal() -> None:
        c.resume(victim)

    return Fault(f"SIGSTOP node {victim}{' (leader)' if leader else ''}", heal)


def _healer(n: Nemesis) -> Heal:
    async def heal() -> None:
        await n.call(n.cluster.net.heal)
    return heal


async def partition_halves(n: Nemesis) -> Fault:
    members = sorted(n.cluster.members)
    n.rng.shuffle(members)
    minority = set(members[:(len(members) - 1) // 2])
    majority = set(members) - minority
    mode = n.rng.choice(["drop", "blackhole"])
    await n.call(n.cluster.net.partition, [majority, minority], mode)
    return Fault(f"partition {sorted(majority)} | {sorted(minority)} ({mode})", _healer(n))


async def partition_leader(n: Nemesis) -> Fault:
    leader = await n.call(n.cluster.leader)
    mode = n.rng.choice(["drop", "blackhole"])
    await n.call(n.cluster.net.isolate, leader, mode)
    return Fault(f"isolate leader {leader} ({mode})", _healer(n))


async def bridge(n: Nemesis) -> Fault:
    members = sorted(n.cluster.members)
    n.rng.shuffle(members)
    half = len(members) // 2
    left, hub, right = set(members[:half]), members[half], set(members[half + 1:])
    await n.call(n.cluster.net.bridge, left, right, hub)
    return Fault(f"bridge {sorted(left)} <-> {hub} <-> {sorted(right)}", _healer(n))


async def one_way(n: Nemesis) -> Fault:
    """The leader's outbound links are cut; it still hears everyone (asymmetric)."""
    c = n.cluster
    leader = await n.call(c.leader)
    for peer in sorted(c.members - {leader}):
        await n.call(c.net.one_way, leader, peer)
    return Fault(f"leader {leader} cannot send (one-way)", _healer(n))


async def membership(n: Nemesis) -> Fault:
    """Remove a random member and add a fresh node in its place."""
    c = n.cluster
    if len(c.running()) < len(c.members):
        raise RuntimeError("a member is down; membership change skipped")
    victim = n.pick(sorted(c.members))
    await n.call(c.remove_member, victim)
    new = await n.call(c.add_member)

    async def heal() -> None:
        return None

    return Fault(f"removed node {victim}, added node {new}", heal)


async def crash_in_snapshot_install(n: Nemesis) -> Fault:
    """Cut a follower off until the leader's log moves past it, so the leader must send it a
    snapshot; the follower runs with the ``snapshot-install`` crash point armed."""
    c = n.cluster
    leader = await n.call(c.leader)
    victim = n.pick([i for i in c.running() if i != leader])
    c.kill(victim)
    await n.call(c.net.isolate, victim)
    c.restart(victim, failpoints="snapshot-install")
    await asyncio.sleep(n.hold[1])  # the load moves the leader's log on meanwhile
    await n.call(c.net.heal)
    return Fault(f"node {victim} crashes installing a snapshot",
                 _restart_after_crash(n, victim))


async def crash_in_compaction(n: Nemesis) -> Fault:
    """Restart a member with the ``log-compaction`` crash point armed; it dies at its next
    log compaction (after snapshot-every entries)."""
    c = n.cluster
    victim = n.pick(c.running())
    c.kill(victim)
    c.restart(victim, failpoints="log-compaction")
    return Fault(f"node {victim} crashes compacting its log", _restart_after_crash(n, victim))


def _restart_after_crash(n: Nemesis, victim: int) -> Heal:
    async def heal() -> None:
        c = n.cluster
        node = c.node(victim)
        deadline = time.monotonic() + 10
        while node.alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        crashed = not node.alive()
        c.kill(victim)  # disarm: no crash point after the restart
        c.restart(victim)
        entry = n.timeline[-1]
        entry["detail"] += " (crashed)" if crashed else " (did not reach it; killed)"
    return heal


KINDS: dict[str, Callable[[Nemesis], Awaitable[Fault]]] = {
    "kill": kill,
    "kill-leader": lambda n: kill(n, leader=True),
    "pause": pause,
    "pause-leader": lambda n: pause(n, leader=True),
    "partition": partition_halves,
    "partition-leader": partition_leader,
    "bridge": bridge,
    "one-way": one_way,
    "membership": membership,
    "snapshot-install-crash": crash_in_snapshot_install,
    "compaction-crash": crash_in_compaction,
}
"""Every nemesis by name."""
