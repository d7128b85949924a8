"""Crash and corruption: torn tails are repaired, damage to synced data is reported.

A "crash" here is abandoning a storage mid-sync (helpers.FaultyDisk) and then editing its
files into what a power cut could leave behind.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from confer.raft.storage import MemoryStorage
from confer.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from confer.storage import (
    DurableStorage,
    NoSyncDisk,
    SnapshotCorruptionError,
    StorageError,
    WALCorruptionError,
)

from .helpers import FaultyDisk, State, crash, segments, snapshot_files, state_of

Opener = Callable[..., DurableStorage]
CONF = ConfState(frozenset({1, 2, 3}))


def ents(lo: int, hi: int, term: int, size: int = 20) -> list[Entry]:
    return [Entry(i, term, f"{i}:{term}".encode().ljust(size, b"#")) for i in range(lo, hi + 1)]


def reopen_state(root: Path) -> State:
    with DurableStorage.open(root, disk=NoSyncDisk()) as st:
        return state_of(st)


def write_batches(st: DurableStorage, seg: Path | None, n: int, per: int = 3,
                  size: int = 20) -> list[int]:
    """``n`` syncs of one append each; returns the offsets where each one's record starts."""
    starts = []
    for b in range(n):
        if seg is not None:
            starts.append(os.path.getsize(seg))
        st.append(ents(b * per + 1, b * per + per, 1, size))
        st.sync()
    return starts


# -- (a) torn tails -----------------------------------------------------------------------------
def test_torn_tail_at_every_offset_of_the_last_record(open_storage: Opener,
                                                      data_dir: Path) -> None:
    st = open_storage()
    for b in range(4):
        st.append(ents(b * 5 + 1, b * 5 + 5, 1))
        st.set_hard_state(HardState(1, 1, b * 5))
        st.sync()
    synced = state_of(st)
    seg = segments(data_dir)[-1]
    before = os.path.getsize(seg)
    st.append(ents(21, 25, 2))
    st.sync()
    st.close()
    full = seg.read_bytes()
    assert len(full) > before + 100
    rng = random.Random(1)
    for cut in range(before, len(full)):
        tail = b""
        if cut % 3 == 1:
            tail = bytes(len(full) - cut)  # the size grew but the data never landed
        elif cut % 3 == 2:
            tail = rng.randbytes(rng.randint(1, 64))  # whatever was in the sectors
        seg.write_bytes(full[:cut] + tail)
        assert reopen_state(data_dir) == synced, f"cut at {cut}"
        assert os.path.getsize(seg) == before, "the torn tail must be cut off the file"
    # The intact file still has everything.
    seg.write_bytes(full)
    assert reopen_state(data_dir)[2] == 25


def test_after_repair_the_log_continues_where_it_was_cut(open_storage: Opener,
                                                         data_dir: Path) -> None:
    st = open_storage()
    write_batches(st, None, 3)
    st.close()
    seg = segments(data_dir)[-1]
    seg.write_bytes(seg.read_bytes()[:-5])
    st = open_storage()
    assert st.last_index() == 6
    st.append(ents(7, 12, 3))
    st.sync()
    expected = state_of(st)
    st.close()
    assert reopen_state(data_dir) == expected


def test_damage_inside_the_final_write_counts_as_torn(open_storage: Opener,
                                                      data_dir: Path) -> None:
    """A bad record followed only by records of the same (last) write: never acknowledged."""
    st = open_storage()
    write_batches(st, None, 2)
    synced = state_of(st)
    seg = segments(data_dir)[-1]
    start = os.path.getsize(seg)
    st.append(ents(7, 9, 1))
    st.append(ents(10, 12, 1))  # same sync, so same write
    st.sync()
    st.close()
    data = bytearray(seg.read_bytes())
    data[start + 40] ^= 0xFF  # inside the first record of the last write
    seg.write_bytes(bytes(data))
    assert reopen_state(data_dir) == synced
    assert os.path.getsize(seg) == start


