"""Durable storage for the Raft log: a checksummed, segmented WAL plus snapshot files.

Open a data directory with :meth:`DurableStorage.open`; it implements
:class:`confer.raft.storage.WritableLogStorage`. The on-disk format is in docs/storage.md.
"""

from confer.storage.disk import Disk, NoSyncDisk
from confer.storage.durable import DurableStorage
from confer.storage.errors import (
    SnapshotCorruptionError,
    StorageError,
    StorageFailedError,
    WALCorruptionError,
)
from confer.storage.wal import DEFAULT_SEGMENT_SIZE

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "Disk",
    "DurableStorage",
    "NoSyncDisk",
    "SnapshotCorruptionError",
    "StorageError",
    "StorageFailedError",
    "WALCorruptionError",
]
