"""Helpers for the durable storage tests: a fault-injecting disk and state capture."""

from __future__ import annotations

from pathlib import Path

from confer.raft.storage import LogStorage
from confer.storage import DurableStorage, NoSyncDisk, StorageFailedError


class SimulatedCrash(Exception):
    """The machine went down in the middle of a disk operation."""


class FaultyDisk(NoSyncDisk):
    """Skips fsyncs (tests crash by editing files, not by pulling power) and crashes on demand.

    ``mode`` "lost": the next write never happens. "unsynced": the next write reaches the
    file but the fdatasync after it "crashes", so the test decides how much of it survives.
    """

    def __init__(self) -> None:
        self.mode: str | None = None

    def write(self, fd: int, data: bytes | bytearray | memoryview) -> None:
        if self.mode == "lost":
            self.mode = None
            raise SimulatedCrash("crashed before write")
        super().write(fd, data)

    def fdatasync(self, fd: int) -> None:
        if self.mode == "unsynced":
            self.mode = None
            raise SimulatedCrash("crashed before fdatasync")


def crash(storage: DurableStorage, disk: FaultyDisk, mode: str = "lost") -> bool:
    """Crash ``storage`` during its next sync and abandon it (its files stay as they are).

    Returns False if the sync had nothing to write, so there was nothing to crash in.
    """
    disk.mode = mode
    try:
        storage.sync()
    except StorageFailedError as exc:
        assert isinstance(exc.__cause__, SimulatedCrash)
        storage.close()  # after a failure this only releases the files and the lock
        return True
    disk.mode = None
    storage.close()
    return False


State = tuple[object, ...]


def state_of(s: LogStorage) -> State:
    """Everything a reader can observe through the LogStorage protocol."""
    first, last = s.first_index(), s.last_index()
    terms = tuple(s.term(i) for i in range(first - 1, last + 1))
    ents = s.entries(first, last + 1) if last >= first else []
    snap = s.snapshot()
    return (
        s.initial_state(), first, last, terms,
        tuple((e.index, e.term, bytes(e.data), int(e.type)) for e in ents),
        snap.meta, bytes(snap.data),
    )


def segments(root: Path) -> list[Path]:
    return sorted((root / "wal").glob("*.wal"))


def snapshot_files(root: Path) -> list[Path]:
    return sorted((root / "snap").glob("*.snap"))
