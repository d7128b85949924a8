"""DurableStorage behaves like MemoryStorage, and reopening gives back the same state."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from confer.raft.errors import CompactedError, UnavailableError
from confer.raft.storage import MemoryStorage
from confer.raft.types import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMeta
from confer.storage import Disk, DurableStorage, StorageError, StorageFailedError

from .helpers import FaultyDisk, crash, segments, snapshot_files, state_of

Opener = Callable[..., DurableStorage]
CONF = ConfState(frozenset({1, 2, 3}), frozenset({4}))


def ents(lo: int, hi: int, term: int, size: int = 8) -> list[Entry]:
    """Entries lo..hi inclusive, with data that says where it came from."""
    return [Entry(i, term, f"{i}:{term}".encode().ljust(size, b".")) for i in range(lo, hi + 1)]


def both(*ops: Callable[[object], object]) -> tuple[MemoryStorage, list[object]]:
    """Apply ``ops`` to a fresh MemoryStorage (the model)."""
    m = MemoryStorage()
    return m, [op(m) for op in ops]


def reopen(st: DurableStorage, open_storage: Opener, **kw: int) -> DurableStorage:
    st.close()
    return open_storage(**kw)


def test_fresh_storage_looks_like_an_empty_memory_storage(open_storage: Opener,
                                                          data_dir: Path) -> None:
    st = open_storage()
    assert state_of(st) == state_of(MemoryStorage())
    assert [p.name for p in segments(data_dir)] == ["0000000000000000-0000000000000001.wal"]
    st = reopen(st, open_storage)
    assert state_of(st) == state_of(MemoryStorage())


def test_round_trip_with_overwrite_and_hard_state(open_storage: Opener) -> None:
    model = MemoryStorage()
    st = open_storage()
    for s in (model, st):
        s.append(ents(1, 10, 1))
        s.set_hard_state(HardState(1, 2, 3))
        s.append([Entry(11, 1, b"conf", EntryType.CONF_CHANGE)])
        s.append(ents(6, 8, 2))  # overwrite: 9..11 are gone
        s.set_hard_state(HardState(2, 3, 5))
        s.sync()
    assert st.last_index() == 8 and st.term(8) == 2 and st.term(5) == 1
    assert state_of(st) == state_of(model)
    st = reopen(st, open_storage)
    assert state_of(st) == state_of(model)
    # Keep writing after recovery, in the same segment.
    for s in (model, st):
        s.append(ents(9, 12, 2))
        s.sync()
    st = reopen(st, open_storage)
    assert state_of(st) == state_of(model)


def test_overwrite_across_syncs_and_segments_replays_the_same(open_storage: Opener,
                                                              data_dir: Path) -> None:
    model = MemoryStorage()
    st = open_storage(segment_size=200)
    steps = [(1, 30, 1), (20, 25, 2), (24, 40, 3), (10, 12, 4), (13, 14, 4)]
    for lo, hi, term in steps:
        for s in (model, st):
            s.append(ents(lo, hi, term))
            s.sync()
    assert len(segments(data_dir)) > 2
    st = reopen(st, open_storage, segment_size=200)
    assert state_of(st) == state_of(model)
    assert st.last_index() == 14


def test_real_disk_round_trip(data_dir: Path) -> None:
    with DurableStorage.open(data_dir, segment_size=4096, disk=Disk()) as st:
        for b in range(20):
            st.append(ents(b * 10 + 1, b * 10 + 10, 1, size=64))
            st.set_hard_state(HardState(1, 1, b * 10))
            st.sync()
        before = state_of(st)
    with DurableStorage.open(data_dir, segment_size=4096) as st:
        assert state_of(st) == before
        assert len(segments(data_dir)) > 1


def test_unsynced_writes_may_be_lost_but_synced_ones_survive(open_storage: Opener,
                                                             disk: FaultyDisk) -> None:
    st = open_storage()
    st.append(ents(1, 5, 1))
    st.set_hard_state(HardState(1, 1, 2))
    st.sync()
    synced = state_of(st)
    st.append(ents(6, 9, 1))
    st.set_hard_state(HardState(1, 1, 7))
    assert crash(st, disk, "lost")
    st = open_storage()
    assert state_of(st) == synced


def test_failed_sync_poisons_the_storage(open_storage: Opener, disk: FaultyDisk) -> None:
    st = open_storage()
    st.append(ents(1, 2, 1))
    disk.mode = "unsynced"
    with pytest.raises(StorageFailedError) as err:
        st.sync()
    assert "reopen" in str(err.value)
    with pytest.raises(StorageFailedError):
        st.append(ents(3, 3, 1))
    with pytest.raises(StorageFailedError):
        st.sync()
    st.close()
    assert open_storage().last_index() == 2  # the write did reach the file


def test_closed_storage_refuses_writes(open_storage: Opener) -> None:
    st = open_storage()
    st.close()
    st.close()  # idempotent
    with pytest.raises(StorageFailedError, match="closed"):
        st.append(ents(1, 1, 1))


def test_a_data_directory_can_be_open_only_once(open_storage: Opener) -> None:
    open_storage()
    with pytest.raises(StorageError, match="already open"):
        open_storage()


def test_invalid_appends_change_nothing(open_storage: Opener) -> None:
    st = open_storage()
    st.append(ents(1, 5, 1))
    with pytest.raises(UnavailableError):
        st.append(ents(7, 8, 1))  # gap
    with pytest.raises(ValueError, match="contiguous"):
        st.append([Entry(6, 1), Entry(8, 1)])
    st.create_snapshot(3, CONF, b"s")
    with pytest.raises(ValueError, match="covered by the snapshot"):
        st.append(ents(3, 6, 2))
    with pytest.raises(ValueError, match="no snapshot covers"):
        st.compact(4)
    st.sync()
    before = state_of(st)
    st = reopen(st, open_storage)
    assert state_of(st) == before and st.last_index() == 5


def test_append_skips_compacted_entries_like_memory_storage(open_storage: Opener) -> None:
    model = MemoryStorage()
    st = open_storage()
    for s in (model, st):
        s.append(ents(1, 10, 1))
        s.create_snapshot(6, CONF, b"snap")
        s.compact(6)
        s.append(ents(2, 4, 1))  # entirely compacted: ignored
        s.append(ents(5, 12, 1))  # 5 and 6 compacted, 7.. appended
        s.sync()
    assert state_of(st) == state_of(model)
    st = reopen(st, open_storage)
    assert state_of(st) == state_of(model)


def test_snapshot_and_compaction_round_trip(open_storage: Opener, data_dir: Path) -> None:
    model = MemoryStorage()
    st = open_storage()
    for s in (model, st):
        s.append(ents(1, 20, 1))
        s.set_hard_state(HardState(1, 1, 15))
        s.create_snapshot(12, CONF, b"app state at 12")
        s.compact(8)  # keep 9..12 for slow followers
        s.sync()
    assert st.first_index() == 9
    with pytest.raises(CompactedError):
        st.term(7)
    st = reopen(st, open_storage)
    assert state_of(st) == state_of(model)
    assert st.initial_state() == (HardState(1, 1, 15), CONF)
    assert st.snapshot().data == b"app state at 12"
    assert [p.name for p in snapshot_files(data_dir)] == ["0000000000000001-000000000000000c.snap"]


def test_a_snapshot_file_written_ahead_is_recorded_without_rewriting_it(
        open_storage: Opener, data_dir: Path) -> None:
    st = open_storage()
    st.append(ents(1, 20, 1))
    st.set_hard_state(HardState(1, 1, 20))
    st.create_snapshot(5, CONF, b"at 5")
    st.sync()
    meta = SnapshotMeta(12, 1, CONF)
    st.save_snapshot_file(meta, b"app state at 12")  # e.g. in a worker thread ...
    st.append(ents(21, 22, 1))  # ... while the driver goes on, and syncs
    st.sync()
    assert len(snapshot_files(data_dir)) == 2  # the newer file survives the tidying
    written = snapshot_files(data_dir)[-1].stat().st_mtime_ns
    st.create_snapshot(12, CONF, b"app state at 12", saved=meta)
    st.compact(10)
    assert [p.name for p in snapshot_files(data_dir)] == ["0000000000000001-000000000000000c.snap"]
    assert snapshot_files(data_dir)[0].stat().st_mtime_ns == written
    st = reopen(st, open_storage)
    assert st.snapshot().meta == meta and st.snapshot().data == b"app state at 12"
    assert st.last_index() == 22


def test_a_compaction_without_sync_waits_for_the_next_sync(open_storage: Opener,
                                                          data_dir: Path) -> None:
    st = open_storage()
    st.append(ents(1, 20, 1))
    st.create_snapshot(5, CONF, b"at 5")
    st.sync()
    st.create_snapshot(12, CONF, b"at 12")
    st.compact(10, sync=False)
    assert st.first_index() == 11
    assert len(snapshot_files(data_dir)) == 2  # nothing deleted before the records are durable
    st.sync()
    assert [p.name for p in snapshot_files(data_dir)] == ["0000000000000001-000000000000000c.snap"]
    st = reopen(st, open_storage)
    assert st.first_index() == 11 and st.snapshot().data == b"at 12"


def test_an_unrecorded_snapshot_file_is_removed_on_reopen(open_storage: Opener,
                                                          data_dir: Path) -> None:
    st = open_storage()
    st.append(ents(1, 20, 1))
    st.save_snapshot_file(SnapshotMeta(12, 1, CONF), b"never recorded")
    st = reopen(st, open_storage)
    assert snapshot_files(data_dir) == []
    assert st.snapshot().meta.index == 0


def test_create_snapshot_is_idempotent_and_bounded(open_storage: Opener) -> None:
    st = open_storage()
    st.append(ents(1, 5, 1))
    snap = st.create_snapshot(4, CONF, b"x")
    assert st.create_snapshot(3, CONF, b"older") is snap
    with pytest.raises(UnavailableError):
        st.create_snapshot(6, CONF, b"y")


def test_rotation_and_removal_of_obsolete_files(open_storage: Opener, data_dir: Path) -> None:
    model = MemoryStorage()
    st = open_storage(segment_size=300)
    for b in range(12):
        for s in (model, st):
            s.append(ents(b * 5 + 1, b * 5 + 5, 1))
            s.set_hard_state(HardState(1, 1, b * 5))
            s.sync()
    names = [p.name for p in segments(data_dir)]
    assert len(names) >= 6
    seqs = [int(n.split("-")[0], 16) for n in names]
    assert seqs == list(range(len(seqs)))
    # Each name carries the index of the first entry the segment may hold.
    firsts = [int(n.split("-")[1].removesuffix(".wal"), 16) for n in names]
    assert firsts == sorted(firsts) and firsts[0] == 1

    for s in (model, st):
        s.create_snapshot(20, CONF, b"s20")
        s.sync()
    for s in (model, st):
        s.create_snapshot(40, CONF, b"s40")
        s.compact(40)
    assert [p.name for p in snapshot_files(data_dir)] == ["0000000000000001-0000000000000028.snap"]
    left = segments(data_dir)
    left_seqs = [int(p.name.split("-")[0], 16) for p in left]
    assert len(left) < len(names)
    assert left_seqs == list(range(left_seqs[0], left_seqs[0] + len(left)))
    assert left_seqs[-1] >= seqs[-1]  # the active segment is never removed
    # No overwrites here, so a segment holds the entries from its name's index up to the next
    # segment's. Exactly the segments holding only entries <= 40 are gone.
    left_firsts = [int(p.name.split("-")[1].removesuffix(".wal"), 16) for p in left]
    assert left_firsts[0] <= 41 < left_firsts[1]
    st = reopen(st, open_storage, segment_size=300)
    assert state_of(st) == state_of(model)

    # Compacting everything still keeps the active segment, and recovery still works.
    for s in (model, st):
        s.create_snapshot(60, CONF, b"s60")
        s.compact(60)
    assert len(segments(data_dir)) == 1
    st = reopen(st, open_storage, segment_size=300)
    assert state_of(st) == state_of(model)
    assert st.first_index() == 61 and st.last_index() == 60


def test_apply_snapshot_resets_the_log_and_survives_reopen(open_storage: Opener,
                                                           data_dir: Path) -> None:
    model = MemoryStorage()
    st = open_storage(segment_size=250)
    leader_snap = Snapshot(SnapshotMeta(50, 4, CONF), b"leader state")
    for s in (model, st):
        s.append(ents(1, 30, 1))  # includes entries the leader never had
        s.set_hard_state(HardState(3, 2, 10))
        s.sync()
        s.apply_snapshot(leader_snap)
        s.set_hard_state(HardState(4, 2, 50))
        s.sync()
    assert (st.first_index(), st.last_index(), st.term(50)) == (51, 50, 4)
    st = reopen(st, open_storage, segment_size=250)
    assert state_of(st) == state_of(model)
    assert st.snapshot() == leader_snap
    # The old log's segments are obsolete now; they go after the next sync.
    for s in (model, st):
        s.append(ents(51, 60, 4))
        s.sync()
    assert all(int(p.name.split("-")[1].removesuffix(".wal"), 16) >= 31
               for p in segments(data_dir))
    st = reopen(st, open_storage, segment_size=250)
    assert state_of(st) == state_of(model)
    # An older snapshot from a delayed message is ignored, as by MemoryStorage.
    st.apply_snapshot(Snapshot(SnapshotMeta(40, 3, CONF), b"stale"))
    assert st.snapshot() == leader_snap


def test_apply_snapshot_inside_the_log(open_storage: Opener) -> None:
    model = MemoryStorage()
    st = open_storage()
    for s in (model, st):
        s.append(ents(1, 30, 2))
        s.create_snapshot(5, CONF, b"5")
        s.compact(5)
        s.apply_snapshot(Snapshot(SnapshotMeta(20, 2, CONF), b"20"))
        s.append(ents(21, 25, 3))
        s.sync()
    st = reopen(st, open_storage)
    assert state_of(st) == state_of(model)


def test_unsynced_snapshot_is_not_recovered(open_storage: Opener, disk: FaultyDisk,
                                            data_dir: Path) -> None:
    st = open_storage()
    st.append(ents(1, 10, 1))
    st.create_snapshot(4, CONF, b"four")
    st.sync()
    synced = state_of(st)
    st.apply_snapshot(Snapshot(SnapshotMeta(30, 2, CONF), b"thirty"))
    assert len(snapshot_files(data_dir)) == 2  # the file is durable already...
    assert crash(st, disk)  # ...but the WAL record that makes it current is lost
    st = open_storage()
    assert state_of(st) == synced
    assert [p.name for p in snapshot_files(data_dir)] == ["0000000000000001-0000000000000004.snap"]


def test_disk_usage_counts_segments_and_snapshots(open_storage: Opener, data_dir: Path) -> None:
    st = open_storage(segment_size=500)
    for b in range(10):
        st.append(ents(b * 4 + 1, b * 4 + 4, 1, size=50))
        st.sync()
    st.create_snapshot(30, CONF, b"x" * 1000)
    st.sync()
    files = [p for p in data_dir.rglob("*") if p.is_file() and p.name != "LOCK"]
    assert st.disk_usage() == sum(os.path.getsize(p) for p in files)
    assert st.disk_usage() > 1000


class CountingDisk(FaultyDisk):
    def __init__(self) -> None:
        super().__init__()
        self.writes = self.datasyncs = 0

    def write(self, fd: int, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1
        super().write(fd, data)

    def fdatasync(self, fd: int) -> None:
        self.datasyncs += 1


def test_group_commit_is_one_write_and_one_fdatasync_per_sync(data_dir: Path) -> None:
    disk = CountingDisk()
    with DurableStorage.open(data_dir, disk=disk) as st:
        disk.writes = disk.datasyncs = 0
        for i in range(1, 101):
            st.append([Entry(i, 1, b"x")])
            st.set_hard_state(HardState(1, 1, i - 1))
        st.sync()
        assert (disk.writes, disk.datasyncs) == (1, 1)
        st.sync()  # nothing new: no I/O at all
        st.set_hard_state(HardState(1, 1, 99))  # unchanged: nothing to write either
        st.sync()
        assert (disk.writes, disk.datasyncs) == (1, 1)
