"""Testing a state machine under the deterministic simulator: one call and a seed.

:func:`simulate` runs the seed's scenario of :mod:`confer.sim` (the real Raft core and
durable storage on a simulated network, disks and clock: drops, delays, partitions, crashes,
power cuts, membership changes), with the clients proposing calls of the state machine's
commands. Besides the simulator's own invariants (election safety, log matching, no lost
commit, linearizable reads, liveness after healing), it checks:

- real-time order: a command acknowledged before another was proposed comes first in the log;
- determinism: replaying each member's log through a fresh instance gives, at every member's
  applied index, the same state and the same results (a command that reads the wall clock,
  the global ``random`` or anything else outside its entry and the state fails this);
- snapshots: a replay that snapshots and restores the state every few commands ends in the
  same state as one that never does. Each snapshot is incremental (dict and list fields are
  sliced two entries a chunk), a command applied between every two chunks: a command that
  mutates in place a value the snapshot still shares (docs/platform.md, "Large states")
  fails this too.

Replays use term 0 for every entry (the simulator's application keeps only indexes and
payloads), so :attr:`StateMachine.random` draws other numbers than in a real cluster, the
same on every replay.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from confer.envelope import EntryKind
from confer.raft.fsm import SnapshotSteps
from confer.raft.types import Entry
from confer.replicated.machine import StateMachine, methods_of, pack
from confer.replicated.replica import Replica, Result, encode_entry
from confer.sim import Cluster, InvariantViolation, Rule, run_scenario
from confer.sim.node import Outcome
from confer.sim.scenario import DEFAULT_STEPS, Chaos

M = TypeVar("M", bound=StateMachine)

Call = tuple[Any, ...]
"""A command call: its name, then its positional arguments, e.g. ``("incr", 5)``."""
Ops = Sequence[Call] | Callable[[random.Random], Call]

EPOCH_NS = 1_700_000_000 * 10**9
"""The replicated time of the first proposal (then one millisecond more per proposal)."""
SNAPSHOT_EVERY = 7
"""Commands between snapshot-and-restore round trips in the snapshot replay."""
SNAPSHOT_SLICE = 2
"""Entries of a dict or list field per chunk of the default snapshot, in the snapshot replay."""
_APP_HEX = b"%02x" % EntryKind.APP_COMMAND


class SimulationFailed(AssertionError):
    """The seed broke a rule: the message says which, and how to replay it."""


@dataclass(slots=True)
class Simulation(Generic[M]):
    """What a seed's run did (it passed every check)."""

    seed: int
    final: M
    """The state after the longest log any member applied."""
    commands: int
    """Commands in that log."""
    acknowledged: int
    """Proposals whose proposer saw them applied."""
    crashes: int
    snapshots_installed: int


def simulate(cls: type[M], seed: int, ops: Ops, *, nodes: int | None = None,
             steps: int = DEFAULT_STEPS) -> Simulation[M]:
    """Run ``cls`` in the simulator with seed ``seed``; raise :class:`SimulationFailed`
    (with the call that replays it) if any check fails.

    ``ops`` are the commands the clients call: a list of calls (``("incr", 5)``: the
    command's name, then its arguments) drawn at random, or a function that makes one from
    a ``random.Random``. Arguments are checked as at a real caller (TypeError at once).
    ``nodes`` and ``steps`` override the seed's cluster size and the length of its chaos.
    """
    methods = methods_of(cls)
    version = cls.write_version or cls.version

    def payload(n: int) -> bytes:
        rng = random.Random(seed * 1_000_003 + n)
        name, *args = ops(rng) if callable(ops) else rng.choice(ops)
        method = methods.get(name)
        if method is None or not method.is_command:
            raise TypeError(f"simulate: {cls.__name__} has no command {name!r}")
        entry = encode_entry(version, name, method.encode_arguments(tuple(args), {}),
                             EPOCH_NS + n * 1_000_000)
        return entry.hex().encode()  # the simulator's application keeps text lines

    found: list[Simulation[M]] = []

    def check(c: Cluster, chaos: Chaos) -> None:
        _check_real_time_order(chaos)
        found.append(_check_replicas(cls, seed, c, chaos))

    res = run_scenario(seed, nodes, steps, payload=payload, check=check)
    if not res.ok:
        raise SimulationFailed(
            f"{cls.__name__} failed seed {seed}: {res.message}\n  replay: "
            f"confer.replicated.simulate({cls.__name__}, seed={seed}, ops=..., "
            f"nodes={res.nodes}, steps={steps})\n{res.report()}")
    return found[0]


