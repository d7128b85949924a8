"""One simulated server: the real :class:`RawNode` over a simulated disk, plus its application.

:meth:`SimNode.handle_ready` is the driver loop's one place where the Ready order lives:
persist, sync, send, apply, advance (then maybe snapshot). A crash can be arranged to hit
between any two of those steps.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from confer.raft import (
    Config,
    Entry,
    EntryType,
    Message,
    MessageType,
    RawNode,
    ReadState,
    Ready,
    Snapshot,
    StateRole,
)
from confer.sim.checker import Checker, InvariantViolation, Rule
from confer.sim.disk import DurableDisk, SimDisk
from confer.sim.fsm import CommandLog, SnapshotCorrupt


class NodeState(enum.Enum):
    UP = "up"
    DOWN = "down"
    """Crashed; its disk keeps what was synced, and it may restart."""
    SHUT_DOWN = "shut down"
    """Removed from the cluster and stopped for good."""


class CrashPoint(enum.Enum):
    """Where, inside the handling of one Ready, a crash can strike."""

    BEFORE_SYNC = "after writing, before sync"
    """With durable storage: power fails in the middle of the sync (a torn write)."""
    BEFORE_SEND = "after sync, before sending"
    BEFORE_APPLY = "after sending, before applying"


class CrashTrigger(enum.Enum):
    """Which Ready a planned crash waits for: the moments where losing unsynced state hurts."""

    ANY = "the next Ready"
    VOTE = "a Ready that grants a vote"
    APPEND_ACK = "a Ready that acknowledges an append"
    ENTRIES = "a Ready that persists entries"

    def matches(self, rd: Ready) -> bool:
        if self is CrashTrigger.ANY:
            return True
        if self is CrashTrigger.ENTRIES:
            return bool(rd.entries)
        want = MessageType.VOTE_RESP if self is CrashTrigger.VOTE else MessageType.APP_RESP
        return any(m.type == want and not m.reject for m in rd.messages)


class Outcome(enum.Enum):
    PENDING = "pending"
    ACKED = "acked"
    """Applied by the proposing node at the proposal's (index, term): the client hears success.
    A forwarded proposal: applied by the proposing node, at whatever index."""
    LOST = "lost"
    """Another entry was applied at that index: the proposal did not commit."""
    UNKNOWN = "unknown"
    """The proposing node crashed (or skipped the index by a snapshot) first; or a forwarded
    proposal was not applied within :data:`FORWARD_TIMEOUT_ELECTIONS` election timeouts."""


FORWARD_TIMEOUT_ELECTIONS = 3
"""A follower gives up waiting for a forwarded proposal (outcome unknown) after this many
election timeouts: the leader may have dropped it, or lost it to a leader change."""


@dataclass(eq=False, slots=True)
class Proposal:
    node: int
    index: int
    """0 for a proposal forwarded to the leader, until it is applied."""
    term: int
    payload: bytes
    issued_at: int
    kind: EntryType = EntryType.NORMAL
    outcome: Outcome = Outcome.PENDING
    settled_at: int = -1
    forwarded: bool = False

    @property
    def acked(self) -> bool:
        return self.outcome is Outcome.ACKED


@dataclass(eq=False, slots=True)
class Read:
    ctx: bytes
    node: int
    issued_at: int
    index: int = -1
    """The read index, once the ReadState arrived."""
    served_at: int = -1
    """When the node had applied through ``index`` and answered."""

    @property
    def served(self) -> bool:
        return self.served_at >= 0


Send = Callable[[int, list[Message]], None]


class SimNode:
    """A server process. ``raw`` is None while the node is down."""

    def __init__(self, node_id: int, config: Config, checker: Checker,
                 rng_for: Callable[[int, int], random.Random], disk: SimDisk | DurableDisk,
                 snapshot_every: int = 0) -> None:
        self.id = node_id
        self.config = config
        self.checker = checker
        self.disk = disk
        self.snapshot_every = snapshot_every
        self._rng_for = rng_for
        self.state = NodeState.DOWN
        self.raw: RawNode | None = None
        self.fsm = CommandLog()
        self.incarnation = 0
        self.paused = False
        self.held: list[tuple[int, Message]] = []
        self.crash_at: CrashPoint | None = None
        self.crash_on = CrashTrigger.ANY
        self.keep_on_crash = 0
        self.proposals: dict[int, Proposal] = {}
        self.forwarded: dict[bytes, Proposal] = {}
        """Proposals forwarded to the leader, by payload (the workload's payloads are unique),
        as a server tracks them by request id."""
        self.reads: dict[bytes, Read] = {}
        self._waiting_reads: list[ReadState] = []
        self.commit_seen = 0
        self.now = 0
        self.snapshots_installed = 0

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Boot (or reboot) over whatever the disk kept."""
        self.disk.recover()
        self.incarnation += 1
        cfg = replace(self.config)
        self.raw = RawNode(cfg, self.disk.live, self._rng_for(self.id, self.incarnation))
        snap = self.disk.live.snapshot()
        self.fsm = CommandLog()
        if not snap.is_empty():
            self.fsm = self._restore_fsm(snap, "restarted from")
        raft = self.raw.raft
        self.commit_seen = raft.log.committed
        # What the disk says is committed must agree with what the cluster committed.
        self.checker.on_commit(self.id, raft, 0, self.commit_seen)
        self.state = NodeState.UP

    def crash(self) -> None:
        """Power off: unsynced writes are lost (on the storage model, but the first
        ``keep_on_crash`` batches; on durable storage, the file system keeps a random part)."""
        self.disk.crash(self.keep_on_crash)
        self.keep_on_crash = 0
        self.raw = None
        self.state = NodeState.DOWN
        self.paused = False
        self.held.clear()
        self.crash_at = None
        for p in [*self.proposals.values(), *self.forwarded.values()]:
            self._settle(p, Outcome.UNKNOWN)
        self.proposals.clear()
        self.forwarded.clear()
        self.reads.clear()
        self._waiting_reads.clear()

    def shut_down(self) -> None:
        if self.state is NodeState.UP:
            self.crash()
        self.state = NodeState.SHUT_DOWN

    @property
    def is_up(self) -> bool:
        return self.state is NodeState.UP

    # -- observation -----------------------------------------------------------------------------
    @property
    def role(self) -> StateRole | None:
        return self.raw.basic_status().role if self.raw is not None else None

    @property
    def term(self) -> int:
        return self.raw.term if self.raw is not None else 0

    @property
    def leader_id(self) -> int:
        return self.raw.basic_status().leader if self.raw is not None else 0

    @property
    def commit(self) -> int:
        return self.raw.basic_status().commit if self.raw is not None else 0

    @property
    def applied(self) -> int:
        return self.fsm.index

    @property
    def commands(self) -> list[bytes]:
        return [c for _, c in self.fsm.commands]

    # -- client requests -------------------------------------------------------------------------
    def track(self, p: Proposal) -> None:
        old = self.proposals.get(p.index)
        if old is not None:
            self._settle(old, Outcome.LOST)  # our own log replaced that index
        self.proposals[p.index] = p

    def track_forwarded(self, p: Proposal) -> None:
        self.forwarded[p.payload] = p

    def expire_forwarded(self, now: int, timeout: int) -> None:
        """Give up on forwarded proposals older than ``timeout`` time units."""
        for payload in [k for k, p in self.forwarded.items() if now - p.issued_at >= timeout]:
            self._settle(self.forwarded.pop(payload), Outcome.UNKNOWN)

    def _settle(self, p: Proposal, outcome: Outcome) -> None:
        p.outcome = outcome
        p.settled_at = self.now

    # -- the driver loop -------------------------------------------------------------------------
    def handle_ready(self, send: Send) -> bool:
        """Handle one Ready, in the order the core requires. Returns False if the node crashed
        part-way (see :class:`CrashPoint`)."""
        raw = self.raw
        assert raw is not None
        rd = raw.ready()
        raft = raw.raft
        chk = self.checker
        crash_at = self.crash_at if self.crash_at and self.crash_on.matches(rd) else None
        if rd.entries:
            chk.on_entries(self.id, raft.log, rd.entries)

        # 1. Persist the snapshot, the entries and the hard state (one atomic batch) ...
        disk = self.disk
        if rd.snapshot is not None:
            disk.apply_snapshot(rd.snapshot)
        disk.append(rd.entries)
        if rd.hard_state is not None:
            disk.set_hard_state(rd.hard_state)
        disk.end_batch()
        if crash_at is CrashPoint.BEFORE_SYNC:
            disk.interrupted_sync()
            self.crash()
            return False
        # ... and make them durable before anything that depends on them leaves the node.
        if rd.must_sync:
            disk.sync()
        if crash_at is CrashPoint.BEFORE_SEND:
            self.crash()
            return False
        # From here on the node may act on its commit index (tell others, apply), so that is
        # when the checker takes it as a claim. (Before the sync, a single voter's commit may
        # rest on its own unsynced entry, which a crash may yet take away: that is fine.)
        if rd.hard_state is not None and rd.hard_state.commit > self.commit_seen:
            chk.on_commit(self.id, raft, self.commit_seen, rd.hard_state.commit)
            self.commit_seen = rd.hard_state.commit

        # 2. Send.
        if rd.messages:
            send(self.id, rd.messages)
        if crash_at is CrashPoint.BEFORE_APPLY:
            self.crash()
            return False

        # 3. Apply: the snapshot first, then the committed entries; then answer reads.
        if rd.snapshot is not None:
            self._install(rd.snapshot)
        for e in rd.committed_entries:
            self._apply(e)
        for rs in rd.read_states:
            chk.on_read_state(self.id, rs)
            self._waiting_reads.append(rs)
        if self._waiting_reads:
            self._serve_reads()

        # 4. Tell the core it is all done.
        raw.advance(rd)

        # 5. Snapshot the application and compact the log every ``snapshot_every`` entries.
        if self.snapshot_every:
            self._maybe_snapshot()
        return True

    # -- applying --------------------------------------------------------------------------------
    def _apply(self, e: Entry) -> None:
        fsm = self.fsm
        if e.index != fsm.index + 1:
            raise InvariantViolation(
                Rule.STATE_MACHINE_SAFETY,
                f"node {self.id} is handed entry {e.index} to apply after {fsm.index}",
            )
        fsm.apply(e)
        self.checker.on_apply(self.id, e, fsm.digest)
        if self.forwarded and e.type == EntryType.NORMAL:
            fp = self.forwarded.pop(e.data, None)
            if fp is not None:  # ours, appended by the leader wherever it chose
                fp.index, fp.term = e.index, e.term
                self._settle(fp, Outcome.ACKED)
                self.checker.on_ack(e.index)
        p = self.proposals.pop(e.index, None)
        if p is not None:
            if e.term != p.term:
                self._settle(p, Outcome.LOST)
            elif e.data != p.payload or e.type != p.kind:
                raise InvariantViolation(
                    Rule.PROPOSAL,
                    f"node {self.id} proposed {p.payload!r} at (index {p.index}, term {p.term}) "
                    f"but applies {e.data!r} there",
                )
            else:
                self._settle(p, Outcome.ACKED)
                if p.kind == EntryType.NORMAL:
                    self.checker.on_ack(e.index)

    def _serve_reads(self) -> None:
        applied = self.fsm.index
        waiting = []
        for rs in self._waiting_reads:
            if rs.index > applied:
                waiting.append(rs)
                continue
            self.checker.on_read_served(self.id, rs, applied)
            read = self.reads.pop(rs.context, None)
            if read is not None:
                read.index = rs.index
                read.served_at = self.now
        self._waiting_reads = waiting

    # -- snapshots -------------------------------------------------------------------------------
    def _restore_fsm(self, snap: Snapshot, how: str) -> CommandLog:
        try:
            fsm = CommandLog.from_snapshot(snap.data)
        except SnapshotCorrupt as exc:
            raise InvariantViolation(Rule.SNAPSHOT, f"node {self.id} {how}: {exc}") from None
        if fsm.index != snap.meta.index:
            raise InvariantViolation(
                Rule.SNAPSHOT,
                f"node {self.id} {how} a snapshot whose metadata says index {snap.meta.index} "
                f"but whose contents stop at {fsm.index}",
            )
        self.checker.on_snapshot(self.id, snap.meta, fsm.digest, how)
        return fsm

    def _install(self, snap: Snapshot) -> None:
        self.fsm = self._restore_fsm(snap, "installed")
        self.snapshots_installed += 1
        for index in [i for i in self.proposals if i <= snap.meta.index]:
            self._settle(self.proposals.pop(index), Outcome.UNKNOWN)
        # A forwarded proposal may be inside the snapshot, or still to come: unknown.
        for p in self.forwarded.values():
            self._settle(p, Outcome.UNKNOWN)
        self.forwarded.clear()

    def _maybe_snapshot(self) -> None:
        index = self.fsm.index
        if index - self.disk.live.first_index() + 1 < self.snapshot_every:
            return
        raw = self.raw
        assert raw is not None
        disk = self.disk
        snap = disk.create_snapshot(index, raw.conf_state_at(index), self.fsm.snapshot_data())
        disk.compact(index)
        disk.sync()
        raw.compacted(index)
        self.checker.on_snapshot(self.id, snap.meta, self.fsm.digest, "created")
