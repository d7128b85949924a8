"""A simulated cluster: nodes, network, virtual clock and checker, driven by one seed.

Everything random (election timeouts, message delays, drops, which crash loses what) is drawn
from generators derived from the one seed, so the same seed replays the same run. The cluster
API is also what the readable scenario tests use::

    c = Cluster(ClusterConfig(nodes=3), seed=7)
    old = c.wait_for_leader()
    c.isolate(old)
    ...
"""

from __future__ import annotations

import functools
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from confer.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    EntryType,
    Message,
    NotLeader,
    StateRole,
    bootstrap,
)
from confer.sim.checker import Checker, InvariantViolation, Rule
from confer.sim.disk import DurableDisk, SimDisk, StorageKind
from confer.sim.events import TICK_UNITS, EventKind, EventQueue
from confer.sim.fs import PowerCut
from confer.sim.network import LinkConditions, Network
from confer.sim.node import (
    FORWARD_TIMEOUT_ELECTIONS,
    CrashPoint,
    CrashTrigger,
    NodeState,
    Outcome,
    Proposal,
    Read,
    SimNode,
)

MAX_READY_ROUNDS = 64


@dataclass(slots=True)
class ClusterConfig:
    """Shape of the cluster and tuning of every node's Raft core."""

    nodes: int = 3
    election_tick: int = 10
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    snapshot_chunk_size: int = 1 << 20
    snapshot_every: int = 0
    """Snapshot the application and compact the log every this many applied entries (0: never)."""
    forward_proposals: bool = True
    """Followers forward proposals to the leader (else they refuse them with NotLeader)."""
    link: LinkConditions = field(default_factory=LinkConditions)
    storage: StorageKind = StorageKind.DURABLE
    """The real DurableStorage on a simulated file system, or the model of storage."""
    segment_size: int = 4096
    """WAL segment size with durable storage: small, so that segments are cut and removed."""
    ready_hold: float = 0.0
    """Chance that a node's Ready, once it has one, waits up to ``ready_hold_max`` time units
    before it is handled: the node steps the messages (and ticks) arriving meanwhile into one
    Ready, as a real driver that batches does (e.g. a snapshot received but not yet persisted
    while later messages are stepped)."""
    ready_hold_max: int = TICK_UNITS
    tick_skew: bool = False
    """Each node ticks at its own offset within the tick (drawn from the seed), as the timers
    of real nodes do: their election timers are out of step by up to a tick. Off, every
    node ticks at the same instant."""

    def raft_config(self, node_id: int) -> Config:
        return Config(
            id=node_id,
            election_tick=self.election_tick,
            heartbeat_tick=self.heartbeat_tick,
            pre_vote=self.pre_vote,
            check_quorum=self.check_quorum,
            max_size_per_msg=self.max_size_per_msg,
            max_inflight_msgs=self.max_inflight_msgs,
            snapshot_chunk_size=self.snapshot_chunk_size,
            disable_proposal_forwarding=not self.forward_proposals,
        )


class NodeUnavailable(Exception):
    """The client's request hit a node that is down or paused."""


def _core_error(node: int, what: str, exc: Exception) -> InvariantViolation:
    return InvariantViolation(Rule.CORE_ERROR, f"node {node} {what}: {exc!r}")


