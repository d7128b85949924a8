"""Record framing, payload codecs and snapshot files, byte by byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from confer.raft.types import ConfState, Entry, EntryType, HardState, SnapshotMeta
from confer.storage import SnapshotCorruptionError, codec
from confer.storage.codec import DecodeError, RecordType, SegmentStart
from confer.storage.snapfile import SnapshotStore

from .helpers import FaultyDisk

META = SnapshotMeta(42, 7, ConfState(frozenset({3, 1, 2}), frozenset({9})))


def record(rtype: int, payload: bytes, offset: int = 0, batch: int = 0) -> bytes:
    return b"".join(codec.frame(rtype, payload, offset, batch))


def test_entries_round_trip() -> None:
    ents = [
        Entry(5, 2, b""),
        Entry(6, 2, b"x" * 1000),
        Entry(7, 3, b"\x00cc", EntryType.CONF_CHANGE),
    ]
    payload = codec.encode_entries(ents)
    assert len(payload) == 3 * 21 + 1003
    buf = b"pad" + payload
    assert codec.decode_entries(buf, 3, len(buf)) == ents
    assert type(codec.decode_entries(buf, 3, len(buf))[2].type) is EntryType


@pytest.mark.parametrize("cut", [1, 20, 21, 22])
def test_entries_truncated_payload_is_a_decode_error(cut: int) -> None:
    payload = codec.encode_entries([Entry(1, 1, b"abc")])
    with pytest.raises(DecodeError):
        codec.decode_entries(payload[:-cut], 0, len(payload) - cut)


def test_noncontiguous_entries_are_a_decode_error() -> None:
    payload = codec.encode_entries([Entry(1, 1), Entry(3, 1)])
    with pytest.raises(DecodeError, match="not contiguous"):
        codec.decode_entries(payload, 0, len(payload))


def test_scalar_payloads_round_trip() -> None:
    hs = HardState(9, 2, 40)
    p = codec.encode_hard_state(hs)
    assert codec.decode_hard_state(p, 0, len(p)) == hs
    p = codec.encode_compact(10, 3)
    assert codec.decode_compact(p, 0, len(p)) == (10, 3)
    for reset in (False, True):
        p = codec.encode_snapshot(META, reset)
        assert codec.decode_snapshot(p, 0, len(p)) == (META, reset)
    start = SegmentStart(4, 101, hs, 20, 2, META)
    p = start.encode()
    got = SegmentStart.decode(p, 0, len(p))
    assert (got.seq, got.next_index, got.hard_state, got.compact_index, got.compact_term,
            got.snapshot) == (4, 101, hs, 20, 2, META)
    with pytest.raises(DecodeError):
        SegmentStart.decode(p + b"\x00", 0, len(p) + 1)


def test_header_layout() -> None:
    rec = record(RecordType.HARD_STATE, b"payload", offset=64, batch=32)
    assert len(rec) == codec.HEADER_SIZE + 7
    assert rec[:4] == codec.MAGIC_BYTES
    buf = bytes(64) + rec
    assert codec.parse_header(buf, 64) == (RecordType.HARD_STATE, 96, 103, 32)


def test_every_bit_flip_is_detected() -> None:
    rec = record(RecordType.ENTRIES, codec.encode_entries([Entry(1, 1, b"hello")]))
    assert codec.parse_header(rec, 0) is not None
    for i in range(len(rec) * 8):
        bad = bytearray(rec)
        bad[i // 8] ^= 1 << (i % 8)
        assert codec.parse_header(bytes(bad), 0) is None, f"bit {i} flip went unnoticed"


def test_misplaced_or_short_records_are_rejected() -> None:
    rec = record(RecordType.HARD_STATE, codec.encode_hard_state(HardState(1, 1, 1)), offset=0)
    assert codec.parse_header(b"x" + rec, 1) is None  # claims offset 0, found at 1
    assert codec.parse_header(rec[:-1], 0) is None
    assert codec.parse_header(rec[:10], 0) is None
    later = record(RecordType.HARD_STATE, b"", offset=0, batch=5)
    assert codec.parse_header(later, 0) is None  # a batch cannot start after its record


# -- snapshot files ------------------------------------------------------------------------------
def test_snapshot_file_round_trip(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path), FaultyDisk())
    path = store.save(META, b"state" * 100)
    assert Path(path).name == "0000000000000007-000000000000002a.snap"
    snap = store.load(META)
    assert snap.meta == META and snap.data == b"state" * 100
    assert not list(tmp_path.glob("*.tmp"))


def test_snapshot_file_damage_names_the_file(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path), FaultyDisk())
    path = Path(store.save(META, b"state" * 10))
    good = path.read_bytes()
    for i in range(0, len(good), 7):
        bad = bytearray(good)
        bad[i] ^= 0x10
        path.write_bytes(bytes(bad))
        with pytest.raises(SnapshotCorruptionError) as err:
            store.load(META)
        assert err.value.path == str(path) and str(path) in str(err.value)
    for cut in (1, len(good) // 2, len(good) - 1):
        path.write_bytes(good[:cut])
        with pytest.raises(SnapshotCorruptionError):
            store.load(META)
    # A valid file, but the WAL recorded different metadata for this index and term.
    path.write_bytes(good)
    with pytest.raises(SnapshotCorruptionError, match="expects"):
        store.load(SnapshotMeta(42, 7))
    path.unlink()
    with pytest.raises(SnapshotCorruptionError, match="missing"):
        store.load(META)


def test_remove_except_keeps_only_the_current_snapshot(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path), FaultyDisk())
    old = SnapshotMeta(10, 1)
    store.save(old, b"old")
    store.save(META, b"new")
    (tmp_path / "0000000000000009-0000000000000063.snap.tmp").write_bytes(b"half")
    (tmp_path / "README").write_text("not ours")
    store.remove_except(META)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "0000000000000007-000000000000002a.snap", "README",
    ]


def test_remove_except_can_spare_snapshots_being_written(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path), FaultyDisk())
    store.save(SnapshotMeta(10, 1), b"old")
    store.save(META, b"current")
    (tmp_path / "0000000000000007-0000000000000063.snap.tmp").write_bytes(b"being written")
    store.save(SnapshotMeta(80, 7), b"written, not yet recorded")
    store.remove_except(META, keep_newer=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "0000000000000007-000000000000002a.snap", "0000000000000007-0000000000000050.snap",
        "0000000000000007-0000000000000063.snap.tmp",
    ]
