"""Safety invariants, checked incrementally while the simulation runs.

The checker keeps a global record of what the cluster has said so far, and every observation
is compared against it in O(1) per entry, so it can run after every event:

- **Election safety**: at most one leader per term.
- **Log matching**: an (index, term) pair names one entry, always preceded by the same term;
  by induction, two logs that share an (index, term) share the whole prefix.
- **Leader completeness**: a new leader's log holds every entry committed in its term or before.
- **Committed entries are never lost**: no node ever accepts, from a leader at least as new as
  the commit, a different entry at a committed index; no node ever commits a different entry.
- **State machine safety**: every node applies the same entry and reaches the same state digest
  at each index, snapshots included.
- **Linearizable reads**: a ReadIndex read sees every write acknowledged before it was issued.

A broken invariant raises :class:`InvariantViolation` at once, with the rule and the details.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from confer.raft import ConfChange, ConfState, Entry, EntryType, ReadState, SnapshotMeta, StateRole
from confer.raft.core import Raft
from confer.raft.log import RaftLog
from confer.sim.fsm import EMPTY_DIGEST


class Rule(enum.Enum):
    ELECTION_SAFETY = "election safety: at most one leader per term"
    LOG_MATCHING = "log matching"
    LEADER_COMPLETENESS = "leader completeness"
    COMMITTED_LOST = "committed entries are never lost"
    STATE_MACHINE_SAFETY = "state machine safety"
    SNAPSHOT = "snapshots match the state they claim"
    LINEARIZABLE_READ = "linearizable reads"
    PROPOSAL = "a proposal's (index, term) names its own command"
    REAL_TIME_ORDER = "a write acknowledged before another was made precedes it in the log"
    APPLICATION = "the application's replicas agree (deterministic commands, snapshots)"
    LIVENESS = "liveness after faults heal"
    CORE_ERROR = "the core raised an unexpected exception"


class InvariantViolation(Exception):
    """A safety or liveness property failed. ``rule`` says which; the message has details."""

    def __init__(self, rule: Rule, detail: str) -> None:
        super().__init__(f"{rule.name}: {detail}")
        self.rule = rule
        self.detail = detail


@dataclass(slots=True)
class ReadRecord:
    node: int
    issued_at: int
    acked_before: int
    """How many writes had been acknowledged when the read was issued."""


def _describe(e: Entry) -> str:
    return f"(index {e.index}, term {e.term}, {e.type.name}, {e.data!r})"


class Checker:
    """Global history of the run; see the module docstring for the invariants."""

    def __init__(self) -> None:
        self.leaders: dict[int, int] = {}
        # (index, term) -> (term of the preceding entry or -1 if unknown, type, data)
        self._entries: dict[tuple[int, int], tuple[int, EntryType, bytes]] = {}
        # index -> (term, the term in which it was first reported committed)
        self.committed: dict[int, tuple[int, int]] = {}
        self.commit_hi = 0
        self.applied: list[Entry] = [Entry(0, 0)]
        self.digests: list[bytes] = [EMPTY_DIGEST]
        self.confs: list[tuple[int, ConfState]] = [(0, ConfState())]
        self.removed: dict[int, int] = {}
        """node -> index of the applied entry that removed it from the cluster."""
        self.acked: list[int] = []
        self._acked_max: list[int] = [0]
        self.reads: dict[bytes, ReadRecord] = {}
        self.reads_checked = 0

    # -- roles -----------------------------------------------------------------------------------
    def observe(self, node: int, raft: Raft) -> bool:
        """Call after every event that touched ``node``. True if it just became leader."""
        if raft.role != StateRole.LEADER:
            return False
        term = raft.term
        who = self.leaders.get(term)
        if who is None:
            self.leaders[term] = node
            self._check_new_leader(node, raft)
            return True
        if who != node:
            raise InvariantViolation(
                Rule.ELECTION_SAFETY, f"nodes {who} and {node} are both leader in term {term}"
            )
        return False

    def _check_new_leader(self, node: int, raft: Raft) -> None:
        log = raft.log
        first = log.first_index()
        last = log.last_index()
        for i in range(max(first - 1, 1), self.commit_hi + 1):
            c = self.committed.get(i)
            if c is None or c[1] > raft.term:
                continue  # committed in a later term than this leader's: not its to know
            if i > last or log.term(i) != c[0]:
                have = log.term(i) if i <= last else "nothing"
                raise InvariantViolation(
                    Rule.LEADER_COMPLETENESS,
                    f"node {node} became leader in term {raft.term} but its log has {have} at "
                    f"index {i}, where term {c[0]} was committed (reported in term {c[1]})",
                )

    # -- logs ------------------------------------------------------------------------------------
    def on_entries(self, node: int, log: RaftLog, entries: list[Entry]) -> None:
        """``entries`` were just appended to ``node``'s log (a Ready about to be persisted)."""
        first = entries[0].index
        prev = log.term(first - 1)
        if prev == 0 and first - 1 > 0:
            prev = -1  # compacted away: unknown
        known = self._entries
        committed = self.committed
        for e in entries:
            key = (e.index, e.term)
            rec = known.get(key)
            if rec is None:
                known[key] = (prev, e.type, e.data)
            else:
                if rec[1] != e.type or rec[2] != e.data:
                    raise InvariantViolation(
                        Rule.LOG_MATCHING,
                        f"node {node} holds {_describe(e)}, but another log holds "
                        f"{rec[1].name} {rec[2]!r} at the same index and term",
                    )
                if prev >= 0 and rec[0] >= 0 and rec[0] != prev:
                    raise InvariantViolation(
                        Rule.LOG_MATCHING,
                        f"node {node}: entry (index {e.index}, term {e.term}) follows term "
                        f"{prev}, but in another log it follows term {rec[0]}",
                    )
                if rec[0] < 0 <= prev:
                    known[key] = (prev, rec[1], rec[2])
            c = committed.get(e.index)
            if c is not None and e.term != c[0] and e.term >= c[1]:
                raise InvariantViolation(
                    Rule.COMMITTED_LOST,
                    f"node {node} accepted {_describe(e)} over the entry of term {c[0]} "
                    f"committed at that index (reported in term {c[1]})",
                )
            prev = e.term

    def on_commit(self, node: int, raft: Raft, old: int, new: int) -> None:
        """``node``'s commit index moved from ``old`` to ``new``."""
        log = raft.log
        committed = self.committed
        for i in range(max(old + 1, log.first_index() - 1), new + 1):
            t = log.term(i)
            if t == 0:
                continue
            c = committed.get(i)
            if c is None:
                committed[i] = (t, raft.term)
            elif c[0] != t:
                raise InvariantViolation(
                    Rule.COMMITTED_LOST,
                    f"node {node} (term {raft.term}) commits index {i} with term {t}, but term "
                    f"{c[0]} was committed there (reported in term {c[1]})",
                )
        if new > self.commit_hi:
            self.commit_hi = new

    # -- state machines --------------------------------------------------------------------------
    def on_apply(self, node: int, e: Entry, digest: bytes) -> None:
        i = e.index
        applied = self.applied
        if i < len(applied):
            a = applied[i]
            if a.term != e.term or a.data != e.data or a.type != e.type:
                raise InvariantViolation(
                    Rule.STATE_MACHINE_SAFETY,
                    f"node {node} applies {_describe(e)} where another node applied {_describe(a)}",
                )
            if self.digests[i] != digest:
                raise InvariantViolation(
                    Rule.STATE_MACHINE_SAFETY,
                    f"node {node} reaches a different state digest at index {i}",
                )
            return
        if i != len(applied):
            raise InvariantViolation(
                Rule.STATE_MACHINE_SAFETY,
                f"node {node} applies index {i} but no node has applied {len(applied)} yet",
            )
        c = self.committed.get(i)
        if c is None or c[0] != e.term:
            raise InvariantViolation(
                Rule.STATE_MACHINE_SAFETY,
                f"node {node} applies {_describe(e)}, which was never reported committed"
                + (f" (term {c[0]} was)" if c else ""),
            )
        applied.append(e)
        self.digests.append(digest)
        if e.type == EntryType.CONF_CHANGE:
            old = self.confs[-1][1]
            new = old.apply(ConfChange.decode(e.data))
            self.confs.append((i, new))
            for nid in old.members() - new.members():
                self.removed[nid] = i

    def conf_at(self, index: int) -> ConfState:
        """Membership after applying ``index`` (as far as any node has applied)."""
        for at, conf in reversed(self.confs):
            if at <= index:
                return conf
        return ConfState()

    def on_snapshot(self, node: int, meta: SnapshotMeta, digest: bytes, how: str) -> None:
        """``node`` created (or restored) a snapshot at ``meta.index`` whose state is ``digest``."""
        i = meta.index
        if i >= len(self.applied):
            raise InvariantViolation(
                Rule.SNAPSHOT, f"node {node} {how} a snapshot at {i}, past every applied index"
            )
        if self.applied[i].term != meta.term:
            raise InvariantViolation(
                Rule.SNAPSHOT,
                f"node {node} {how} a snapshot at {i} with term {meta.term}, "
                f"but the entry applied there has term {self.applied[i].term}",
            )
        if self.digests[i] != digest:
            raise InvariantViolation(
                Rule.SNAPSHOT, f"node {node} {how} a snapshot at {i} with the wrong state"
            )
        conf = self.conf_at(i)
        if meta.conf_state != conf:
            raise InvariantViolation(
                Rule.SNAPSHOT,
                f"node {node} {how} a snapshot at {i} recording membership {meta.conf_state}, "
                f"but the membership there is {conf}",
            )

    # -- client writes and reads -----------------------------------------------------------------
    def on_ack(self, index: int) -> None:
        """A write committed at ``index`` was acknowledged to its client."""
        self.acked.append(index)
        self._acked_max.append(max(self._acked_max[-1], index))

    def on_read_issued(self, ctx: bytes, node: int, now: int) -> None:
        self.reads[ctx] = ReadRecord(node, now, len(self.acked))

    def on_read_state(self, node: int, rs: ReadState) -> None:
        """A ReadState arrived; its index must already be committed somewhere."""
        if rs.context not in self.reads:
            raise InvariantViolation(
                Rule.LINEARIZABLE_READ, f"node {node} got a ReadState for unknown {rs.context!r}"
            )
        if rs.index > self.commit_hi:
            raise InvariantViolation(
                Rule.LINEARIZABLE_READ,
                f"node {node}: read {rs.context!r} at index {rs.index}, past every committed "
                f"index ({self.commit_hi})",
            )

    def on_read_served(self, node: int, rs: ReadState, applied: int) -> None:
        """``node`` has applied through ``rs.index`` and answers the read from its state."""
        rec = self.reads[rs.context]
        need = self._acked_max[rec.acked_before]
        self.reads_checked += 1
        if rs.index < need or applied < rs.index:
            raise InvariantViolation(
                Rule.LINEARIZABLE_READ,
                f"read {rs.context.decode()} issued at node {rec.node} (time {rec.issued_at}) is "
                f"served by node {node} at index {rs.index}, but a write acknowledged before it "
                f"was issued sits at index {need}",
            )
