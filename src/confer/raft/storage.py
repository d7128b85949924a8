"""The seam between the Raft core and durable storage.

The core only reads through :class:`LogStorage`; the driver writes (append, hard state,
snapshots) and syncs. :class:`MemoryStorage` is the in-memory twin; ``confer.storage``
provides the durable implementation on top of it.
"""

from __future__ import annotations

from typing import Protocol

from confer.raft.errors import CompactedError, UnavailableError
from confer.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta


class LogStorage(Protocol):
    """What the core reads: everything the driver has persisted."""

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state and the membership as of the latest snapshot."""
        ...

    def first_index(self) -> int:
        """Index of the first entry still in the log (snapshot index + 1)."""
        ...

    def last_index(self) -> int:
        """Index of the last entry in the log (snapshot index if the log is empty)."""
        ...

    def term(self, index: int) -> int:
        """Term of the entry at ``index``; valid for ``first_index()-1 .. last_index()``."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries in ``[lo, hi)``; at least one entry if any, then up to ``max_bytes``."""
        ...

    def snapshot(self) -> Snapshot:
        """The latest snapshot."""
        ...


class BootstrapTarget(Protocol):
    """What :func:`~confer.raft.rawnode.bootstrap` writes a new cluster's first entries to."""

    def last_index(self) -> int: ...

    def append(self, entries: list[Entry]) -> None: ...

    def set_hard_state(self, hs: HardState) -> None: ...

    def sync(self) -> None: ...


class WritableLogStorage(LogStorage, Protocol):
    """What the driver writes. ``sync`` makes every earlier write durable."""

    def append(self, entries: list[Entry]) -> None: ...

    def set_hard_state(self, hs: HardState) -> None: ...

    def apply_snapshot(self, snap: Snapshot) -> None: ...

    def save_snapshot_file(self, meta: SnapshotMeta, data: bytes) -> None:
        """Persist the data of a snapshot that :meth:`create_snapshot` will record with
        ``saved=meta``: the slow part of taking a snapshot, which the driver may run in a
        worker thread beside any other call (a sync included) until it is recorded."""
        ...

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes, *,
                        saved: SnapshotMeta | None = None) -> Snapshot:
        """Record a snapshot of the state machine as of ``index`` (the log is kept).
        ``saved``: :meth:`save_snapshot_file` already persisted ``data`` under that meta."""
        ...

    def compact(self, index: int, *, sync: bool = True) -> None:
        """Drop the entries up to ``index``, which a snapshot covers. With ``sync=False``
        making that durable (and deleting what it obsoletes) may wait for the next
        :meth:`sync`."""
        ...

    def sync(self) -> None: ...


class MemoryStorage:
    """An in-memory :class:`WritableLogStorage`. ``sync`` is a no-op.

    ``_ents[0]`` is a sentinel standing for the snapshot's last entry, so that
    ``term(snapshot index)`` works without a special case.
    """

    def __init__(self) -> None:
        self.hard_state = HardState()
        self._snapshot = Snapshot()
        self._ents: list[Entry] = [Entry(0, 0)]

    # -- reads -----------------------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.hard_state, self._snapshot.meta.conf_state

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def term(self, index: int) -> int:
        offset = self._ents[0].index
        if index < offset:
            raise CompactedError(f"index {index} is compacted (snapshot at {offset})")
        if index - offset >= len(self._ents):
            raise UnavailableError(f"index {index} is past the last index {self.last_index()}")
        return self._ents[index - offset].term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise CompactedError(f"index {lo} is compacted (snapshot at {offset})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"index {hi - 1} is past the last index {self.last_index()}")
        ents = self._ents[lo - offset : hi - offset]
        return limit_size(ents, max_bytes)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- writes ----------------------------------------------------------------------------
    def set_hard_state(self, hs: HardState) -> None:
        self.hard_state = hs

    def append(self, entries: list[Entry]) -> None:
        if not entries:
            return
        first = self.first_index()
        if entries[-1].index < first:
            return  # entirely covered by the snapshot
        if entries[0].index < first:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self._ents[0].index
        if offset > len(self._ents):
            raise UnavailableError(
                f"append at {entries[0].index} leaves a gap after {self.last_index()}"
            )
        del self._ents[offset:]
        self._ents.extend(entries)

    def apply_snapshot(self, snap: Snapshot) -> None:
        if snap.meta.index <= self._snapshot.meta.index:
            return
        self._snapshot = snap
        self._ents = [Entry(snap.meta.index, snap.meta.term)]

    def save_snapshot_file(self, meta: SnapshotMeta, data: bytes) -> None:
        """Nothing to persist: :meth:`create_snapshot` keeps the data in memory."""

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes, *,
                        saved: SnapshotMeta | None = None) -> Snapshot:
        if index <= self._snapshot.meta.index:
            return self._snapshot
        if index > self.last_index():
            raise UnavailableError(f"snapshot index {index} > last index {self.last_index()}")
        meta = SnapshotMeta(index, self.term(index), conf_state)
        self._snapshot = Snapshot(meta, data)
        return self._snapshot

    def compact(self, index: int, *, sync: bool = True) -> None:
        """Drop entries up to ``index``; they must already be covered by a snapshot.
        (``sync`` does not matter in memory.)"""
        offset = self._ents[0].index
        if index <= offset:
            return
        if index > self.last_index():
            raise UnavailableError(f"compact index {index} > last index {self.last_index()}")
        i = index - offset
        self._ents = [Entry(index, self._ents[i].term), *self._ents[i + 1 :]]

    def sync(self) -> None:
        """Nothing to do: memory is as durable as it gets."""


def limit_size(ents: list[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix of ``ents`` within ``max_bytes`` (never less than one entry)."""
    if max_bytes is None or not ents:
        return ents
    total = 0
    for i, e in enumerate(ents):
        total += e.size()
        if total > max_bytes and i > 0:
            return ents[:i]
    return ents
