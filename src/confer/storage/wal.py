"""The write-ahead log: entries and state changes in segmented, checksummed files.

Writes only fill an in-memory buffer; :meth:`WAL.sync` hands everything buffered since the
last sync to the kernel in one ``write`` and makes it durable with one ``fdatasync`` (group
commit). The log is read back only by :meth:`WAL.open`, which replays every segment and
repairs a torn final write. The byte format is in :mod:`confer.storage.codec` and
docs/storage.md.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from confer.raft.types import Entry, HardState, SnapshotMeta
from confer.storage import codec
from confer.storage.codec import DecodeError, RecordType, SegmentStart
from confer.storage.disk import Disk
from confer.storage.errors import StorageFailedError, WALCorruptionError

DEFAULT_SEGMENT_SIZE = 64 << 20
"""A segment is sealed, and the next one started, once a sync leaves it at least this big."""

_SEGMENT_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")


def segment_name(seq: int, next_index: int) -> str:
    """``<seq>-<index of the first entry it may hold>.wal``, both as 16 hex digits."""
    return f"{seq:016x}-{next_index:016x}.wal"


@dataclass(slots=True)
class _Segment:
    seq: int
    path: str
    max_index: int = 0
    """Highest entry index written into this segment (0: none). Decides when it is obsolete."""


@dataclass(frozen=True, slots=True)
class Recovered:
    """The state the WAL replays to. ``entries`` follow ``compact_index`` without a gap."""

    hard_state: HardState = field(default_factory=HardState)
    compact_index: int = 0
    compact_term: int = 0
    snapshot: SnapshotMeta = field(default_factory=SnapshotMeta)
    entries: list[Entry] = field(default_factory=list)


class WAL:
    """An open write-ahead log directory. Not thread-safe: one writer, the storage driver."""

    def __init__(self, dirpath: str, segment_size: int, disk: Disk) -> None:
        """Use :meth:`open`."""
        self._dir = dirpath
        self._segment_size = segment_size
        self._disk = disk
        self._segments: list[_Segment] = []
        self._fd = -1
        self._buf: list[bytes] = []
        self._pos = 0  # end of the active segment including the buffer
        self._synced = 0  # end of what the last sync made durable; also where the next write starts
        self._failed: BaseException | None = None
        # The current state, repeated at the head of each new segment.
        self._hard_state = HardState()
        self._compact_index = 0
        self._compact_term = 0
        self._snapshot = SnapshotMeta()
        self._next_index = 1
        self._reset_seq = -1  # segment holding the latest log reset (apply_snapshot)

    # -- opening and recovery ------------------------------------------------------------------
    @classmethod
    def open(cls, dirpath: str, *, segment_size: int = DEFAULT_SEGMENT_SIZE,
             disk: Disk | None = None) -> tuple[WAL, Recovered]:
        """Open (or create) the WAL in ``dirpath`` and replay it.

        A torn write at the end of the last segment is cut off (the file is truncated to
        its last good record). Any other damage raises :class:`WALCorruptionError`.
        """
        if segment_size <= 0:
            raise ValueError(f"segment_size must be positive, got {segment_size}")
        disk = disk if disk is not None else Disk()
        wal = cls(dirpath, segment_size, disk)
        disk.makedirs(dirpath)
        found: list[tuple[int, int, str]] = []
        for name in disk.listdir(dirpath):
            if name.endswith(".tmp"):
                disk.remove(os.path.join(dirpath, name))  # a segment creation that never finished
            elif m := _SEGMENT_NAME.match(name):
                found.append((int(m[1], 16), int(m[2], 16), os.path.join(dirpath, name)))
        found.sort()
        if not found:
            wal._start_segment(0)
            return wal, Recovered()
        return wal, wal._recover(found)

    def _recover(self, found: list[tuple[int, int, str]]) -> Recovered:
        first_seq = found[0][0]
        for i, (seq, _, path) in enumerate(found):
            if seq != first_seq + i:
                raise WALCorruptionError(path, 0, f"segment {first_seq + i:016x} is missing")
        replay = _Replay()
        good_end = size = 0
        disk = self._disk
        for i, (seq, next_index, path) in enumerate(found):
            buf = disk.read(path)
            seg = _Segment(seq, path)
            good_end = _replay_segment(seg, next_index, buf, replay, last=i == len(found) - 1)
            size = len(buf)
            self._segments.append(seg)
        try:
            entries = replay.finish()
        except DecodeError as exc:
            raise WALCorruptionError(found[0][2], 0, str(exc)) from None
        fd = disk.open_append(found[-1][2])
        try:
            if good_end < size:
                disk.truncate(fd, good_end)  # drop the torn write, durably, before appending
                disk.fsync(fd)
        except BaseException:
            disk.close(fd)
            raise
        self._fd = fd
        self._pos = self._synced = good_end
        self._hard_state = replay.hard_state
        self._compact_index = replay.compact_index
        self._compact_term = replay.compact_term
        self._snapshot = replay.snapshot
        self._next_index = (entries[-1].index if entries else replay.compact_index) + 1
        self._reset_seq = replay.reset_seq
        return Recovered(replay.hard_state, replay.compact_index, replay.compact_term,
                         replay.snapshot, entries)

    # -- writing (buffered) --------------------------------------------------------------------
    def append_entries(self, ents: list[Entry]) -> None:
        """Buffer contiguous entries; on replay they replace any entries from their index on."""
        last = ents[-1].index
        seg = self._segments[-1]
        if last > seg.max_index:
            seg.max_index = last
        self._next_index = last + 1
        self._push(RecordType.ENTRIES, codec.encode_entries(ents))

    def save_hard_state(self, hs: HardState) -> None:
        if hs != self._hard_state:
            self._hard_state = hs
            self._push(RecordType.HARD_STATE, codec.encode_hard_state(hs))

    def save_snapshot(self, meta: SnapshotMeta, *, reset: bool) -> None:
        """Record that the snapshot file for ``meta`` is current (it must be durable already).

        With ``reset`` the log is emptied and restarts after ``meta.index``.
        """
        self._snapshot = meta
        if reset:
            self._compact_index, self._compact_term = meta.index, meta.term
            self._next_index = meta.index + 1
            self._reset_seq = self._segments[-1].seq
        self._push(RecordType.SNAPSHOT, codec.encode_snapshot(meta, reset))

    def save_compact(self, index: int, term: int) -> None:
        """Record that the log now starts after ``index`` (whose term is ``term``)."""
        self._compact_index, self._compact_term = index, term
        self._push(RecordType.COMPACT, codec.encode_compact(index, term))

    def _push(self, rtype: int, payload: bytes) -> None:
        if self._failed is not None:
            raise self._failed_error()
        pos = self._pos
        self._buf += codec.frame(rtype, payload, pos, self._synced)
        self._pos = pos + codec.HEADER_SIZE + len(payload)

    # -- syncing -------------------------------------------------------------------------------
    def sync(self) -> None:
        """Make every buffered record durable: one write and one fdatasync.

        If either fails, the WAL refuses all further work (:class:`StorageFailedError`): the
        kernel may have dropped the unsynced pages, so only a reopen knows what is on disk.
        """
        if self._failed is not None:
            raise self._failed_error()
        if not self._buf:
            return
        data = b"".join(self._buf)
        self._buf.clear()
        try:
            self._disk.write(self._fd, data)
            self._disk.fdatasync(self._fd)
            self._synced = self._pos
            if self._synced >= self._segment_size:
                self._cut()
        except BaseException as exc:
            self._failed = exc
            if isinstance(exc, Exception):
                raise self._failed_error() from exc
            raise

    @property
    def failed(self) -> bool:
        """True once a write or sync failed, or after :meth:`close`: no more work is taken."""
        return self._failed is not None

    def _failed_error(self) -> StorageFailedError:
        where = self._segments[-1].path if self._segments else self._dir
        if isinstance(self._failed, _Closed):
            return StorageFailedError(f"{where}: the WAL is closed")
        return StorageFailedError(
            f"{where}: a write or sync failed ({self._failed!r}); no more writes are taken, "
            "reopen the storage to recover"
        )

    def _cut(self) -> None:
        """Seal the active segment (already synced) and continue in a new one."""
        old_fd = self._fd
        self._start_segment(self._segments[-1].seq + 1)
        self._disk.close(old_fd)

    def _start_segment(self, seq: int) -> None:
        """Create segment ``seq`` atomically: its header is complete once the name exists."""
        path = os.path.join(self._dir, segment_name(seq, self._next_index))
        start = SegmentStart(seq, self._next_index, self._hard_state, self._compact_index,
                             self._compact_term, self._snapshot)
        data = b"".join(codec.frame(RecordType.SEGMENT, start.encode(), 0, 0))
        tmp = path + ".tmp"
        disk = self._disk
        fd = disk.create(tmp)
        try:
            disk.write(fd, data)
            disk.fsync(fd)
            disk.rename(tmp, path)
            disk.fsync_dir(self._dir)
        except BaseException:
            disk.close(fd)
            raise
        self._fd = fd
        self._pos = self._synced = len(data)
        self._segments.append(_Segment(seq, path))

    # -- compaction ----------------------------------------------------------------------------
    def remove_obsolete(self) -> list[str]:
        """Delete sealed segments that recovery no longer needs; returns their paths.

        A segment is obsolete when every entry it holds is compacted, or when a later
        segment resets the log. Later segments start with a copy of the state, so nothing
        else is lost. Call right after :meth:`sync`, so that the records making them
        obsolete are durable first.
        """
        if self._buf:
            raise RuntimeError("remove_obsolete() needs a sync() first")
        removed: list[str] = []
        while len(self._segments) > 1:  # never the active segment
            seg = self._segments[0]
            if seg.max_index > self._compact_index and seg.seq >= self._reset_seq:
                break
            self._disk.remove(seg.path)
            # Oldest first, each made durable, so a crash leaves a contiguous run of segments.
            self._disk.fsync_dir(self._dir)
            del self._segments[0]
            removed.append(seg.path)
        return removed

    # -- misc ----------------------------------------------------------------------------------
    def disk_usage(self) -> int:
        """Bytes in segment files on disk (buffered records not included)."""
        size = self._disk.size
        return sum(size(s.path) for s in self._segments)

    def close(self) -> None:
        """Close the active file. Buffered records are dropped: call :meth:`sync` first."""
        if self._fd >= 0:
            self._disk.close(self._fd)
            self._fd = -1
        self._buf.clear()
        if self._failed is None:
            self._failed = _Closed()


class _Closed(Exception):
    """Marks a closed WAL, so that later calls fail clearly rather than on a stale fd."""


class _Replay:
    """Folds records, in log order, into the state they describe.

    Entries are kept as one contiguous run starting at ``lo``; compaction is applied only at
    the end, because the final compaction point is known only then.
    """

    __slots__ = ("compact_index", "compact_term", "ents", "hard_state", "lo", "reset_seq",
                 "snapshot")

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.compact_index = 0
        self.compact_term = 0
        self.snapshot = SnapshotMeta()
        self.ents: list[Entry] = []
        self.lo = 0
        self.reset_seq = -1

    def begin(self, start: SegmentStart) -> None:
        self.hard_state = start.hard_state
        self.compact_index = start.compact_index
        self.compact_term = start.compact_term
        self.snapshot = start.snapshot

    def add_entries(self, ents: list[Entry]) -> None:
        a = ents[0].index
        cur = self.ents
        if not cur or a < self.lo:
            # The first entries we see, or an overwrite of everything we have.
            self.ents, self.lo = ents, a
        elif a <= self.lo + len(cur):
            del cur[a - self.lo :]
            cur.extend(ents)
        else:
            raise DecodeError(f"entries start at {a}, leaving a gap after {self.lo + len(cur) - 1}")

    def set_snapshot(self, meta: SnapshotMeta, reset: bool, seq: int) -> None:
        self.snapshot = meta
        if reset:
            self.compact_index, self.compact_term = meta.index, meta.term
            self.ents = []
            self.reset_seq = seq

    def finish(self) -> list[Entry]:
        """The entries after the final compaction point."""
        c, ents, lo = self.compact_index, self.ents, self.lo
        if not ents or ents[-1].index <= c:
            return []
        if lo > c + 1:
            raise DecodeError(f"no record holds entries {c + 1}..{lo - 1} (a segment is lost)")
        return ents[c + 1 - lo :] if lo <= c else ents


def _replay_segment(seg: _Segment, next_index: int, buf: bytes, replay: _Replay,
                    last: bool) -> int:
    """Replay one segment file; returns where its last good record ends."""
    path = seg.path
    rec = codec.parse_header(buf, 0)
    if rec is None or rec[0] != RecordType.SEGMENT:
        raise WALCorruptionError(path, 0, "missing or damaged segment header")
    try:
        start = SegmentStart.decode(buf, rec[1], rec[2])
    except DecodeError as exc:
        raise WALCorruptionError(path, 0, str(exc)) from None
    if (start.seq, start.next_index) != (seg.seq, next_index):
        raise WALCorruptionError(path, 0, f"header says segment {start.seq:016x} starting at "
                                          f"index {start.next_index}; the file name disagrees")
    replay.begin(start)
    pos = rec[2]
    end = len(buf)
    while pos < end:
        rec = codec.parse_header(buf, pos)
        if rec is None:
            return _bad_record(path, buf, pos, last)
        rtype, p0, p1, _ = rec
        try:
            if rtype == RecordType.ENTRIES:
                ents = codec.decode_entries(buf, p0, p1)
                replay.add_entries(ents)
                seg.max_index = max(seg.max_index, ents[-1].index)
            elif rtype == RecordType.HARD_STATE:
                replay.hard_state = codec.decode_hard_state(buf, p0, p1)
            elif rtype == RecordType.SNAPSHOT:
                meta, reset = codec.decode_snapshot(buf, p0, p1)
                replay.set_snapshot(meta, reset, seg.seq)
            elif rtype == RecordType.COMPACT:
                replay.compact_index, replay.compact_term = codec.decode_compact(buf, p0, p1)
            else:
                raise DecodeError(f"unknown record type {rtype}")
        except DecodeError as exc:
            raise WALCorruptionError(path, pos, str(exc)) from None
        pos = p1
    return pos


def _bad_record(path: str, buf: bytes, pos: int, last: bool) -> int:
    """Decide what a bad record at ``pos`` means: a torn final write, or corruption.

    Only the last write can be torn, and a sync finishes before the next write starts. So a
    valid record written by a *later* write (its ``batch`` is past ``pos``) proves that the
    bad bytes had been synced: that is corruption. Sealed segments were synced in full.
    """
    if not last:
        raise WALCorruptionError(path, pos, "bad record in a sealed segment")
    probe = buf.find(codec.MAGIC_BYTES, pos + 1)
    while probe != -1:
        rec = codec.parse_header(buf, probe)
        if rec is not None and rec[3] > pos:
            raise WALCorruptionError(
                path, pos, f"bad record followed by a valid record at byte offset {probe} "
                "from a later sync"
            )
        probe = buf.find(codec.MAGIC_BYTES, probe + 1)
    return pos  # a torn write: everything from here on was never acknowledged