def _check_real_time_order(chaos: Chaos) -> None:
    acked = sorted((p for p in chaos.stats.made if p.outcome is Outcome.ACKED),
                   key=lambda p: p.issued_at)
    by_settled = sorted(acked, key=lambda p: p.settled_at)
    highest, earlier = 0, None
    i = 0
    for q in acked:
        while i < len(by_settled) and by_settled[i].settled_at < q.issued_at:
            if by_settled[i].index > highest:
                highest, earlier = by_settled[i].index, by_settled[i]
            i += 1
        if q.index <= highest:
            raise InvariantViolation(
                Rule.REAL_TIME_ORDER,
                f"the command acknowledged at index {highest} ({earlier}) before "
                f"{q.payload!r} was proposed comes after it, at index {q.index}")


def _check_replicas(cls: type[M], seed: int, c: Cluster, chaos: Chaos) -> Simulation[M]:
    logs = {nid: [(i, bytes.fromhex(d.decode())) for i, d in node.fsm.commands
                  if d.startswith(_APP_HEX)]  # not the runner's own probes
            for nid, node in c.nodes.items()}
    applied = {nid: node.fsm.index for nid, node in c.nodes.items()}
    longest = max(logs.values(), key=len)
    reference = _replay(cls, longest, keep_states=True)
    for nid, log in logs.items():
        mine = _replay(cls, log)
        at = applied[nid]
        expected = reference.state_at(at)
        if _state(mine.replica) != expected:
            raise InvariantViolation(
                Rule.APPLICATION,
                f"node {nid}'s log, replayed, gives another {cls.__name__} state at index {at} "
                "than the same entries replayed before: a command is not deterministic "
                "(docs/platform.md, 'Determinism')")
        for index, result in mine.results.items():
            if reference.results[index] != result:
                raise InvariantViolation(
                    Rule.APPLICATION,
                    f"entry {index} gave {result} on node {nid}'s replay and "
                    f"{reference.results[index]} before: a command is not deterministic")
    restored = _replay(cls, longest, snapshot_every=SNAPSHOT_EVERY)
    if _state(restored.replica) != _state(reference.replica):
        raise InvariantViolation(
            Rule.APPLICATION,
            f"replaying with a snapshot and restore every {SNAPSHOT_EVERY} commands ends in "
            f"another {cls.__name__} state than replaying without: snapshot() or restore() "
            "loses or changes state, or a command mutates in place a value that an "
            "incremental snapshot taken before it still holds (docs/platform.md, 'Large "
            "states')")
    return Simulation(seed, reference.replica.machine, len(longest),
                      sum(p.outcome is Outcome.ACKED for p in chaos.stats.made),
                      sum(n.disk.stats.crashes for n in c.nodes.values()),
                      sum(n.snapshots_installed for n in c.nodes.values()))


@dataclass(slots=True)
class _Replay(Generic[M]):
    replica: Replica[M]
    results: dict[int, Result]
    states: dict[int, bytes]
    """The state right after the entries at these indexes (and before the next)."""

    def state_at(self, index: int) -> bytes:
        """The state after every entry up to ``index``."""
        before = [i for i in self.states if i <= index]
        return self.states[max(before)] if before else _state(Replica(self.replica.cls))


def _replay(cls: type[M], log: list[tuple[int, bytes]], keep_states: bool = False,
            snapshot_every: int = 0) -> _Replay[M]:
    replica = Replica(cls)
    results: dict[int, Result] = {}
    states: dict[int, bytes] = {}
    snapshot: tuple[int, SnapshotSteps] | None = None
    """The snapshot being taken: the commands applied when it started, its steps."""
    for n, (index, data) in enumerate(log, 1):
        results[index] = replica.apply(Entry(index, 0, data))
        if keep_states:
            states[index] = _state(replica)
        if snapshot is not None:  # a step per command: commands between its chunks
            parts = next(snapshot[1])
            if parts is not None:
                replica, snapshot = _restored(cls, parts, log[snapshot[0]:n]), None
        elif snapshot_every and n % snapshot_every == 0:
            replica.machine._snapshot_slice = SNAPSHOT_SLICE
            snapshot = (n, replica.snapshot_steps())
    if snapshot is not None:
        parts = None
        for parts in snapshot[1]:
            if parts is not None:
                break
        assert parts is not None
        replica = _restored(cls, parts, log[snapshot[0]:])
    return _Replay(replica, results, states)


def _restored(cls: type[M], parts: list[bytes], since: list[tuple[int, bytes]]) -> Replica[M]:
    """A fresh replica restored from a snapshot's parts, then given the entries applied
    ``since`` the snapshot was captured."""
    fresh = Replica(cls)
    fresh.restore(b"".join(parts))
    for index, data in since:
        fresh.apply(Entry(index, 0, data))
    return fresh


def _state(replica: Replica[Any]) -> bytes:
    """What two replicas in the same state have equal: the replica's snapshot, and the
    declared fields too (a snapshot() of the user's own may leave some out)."""
    machine = replica.machine
    try:
        fields = pack({name: getattr(machine, name) for name in machine._fields})
    except (TypeError, ValueError, OverflowError):  # what its own snapshot() is for
        fields = b""
    return fields + replica.snapshot()
