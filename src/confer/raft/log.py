"""The Raft log as the core sees it: durable entries in storage, plus an unstable tail.

Entries the core has accepted but the driver has not yet persisted live in :class:`Unstable`.
They move to storage when the driver acknowledges a Ready (``stable_to``).
"""

from __future__ import annotations

from confer.raft.errors import CompactedError, UnavailableError
from confer.raft.storage import LogStorage, limit_size
from confer.raft.types import Entry, Snapshot


class Unstable:
    """Entries and an incoming snapshot not yet persisted. ``offset`` is the index of
    ``entries[0]``."""

    __slots__ = ("entries", "offset", "snapshot")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        return self.snapshot.meta.index + 1 if self.snapshot is not None else None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.meta.index
        return None

    def maybe_term(self, index: int) -> int | None:
        if index < self.offset:
            if self.snapshot is not None and self.snapshot.meta.index == index:
                return self.snapshot.meta.term
            return None
        i = index - self.offset
        if i < len(self.entries):
            return self.entries[i].term
        return None

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to ``index`` (with ``term``) are now durable; forget them."""
        t = self.maybe_term(index)
        if t is None or t != term or index < self.offset:
            # The entry was replaced by a newer append meanwhile; keep the newer ones.
            return
        del self.entries[: index + 1 - self.offset]
        self.offset = index + 1

    def stable_snap_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.meta.index == index:
            self.snapshot = None

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.meta.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, ents: list[Entry]) -> None:
        after = ents[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(ents)
        elif after <= self.offset:
            # Replaces everything unstable; storage will truncate on append too.
            self.offset = after
            self.entries = list(ents)
        else:
            del self.entries[after - self.offset :]
            self.entries.extend(ents)


class RaftLog:
    """Combines storage and the unstable tail into one log, and tracks commit/applied."""

    def __init__(self, storage: LogStorage) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        self.committed = first - 1
        self.applied = first - 1
        # Highest index handed to the driver for applying but not yet acknowledged.
        self.applying = first - 1

    # -- indexes and terms -------------------------------------------------------------------
    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        i = self.unstable.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def last_term(self) -> int:
        return self.term(self.last_index())

    def term(self, index: int) -> int:
        """Term at ``index``; 0 if the index is compacted or past the end."""
        t = self.unstable.maybe_term(index)
        if t is not None:
            return t
        dummy = self.first_index() - 1
        if index < dummy or index > self.last_index():
            return 0
        try:
            return self.storage.term(index)
        except (CompactedError, UnavailableError):
            return 0

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term and (term != 0 or index == 0)

    def is_up_to_date(self, last_index: int, term: int) -> bool:
        """Election restriction (§5.4.1): is a candidate's log at least as up to date?"""
        my_term = self.last_term()
        return term > my_term or (term == my_term and last_index >= self.last_index())

    # -- appending -----------------------------------------------------------------------------
    def append(self, ents: list[Entry]) -> int:
        if not ents:
            return self.last_index()
        if ents[0].index - 1 < self.committed:
            raise AssertionError(
                f"append at {ents[0].index} would overwrite committed index {self.committed}"
            )
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def maybe_append(
        self, prev_index: int, prev_term: int, committed: int, ents: list[Entry]
    ) -> int | None:
        """Follower side of AppendEntries. Returns the last new index, or None on mismatch."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(ents)
        conflict = self.find_conflict(ents)
        if conflict:
            if conflict <= self.committed:
                raise AssertionError(
                    f"entry {conflict} conflicts with committed entry (commit {self.committed})"
                )
            self.append(ents[conflict - ents[0].index :])
        self.commit_to(min(committed, last_new))
        return last_new

    def find_conflict(self, ents: list[Entry]) -> int:
        """Index of the first entry that is new or conflicts with the log; 0 if none."""
        last = self.last_index()
        for e in ents:
            if e.index > last or not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= ``index`` whose term is <= ``term``, and that term.

        Used for fast backtracking: everything after it surely conflicts.
        """
        first = self.first_index()
        while index >= first - 1:
            t = self.term(index)
            if t <= term or index < first:
                return index, t
            index -= 1
        return index, 0

    # -- commit and apply --------------------------------------------------------------------
    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise AssertionError(
                    f"commit {index} is past the last index {self.last_index()}"
                )
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """Leader: commit ``index`` only if its entry is from the current ``term`` (§5.4.2)."""
        if index > self.committed and self.term(index) == term:
            self.commit_to(index)
            return True
        return False

    def has_next_committed(self) -> bool:
        return self.committed > max(self.applying, self.first_index() - 1)

    def next_committed_entries(self, max_bytes: int | None) -> list[Entry]:
        lo = max(self.applying + 1, self.first_index())
        if self.committed < lo:
            return []
        return self.slice(lo, self.committed + 1, max_bytes)

    def applied_to(self, index: int) -> None:
        self.applied = max(self.applied, index)
        self.applying = max(self.applying, index)

    # -- reading --------------------------------------------------------------------------------
    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries in ``[lo, hi)``; raises CompactedError if ``lo`` is compacted."""
        if lo >= hi:
            return []
        first = self.first_index()
        if lo < first:
            raise CompactedError(f"index {lo} is compacted (first index {first})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"slice [{lo}, {hi}) past last index {self.last_index()}")
        ents: list[Entry] = []
        u_off = self.unstable.offset
        if lo < u_off:
            ents = self.storage.entries(lo, min(hi, u_off), max_bytes)
            if len(ents) < min(hi, u_off) - lo:
                return ents  # hit the size limit
        if hi > u_off:
            unstable = self.unstable.entries[max(lo, u_off) - u_off : hi - u_off]
            ents = ents + unstable if ents else list(unstable)
        return limit_size(ents, max_bytes)

    def entries_from(self, index: int, max_bytes: int | None) -> list[Entry]:
        if index > self.last_index():
            return []
        return self.slice(index, self.last_index() + 1, max_bytes)

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def restore(self, snap: Snapshot) -> None:
        self.committed = snap.meta.index
        self.unstable.restore(snap)
