"""Byte layout of WAL records and their payloads (see docs/storage.md).

Every record is a fixed 32-byte header followed by ``length`` payload bytes, little endian::

    magic u32 | crc u32 | length u32 | type u8 | pad 3 | offset u64 | batch u64 | payload

``crc`` is CRC32C over header bytes 8..32 then the payload. ``offset`` is the record's own
position in its segment file and ``batch`` the position where the write holding it began
(one write per sync). Recovery uses ``batch`` to tell a torn final write from damage to data
that an earlier sync made durable.
"""

from __future__ import annotations

import enum
import struct

from crc32c import crc32c

from confer.raft.types import ConfState, Entry, EntryType, HardState, SnapshotMeta

MAGIC = 0xF1C00ED9
MAGIC_BYTES = MAGIC.to_bytes(4, "little")
FORMAT_VERSION = 1

_HEAD = struct.Struct("<II")  # magic, crc
_TAIL = struct.Struct("<IB3xQQ")  # length, type, offset, batch: the checksummed part
HEADER = struct.Struct("<IIIB3xQQ")
HEADER_SIZE = HEADER.size  # 32

_ENTRY = struct.Struct("<QQBI")  # index, term, type, data length; then the data
_ENTRY_SIZE = _ENTRY.size  # 21
_ENTRY_TYPES = tuple(EntryType)  # value -> member without an enum call per entry
_HARD_STATE = struct.Struct("<QQQ")
_COMPACT = struct.Struct("<QQ")
_META = struct.Struct("<QQII")  # index, term, #voters, #learners; then the ids as u64
_SEGMENT = struct.Struct("<IQQ")  # version, seq, index of the next entry at creation
_SNAP_RESET = 1


class RecordType(enum.IntEnum):
    SEGMENT = 1
    """First record of every segment: its number plus the state it starts from."""
    ENTRIES = 2
    """Contiguous entries; the first one's index truncates any longer tail (Raft overwrite)."""
    HARD_STATE = 3
    SNAPSHOT = 4
    """A snapshot file became current; with the reset flag the log restarts after it."""
    COMPACT = 5
    """Entries up to an index were dropped (the log's first index moved)."""


class DecodeError(ValueError):
    """A payload passed its checksum but does not parse: a bug or a foreign file."""


def frame(rtype: int, payload: bytes, offset: int, batch: int) -> tuple[bytes, bytes, bytes]:
    """The record as three buffers to write in order (no copy of ``payload``)."""
    tail = _TAIL.pack(len(payload), rtype, offset, batch)
    return _HEAD.pack(MAGIC, crc32c(payload, crc32c(tail))), tail, payload


def parse_header(buf: bytes, pos: int) -> tuple[int, int, int, int] | None:
    """``(type, payload start, payload end, batch)`` of a valid record at ``pos``, else None.

    Valid means: magic, its own offset, a batch not after it, in bounds, and the checksum.
    """
    if len(buf) - pos < HEADER_SIZE:
        return None
    magic, crc, length, rtype, offset, batch = HEADER.unpack_from(buf, pos)
    start = pos + HEADER_SIZE
    end = start + length
    if magic != MAGIC or offset != pos or batch > pos or end > len(buf):
        return None
    if crc32c(memoryview(buf)[pos + 8 : end]) != crc:
        return None
    return rtype, start, end, batch


# -- entries -----------------------------------------------------------------------------------
def encode_entries(ents: list[Entry]) -> bytes:
    """Entries back to back; the hot path, so one struct call and no objects per entry."""
    pack = _ENTRY.pack
    parts: list[bytes] = []
    for e in ents:
        d = e.data
        parts += (pack(e.index, e.term, e.type, len(d)), d)
    return b"".join(parts)


def decode_entries(buf: bytes, start: int, end: int) -> list[Entry]:
    unpack = _ENTRY.unpack_from
    types = _ENTRY_TYPES
    out: list[Entry] = []
    append = out.append
    pos = start
    try:
        while pos < end:
            index, term, etype, n = unpack(buf, pos)
            pos += _ENTRY_SIZE
            append(Entry(index, term, buf[pos : pos + n], types[etype]))
            pos += n
    except (struct.error, IndexError) as exc:
        raise DecodeError(f"bad entry at payload byte {pos - start}: {exc}") from exc
    if pos != end or not out:
        raise DecodeError("entries overrun their record" if out else "empty entries record")
    if out[-1].index - out[0].index != len(out) - 1:
        raise DecodeError(f"entries {out[0].index}..{out[-1].index} are not contiguous")
    return out


