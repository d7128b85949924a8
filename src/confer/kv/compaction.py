"""Compaction: dropping the history at or below a revision, and the retention arithmetic."""

from __future__ import annotations

from bisect import bisect_right

from confer.kv.commands import Compact
from confer.kv.errors import CompactedError, ErrorCode, FutureRevisionError
from confer.kv.state import MOD, VERSION_OVERHEAD, StoreState
from confer.kv.types import CompactResult, ErrorResult


def retention_target(st: StoreState, keep_revisions: int) -> int | None:
    """The revision to compact to so that the last ``keep_revisions`` revisions stay
    readable, or None when that is already the case. The server proposes the
    ``Compact``; the store only does the arithmetic."""
    if keep_revisions < 0:
        raise ValueError("keep_revisions must be >= 0")
    target = st._rev - keep_revisions
    return target if target > st._compact else None


def apply_compact(st: StoreState, cmd: Compact) -> CompactResult | ErrorResult:
    """Compact to ``cmd.revision`` (after the last compaction, not after now)."""
    rev = cmd.revision
    if type(rev) is not int:
        return ErrorResult(ErrorCode.INVALID_ARGUMENT, "compact revision must be an integer",
                           st._rev)
    if rev <= st._compact:
        return ErrorResult.of(CompactedError(st._compact), st._rev)
    if rev > st._rev:
        return ErrorResult.of(FutureRevisionError(rev, st._rev), st._rev)
    _compact_to(st, rev)
    return CompactResult(st._rev)


def _compact_to(st: StoreState, rev: int) -> None:
    """Keep, of each key, its versions after ``rev`` and its latest version at or before
    ``rev`` unless that is a tombstone; drop the events of revisions up to ``rev``."""
    history = st._history
    settled = []
    for key in st._dirty:  # order is irrelevant: each key is trimmed on its own
        hist = history[key]
        if hist[0].mod_revision > rev:
            continue
        keep = bisect_right(hist, rev, key=MOD) - 1
        if hist[keep].version == 0:
            keep += 1
        if keep:
            st._size -= sum(len(kv.value) for kv in hist[:keep]) + keep * (
                len(key) + VERSION_OVERHEAD)
            del hist[:keep]
        if not hist:  # only a dead key's history can empty: a live key keeps its latest
            del history[key]
            st._dead.remove(key)
            settled.append(key)
        elif len(hist) == 1 and hist[0].version:
            settled.append(key)  # one live version: nothing left to compact
    st._dirty.difference_update(settled)
    del st._log[: rev - st._compact]
    st._compact = rev
    st._generation += 1