# -- (b) corruption of synced data ----------------------------------------------------------------
@pytest.mark.parametrize("where", [0, 3, 4, 8, 12, 16, 24, 31, 32, 33, 60, -1])
def test_bit_flip_before_later_syncs_is_corruption(open_storage: Opener, data_dir: Path,
                                                   where: int) -> None:
    st = open_storage()
    seg = segments(data_dir)[-1]
    starts = write_batches(st, seg, 8)
    st.close()
    good = seg.read_bytes()
    victim, end = starts[4], starts[5]  # a record in the middle, valid records after it
    data = bytearray(good)
    data[victim + where if where >= 0 else end + where] ^= 0x04
    seg.write_bytes(bytes(data))
    with pytest.raises(WALCorruptionError) as err:
        DurableStorage.open(data_dir, disk=NoSyncDisk())
    assert err.value.path == str(seg)
    assert err.value.offset == victim
    assert str(seg) in str(err.value) and f"offset {victim}" in str(err.value)
    assert seg.read_bytes() == bytes(data), "a corrupt WAL must not be 'repaired'"


def test_bad_record_in_a_sealed_segment_is_corruption(open_storage: Opener,
                                                      data_dir: Path) -> None:
    st = open_storage(segment_size=300)
    write_batches(st, None, 10)
    st.close()
    segs = segments(data_dir)
    assert len(segs) >= 3
    sealed = segs[1]
    good = sealed.read_bytes()
    # Its last record: the tail of a sealed segment is never a torn write.
    data = bytearray(good)
    data[-3] ^= 0x01
    sealed.write_bytes(bytes(data))
    with pytest.raises(WALCorruptionError) as err:
        DurableStorage.open(data_dir, disk=NoSyncDisk())
    assert err.value.path == str(sealed)
    assert 0 < err.value.offset < len(good)
    # A sealed segment cut short is just as bad.
    sealed.write_bytes(good[:-10])
    with pytest.raises(WALCorruptionError, match="sealed segment"):
        DurableStorage.open(data_dir, disk=NoSyncDisk())


def test_damaged_segment_header_is_corruption(open_storage: Opener, data_dir: Path) -> None:
    st = open_storage()
    write_batches(st, None, 2)
    st.close()
    seg = segments(data_dir)[-1]
    data = bytearray(seg.read_bytes())
    data[40] ^= 0x80
    seg.write_bytes(bytes(data))
    with pytest.raises(WALCorruptionError) as err:
        DurableStorage.open(data_dir, disk=NoSyncDisk())
    assert (err.value.path, err.value.offset) == (str(seg), 0)


def test_missing_segments_are_corruption(open_storage: Opener, data_dir: Path) -> None:
    st = open_storage(segment_size=250)
    write_batches(st, None, 10)
    st.close()
    segs = segments(data_dir)
    segs[2].rename(segs[2].with_suffix(".bak"))
    with pytest.raises(WALCorruptionError, match="missing") as err:
        DurableStorage.open(data_dir, disk=NoSyncDisk())
    assert err.value.path == str(segs[3])
    segs[2].with_suffix(".bak").rename(segs[2])
    # Losing the oldest segment loses entries that nothing else holds.
    segs[0].unlink()
    with pytest.raises(WALCorruptionError, match="no record holds entries"):
        DurableStorage.open(data_dir, disk=NoSyncDisk())


def test_leftover_temporary_files_are_removed(open_storage: Opener, data_dir: Path) -> None:
    st = open_storage()
    write_batches(st, None, 2)
    st.close()
    half_segment = data_dir / "wal" / "0000000000000001-0000000000000007.wal.tmp"
    half_snapshot = data_dir / "snap" / "0000000000000001-0000000000000004.snap.tmp"
    half_segment.write_bytes(b"\x00" * 10)
    half_snapshot.write_bytes(b"CONF")
    assert reopen_state(data_dir)[2] == 6
    assert not half_segment.exists() and not half_snapshot.exists()


# -- (c) crash between write and fdatasync ------------------------------------------------------
def random_op(rng: random.Random, model: MemoryStorage, term: int) -> tuple[str, tuple]:
    snap_index = model.snapshot().meta.index
    last = model.last_index()
    r = rng.random()
    if r < 0.55:
        lo = max(model.first_index(), snap_index + 1, last + 1 - rng.randint(0, 4))
        return "append", (ents(lo, lo + rng.randint(0, 6), term, rng.randint(0, 60)),)
    if r < 0.85:
        return "set_hard_state", (HardState(term, rng.randint(0, 3), max(snap_index, last - 2)),)
    if r < 0.95 and last > snap_index:
        return "create_snapshot", (rng.randint(snap_index + 1, last), CONF, rng.randbytes(20))
    meta = SnapshotMeta(snap_index + rng.randint(1, 10), term, CONF)
    return "apply_snapshot", (Snapshot(meta, rng.randbytes(10)),)


