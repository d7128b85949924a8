"""The few OS calls that decide durability, behind one small seam.

Storage writes and syncs only through a :class:`Disk`. Tests substitute one that crashes
between ``write`` and ``fdatasync``; benchmarks and simulations may use :class:`NoSyncDisk`.
"""

from __future__ import annotations

import os

# macOS has no fdatasync; fsync is the closest (stronger, slower) call there.
_fdatasync = getattr(os, "fdatasync", os.fsync)


class Disk:
    """The real thing: plain ``os`` calls."""

    def write(self, fd: int, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data`` at the file's current position."""
        n = os.write(fd, data)
        if n != len(data):  # rare for regular files, but allowed by POSIX
            view = memoryview(data)[n:]
            while view:
                view = view[os.write(fd, view) :]

    def fdatasync(self, fd: int) -> None:
        """Make the file's data (and its size) durable."""
        _fdatasync(fd)

    def fsync(self, fd: int) -> None:
        """Make the file's data and all of its metadata durable."""
        os.fsync(fd)

    def fsync_dir(self, path: str) -> None:
        """Make the directory's entries (creations, renames, removals) durable."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class NoSyncDisk(Disk):
    """Writes but never syncs: nothing survives a machine crash. Tests and benchmarks only."""

    def fdatasync(self, fd: int) -> None:
        pass

    def fsync(self, fd: int) -> None:
        pass

    def fsync_dir(self, path: str) -> None:
        pass
