"""Run one seeded scenario end to end: chaos, heal, liveness; report what happened.

A run has three phases:

1. **Chaos** for ``steps`` ticks (see :class:`~confer.sim.scenario.Chaos`), with every safety
   invariant checked after every event.
2. **Heal**: partitions removed, the network calm, crashed nodes restarted; clients keep
   writing (at most one write a tick).
3. **Liveness**: within :func:`liveness_bound` ticks a leader must be elected and a new
   proposal must commit (be applied by the leader that proposed it); then within
   :func:`convergence_bound` more ticks every running member must have applied it.

Any failure carries the seed and the command that replays it.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from confer.raft import ProposalDropped
from confer.sim.checker import InvariantViolation, Rule
from confer.sim.cluster import Cluster
from confer.sim.disk import StorageKind
from confer.sim.events import TICK_UNITS
from confer.sim.fs import PowerCut
from confer.sim.node import NodeState, Outcome, Proposal
from confer.sim.scenario import DEFAULT_STEPS, Chaos, Flavour, Scenario

ELECTION_ALLOWANCE = 10
"""Election timeouts allowed for electing a leader after healing: each timeout lasts up to
``2 * election_tick``; add split votes, a CheckQuorum step-down and an unfinished transfer."""

TICKS_PER_ROUND_TRIP = 2
"""After healing a message takes at most ``max_delay`` (< 1 tick) each way."""


def liveness_bound(sc: Scenario, c: Cluster) -> int:
    """Ticks allowed, after healing, for a leader to be elected and a new proposal to commit.

    The election allowance, plus one round trip per batch of entries (or snapshot chunk) that
    may have to be shipped before the new entry can commit: with one entry per message and an
    in-flight window of one, a long uncommitted backlog drains one entry per round trip.
    """
    return ELECTION_ALLOWANCE * sc.cluster.election_tick + 20 + _shipping_ticks(sc, c)


def convergence_bound(sc: Scenario, c: Cluster) -> int:
    """Further ticks allowed for every running member to apply that proposal. Clients keep
    writing meanwhile, so a member far behind may need a second snapshot after the first."""
    return 2 * sc.cluster.election_tick + 20 + 2 * _shipping_ticks(sc, c)


def _shipping_ticks(sc: Scenario, c: Cluster) -> int:
    """Round trips needed to bring the slowest running node level with the longest log."""
    cfg = sc.cluster
    up = [n for n in c.nodes.values() if n.raw is not None]
    if not up:
        return 0
    last = max(n.raw.basic_status().last_index for n in up if n.raw is not None)
    entries = last - min(n.applied for n in up)
    per_message = max(1, cfg.max_size_per_msg // 64)
    per_round = cfg.max_inflight_msgs * per_message
    rounds = -(-entries // per_round) + max(n.term for n in up)  # + backtracking, per term
    if cfg.snapshot_every:
        biggest = max(len(n.disk.live.snapshot().data) for n in up)
        rounds += -(-biggest // cfg.snapshot_chunk_size)
    trip = TICKS_PER_ROUND_TRIP
    if cfg.ready_hold:  # each end may hold the Ready that receives or sends a message
        trip += 2 * -(-cfg.ready_hold_max // TICK_UNITS)
    return trip * rounds


@dataclass(slots=True)
class RunStats:
    proposals: int = 0
    acked: int = 0
    forwarded: int = 0
    """Proposals made at followers (forwarded to the leader) ..."""
    forwarded_acked: int = 0
    """... and how many of those their follower saw applied."""
    reads_checked: int = 0
    leaders: int = 0
    max_term: int = 0
    commit: int = 0
    crashes: int = 0
    snapshots_installed: int = 0
    messages: int = 0
    conf_changes: int = 0
    transfers: int = 0
    strikes: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    liveness_ticks: int = -1
    liveness_bound: int = -1
    convergence_ticks: int = -1
    convergence_bound: int = -1


@dataclass(slots=True)
class ScenarioResult:
    seed: int
    nodes: int
    steps: int
    ok: bool
    flavour: Flavour = Flavour.MIXED
    flavour_forced: bool = False
    storage: StorageKind = StorageKind.DURABLE
    rule: str = ""
    """The violated rule's name (``Rule``), or ``ERROR`` for an exception in the harness."""
    message: str = ""
    trace_hash: int = 0
    ticks: int = 0
    elapsed: float = 0.0
    stats: RunStats = field(default_factory=RunStats)
    recent: list[str] = field(default_factory=list)
    """The last events before a failure."""
    state: str = ""
    """Every node's state at the end (or at the failure)."""
    trace: list[str] | None = None

    @property
    def command(self) -> str:
        return reproduce_command(self.seed, self.nodes, self.steps,
                                 self.flavour if self.flavour_forced else None, self.storage)

    def report(self) -> str:
        """A failure report: seed, rule, details, the command to replay it, recent events."""
        lines = [
            f"FAIL seed={self.seed} nodes={self.nodes} steps={self.steps} "
            f"({self.flavour.name.lower()}, {self.storage.value} storage): {self.message}",
            f"  reproduce: {self.command}",
            "  cluster at the failure:",
            *("    " + s for s in self.state.splitlines()),
            "  last events:",
            *("    " + s for s in self.recent),
        ]
        return "\n".join(lines)


