"""Randomized scenarios: what one seed means.

A :class:`Scenario` is drawn from the seed: the cluster's shape and tuning (election timeouts,
message size limits, snapshot interval and chunk size, ...), the network's behaviour, the
client workload and the fault rates. Seeds come in two flavours:

- ``MIXED``: every kind of fault at a moderate rate, with membership changes and transfers;
- ``CHURN``: leaders are struck (isolated or crashed) soon after they are elected, all run
  long, with one entry per message, so that many short terms leave diverging log suffixes
  behind (the histories of the Raft paper's Figure 8), and crashes aim at the Readies that
  grant votes or acknowledge appends.

:class:`Chaos` acts on the cluster once per tick: clients propose and read, membership changes
and leadership transfers are requested, and faults are injected and later healed.
:meth:`Chaos.heal_all` ends the chaos.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from confer.raft import ProposalDropped, StateRole
from confer.sim.cluster import Cluster, ClusterConfig, NodeUnavailable
from confer.sim.disk import DurableDisk, StorageKind
from confer.sim.events import TICK_UNITS
from confer.sim.network import LinkConditions
from confer.sim.node import CrashPoint, CrashTrigger, NodeState, Proposal

DEFAULT_STEPS = 200
"""Ticks of chaos per scenario (the CLI's ``--steps``)."""


class Flavour(enum.Enum):
    MIXED = "mixed faults, membership changes and transfers"
    CHURN = "leader churn: strike every new leader soon after its election"


class Fault(enum.Enum):
    PARTITION = "symmetric partition"
    ISOLATE_LEADER = "isolate the leader"
    ONE_WAY = "asymmetric (one-way) partition"
    CRASH = "crash and later restart"
    CRASH_IN_READY = "crash inside a Ready, then restart"
    PAUSE = "pause a node"
    LOSSY = "a burst of drops, duplicates and reordering"
    LEADER_CHURN = "for a while, isolate or crash every new leader soon after it is elected"


@dataclass(frozen=True, slots=True)
class Workload:
    """Rates are per tick."""

    propose_rate: float = 1.0
    read_rate: float = 0.3
    conf_change_rate: float = 0.03
    transfer_rate: float = 0.02
    to_leader: float = 0.8
    """Share of client requests sent to the current leader (the rest go to a random node: a
    follower forwards a proposal to the leader it knows, and a read's ReadIndex)."""


@dataclass(frozen=True, slots=True)
class Faults:
    rate: float = 0.06
    """Chance per tick that a new fault starts."""
    weights: tuple[tuple[Fault, float], ...] = tuple((f, 1.0) for f in Fault)
    max_duration: int = 30
    """Longest fault, in ticks."""
    max_down: int = 1
    """At most this many nodes crashed at once."""
    keep_unsynced: float = 0.3
    """Chance that a crash keeps some unsynced batches (the disk flushed them by itself)."""
    churn_all_along: bool = False
    """Leader churn for the whole chaos phase, not only as an occasional fault."""
    min_voters: int = 2
    max_extra_nodes: int = 3
    """How many new node ids membership changes may introduce."""


@dataclass(frozen=True, slots=True)
class Scenario:
    seed: int
    nodes: int
    steps: int
    flavour: Flavour
    cluster: ClusterConfig
    workload: Workload
    faults: Faults
    cluster_seed: int
    chaos_seed: int

    @property
    def durable(self) -> bool:
        return self.cluster.storage is StorageKind.DURABLE

    @classmethod
    def generate(cls, seed: int, nodes: int | None = None, steps: int = DEFAULT_STEPS,
                 flavour: Flavour | None = None,
                 storage: StorageKind = StorageKind.DURABLE) -> Scenario:
        """Everything about the run, drawn from ``random.Random(seed)``. ``nodes`` and
        ``flavour`` override the drawn values without changing any other draw; so does
        ``storage`` (durable storage draws its own settings last): a seed draws the same
        cluster, workload and faults on the model of storage and on the real one."""
        rng = random.Random(seed)
        # Even voter counts too: a quorum of 2 of 2 or 3 of 4 breaks rules that odd ones hide.
        drawn_nodes = rng.choice((2, 3, 3, 4, 5))
        drawn_flavour = Flavour.CHURN if rng.random() < 0.3 else Flavour.MIXED
        n = nodes if nodes is not None else drawn_nodes
        fl = flavour if flavour is not None else drawn_flavour
        draw = _draw_churn if fl is Flavour.CHURN else _draw_mixed
        cluster, workload, faults = draw(rng, n)
        cluster_seed, chaos_seed = rng.getrandbits(64), rng.getrandbits(64)
        if storage is StorageKind.DURABLE:
            # Small segments, so that cutting and deleting them happens (and crashes in it).
            cluster = replace(cluster, segment_size=rng.choice((512, 4096, 1 << 20)))
        cluster = replace(cluster, storage=storage)
        return cls(seed, n, steps, fl, cluster, workload, faults, cluster_seed, chaos_seed)


def _draw_mixed(rng: random.Random, n: int) -> tuple[ClusterConfig, Workload, Faults]:
    election = rng.choice((5, 8, 10, 10, 15))
    link = LinkConditions(
        drop=rng.choice((0.0, 0.01, 0.03, 0.1)),
        duplicate=rng.choice((0.0, 0.01, 0.05)),
        min_delay=1,
        max_delay=rng.choice((2, 4, 8)),
        slow=rng.choice((0.0, 0.01, 0.05)),
        slow_delay=rng.choice((2, 5)) * election * TICK_UNITS // 2,
        hold=rng.choice((0.0, 0.2, 0.5)),
        hold_delay=election * TICK_UNITS,
    )
    cluster = ClusterConfig(
        nodes=n,
        election_tick=election,
        heartbeat_tick=rng.choice((1, 2, 3)),
        pre_vote=rng.random() < 0.8,
        check_quorum=rng.random() < 0.8,
        max_size_per_msg=rng.choice((1, 200, 1 << 20)),
        max_inflight_msgs=rng.choice((1, 4, 256)),
        snapshot_every=rng.choice((0, 4, 10, 30)),
        snapshot_chunk_size=rng.choice((32, 256, 1 << 20)),
        link=link,
        ready_hold=rng.choice((0.0, 0.3, 0.7)),
        ready_hold_max=rng.choice((TICK_UNITS // 2, TICK_UNITS, 2 * TICK_UNITS)),
    )
    workload = Workload(
        propose_rate=rng.choice((0.3, 1.0, 2.0)),
        read_rate=rng.choice((0.0, 0.3, 1.0)),
        conf_change_rate=rng.choice((0.0, 0.03, 0.08)),
        transfer_rate=rng.choice((0.0, 0.02, 0.05)),
        to_leader=rng.choice((0.5, 0.8, 0.95)),
    )
    weights = tuple((f, rng.choice((0.0, 1.0, 1.0, 3.0))) for f in Fault)
    if not any(w for _, w in weights):
        weights = tuple((f, 1.0) for f in Fault)
    faults = Faults(
        rate=rng.choice((0.02, 0.05, 0.1)),
        weights=weights,
        max_duration=rng.choice((1, 2, 3)) * election,
        max_down=rng.choice(((n - 1) // 2, (n - 1) // 2, n)),
        keep_unsynced=rng.choice((0.0, 0.3)),
        min_voters=rng.choice((1, 2, 3, 3)),
    )
    return cluster, workload, faults


def _draw_churn(rng: random.Random, n: int) -> tuple[ClusterConfig, Workload, Faults]:
    election = rng.choice((5, 8, 10))
    link = LinkConditions(
        drop=rng.choice((0.0, 0.01)),
        duplicate=rng.choice((0.0, 0.01)),
        min_delay=1,
        max_delay=rng.choice((4, 8)),
        slow=rng.choice((0.0, 0.01)),
        slow_delay=election * TICK_UNITS,
        hold=rng.choice((0.0, 0.2, 0.5)),
        hold_delay=election * TICK_UNITS,
    )
    cluster = ClusterConfig(
        nodes=n,
        election_tick=election,
        heartbeat_tick=rng.choice((1, 2)),
        pre_vote=rng.random() < 0.5,
        check_quorum=rng.random() < 0.5,
        max_size_per_msg=rng.choice((1, 1, 64)),
        max_inflight_msgs=rng.choice((1, 2)),
        snapshot_every=rng.choice((0, 3, 10, 30)),
        snapshot_chunk_size=rng.choice((32, 256)),
        link=link,
        ready_hold=rng.choice((0.0, 0.3, 0.7)),
        ready_hold_max=rng.choice((TICK_UNITS // 2, TICK_UNITS, 2 * TICK_UNITS)),
    )
    workload = Workload(
        propose_rate=rng.choice((1.0, 2.0)),
        read_rate=rng.choice((0.3, 1.0)),
        conf_change_rate=rng.choice((0.0, 0.0, 0.02)),
        transfer_rate=rng.choice((0.0, 0.02)),
        to_leader=rng.choice((0.8, 0.95)),
    )
    heavy = {Fault.ISOLATE_LEADER: 2.0, Fault.CRASH_IN_READY: 2.0, Fault.LOSSY: 0.0,
             Fault.LEADER_CHURN: 0.0}
    faults = Faults(
        rate=0.05,
        weights=tuple((f, heavy.get(f, 1.0)) for f in Fault),
        max_duration=2 * election,
        max_down=n,
        keep_unsynced=rng.choice((0.0, 0.3)),
        churn_all_along=True,
        min_voters=3,
    )
    return cluster, workload, faults


@dataclass(slots=True)
class ChaosStats:
    proposals: int = 0
    forwarded: list[Proposal] = field(default_factory=list)
    """Proposals made at a follower, which forwarded them to the leader."""
    made: list[Proposal] = field(default_factory=list)
    """Every proposal the clients made (forwarded or not), for checks of their order."""
    rejected: int = 0
    reads: int = 0
    conf_changes: int = 0
    transfers: int = 0
    strikes: int = 0
    faults: dict[str, int] = field(default_factory=dict)


class Chaos:
    """Clients and a nemesis, acting on the cluster once per tick (and, during leader churn,
    the moment a new leader appears)."""

    def __init__(self, scenario: Scenario, cluster: Cluster,
                 payload: Callable[[int], bytes] | None = None) -> None:
        self.sc = scenario
        self.c = cluster
        self._payload = payload or _payload
        """The clients' n-th command (unique: forwarded proposals are tracked by payload)."""
        self.rng = random.Random(scenario.chaos_seed)
        self.stats = ChaosStats()
        self.healed = False
        self._payloads = 0
        self._next_id = scenario.nodes + 1
        self._lossy = 0
        self._churn_until = scenario.steps if scenario.faults.churn_all_along else -1
        self._base_link = replace(cluster.net.conditions)
        kinds, weights = zip(*scenario.faults.weights, strict=True)
        self._fault_kinds: tuple[Fault, ...] = kinds
        self._fault_weights: tuple[float, ...] = weights

    def attach(self) -> None:
        self.c.on_tick = self.on_tick
        self.c.on_new_leader = self.on_new_leader

    def detach(self) -> None:
        self.c.on_tick = self.c.on_new_leader = None

    # -- per tick --------------------------------------------------------------------------------
    def on_tick(self, cluster: Cluster) -> None:
        rng = self.rng
        w = self.sc.workload
        for _ in range(self._count(w.propose_rate)):
            self._propose()
        for _ in range(self._count(w.read_rate)):
            self._read()
        if rng.random() < w.conf_change_rate:
            self._change_membership()
        if rng.random() < w.transfer_rate:
            self._transfer()
        if rng.random() < self.sc.faults.rate:
            self._inject()
        if cluster.ticks <= self._churn_until and rng.random() < 0.1:
            lead = cluster.leader()
            if lead is not None:  # a leader that survived its election gets struck later on
                self._strike_at(lead, rng.randint(0, TICK_UNITS - 1))

    def _count(self, rate: float) -> int:
        """A small random count with mean ``rate``."""
        whole = int(rate)
        return whole + (self.rng.random() < rate - whole)

    def _target(self) -> int | None:
        lead = self.c.leader()
        if lead is not None and self.rng.random() < self.sc.workload.to_leader:
            # A client that has not heard of the newest leader yet talks to a deposed one that
            # does not know it either.
            leaders = [n for n in self._running() if self.c.node(n).role is StateRole.LEADER]
            return self.rng.choice(leaders) if len(leaders) > 1 else lead
        up = self._running()
        return self.rng.choice(up) if up else None

    def _running(self) -> list[int]:
        return [nid for nid in self.c.up() if not self.c.node(nid).paused]

    def _propose(self) -> None:
        nid = self._target()
        if nid is None:
            return
        self._payloads += 1
        try:
            p = self.c.propose(nid, self._payload(self._payloads))
            self.stats.proposals += 1
            self.stats.made.append(p)
            if p.forwarded:
                self.stats.forwarded.append(p)
        except (ProposalDropped, NodeUnavailable):
            self.stats.rejected += 1

    def _read(self) -> None:
        nid = self._target()
        if nid is None:
            return
        try:
            self.c.read(nid)
            self.stats.reads += 1
        except (ProposalDropped, NodeUnavailable):
            self.stats.rejected += 1

    def _change_membership(self) -> None:
        c, rng = self.c, self.rng
        lead = c.leader()
        if lead is None:
            return
        conf = c.node(lead).raw.status().conf_state  # type: ignore[union-attr]  # leader: up
        voters, learners = sorted(conf.voters), sorted(conf.learners)
        f = self.sc.faults
        options: list[tuple[str, int]] = []
        if self._next_id <= self.sc.nodes + f.max_extra_nodes:
            options += [("add_learner", self._next_id), ("add_voter", self._next_id)]
        options += [("promote", n) for n in learners]
        options += [("remove", n) for n in learners]
        if len(voters) > f.min_voters:
            options += [("remove", n) for n in voters]
            options += [("demote", n) for n in voters]
        if not options:
            return
        op, nid = rng.choice(options)
        if op in ("add_learner", "add_voter"):
            self._next_id += 1
        try:
            getattr(c, op)(nid, via=lead)
            self.stats.conf_changes += 1
        except (ProposalDropped, NodeUnavailable, ValueError):
            self.stats.rejected += 1

    def _transfer(self) -> None:
        c, rng = self.c, self.rng
        lead = c.leader()
        if lead is None:
            return
        conf = c.node(lead).raw.status().conf_state  # type: ignore[union-attr]  # leader: up
        targets = sorted(conf.voters - {lead})
        if not targets:
            return
        via = lead if rng.random() < 0.8 else rng.choice(self._running())
        try:
            c.transfer_leader(rng.choice(targets), via=via)
            self.stats.transfers += 1
        except (ProposalDropped, NodeUnavailable):
            self.stats.rejected += 1

    # -- faults ----------------------------------------------------------------------------------
    def _inject(self) -> None:
        c, rng = self.c, self.rng
        kind = rng.choices(self._fault_kinds, self._fault_weights)[0]
        duration = rng.randint(1, self.sc.faults.max_duration)
        alive = [nid for nid, n in c.nodes.items() if n.state is not NodeState.SHUT_DOWN]
        up = self._running()
        if len(alive) < 2 or not up:
            return
        self.stats.faults[kind.name] = self.stats.faults.get(kind.name, 0) + 1
        if kind is Fault.PARTITION:
            rng.shuffle(alive)
            cut = rng.randint(1, len(alive) - 1)
            rule = c.partition(sorted(alive[:cut]), sorted(alive[cut:]))
            self._later(duration, lambda: c.unblock(rule))
        elif kind is Fault.ISOLATE_LEADER:
            victim = c.leader() or rng.choice(up)
            rule = c.isolate(victim)
            self._later(duration, lambda: c.unblock(rule))
        elif kind is Fault.ONE_WAY:
            rng.shuffle(alive)
            cut = rng.randint(1, len(alive) - 1)
            frm, to = alive[:cut], alive[cut:]
            if rng.random() < 0.5:
                frm, to = to, frm
            rule = c.one_way(frm, to)
            self._later(duration, lambda: c.unblock(rule))
        elif kind in (Fault.CRASH, Fault.CRASH_IN_READY):
            lead = c.leader()
            victim = lead if lead is not None and rng.random() < 0.3 else rng.choice(up)
            self._crash(victim, duration, in_ready=kind is Fault.CRASH_IN_READY)
        elif kind is Fault.PAUSE:
            victim = rng.choice(up)
            c.pause(victim)
            self._later(duration, lambda: c.resume(victim))
        elif kind is Fault.LEADER_CHURN:
            self._churn_until = max(self._churn_until, c.ticks + duration)
        else:
            self._lossy += 1
            c.net.conditions.drop = rng.choice((0.2, 0.5))
            c.net.conditions.duplicate = rng.choice((0.05, 0.2))
            c.net.conditions.slow = rng.choice((0.1, 0.3))  # and reordered
            self._later(duration, self._end_lossy)

    def _crash(self, victim: int, duration: int, in_ready: bool) -> None:
        """Crash ``victim`` (now, or inside a coming Ready), and restart it ``duration`` ticks
        later. Respects ``max_down``."""
        c, rng = self.c, self.rng
        down = sum(1 for n in c.nodes.values() if n.state is NodeState.DOWN)
        if down >= self.sc.faults.max_down:
            return
        if in_ready and self.sc.durable and rng.random() < 0.5:
            # Anywhere in the storage code, not only between the steps of a Ready.
            c.crash_in_storage(victim, rng.randint(0, 12))
        elif in_ready:
            on = rng.choice(list(CrashTrigger))
            c.crash_during_next_ready(victim, rng.choice(list(CrashPoint)), on)
        else:
            keep = rng.randint(1, 2) if rng.random() < self.sc.faults.keep_unsynced else 0
            c.crash(victim, keep)
        self._later(duration, lambda: self._restart(victim))

    def on_new_leader(self, lead: int) -> None:
        """During leader churn, strike a new leader either within a couple of time units of
        its election (racing its first appends, so its entries may reach nobody) or a little
        later (part-way through bringing a follower up to date, one round trip per batch)."""
        rng = self.rng
        if self.healed or self.c.ticks > self._churn_until or rng.random() < 0.3:
            return
        late = rng.random() < 0.5
        self._strike_at(lead, rng.randint(0, 3 * TICK_UNITS) if late else rng.randint(0, 2))

    def _strike_at(self, lead: int, delay: int) -> None:
        self.c.queue.call_at(self.c.now + delay, lambda: self._strike(lead))

    def _strike(self, lead: int) -> None:
        c, rng = self.c, self.rng
        if self.healed or c.node(lead).role is not StateRole.LEADER:
            return
        self.stats.strikes += 1
        # Past an election timeout, so that the others move on without it.
        duration = rng.randint(1, 3 * self.sc.cluster.election_tick)
        choice = rng.random()
        voters = [n for n in self._running() if n != lead]
        if choice < 0.35:
            self._crash(lead, duration, in_ready=choice >= 0.2)
        elif choice < 0.5 and voters:
            # A follower will crash right after it next grants a vote (the coming election).
            victim = rng.choice(voters)
            point = rng.choice((CrashPoint.BEFORE_SEND, CrashPoint.BEFORE_APPLY))
            c.crash_during_next_ready(victim, point, CrashTrigger.VOTE)
            self._later(duration, lambda: self._restart(victim))
            rule = c.isolate(lead)
            self._later(duration, lambda: c.unblock(rule))
        else:
            rule = c.isolate(lead)
            self._later(duration, lambda: c.unblock(rule))

    def _later(self, ticks: int, fn: Callable[[], None]) -> None:
        def run() -> None:
            if not self.healed:
                fn()

        self.c.queue.call_at(self.c.now + ticks * TICK_UNITS, run)

    def _restart(self, nid: int) -> None:
        node = self.c.node(nid)
        node.crash_at = None  # if a planned crash never struck, call it off
        if isinstance(node.disk, DurableDisk):
            node.disk.fs.disarm()
            if node.state is NodeState.DOWN and self.rng.random() < 0.25:
                self.c.crash_in_storage(nid, self.rng.randint(0, 2))  # during recovery
        self.c.restart(nid)

    def _end_lossy(self) -> None:
        self._lossy -= 1
        if not self._lossy:
            cond, base = self.c.net.conditions, self._base_link
            cond.drop, cond.duplicate, cond.slow = base.drop, base.duplicate, base.slow

    # -- the end ---------------------------------------------------------------------------------
    def background_load(self, cluster: Cluster) -> None:
        """After healing, clients keep writing (at most one write a tick) to the leader."""
        lead = cluster.leader()
        if lead is not None and self.rng.random() < min(1.0, self.sc.workload.propose_rate):
            self._payloads += 1
            try:
                self.stats.made.append(cluster.propose(lead, self._payload(self._payloads)))
            except (ProposalDropped, NodeUnavailable):
                self.stats.rejected += 1

    def heal_all(self) -> None:
        """Stop every fault: a calm network, every crashed node restarted, every paused node
        resumed. (Removed nodes keep being retired by the cluster as before.) Clients keep
        writing: see :meth:`background_load`."""
        c = self.c
        self.healed = True
        c.on_tick = self.background_load
        c.on_new_leader = None
        c.heal_network()
        cond = c.net.conditions
        cond.drop = cond.duplicate = cond.slow = cond.hold = 0.0
        for nid, node in c.nodes.items():
            node.crash_at = None
            if isinstance(node.disk, DurableDisk):
                node.disk.fs.disarm()
            if node.state is NodeState.DOWN:
                c.restart(nid)
            elif node.paused:
                c.resume(nid)


def _payload(n: int) -> bytes:
    return b"w%d" % n
