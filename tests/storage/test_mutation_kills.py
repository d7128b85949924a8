"""Tests that pin the WAL's checksum rules at their exact boundaries.

Written for mutants of ``codec.py`` and ``wal.py`` that survived the rest of the suite (see
docs/mutation-testing.md); every docstring names the rule it pins.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from confer.raft.types import Entry
from confer.storage import DurableStorage, NoSyncDisk, WALCorruptionError, codec

from .helpers import segments

Opener = Callable[..., DurableStorage]


def test_damage_before_a_later_sync_is_corruption_even_with_a_torn_tail(
    open_storage: Opener, data_dir: Path
) -> None:
    """Checksums and the torn-write rule: a bad record is a torn tail only if no valid record
    of a *later* write follows it. Every magic number after it must be probed in turn, not
    just the last one in the file, which here belongs to a torn final write."""
    st = open_storage()
    seg = segments(data_dir)[-1]
    starts = []
    for b in range(4):
        starts.append(os.path.getsize(seg))
        # Magic numbers inside payloads are false starts the probe must step over one by one.
        st.append([Entry(b + 1, 1, b"x" * 8 + codec.MAGIC_BYTES + b"x" * 8)])
        st.sync()
    st.close()
    data = bytearray(seg.read_bytes())
    victim = starts[1]
    data[victim + 40] ^= 0x01  # inside a record that later syncs prove durable
    torn = b"".join(codec.frame(codec.RecordType.HARD_STATE, bytes(24), len(data), len(data)))
    seg.write_bytes(bytes(data) + torn[:20])  # a torn final write, magic number included
    with pytest.raises(WALCorruptionError) as err:
        DurableStorage.open(data_dir, disk=NoSyncDisk())
    assert err.value.offset == victim


def test_a_header_only_record_at_the_end_of_the_file_is_valid() -> None:
    """Checksums: the bounds check admits a record that ends exactly at the end of the data."""
    rec = b"".join(codec.frame(codec.RecordType.HARD_STATE, b"", 0, 0))
    assert len(rec) == codec.HEADER_SIZE
    assert codec.parse_header(rec, 0) == (codec.RecordType.HARD_STATE, 32, 32, 0)
    assert codec.parse_header(rec[:-1], 0) is None


def test_a_checksummed_but_undecodable_record_is_corruption_naming_file_and_offset(
    open_storage: Opener, data_dir: Path
) -> None:
    """Checksums do not make a record meaningful: one that passes its checksum but does not
    decode (a bug or a foreign file) is reported with its file and offset, never skipped."""
    st = open_storage()
    st.append([Entry(1, 1, b"x")])
    st.sync()
    st.close()
    seg = segments(data_dir)[-1]
    good = seg.read_bytes()
    pos = len(good)
    foreign = b"".join(codec.frame(99, b"", pos, pos))
    seg.write_bytes(good + foreign)
    with pytest.raises(WALCorruptionError) as err:
        DurableStorage.open(data_dir, disk=NoSyncDisk())
    assert (err.value.path, err.value.offset) == (str(seg), pos)
    assert "unknown record type 99" in err.value.reason
    # The segment header itself: checksummed, but not a segment header Confer can read.
    rtype, _, end, _ = codec.parse_header(good, 0) or (0, 0, 0, 0)
    assert rtype == codec.RecordType.SEGMENT
    bad_header = b"".join(codec.frame(codec.RecordType.SEGMENT, bytes(end - 32), 0, 0))
    seg.write_bytes(bad_header + good[end:])
    with pytest.raises(WALCorruptionError) as err:
        DurableStorage.open(data_dir, disk=NoSyncDisk())
    assert (err.value.path, err.value.offset) == (str(seg), 0)
    assert err.value.reason and err.value.reason != "None"
