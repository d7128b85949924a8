"""A node's disk, in one of two kinds (:class:`StorageKind`).

- :class:`DurableDisk` (the default) runs the product's
  :class:`~confer.storage.DurableStorage` (WAL, snapshot files, recovery) on a
  :class:`~confer.sim.fs.SimFS`: a crash loses power in the file system, and a restart opens
  the storage again from whatever survived, through the real recovery code.
- :class:`SimDisk` is a model of storage that knows the difference between *written* and
  *synced*. Reads and writes go to :attr:`SimDisk.live`, a :class:`MemoryStorage` the node
  reads from. Every write is also recorded as an operation. Operations are grouped into
  *batches* (one Ready's writes, or one snapshot-and-compact): a batch is atomic, like one
  record in a write-ahead log. :meth:`SimDisk.sync` makes all written batches durable.
  :meth:`SimDisk.crash` throws away what was not synced (optionally keeping a prefix of the
  unsynced batches, as if the disk had flushed some of them on its own), then rebuilds
  ``live`` from the durable operations. It is quicker, and it tests the core alone.

Both offer the driver side of ``WritableLogStorage`` plus ``crash``/``recover``.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import Any

from confer.raft import ConfState, Entry, HardState, MemoryStorage, Snapshot, SnapshotMeta
from confer.sim.fs import PowerCut, SimFS
from confer.storage import DurableStorage


class StorageKind(enum.Enum):
    DURABLE = "durable"
    """The real DurableStorage on a simulated file system."""
    MODEL = "model"
    """SimDisk, the model of written versus synced batches."""


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
    def interrupted_sync(self) -> None:
        """A sync cut short by a crash: in the model nothing of it is durable (yet)."""

    def recover(self) -> None:
        """Nothing to do: :meth:`crash` already rebuilt ``live`` from the durable writes."""

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


class DurableDisk:
    """One node's disk: the real :class:`DurableStorage` in ``/data`` on a :class:`SimFS`."""

    ROOT = "/data"

    def __init__(self, rng: random.Random, segment_size: int) -> None:
        self.fs = SimFS(rng)
        self.segment_size = segment_size
        self.stats = DiskStats()
        self._storage: DurableStorage | None = None
        self._written_commit = 0  # the commit index in the last hard state written
        self._wrote = False  # anything written since the last end_batch
        self.durable_commit = 0
        """The commit index in the durable hard state (at least): what a restart remembers."""
        self.recover()

    @property
    def live(self) -> DurableStorage:
        """The open storage; only while the node is up."""
        if self._storage is None:
            raise RuntimeError("the storage is not open: the node crashed and did not restart")
        return self._storage

    # -- reads (for ``bootstrap``) ---------------------------------------------------------------
    def last_index(self) -> int:
        return self.live.last_index()

    # -- writes ----------------------------------------------------------------------------------
    def append(self, entries: list[Entry]) -> None:
        if entries:
            self.live.append(entries)
            self._wrote = True

    def set_hard_state(self, hs: HardState) -> None:
        self.live.set_hard_state(hs)
        self._written_commit = hs.commit
        self._wrote = True

    def apply_snapshot(self, snap: Snapshot) -> None:
        self.live.apply_snapshot(snap)
        self._wrote = True

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        self._wrote = True
        return self.live.create_snapshot(index, conf_state, data)

    def compact(self, index: int) -> None:
        """Compact; the log record and the removal of obsolete files wait for :meth:`sync`."""
        self.live.compact(index, sync=False)
        self._wrote = True

    def end_batch(self) -> None:
        if self._wrote:
            self._wrote = False
            self.stats.batches += 1

    def sync(self) -> None:
        self.end_batch()
        self.live.sync()
        self.durable_commit = max(self.durable_commit, self._written_commit)
        self.stats.syncs += 1

    # -- crashes ---------------------------------------------------------------------------------
    def interrupted_sync(self) -> None:
        """Start a sync and lose power in its write or its fdatasync."""
        self.fs.cut_power_after(self.fs.rng.randint(0, 1))
        try:
            self.live.sync()
        except PowerCut:
            return
        finally:
            self.fs.disarm()

    def crash(self, keep: int = 0) -> int:
        """Power loss. Unsynced WAL records were still in the process (lost); the file system
        keeps a random part of what was written but not synced. ``keep`` is the model's
        notion and means nothing here. Returns 0: what was lost shows only on recovery."""
        self.fs.power_loss()
        self._storage = None  # abandoned: closing it would sync
        self._wrote = False
        self.stats.crashes += 1
        return 0

    def recover(self) -> None:
        """Open the storage (again) from what the file system kept: the real recovery.

        Power may fail during recovery too (see :meth:`SimFS.cut_power_after`); then it
        starts over from what survived that.
        """
        if self._storage is not None:
            return
        try:
            st = DurableStorage.open(self.ROOT, segment_size=self.segment_size, disk=self.fs)
        except PowerCut:
            self.crash()
            st = DurableStorage.open(self.ROOT, segment_size=self.segment_size, disk=self.fs)
        self._storage = st
        hs = st.initial_state()[0]
        self._written_commit = self.durable_commit = hs.commit
