"""Errors raised by durable storage. Each names the file (and offset) it is about."""

from __future__ import annotations


class StorageError(Exception):
    """Base class for durable storage errors."""


class WALCorruptionError(StorageError):
    """A WAL record that was once durable is damaged, or the WAL is incomplete.

    Raised on open instead of silently dropping data: ``path`` is the segment file and
    ``offset`` the byte offset of the first bad record in it.
    """

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"{path}: corrupt WAL at byte offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class SnapshotCorruptionError(StorageError):
    """The snapshot file the WAL refers to is missing or fails its checks."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: corrupt snapshot file: {reason}")
        self.path = path
        self.reason = reason


class StorageFailedError(StorageError):
    """An earlier write or sync failed; the storage refuses further work until reopened.

    After a failed fsync the kernel may have dropped the dirty pages, so what is on disk is
    unknown; the only safe way on is to reopen and let recovery read what really is there.
    """
