"""A simulated disk that knows the difference between *written* and *synced*.

Reads and writes go to :attr:`SimDisk.live`, a :class:`MemoryStorage` the node reads from. Every
write is also recorded as an operation. Operations are grouped into *batches* (one Ready's
writes, or one snapshot-and-compact): a batch is atomic, like one record in a write-ahead log.
:meth:`SimDisk.sync` makes all written batches durable. :meth:`SimDisk.crash` throws away what
was not synced (optionally keeping a prefix of the unsynced batches, as if the disk had flushed
some of them on its own), then rebuilds ``live`` from the durable operations.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from confer.raft import ConfState, Entry, HardState, MemoryStorage, Snapshot, SnapshotMeta


class _Op(enum.IntEnum):
    APPEND = 0
    HARD_STATE = 1
    APPLY_SNAPSHOT = 2
    CREATE_SNAPSHOT = 3
    COMPACT = 4


@dataclass(slots=True)
class DiskStats:
    batches: int = 0
    syncs: int = 0
    crashes: int = 0
    lost_batches: int = 0


class SimDisk:
    """One node's disk. Implements the driver side of ``WritableLogStorage``."""

    def __init__(self) -> None:
        self.live = MemoryStorage()
        self.stats = DiskStats()
        self._durable: list[tuple[_Op, Any]] = []
        self._unsynced: list[list[tuple[_Op, Any]]] = []
        self._open: list[tuple[_Op, Any]] = []
        self.durable_commit = 0
        """The commit index in the durable hard state: what a restart would remember."""

    # -- reads (so that ``bootstrap`` can use the disk directly) ---------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.live.initial_state()

    def first_index(self) -> int:
        return self.live.first_index()

    def last_index(self) -> int:
        return self.live.last_index()

    def term(self, index: int) -> int:
        return self.live.term(index)

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        return self.live.entries(lo, hi, max_bytes)

    def snapshot(self) -> Snapshot:
        return self.live.snapshot()

    # -- writes ----------------------------------------------------------------------------------
    def append(self, entries: list[Entry]) -> None:
        if entries:
            self.live.append(entries)
            self._open.append((_Op.APPEND, list(entries)))

    def set_hard_state(self, hs: HardState) -> None:
        self.live.set_hard_state(hs)
        self._open.append((_Op.HARD_STATE, hs))

    def apply_snapshot(self, snap: Snapshot) -> None:
        self.live.apply_snapshot(snap)
        self._open.append((_Op.APPLY_SNAPSHOT, snap))

    def save_snapshot_file(self, meta: SnapshotMeta, data: bytes) -> None:
        """Nothing to write ahead: :meth:`create_snapshot` records the data in its batch."""

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes, *,
                        saved: SnapshotMeta | None = None) -> Snapshot:
        snap = self.live.create_snapshot(index, conf_state, data)
        self._open.append((_Op.CREATE_SNAPSHOT, (index, conf_state, data)))
        return snap

    def compact(self, index: int, *, sync: bool = True) -> None:
        """(The simulated driver syncs explicitly: ``sync`` does not matter here.)"""
        self.live.compact(index)
        self._open.append((_Op.COMPACT, index))

    def end_batch(self) -> None:
        """Close the current batch: its writes are now one atomic unit."""
        if self._open:
            self._unsynced.append(self._open)
            self._open = []
            self.stats.batches += 1

    def sync(self) -> None:
        """Make every write so far durable."""
        self.end_batch()
        for batch in self._unsynced:
            self._make_durable(batch)
        self._unsynced.clear()
        self.stats.syncs += 1

    def _make_durable(self, batch: list[tuple[_Op, Any]]) -> None:
        self._durable.extend(batch)
        for op, arg in batch:
            if op == _Op.HARD_STATE:
                self.durable_commit = arg.commit

    @property
    def unsynced_batches(self) -> int:
        return len(self._unsynced) + bool(self._open)

    # -- crashes ---------------------------------------------------------------------------------
    def crash(self, keep: int = 0) -> int:
        """Power loss: keep the synced writes and the first ``keep`` unsynced batches, lose the
        rest (including a batch being written). Returns how many batches were lost."""
        self.end_batch()
        kept = self._unsynced[:keep]
        lost = len(self._unsynced) - len(kept)
        for batch in kept:
            self._make_durable(batch)
        self._unsynced.clear()
        self.live = self._replay()
        self.stats.crashes += 1
        self.stats.lost_batches += lost
        return lost

    def _replay(self) -> MemoryStorage:
        """Rebuild the storage from the durable operations (what a restart reads back)."""
        ms = MemoryStorage()
        for op, arg in self._durable:
            if op == _Op.APPEND:
                ms.append(arg)
            elif op == _Op.HARD_STATE:
                ms.set_hard_state(arg)
            elif op == _Op.APPLY_SNAPSHOT:
                ms.apply_snapshot(arg)
            elif op == _Op.CREATE_SNAPSHOT:
                ms.create_snapshot(*arg)
            else:
                ms.compact(arg)
        self._compress(ms)
        return ms

    def _compress(self, ms: MemoryStorage) -> None:
        """Shorten the durable history to an equivalent one, so replays stay cheap."""
        snap = ms.snapshot()
        ops: list[tuple[_Op, Any]] = []
        first = ms.first_index()
        if not snap.is_empty():
            if snap.meta.index != first - 1:
                return  # snapshot not yet compacted into the log: keep the exact history
            ops.append((_Op.APPLY_SNAPSHOT, snap))
        elif first != 1:
            return
        last = ms.last_index()
        if last >= first:
            ops.append((_Op.APPEND, ms.entries(first, last + 1)))
        ops.append((_Op.HARD_STATE, ms.initial_state()[0]))
        self._durable = ops
