"""Snapshot files: one per snapshot, checksummed, written atomically.

Layout (little endian)::

    magic "CONFSNAP" | version u32 | crc u32 | index u64 | term u64 | #voters u32 |
    #learners u32 | voter ids u64... | learner ids u64... | data length u64 | data

``crc`` is CRC32C over everything after it. A file is written under a temporary name,
fsynced, renamed into place and the directory fsynced, so a file with its final name is
always complete; the WAL decides which one is current.
"""

from __future__ import annotations

import os
import re
import struct

from crc32c import crc32c

from confer.raft.types import Snapshot, SnapshotMeta
from confer.storage import codec
from confer.storage.codec import DecodeError
from confer.storage.disk import Disk
from confer.storage.errors import SnapshotCorruptionError

_MAGIC = b"CONFSNAP"
_VERSION = 1
_HEAD = struct.Struct("<8sII")  # magic, version, crc
_LEN = struct.Struct("<Q")
_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")


def snapshot_name(meta: SnapshotMeta) -> str:
    """``<term>-<index>.snap``, both as 16 hex digits."""
    return f"{meta.term:016x}-{meta.index:016x}.snap"


class SnapshotStore:
    """The snapshot directory."""

    def __init__(self, dirpath: str, disk: Disk) -> None:
        self._dir = dirpath
        self._disk = disk
        disk.makedirs(dirpath)

    def path(self, meta: SnapshotMeta) -> str:
        return os.path.join(self._dir, snapshot_name(meta))

    def save(self, meta: SnapshotMeta, data: bytes) -> str:
        """Write the snapshot file durably; returns its path."""
        path = self.path(meta)
        body = codec.encode_meta(meta) + _LEN.pack(len(data))
        head = _HEAD.pack(_MAGIC, _VERSION, crc32c(data, crc32c(body)))
        tmp = path + ".tmp"
        disk = self._disk
        fd = disk.create(tmp)
        try:
            disk.write(fd, head + body)
            disk.write(fd, data)  # separately: snapshot data can be large
            disk.fsync(fd)
        finally:
            disk.close(fd)
        disk.rename(tmp, path)
        disk.fsync_dir(self._dir)
        return path

    def load(self, meta: SnapshotMeta) -> Snapshot:
        """The snapshot the WAL names by ``meta``; raises :class:`SnapshotCorruptionError`."""
        path = self.path(meta)
        try:
            buf = self._disk.read(path)
        except FileNotFoundError:
            raise SnapshotCorruptionError(path, "missing, but the WAL refers to it") from None
        if len(buf) < _HEAD.size:
            raise SnapshotCorruptionError(path, f"only {len(buf)} bytes long")
        magic, version, crc = _HEAD.unpack_from(buf, 0)
        if magic != _MAGIC:
            raise SnapshotCorruptionError(path, "not a snapshot file (bad magic)")
        if version != _VERSION:
            raise SnapshotCorruptionError(path, f"unknown format version {version}")
        if crc32c(memoryview(buf)[_HEAD.size :]) != crc:
            raise SnapshotCorruptionError(path, "checksum mismatch")
        try:
            got, pos = codec.decode_meta(buf, _HEAD.size, len(buf))
        except DecodeError as exc:
            raise SnapshotCorruptionError(path, str(exc)) from None
        if len(buf) - pos < _LEN.size:
            raise SnapshotCorruptionError(path, "data length missing")
        (n,) = _LEN.unpack_from(buf, pos)
        pos += _LEN.size
        if len(buf) - pos != n:
            raise SnapshotCorruptionError(path, f"data is {len(buf) - pos} bytes, header says {n}")
        if got != meta:
            raise SnapshotCorruptionError(path, f"holds {got}, the WAL expects {meta}")
        return Snapshot(got, buf[pos:])

    def remove_except(self, keep: SnapshotMeta, *, keep_newer: bool = False) -> list[str]:
        """Delete every snapshot file (and leftover temporary file) but ``keep``'s, and
        (``keep_newer``) but those of snapshots after ``keep``'s index."""
        keep_name = snapshot_name(keep) if keep.index else None
        removed = []
        for name in self._disk.listdir(self._dir):
            m = _NAME.match(name.removesuffix(".tmp"))
            if name != keep_name and m:
                if keep_newer and int(m.group(2), 16) > keep.index:
                    continue
                path = os.path.join(self._dir, name)
                self._disk.remove(path)
                removed.append(path)
        return removed

    def disk_usage(self) -> int:
        """Bytes in the snapshot directory's files."""
        disk = self._disk
        return sum(disk.size(os.path.join(self._dir, n)) for n in disk.listdir(self._dir))