def reproduce_command(seed: int, nodes: int, steps: int, flavour: Flavour | None = None,
                      storage: StorageKind = StorageKind.DURABLE) -> str:
    cmd = f"python -m confer.sim --seeds 1 --start {seed} --nodes {nodes} --steps {steps}"
    if flavour is not None:
        cmd += f" --flavour {flavour.name.lower()}"
    if storage is not StorageKind.DURABLE:
        cmd += f" --storage {storage.value}"
    return cmd


def run_scenario(seed: int, nodes: int | None = None, steps: int = DEFAULT_STEPS, *,
                 flavour: Flavour | None = None, trace: bool = False,
                 storage: StorageKind = StorageKind.DURABLE,
                 payload: Callable[[int], bytes] | None = None,
                 check: Callable[[Cluster, Chaos], None] | None = None) -> ScenarioResult:
    """Run the scenario of ``seed``. Never raises for a failure: see ``ScenarioResult.ok``.

    ``nodes``, ``flavour`` and ``storage`` override what the seed draws (see
    ``Scenario.generate``). ``payload(n)``: the clients' n-th command (default ``w<n>``),
    unique per ``n``. ``check``: more checks of the cluster once it converged (an
    application's, see confer.replicated.simulate), raising InvariantViolation."""
    sc = Scenario.generate(seed, nodes, steps, flavour, storage)
    started = time.perf_counter()
    c = Cluster(sc.cluster, sc.cluster_seed, trace=trace)
    chaos = Chaos(sc, c, payload)
    res = ScenarioResult(seed, sc.nodes, steps, ok=True, flavour=sc.flavour,
                         flavour_forced=flavour is not None, storage=storage)
    try:
        chaos.attach()
        c.run_ticks(steps)
        chaos.heal_all()
        _check_liveness(c, sc, res.stats)
        if check is not None:
            check(c, chaos)
    except InvariantViolation as v:
        res.ok, res.rule, res.message = False, v.rule.name, str(v)
    except (Exception, PowerCut) as exc:  # a bug in the harness: report it like a violation
        res.ok, res.rule = False, "ERROR"
        res.message = f"ERROR: {exc!r}\n{traceback.format_exc()}"
    res.elapsed = time.perf_counter() - started
    res.ticks = c.ticks
    res.trace_hash = c.trace_hash
    res.trace = c.trace
    _fill_stats(res.stats, c, chaos)
    if not res.ok:
        res.recent = c.recent_events()
        res.state = c.describe()
    return res


def _check_liveness(c: Cluster, sc: Scenario, stats: RunStats) -> None:
    bound = liveness_bound(sc, c)
    start = c.ticks
    probe: Proposal | None = None
    n = 0
    while probe is None or not probe.acked:
        if c.ticks - start >= bound:
            raise InvariantViolation(
                Rule.LIVENESS,
                f"no proposal committed within {bound} ticks after healing "
                f"(leader now: {c.leader()}, last probe: {probe})",
            )
        lead = c.leader()
        stale = probe is None or probe.outcome in (Outcome.LOST, Outcome.UNKNOWN) or (
            probe.outcome is Outcome.PENDING and (probe.node != lead
                                                  or probe.term != c.node(lead).term)
        )
        if lead is not None and stale:
            n += 1
            with contextlib.suppress(ProposalDropped):
                probe = c.propose(lead, b"probe-%d" % n)
        c.run_ticks(1)
    stats.liveness_ticks = c.ticks - start
    stats.liveness_bound = bound

    bound2 = convergence_bound(sc, c)
    start = c.ticks
    target = probe.index

    def lagging() -> list[int]:
        members = c.members().members()
        return [nid for nid in sorted(members)
                if c.node(nid).state is NodeState.UP and c.node(nid).applied < target]

    if not c.run_until(lambda: not lagging(), bound2):
        raise InvariantViolation(
            Rule.LIVENESS,
            f"members {lagging()} did not apply index {target} within {bound2} ticks after a "
            "proposal committed",
        )
    stats.convergence_ticks = c.ticks - start
    stats.convergence_bound = bound2


def _fill_stats(stats: RunStats, c: Cluster, chaos: Chaos) -> None:
    chk = c.checker
    stats.proposals = chaos.stats.proposals
    stats.acked = len(chk.acked)
    stats.forwarded = len(chaos.stats.forwarded)
    stats.forwarded_acked = sum(p.acked for p in chaos.stats.forwarded)
    stats.reads_checked = chk.reads_checked
    stats.leaders = len(chk.leaders)
    stats.max_term = max(chk.leaders, default=0)
    stats.commit = chk.commit_hi
    stats.crashes = sum(n.disk.stats.crashes for n in c.nodes.values())
    stats.snapshots_installed = sum(n.snapshots_installed for n in c.nodes.values())
    stats.messages = c.net.stats.delivered
    stats.conf_changes = chaos.stats.conf_changes
    stats.transfers = chaos.stats.transfers
    stats.strikes = chaos.stats.strikes
    stats.faults = dict(chaos.stats.faults)