# -- scalar records ----------------------------------------------------------------------------
def encode_hard_state(hs: HardState) -> bytes:
    return _HARD_STATE.pack(hs.term, hs.vote, hs.commit)


def decode_hard_state(buf: bytes, start: int, end: int) -> HardState:
    _expect_size(end - start, _HARD_STATE.size, "hard state")
    return HardState(*_HARD_STATE.unpack_from(buf, start))


def encode_compact(index: int, term: int) -> bytes:
    return _COMPACT.pack(index, term)


def decode_compact(buf: bytes, start: int, end: int) -> tuple[int, int]:
    _expect_size(end - start, _COMPACT.size, "compact")
    index, term = _COMPACT.unpack_from(buf, start)
    return index, term


def encode_meta(meta: SnapshotMeta) -> bytes:
    """Snapshot metadata; member ids sorted so the bytes are deterministic."""
    voters = sorted(meta.conf_state.voters)
    learners = sorted(meta.conf_state.learners)
    ids = struct.pack(f"<{len(voters) + len(learners)}Q", *voters, *learners)
    return _META.pack(meta.index, meta.term, len(voters), len(learners)) + ids


def decode_meta(buf: bytes, pos: int, end: int) -> tuple[SnapshotMeta, int]:
    """The metadata at ``pos`` and the position after it."""
    if end - pos < _META.size:
        raise DecodeError("snapshot metadata truncated")
    index, term, nv, nl = _META.unpack_from(buf, pos)
    pos += _META.size
    if end - pos < 8 * (nv + nl):
        raise DecodeError("snapshot member list truncated")
    ids = struct.unpack_from(f"<{nv + nl}Q", buf, pos)
    conf = ConfState(frozenset(ids[:nv]), frozenset(ids[nv:]))
    return SnapshotMeta(index, term, conf), pos + 8 * (nv + nl)


def encode_snapshot(meta: SnapshotMeta, reset: bool) -> bytes:
    return bytes((_SNAP_RESET if reset else 0,)) + encode_meta(meta)


def decode_snapshot(buf: bytes, start: int, end: int) -> tuple[SnapshotMeta, bool]:
    if end <= start:
        raise DecodeError("empty snapshot record")
    meta, pos = decode_meta(buf, start + 1, end)
    _expect_size(end - start, pos - start, "snapshot")
    return meta, bool(buf[start] & _SNAP_RESET)


class SegmentStart:
    """What a SEGMENT record holds: the segment's number and the state it starts from.

    The state is repeated at the head of every segment so that older segments can be
    deleted without losing the hard state, the snapshot or the compaction point.
    """

    __slots__ = ("compact_index", "compact_term", "hard_state", "next_index", "seq", "snapshot")

    def __init__(self, seq: int, next_index: int, hard_state: HardState, compact_index: int,
                 compact_term: int, snapshot: SnapshotMeta) -> None:
        self.seq = seq
        self.next_index = next_index
        self.hard_state = hard_state
        self.compact_index = compact_index
        self.compact_term = compact_term
        self.snapshot = snapshot

    def encode(self) -> bytes:
        return b"".join((
            _SEGMENT.pack(FORMAT_VERSION, self.seq, self.next_index),
            encode_hard_state(self.hard_state),
            encode_compact(self.compact_index, self.compact_term),
            encode_meta(self.snapshot),
        ))

    @classmethod
    def decode(cls, buf: bytes, start: int, end: int) -> SegmentStart:
        fixed = _SEGMENT.size + _HARD_STATE.size + _COMPACT.size
        if end - start < fixed:
            raise DecodeError("segment header truncated")
        version, seq, next_index = _SEGMENT.unpack_from(buf, start)
        if version != FORMAT_VERSION:
            raise DecodeError(f"unknown WAL format version {version}")
        pos = start + _SEGMENT.size
        hs = HardState(*_HARD_STATE.unpack_from(buf, pos))
        pos += _HARD_STATE.size
        c_index, c_term = _COMPACT.unpack_from(buf, pos)
        meta, pos = decode_meta(buf, pos + _COMPACT.size, end)
        _expect_size(end - start, pos - start, "segment header")
        return cls(seq, next_index, hs, c_index, c_term, meta)


def _expect_size(got: int, want: int, what: str) -> None:
    if got != want:
        raise DecodeError(f"{what} payload is {got} bytes, expected {want}")
