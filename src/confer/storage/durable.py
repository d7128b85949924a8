"""DurableStorage: Raft's log storage on disk.

Reads are served from a :class:`~confer.raft.storage.MemoryStorage` holding everything after
the compaction point; writes go to that memory copy and to the WAL buffer; ``sync`` makes
them durable. The disk is read only when opening.

Directory layout::

    <dir>/LOCK                              held (flock) while open
    <dir>/wal/<seq>-<first index>.wal       WAL segments, see confer.storage.wal
    <dir>/snap/<term>-<index>.snap          snapshot files, see confer.storage.snapfile
"""

from __future__ import annotations

import os

from confer import failpoints
from confer.raft.errors import UnavailableError
from confer.raft.storage import MemoryStorage
from confer.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from confer.storage.disk import Disk
from confer.storage.errors import StorageError
from confer.storage.snapfile import SnapshotStore
from confer.storage.wal import DEFAULT_SEGMENT_SIZE, WAL, Recovered


class DurableStorage:
    """A :class:`~confer.raft.storage.WritableLogStorage` that survives crashes.

    Everything written before a completed :meth:`sync` survives a crash; later writes may
    or may not, but recovery always yields the state as of some point in the write order.
    Not thread-safe: one driver owns it. (The exceptions: :meth:`sync` may run in a worker
    thread while the driver waits for it; :meth:`save_snapshot_file`, which touches only the
    new snapshot's own file, may run in a worker thread beside anything, a sync included,
    until :meth:`create_snapshot` records it.)

    Two checks go beyond :class:`MemoryStorage`, because breaking them would make the disk
    state unrecoverable: :meth:`append` may not overwrite entries covered by the snapshot,
    and :meth:`compact` may not pass the snapshot.
    """

    def __init__(self, root: str, mem: MemoryStorage, wal: WAL, snaps: SnapshotStore,
                 lock_fd: int, disk: Disk) -> None:
        """Use :meth:`open`."""
        self._root = root
        self._disk = disk
        self._mem = mem
        self._wal = wal
        self._snaps = snaps
        self._lock_fd = lock_fd
        self._snap_index = mem.snapshot().meta.index
        self._gc_pending = False  # obsolete files to delete after the next sync

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, segment_size: int = DEFAULT_SEGMENT_SIZE,
             disk: Disk | None = None) -> DurableStorage:
        """Open the data directory ``path`` (created if missing) and recover its state.

        Raises :class:`~confer.storage.errors.WALCorruptionError` or
        :class:`~confer.storage.errors.SnapshotCorruptionError` if durable data is damaged,
        and :class:`~confer.storage.errors.StorageError` if another open storage holds it.
        """
        root = os.fspath(path)
        disk = disk if disk is not None else Disk()
        if not disk.isdir(root):
            disk.makedirs(root)
            disk.fsync_dir(os.path.dirname(os.path.abspath(root)))
        lock_fd = _lock(disk, root)
        wal_dir, snap_dir = os.path.join(root, "wal"), os.path.join(root, "snap")
        try:
            if not _has_files(disk, wal_dir, ".wal") and _has_files(disk, snap_dir, ".snap"):
                # Starting empty would forget votes and acknowledged entries: unsafe for Raft.
                raise StorageError(f"{root}: snapshot files but no WAL segments; the WAL is lost")
            wal, rec = WAL.open(wal_dir, segment_size=segment_size, disk=disk)
            try:
                snaps = SnapshotStore(snap_dir, disk)
                disk.fsync_dir(root)  # the wal/ and snap/ entries, if just created
                snap = snaps.load(rec.snapshot) if rec.snapshot.index else Snapshot()
                mem = _rebuild(root, rec, snap)
                snaps.remove_except(rec.snapshot)  # orphans of an unsynced create/apply
            except BaseException:
                wal.close()
                raise
        except BaseException:
            disk.close(lock_fd)
            raise
        return cls(root, mem, wal, snaps, lock_fd, disk)

    # -- reads: all from memory ----------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._mem.initial_state()

    def first_index(self) -> int:
        return self._mem.first_index()

    def last_index(self) -> int:
        return self._mem.last_index()

    def term(self, index: int) -> int:
        return self._mem.term(index)

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        return self._mem.entries(lo, hi, max_bytes)

    def snapshot(self) -> Snapshot:
        return self._mem.snapshot()

    # -- writes: memory now, WAL buffer until sync ---------------------------------------------
    def append(self, entries: list[Entry]) -> None:
        """Append contiguous entries, replacing any existing entries from their first index.

        Entries at or below the compaction point are skipped, as in MemoryStorage.
        """
        if not entries:
            return
        mem = self._mem
        first = mem.first_index()
        lo = entries[0].index
        if lo < first:
            if entries[-1].index < first:
                return
            entries = entries[first - lo :]
            lo = first
        if entries[-1].index - lo != len(entries) - 1:
            raise ValueError(f"entries {lo}..{entries[-1].index} are not contiguous")
        if lo <= self._snap_index:
            raise ValueError(
                f"append at {lo} would overwrite entries covered by the snapshot at "
                f"{self._snap_index}"
            )
        mem.append(entries)  # raises on a gap, before anything reaches the WAL
        self._wal.append_entries(entries)

    def set_hard_state(self, hs: HardState) -> None:
        self._mem.set_hard_state(hs)
        self._wal.save_hard_state(hs)

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Install a snapshot from the leader: the log now starts after it.

        The snapshot file is durable on return; the log reset is durable after :meth:`sync`.
        Until then a crash recovers the previous state.
        """
        if snap.meta.index <= self._snap_index:
            return
        self._snaps.save(snap.meta, snap.data)
        failpoints.hit("snapshot-install")
        self._mem.apply_snapshot(snap)
        self._wal.save_snapshot(snap.meta, reset=True)
        self._snap_index = snap.meta.index
        self._gc_pending = True

    def save_snapshot_file(self, meta: SnapshotMeta, data: bytes) -> None:
        """Write (and fsync) the file of a snapshot that :meth:`create_snapshot` will record
        with ``saved=meta``: the slow part, which may run in a worker thread meanwhile. Until
        it is recorded, the file is an orphan that only the next open removes."""
        self._snaps.save(meta, data)

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes, *,
                        saved: SnapshotMeta | None = None) -> Snapshot:
        """Record a snapshot of the state machine as of ``index`` (the log is kept).

        ``saved``: :meth:`save_snapshot_file` already wrote the file under that meta.
        As with :meth:`apply_snapshot`, it becomes the recovered snapshot after :meth:`sync`.
        """
        mem = self._mem
        if index <= self._snap_index:
            return mem.snapshot()
        if index > mem.last_index():
            raise UnavailableError(f"snapshot index {index} > last index {mem.last_index()}")
        meta = SnapshotMeta(index, mem.term(index), conf_state)
        if saved != meta:
            self._snaps.save(meta, data)
        failpoints.hit("snapshot-create")
        snap = mem.create_snapshot(index, conf_state, data)
        self._wal.save_snapshot(snap.meta, reset=False)
        self._snap_index = index
        self._gc_pending = True
        return snap

    def compact(self, index: int, *, sync: bool = True) -> None:
        """Drop entries up to ``index`` (at most the snapshot index) and obsolete files.

        Syncs first, so that the files are deleted only once the records that make them
        obsolete are durable. Removes WAL segments holding only entries up to ``index`` (never
        the active one) and every snapshot file but the current one. With ``sync=False`` both
        wait for the next :meth:`sync` (which a driver may run off its event loop); until
        then a crash merely recovers the longer log.
        """
        mem = self._mem
        if index < mem.first_index():
            return
        if index > self._snap_index:
            raise ValueError(
                f"compact({index}) would drop entries that no snapshot covers "
                f"(snapshot at {self._snap_index})"
            )
        mem.compact(index)
        self._wal.save_compact(index, mem.term(index))
        self._gc_pending = True
        failpoints.hit("log-compaction")
        if sync:
            self.sync()

    def sync(self) -> None:
        """Make every earlier write durable (one write, one fdatasync), then tidy up files."""
        self._wal.sync()
        if self._gc_pending:
            self._gc_pending = False
            self._wal.remove_obsolete()
            # Newer files are snapshots being written (save_snapshot_file), not leftovers.
            self._snaps.remove_except(self._mem.snapshot().meta, keep_newer=True)

    # -- lifecycle and sizing ------------------------------------------------------------------
    @property
    def path(self) -> str:
        return self._root

    def disk_usage(self) -> int:
        """Total bytes of WAL segments and snapshot files on disk (the "storage size")."""
        return self._wal.disk_usage() + self._snaps.disk_usage()

    def close(self) -> None:
        """Sync (unless an earlier write failed), then release the files and the lock."""
        if self._lock_fd < 0:
            return
        try:
            if not self._wal.failed:
                self.sync()
        finally:
            self._wal.close()
            self._disk.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> DurableStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _lock(disk: Disk, root: str) -> int:
    try:
        return disk.lock(os.path.join(root, "LOCK"))
    except BlockingIOError:
        raise StorageError(f"{root}: data directory is already open: another process "
                           "(or storage) holds its LOCK file") from None


def _has_files(disk: Disk, dirpath: str, suffix: str) -> bool:
    return disk.isdir(dirpath) and any(n.endswith(suffix) for n in disk.listdir(dirpath))


def _rebuild(root: str, rec: Recovered, snap: Snapshot) -> MemoryStorage:
    """The in-memory twin of the recovered state."""
    mem = MemoryStorage()
    c, meta = rec.compact_index, rec.snapshot
    if meta.index < c:
        raise StorageError(f"{root}: WAL compacted to {c}, past its snapshot at {meta.index}")
    if meta.index == c:
        mem.apply_snapshot(snap)  # a no-op for the empty snapshot
        mem.append(rec.entries)
    else:
        # The log starts before the snapshot: entries c+1..snapshot index are still kept.
        mem.apply_snapshot(Snapshot(SnapshotMeta(c, rec.compact_term)))
        mem.append(rec.entries)
        if meta.index > mem.last_index() or mem.term(meta.index) != meta.term:
            raise StorageError(f"{root}: recovered snapshot {meta} does not match the log")
        mem.create_snapshot(meta.index, meta.conf_state, snap.data)
    mem.set_hard_state(rec.hard_state)
    return mem
