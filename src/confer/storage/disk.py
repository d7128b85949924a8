"""Every file-system call durable storage makes, behind one small seam.

Storage touches files only through a :class:`Disk`: the WAL, the snapshot files and the
directory lock. The real one is a thin layer over ``os`` that hands out plain file
descriptors, so the write path costs what the bare calls cost. Tests substitute one that
crashes between ``write`` and ``fdatasync``; benchmarks may use :class:`NoSyncDisk`; the
simulator runs storage on an in-memory file system (``confer.sim.fs.SimFS``) that loses
unsynced data, tears writes and forgets unsynced directory entries when the power goes.

The contract a twin must keep: ``write`` appends at the end of what was written through that
descriptor (files are only ever written sequentially); file contents and sizes are durable
once ``fdatasync``/``fsync`` returns; creations, renames and removals are durable once
``fsync_dir`` of their directory returns.
"""

from __future__ import annotations

import fcntl
import os

# macOS has no fdatasync; fsync is the closest (stronger, slower) call there.
_fdatasync = getattr(os, "fdatasync", os.fsync)
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
FILE_MODE = 0o600
DIR_MODE = 0o700
"""Modes of what storage creates, as etcd's: the log holds every key and value, so only the
owner may read it (the umask may narrow them further)."""


class Disk:
    """The real thing: plain ``os`` calls."""

    # -- the write path ------------------------------------------------------------------------
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

    # -- files -----------------------------------------------------------------------------------
    def create(self, path: str) -> int:
        """Create (or empty) the file ``path`` and open it for appending."""
        return os.open(path, _APPEND | os.O_CREAT | os.O_TRUNC, FILE_MODE)

    def open_append(self, path: str) -> int:
        """Open the existing file ``path`` for appending."""
        return os.open(path, _APPEND)

    def truncate(self, fd: int, size: int) -> None:
        """Cut the open file down to ``size`` bytes (durable after an fsync)."""
        os.ftruncate(fd, size)

    def close(self, fd: int) -> None:
        os.close(fd)

    def read(self, path: str) -> bytes:
        """The whole file; raises FileNotFoundError."""
        with open(path, "rb") as f:
            return f.read()

    def size(self, path: str) -> int:
        return os.stat(path).st_size

    def lock(self, path: str) -> int:
        """Create ``path`` if missing and hold an exclusive lock on it until :meth:`close`.

        Raises BlockingIOError if someone else holds it.
        """
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(fd)
            raise
        return fd

    # -- directories -----------------------------------------------------------------------------
    def rename(self, src: str, dst: str) -> None:
        """Atomically replace ``dst`` by ``src`` (durable after ``fsync_dir``)."""
        os.rename(src, dst)

    def remove(self, path: str) -> None:
        os.remove(path)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def makedirs(self, path: str) -> None:
        """Create ``path`` and any missing parents (mode 0700); nothing if it exists."""
        os.makedirs(path, DIR_MODE, exist_ok=True)


class NoSyncDisk(Disk):
    """Writes but never syncs: nothing survives a machine crash. Tests and benchmarks only."""

    def fdatasync(self, fd: int) -> None:
        pass

    def fsync(self, fd: int) -> None:
        pass

    def fsync_dir(self, path: str) -> None:
        pass