@pytest.mark.parametrize("seed", range(8))
def test_crash_between_write_and_fdatasync(tmp_path: Path, seed: int) -> None:
    """Whatever part of the unsynced write survives, recovery finds a state the log passed
    through, and never one older than the last completed sync."""
    rng = random.Random(seed)
    partial = 0
    for run in range(40):
        root = tmp_path / f"run{run}"
        disk = FaultyDisk()
        seg_size = rng.choice([300, 2000, 1 << 20])
        st = DurableStorage.open(root, segment_size=seg_size, disk=disk)
        model = MemoryStorage()
        term = 1
        for _ in range(rng.randint(0, 8)):  # acknowledged history
            for _ in range(rng.randint(1, 4)):
                term += rng.random() < 0.2
                op, args = random_op(rng, model, term)
                getattr(model, op)(*args)
                getattr(st, op)(*args)
            st.sync()
            if rng.random() < 0.2 and model.snapshot().meta.index >= model.first_index():
                st.compact(model.snapshot().meta.index)
                model.compact(model.snapshot().meta.index)
        # The final, unacknowledged write: every prefix of it is a legal outcome.
        outcomes = [state_of(model)]
        for _ in range(rng.randint(1, 5)):
            op, args = random_op(rng, model, term)
            getattr(model, op)(*args)
            getattr(st, op)(*args)
            outcomes.append(state_of(model))
        seg = segments(root)[-1]
        synced_size = os.path.getsize(seg)
        if not crash(st, disk, "unsynced"):  # the final ops wrote nothing new
            assert reopen_state(root) == outcomes[-1]
            continue
        written = seg.read_bytes()
        assert len(written) > synced_size
        cut = rng.randint(synced_size, len(written))
        garbage = rng.randbytes(rng.randint(1, 100)) if rng.random() < 0.5 else b""
        seg.write_bytes(written[:cut] + garbage)

        got = reopen_state(root)
        assert got in outcomes, f"seed {seed} run {run}: recovered a state never reached"
        partial += 0 < outcomes.index(got) < len(outcomes) - 1
    assert partial > 0  # some runs did recover part of the final write


# -- (d) snapshot files ------------------------------------------------------------------------
def test_corrupt_snapshot_file_is_an_error_naming_it(open_storage: Opener,
                                                     data_dir: Path) -> None:
    st = open_storage()
    st.append(ents(1, 10, 1))
    st.create_snapshot(8, CONF, b"the state machine at 8" * 10)
    st.compact(8)
    st.close()
    (snap,) = snapshot_files(data_dir)
    good = snap.read_bytes()
    data = bytearray(good)
    data[len(good) // 2] ^= 0x01
    snap.write_bytes(bytes(data))
    with pytest.raises(SnapshotCorruptionError) as err:
        DurableStorage.open(data_dir, disk=NoSyncDisk())
    assert err.value.path == str(snap) and str(snap) in str(err.value)
    snap.write_bytes(good[:-1])
    with pytest.raises(SnapshotCorruptionError):
        DurableStorage.open(data_dir, disk=NoSyncDisk())
    snap.unlink()
    with pytest.raises(SnapshotCorruptionError, match="missing"):
        DurableStorage.open(data_dir, disk=NoSyncDisk())
    snap.write_bytes(good)
    assert reopen_state(data_dir)[5] == SnapshotMeta(8, 1, CONF)


def test_crash_after_snapshot_file_before_wal_record(open_storage: Opener, disk: FaultyDisk,
                                                     data_dir: Path) -> None:
    st = open_storage()
    st.append(ents(1, 10, 1))
    st.sync()
    synced = state_of(st)
    st.create_snapshot(9, CONF, b"nine")
    assert len(snapshot_files(data_dir)) == 1
    assert crash(st, disk, "lost")
    assert reopen_state(data_dir) == synced
    assert snapshot_files(data_dir) == []  # the orphan is cleaned up


def test_lost_wal_with_snapshots_left_is_refused(open_storage: Opener, data_dir: Path) -> None:
    st = open_storage()
    st.append(ents(1, 5, 1))
    st.create_snapshot(5, CONF, b"five")
    st.compact(5)
    st.close()
    for seg in segments(data_dir):
        seg.unlink()
    with pytest.raises(StorageError, match="WAL is lost"):
        DurableStorage.open(data_dir, disk=NoSyncDisk())
    assert segments(data_dir) == []  # and it did not start a fresh WAL either