class Cluster:
    """Nodes 1..n, bootstrapped together, on a simulated network and clock."""

    def __init__(self, config: ClusterConfig | None = None, seed: int = 0, *,
                 trace: bool = False) -> None:
        self.cfg = config or ClusterConfig()
        self.seed = seed
        root = random.Random(seed)
        self.rng = random.Random(root.getrandbits(64))
        """For the cluster's own choices (e.g. how many unsynced batches a crash keeps)."""
        net_rng = random.Random(root.getrandbits(64))
        self._node_seed = root.getrandbits(64)
        self._ready_rng = random.Random(root.getrandbits(64))
        self._held_ready: set[int] = set()
        """Nodes whose Ready waits (``ready_hold``) for a scheduled release."""
        self._released: set[int] = set()
        self._tick_offsets: dict[int, int] = {}
        self.queue = EventQueue()
        self.net = Network(net_rng, self.queue, replace(self.cfg.link))
        self.checker = Checker()
        self.nodes: dict[int, SimNode] = {}
        self.now = 0
        self.ticks = 0
        self.on_tick: Callable[[Cluster], None] | None = None
        self.on_new_leader: Callable[[int], None] | None = None
        """Called (inside the event loop) the moment a node is first seen leading a term."""
        self.trace: list[str] | None = [] if trace else None
        self.recent: deque[tuple[Any, ...]] = deque(maxlen=48)
        self.trace_hash = 0
        self._dirty: set[int] = set()
        self._next_ctx = 0
        voters = list(range(1, self.cfg.nodes + 1))
        for nid in voters:
            node = self._spawn(nid)
            bootstrap(node.disk, voters)
            node.start()
        self.queue.push(TICK_UNITS, EventKind.TICK)

    # -- nodes -----------------------------------------------------------------------------------
    def _rng_for(self, node_id: int, incarnation: int) -> random.Random:
        return random.Random(f"{self._node_seed}/{node_id}/{incarnation}")

    def _spawn(self, nid: int) -> SimNode:
        if nid in self.nodes:
            raise ValueError(f"node {nid} already exists")
        cfg = self.cfg
        disk: SimDisk | DurableDisk
        if cfg.storage is StorageKind.DURABLE:
            disk = DurableDisk(random.Random(f"{self._node_seed}/{nid}/fs"), cfg.segment_size)
        else:
            disk = SimDisk()
        node = SimNode(nid, cfg.raft_config(nid), self.checker, self._rng_for, disk,
                       cfg.snapshot_every)
        self.nodes[nid] = node
        return node

    def node(self, nid: int) -> SimNode:
        return self.nodes[nid]

    def up(self) -> list[int]:
        """Ids of the nodes that are running (paused ones included)."""
        return [nid for nid, n in self.nodes.items() if n.is_up]

    def leader(self) -> int | None:
        """The running, unpaused node that is leader in the highest term, if any."""
        best: tuple[int, int] | None = None
        for nid, n in self.nodes.items():
            if n.is_up and not n.paused and n.role == StateRole.LEADER:
                cand = (n.term, nid)
                if best is None or cand > best:
                    best = cand
        return best[1] if best else None

    def members(self) -> ConfState:
        """The membership as of the latest entry any node has applied."""
        return self.checker.confs[-1][1]

    # -- running ---------------------------------------------------------------------------------
    def run_ticks(self, n: int = 1) -> None:
        """Advance the virtual clock by ``n`` ticks, handling every event on the way."""
        end = (self.ticks + n) * TICK_UNITS
        self._run_until_time(end)

    def run_units(self, n: int = 1) -> None:
        """Advance the virtual clock by ``n`` time units (a tick is ``TICK_UNITS``)."""
        self._run_until_time(self.now + n)

    def run_until(self, pred: Callable[[], bool], max_ticks: int) -> bool:
        """Tick until ``pred()`` holds (checked after every tick); False if it never did."""
        for _ in range(max_ticks):
            if pred():
                return True
            self.run_ticks(1)
        return pred()

    def wait_for_leader(self, max_ticks: int = 200) -> int:
        if not self.run_until(lambda: self.leader() is not None, max_ticks):
            raise AssertionError(f"no leader within {max_ticks} ticks")
        lead = self.leader()
        assert lead is not None
        return lead

    def wait_for(self, p: Proposal | Read, max_ticks: int = 200) -> None:
        """Tick until a proposal settles (acked or lost) or a read is served."""
        if isinstance(p, Read):
            ok = self.run_until(lambda: p.served, max_ticks)
        else:
            ok = self.run_until(lambda: p.outcome is not Outcome.PENDING, max_ticks)
        if not ok:
            raise AssertionError(f"{p} did not settle within {max_ticks} ticks")

    def _run_until_time(self, end: int) -> None:
        q = self.queue
        while True:
            t = q.next_time()
            if t is None or t > end:
                break
            self.now = t
            while q.next_time() == t:
                _, _, kind, a, b = q.pop()
                if kind == EventKind.DELIVER:
                    self._deliver(a, b)
                elif kind == EventKind.DELIVER_HELD:
                    self._deliver(a, b, held=True)
                elif kind == EventKind.TICK:
                    self._tick()
                else:
                    a()
            self._flush()
        self.now = end

    def _touch(self, node: SimNode) -> None:
        self._dirty.add(node.id)
        raw = node.raw
        if (raw is not None and self.checker.observe(node.id, raw.raft)
                and self.on_new_leader is not None):
            self.on_new_leader(node.id)

    def _tick(self) -> None:
        self.ticks += 1
        self.queue.push(self.now + TICK_UNITS, EventKind.TICK)
        if self.on_tick is not None:
            self.on_tick(self)
        if self.checker.removed:
            self._retire_removed()
        for node in self.nodes.values():
            if self.cfg.tick_skew:
                self.queue.call_at(self.now + self._tick_offset(node.id),
                                   functools.partial(self._tick_node, node))
            else:
                self._tick_node(node)

    def _tick_offset(self, nid: int) -> int:
        """Where in each tick node ``nid`` ticks (``tick_skew``): fixed per node and seed."""
        offset = self._tick_offsets.get(nid)
        if offset is None:
            offset = random.Random(f"{self._node_seed}/{nid}/tick").randrange(TICK_UNITS)
            self._tick_offsets[nid] = offset
        return offset

    def _tick_node(self, node: SimNode) -> None:
        if node.raw is None or node.paused:
            return
        if node.forwarded:
            node.now = self.now
            node.expire_forwarded(self.now,
                                  FORWARD_TIMEOUT_ELECTIONS * self.cfg.election_tick * TICK_UNITS)
        try:
            node.raw.tick()
        except InvariantViolation:
            raise
        except Exception as exc:
            raise _core_error(node.id, "ticking", exc) from exc
        self._touch(node)

    def _deliver(self, sender: int, m: Message, held: bool = False) -> None:
        node = self.nodes.get(m.to)
        if node is None or node.raw is None:
            return
        if not held and not self.net.can_deliver(sender, m.to):
            self.net.stats.blocked += 1
            return
        if node.paused:
            node.held.append((sender, m))
            return
        self.net.stats.delivered += 1
        self.trace_hash = hash((self.trace_hash, self.now, sender, m.to, int(m.type), m.term,
                                m.index, m.log_term, m.commit, len(m.entries), m.reject))
        self.recent.append((self.now, sender, m))
        if self.trace is not None:
            self.trace.append(f"{self.now:7d} {sender}->{m.to} {_fmt_msg(m)}")
        try:
            node.raw.step(m)
        except InvariantViolation:
            raise
        except Exception as exc:
            raise _core_error(m.to, f"stepping {_fmt_msg(m)} from {sender}", exc) from exc
        self._touch(node)

    def _send(self, sender: int, msgs: list[Message]) -> None:
        self.net.send(self.now, sender, msgs)

    def _flush(self) -> None:
        """Handle the Ready of every node touched since the last flush."""
        while self._dirty:
            dirty = self._dirty
            self._dirty = set()
            for nid in sorted(dirty) if len(dirty) > 1 else dirty:
                if not self._hold_ready(nid):
                    self._drain(self.nodes[nid])

    def _hold_ready(self, nid: int) -> bool:
        """Whether ``nid``'s Ready waits: it is held already, or a new hold is drawn now."""
        if nid in self._held_ready:
            return True
        if nid in self._released:  # its hold just ended: handle it now
            self._released.discard(nid)
            return False
        hold, raw = self.cfg.ready_hold, self.nodes[nid].raw
        if not hold or raw is None or not raw.has_ready() or self._ready_rng.random() >= hold:
            return False
        self._held_ready.add(nid)
        self.queue.call_at(self.now + self._ready_rng.randint(1, self.cfg.ready_hold_max),
                           lambda: self._release_ready(nid))
        return True

    def _release_ready(self, nid: int) -> None:
        self._held_ready.discard(nid)
        self._released.add(nid)
        self._dirty.add(nid)

    def _drain(self, node: SimNode) -> None:
        node.now = self.now
        for _ in range(MAX_READY_ROUNDS):
            raw = node.raw
            if raw is None or node.paused or not raw.has_ready():
                break
            try:
                ok = node.handle_ready(self._send)
            except PowerCut as cut:  # a crash in the middle of a file-system call
                node.crash()
                self._note(f"node {node.id} lost power in storage ({cut})")
                break
            except InvariantViolation:
                raise
            except Exception as exc:
                raise _core_error(node.id, "handling a Ready", exc) from exc
            if not ok:
                self._note(f"node {node.id} crashed inside a Ready")
                break
            if self.checker.observe(node.id, raw.raft) and self.on_new_leader is not None:
                self.on_new_leader(node.id)
            st = raw.raft
            self.trace_hash = hash((self.trace_hash, self.now, node.id, st.term, st.vote,
                                    st.log.committed, st.log.last_index(), node.fsm.index))
            if self.trace is not None:
                self.trace.append(
                    f"{self.now:7d} node {node.id}: {st.role.name} term {st.term} vote "
                    f"{st.vote} last {st.log.last_index()} commit {st.log.committed} "
                    f"applied {node.fsm.index}"
                )

    def _note(self, text: str) -> None:
        self.recent.append((self.now, text))
        if self.trace is not None:
            self.trace.append(f"{self.now:7d} -- {text}")

    # -- client requests -------------------------------------------------------------------------
    def _running(self, nid: int) -> SimNode:
        node = self.nodes.get(nid)
        if node is None or node.raw is None or node.paused:
            raise NodeUnavailable(f"node {nid} is not running")
        node.now = self.now
        return node

    def propose(self, nid: int, payload: bytes) -> Proposal:
        """Propose ``payload`` at node ``nid``; raises NotLeader (etc.) like the core does.

        A follower that knows the leader forwards the proposal: it is tracked by its payload
        (which must be unique) until the follower applies it, or gives up on it."""
        node = self._running(nid)
        assert node.raw is not None
        try:
            index, term = node.raw.propose(payload)
        finally:
            self._touch(node)
        p = Proposal(nid, index, term, payload, self.now, forwarded=index == 0)
        if p.forwarded:
            node.track_forwarded(p)
        else:
            node.track(p)
        return p

    def change_membership(self, cc: ConfChange, via: int | None = None) -> Proposal:
        """Propose a membership change at ``via`` (default: the current leader)."""
        nid = via if via is not None else self.leader()
        if nid is None:
            raise NotLeader(0)
        node = self._running(nid)
        assert node.raw is not None
        try:
            index, term = node.raw.propose_conf_change(cc)
        finally:
            self._touch(node)
        p = Proposal(nid, index, term, cc.encode(), self.now, EntryType.CONF_CHANGE)
        node.track(p)
        self._note(f"node {nid} proposes {cc.type.name} {cc.node_id} at {index}")
        return p

    def add_learner(self, nid: int, via: int | None = None) -> Proposal:
        """Start a new, empty node ``nid`` and propose it as a learner."""
        if nid not in self.nodes:
            self._spawn(nid).start()
        return self.change_membership(ConfChange(ConfChangeType.ADD_LEARNER, nid), via)

    def add_voter(self, nid: int, via: int | None = None) -> Proposal:
        """Start a new, empty node ``nid`` (unless it exists) and propose it as a voter."""
        if nid not in self.nodes:
            self._spawn(nid).start()
        return self.change_membership(ConfChange(ConfChangeType.ADD_VOTER, nid), via)

    def promote(self, nid: int, via: int | None = None) -> Proposal:
        return self.change_membership(ConfChange(ConfChangeType.ADD_VOTER, nid), via)

    def demote(self, nid: int, via: int | None = None) -> Proposal:
        return self.change_membership(ConfChange(ConfChangeType.ADD_LEARNER, nid), via)

    def remove(self, nid: int, via: int | None = None) -> Proposal:
        return self.change_membership(ConfChange(ConfChangeType.REMOVE, nid), via)

    def read(self, nid: int) -> Read:
        """Issue a linearizable read (ReadIndex) at node ``nid``."""
        node = self._running(nid)
        assert node.raw is not None
        self._next_ctx += 1
        ctx = b"read-%d" % self._next_ctx
        self.checker.on_read_issued(ctx, nid, self.now)
        try:
            node.raw.read_index(ctx)
        finally:
            self._touch(node)
        r = Read(ctx, nid, self.now)
        node.reads[ctx] = r
        return r

    def transfer_leader(self, target: int, via: int | None = None) -> None:
        nid = via if via is not None else self.leader()
        if nid is None:
            raise NotLeader(0)
        node = self._running(nid)
        assert node.raw is not None
        node.raw.transfer_leader(target)
        self._touch(node)
        self._note(f"transfer leadership to {target} via {nid}")

    # -- faults ----------------------------------------------------------------------------------
    def crash(self, nid: int, keep_unsynced: int = 0) -> None:
        """Crash ``nid`` now. Unsynced writes are lost, except (on the storage model) the
        first ``keep_unsynced`` batches, as if the disk had flushed them on its own (durable
        storage draws what its file system keeps instead)."""
        node = self.nodes[nid]
        if node.raw is None:
            return
        node.keep_on_crash = keep_unsynced
        node.crash()
        self._note(f"node {nid} crashed (kept {keep_unsynced} unsynced batches)")

    def crash_during_next_ready(self, nid: int, point: CrashPoint,
                                on: CrashTrigger = CrashTrigger.ANY) -> None:
        """Arrange for ``nid`` to crash at ``point`` while handling its next Ready (or the next
        one that matches ``on``)."""
        node = self.nodes[nid]
        node.crash_at, node.crash_on = point, on
        self._note(f"node {nid} will crash {point.value} in {on.value}")

    def crash_in_storage(self, nid: int, calls: int) -> None:
        """Arrange for ``nid`` to lose power in the middle of a file-system call: the one
        after its next ``calls`` changing ones, wherever that is (a WAL write or sync, a
        segment cut, a snapshot file, removing obsolete files, recovery after a restart).
        Only with durable storage."""
        disk = self.nodes[nid].disk
        if not isinstance(disk, DurableDisk):
            raise TypeError("crash_in_storage needs durable storage")
        disk.fs.cut_power_after(calls)
        self._note(f"node {nid} will lose power in its file-system call after {calls} more")

    def restart(self, nid: int) -> None:
        node = self.nodes[nid]
        if node.state is not NodeState.DOWN:
            return
        node.now = self.now
        try:
            node.start()
        except InvariantViolation:
            raise
        except Exception as exc:
            raise _core_error(nid, "restarting", exc) from exc
        self._touch(node)
        self._note(f"node {nid} restarted (incarnation {node.incarnation})")

    def _retire_removed(self) -> None:
        """The operator stops a removed node once the cluster can do without it: a majority of
        the new voters has durably recorded a commit index covering the removal, so they know
        the new membership and can elect a leader in it, even after crashes.

        Stopping it sooner can deadlock (a lone survivor that forgot the commit waits for the
        removed node's vote forever); never stopping it lets a removed node that missed its
        removal disrupt the cluster when PreVote and CheckQuorum are both off (thesis §4.2.3).
        """
        members = self.members()
        voters = members.voters
        for nid, at in self.checker.removed.items():
            node = self.nodes[nid]
            if node.state is NodeState.SHUT_DOWN or nid in members.members():
                continue
            knows = sum(1 for v in voters if self.nodes[v].disk.durable_commit >= at)
            if knows > len(voters) // 2:
                node.shut_down()
                self._note(f"node {nid} retired (removed at index {at})")

    def shut_down(self, nid: int) -> None:
        self.nodes[nid].shut_down()
        self._note(f"node {nid} shut down")

    def pause(self, nid: int) -> None:
        """Freeze ``nid`` (a long GC pause): no ticks, incoming messages wait."""
        node = self.nodes[nid]
        if node.raw is not None:
            node.paused = True
            self._note(f"node {nid} paused")

    def resume(self, nid: int) -> None:
        node = self.nodes[nid]
        if not node.paused:
            return
        node.paused = False
        held, node.held = node.held, []
        for sender, m in held:
            self.queue.push(self.now, EventKind.DELIVER, sender, m)
        self._note(f"node {nid} resumed ({len(held)} held messages)")

    def partition(self, *groups: list[int] | set[int] | tuple[int, ...]) -> int:
        self._note(f"partition {' | '.join(str(sorted(g)) for g in groups)}")
        return self.net.partition(*groups)

    def isolate(self, nid: int) -> int:
        others = [n for n in self.nodes if n != nid]
        return self.partition([nid], others)

    def one_way(self, frm: list[int] | set[int], to: list[int] | set[int]) -> int:
        self._note(f"one-way cut {sorted(frm)} -> {sorted(to)}")
        return self.net.one_way(frm, to)

    def unblock(self, rule: int) -> None:
        self.net.unblock(rule)
        self._note(f"partition rule {rule} healed")

    def heal_network(self) -> None:
        self.net.heal()
        self._note("network healed")

    # -- reporting -------------------------------------------------------------------------------
    def recent_events(self) -> list[str]:
        out = []
        for ev in self.recent:
            if len(ev) == 3:
                t, sender, m = ev
                out.append(f"{t:7d} {sender}->{m.to} {_fmt_msg(m)}")
            else:
                out.append(f"{ev[0]:7d} -- {ev[1]}")
        return out

    def describe(self) -> str:
        lines = []
        for nid, n in self.nodes.items():
            if n.raw is None:
                lines.append(f"node {nid}: {n.state.value}")
                continue
            st = n.raw.status()
            lines.append(
                f"node {nid}: {st.role.name}{' (paused)' if n.paused else ''} term {st.term} "
                f"lead {st.leader} last {st.last_index} commit {st.commit} applied "
                f"{n.fsm.index} first {st.first_index} voters {sorted(st.conf_state.voters)} "
                f"learners {sorted(st.conf_state.learners)}"
            )
        return "\n".join(lines)


def _fmt_msg(m: Message) -> str:
    s = f"{m.type.name} t{m.term} i{m.index} lt{m.log_term} c{m.commit}"
    if m.entries:
        s += f" ents[{m.entries[0].index}..{m.entries[-1].index}]"
    if m.reject:
        s += f" REJECT hint {m.reject_hint}"
    if m.snapshot is not None:
        s += f" snap@{m.snapshot.index} off {m.snap_offset} len {len(m.snap_data)}"
        if m.snap_done:
            s += " done"
    if m.context:
        s += f" ctx {m.context!r}"
    return s
