"""An in-memory file system that loses power the way disks do, for the real storage code.

:class:`SimFS` implements the storage :class:`~confer.storage.disk.Disk` seam, so
:class:`~confer.storage.DurableStorage` (WAL, snapshot files, recovery) runs on it unchanged.
It keeps two views of everything:

- **file contents**: what was written, and what the last ``fdatasync``/``fsync`` made durable;
- **directory entries**: the durable entries, plus the creations, renames and removals made
  since the directory's last ``fsync_dir``, in order.

:meth:`SimFS.power_loss` keeps the durable state and a random part of the rest, as a real
machine might: each directory keeps a prefix of its unsynced entry changes (a file created or
renamed there may vanish, a removed one may come back), and each file keeps its synced bytes
plus a random prefix of its unsynced ones, sometimes followed by a garbled tail (zeros where
the size grew but the data never landed, or stale sector contents), or with a hole inside
(sectors written back out of order). :meth:`SimFS.cut_power_after` makes the power fail in
the middle of a coming call (a write then lands only partly): the call raises
:class:`PowerCut`. Every choice comes from the generator the file system was given.

Files are only ever appended to (the seam's contract), so an unsynced write is always a
tail of the file.
"""

from __future__ import annotations

import os
import random

from confer.storage.disk import Disk


class PowerCut(BaseException):
    """The simulated machine lost power in the middle of a file-system call.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` in the code under
    test mistakes it for an I/O error it could handle: the process is simply gone.
    """


class _File:
    __slots__ = ("data", "durable", "synced")

    def __init__(self) -> None:
        self.data = bytearray()
        """What reads see."""
        self.synced = 0
        """``data[:synced]`` is durable ..."""
        self.durable: bytes | None = None
        """... unless a truncation since the last sync cut into it: then this is."""

    def durable_bytes(self) -> bytes:
        return self.durable if self.durable is not None else bytes(self.data[: self.synced])


class _Dir:
    __slots__ = ("durable", "live", "pending")

    def __init__(self) -> None:
        self.live: dict[str, _File | _Dir] = {}
        self.durable: dict[str, _File | _Dir] = {}
        self.pending: list[dict[str, _File | _Dir | None]] = []
        """Entry changes since the last fsync_dir, in order; each one atomic (a rename is
        one change of two names). None removes the name."""

    def change(self, ops: dict[str, _File | _Dir | None]) -> None:
        for name, node in ops.items():
            if node is None:
                del self.live[name]
            else:
                self.live[name] = node
        self.pending.append(ops)


class SimFS(Disk):
    """One simulated machine's file system (absolute paths; ``/`` always exists)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._root = _Dir()
        self._fds: dict[int, _File] = {}
        self._next_fd = 3
        self._locked: set[int] = set()  # id() of locked files
        self._lock_fds: dict[int, int] = {}  # fd -> id() of the file it locks
        self._countdown = -1
        self.power_cuts = 0
        """How many calls :meth:`cut_power_after` interrupted."""

    # -- crashing --------------------------------------------------------------------------------
    def cut_power_after(self, calls: int) -> None:
        """Lose power during the file-system call after the next ``calls`` changing ones
        (writes, syncs, creations, renames, removals, truncations): it raises PowerCut."""
        self._countdown = calls

    def disarm(self) -> None:
        """Call off a :meth:`cut_power_after` that has not struck."""
        self._countdown = -1

    @property
    def armed(self) -> bool:
        return self._countdown >= 0

    def _step(self) -> bool:
        """Count one changing call; True if the power fails in it."""
        if self._countdown < 0:
            return False
        if self._countdown > 0:
            self._countdown -= 1
            return False
        self._countdown = -1
        self.power_cuts += 1
        return True

    def power_loss(self) -> None:
        """The machine goes down: keep what is durable and a random part of the rest.

        Open files and locks are gone. Call before the storage is opened again.
        """
        self._fds.clear()
        self._locked.clear()
        self._lock_fds.clear()
        self._countdown = -1
        seen: set[int] = set()
        self._settle_dir(self._root, seen)

    def _settle_dir(self, d: _Dir, seen: set[int]) -> None:
        if d.pending:
            entries = dict(d.durable)
            for ops in d.pending[: self.rng.randint(0, len(d.pending))]:
                for name, node in ops.items():
                    if node is None:
                        entries.pop(name, None)
                    else:
                        entries[name] = node
            d.live, d.durable, d.pending = entries, dict(entries), []
        for name in sorted(d.live):
            node = d.live[name]
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, _Dir):
                self._settle_dir(node, seen)
            else:
                self._settle_file(node)

    def _settle_file(self, f: _File) -> None:
        rng = self.rng
        if f.durable is not None:  # an unsynced truncation: it happened or it did not
            kept = bytes(f.data) if rng.random() < 0.5 else f.durable
        else:
            kept = bytes(f.data[: f.synced]) + self._torn(bytes(f.data[f.synced :]))
        f.data = bytearray(kept)
        f.synced = len(kept)
        f.durable = None

    def _torn(self, tail: bytes) -> bytes:
        """What survives of unsynced bytes ``tail``."""
        if not tail:
            return b""
        rng = self.rng
        r = rng.random()
        if r < 0.2:
            return b""  # none of it reached the platter
        if r < 0.4:
            return tail  # the disk flushed all of it by itself
        cut = rng.randint(0, len(tail))
        if r < 0.7:
            return tail[:cut]  # a prefix
        if r < 0.85:  # a prefix, then a tail of junk
            n = rng.randint(1, len(tail) - cut + 16)
            return tail[:cut] + (bytes(n) if rng.random() < 0.5 else rng.randbytes(n))
        # Written back out of order: the full size, with a hole somewhere inside.
        n = rng.randint(1, len(tail) - cut) if cut < len(tail) else 0
        hole = bytes(n) if rng.random() < 0.5 else rng.randbytes(n)
        return tail[:cut] + hole + tail[cut + n :]

    # -- paths -----------------------------------------------------------------------------------
    def _dir(self, path: str) -> _Dir:
        d = self._root
        for part in _parts(path):
            node = d.live.get(part)
            if not isinstance(node, _Dir):
                raise (FileNotFoundError if node is None else NotADirectoryError)(path)
            d = node
        return d

    def _parent(self, path: str) -> tuple[_Dir, str]:
        head, name = os.path.split(os.path.normpath(path))
        if not name:
            raise IsADirectoryError(path)
        return self._dir(head), name

    def _file(self, path: str) -> _File:
        d, name = self._parent(path)
        node = d.live.get(name)
        if node is None:
            raise FileNotFoundError(path)
        if isinstance(node, _Dir):
            raise IsADirectoryError(path)
        return node

    def _open(self, f: _File) -> int:
        fd = self._next_fd
        self._next_fd += 1
        self._fds[fd] = f
        return fd

    # -- the Disk seam: the write path -----------------------------------------------------------
    def write(self, fd: int, data: bytes | bytearray | memoryview) -> None:
        f = self._fds[fd]
        if self._step():
            f.data += memoryview(data)[: self.rng.randint(0, len(data))]
            raise PowerCut(f"during a write of {len(data)} bytes")
        f.data += data

    def fdatasync(self, fd: int) -> None:
        f = self._fds[fd]
        if self._step():
            raise PowerCut("during fdatasync")
        f.synced = len(f.data)
        f.durable = None

    def fsync(self, fd: int) -> None:
        self.fdatasync(fd)

    def fsync_dir(self, path: str) -> None:
        d = self._dir(path)
        if self._step():
            raise PowerCut(f"during fsync of directory {path}")
        d.durable = dict(d.live)
        d.pending.clear()

    # -- files -----------------------------------------------------------------------------------
    def create(self, path: str) -> int:
        d, name = self._parent(path)
        if isinstance(d.live.get(name), _Dir):
            raise IsADirectoryError(path)
        if self._step():
            raise PowerCut(f"creating {path}")
        f = _File()
        d.change({name: f})
        return self._open(f)

    def open_append(self, path: str) -> int:
        return self._open(self._file(path))

    def truncate(self, fd: int, size: int) -> None:
        f = self._fds[fd]
        if self._step():
            raise PowerCut(f"truncating to {size} bytes")
        if size >= len(f.data):
            raise ValueError("SimFS only shortens files")
        if f.durable is None and size < f.synced:
            f.durable = bytes(f.data[: f.synced])
        del f.data[size:]
        f.synced = min(f.synced, size)

    def close(self, fd: int) -> None:
        del self._fds[fd]
        locked = self._lock_fds.pop(fd, None)
        if locked is not None:
            self._locked.discard(locked)

    def read(self, path: str) -> bytes:
        return bytes(self._file(path).data)

    def size(self, path: str) -> int:
        return len(self._file(path).data)

    def lock(self, path: str) -> int:
        d, name = self._parent(path)
        f = d.live.get(name)
        if f is None:
            f = _File()
            d.change({name: f})
        if not isinstance(f, _File):
            raise IsADirectoryError(path)
        if id(f) in self._locked:
            raise BlockingIOError(f"{path} is locked")
        fd = self._open(f)
        self._locked.add(id(f))
        self._lock_fds[fd] = id(f)
        return fd

    # -- directories -----------------------------------------------------------------------------
    def rename(self, src: str, dst: str) -> None:
        d, old = self._parent(src)
        d2, new = self._parent(dst)
        if d is not d2:
            raise OSError(f"SimFS renames only within a directory: {src} -> {dst}")
        node = d.live.get(old)
        if node is None:
            raise FileNotFoundError(src)
        if self._step():
            raise PowerCut(f"renaming {src}")
        d.change({old: None, new: node})

    def remove(self, path: str) -> None:
        d, name = self._parent(path)
        node = d.live.get(name)
        if node is None:
            raise FileNotFoundError(path)
        if isinstance(node, _Dir):
            raise IsADirectoryError(path)
        if self._step():
            raise PowerCut(f"removing {path}")
        d.change({name: None})

    def listdir(self, path: str) -> list[str]:
        return sorted(self._dir(path).live)

    def isdir(self, path: str) -> bool:
        try:
            self._dir(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        return True

    def makedirs(self, path: str) -> None:
        d = self._root
        for part in _parts(path):
            node = d.live.get(part)
            if node is None:
                if self._step():
                    raise PowerCut(f"creating directory {path}")
                node = _Dir()
                d.change({part: node})
            elif not isinstance(node, _Dir):
                raise FileExistsError(path)
            d = node

    # -- looking ---------------------------------------------------------------------------------
    def files(self, path: str = "/") -> dict[str, bytes]:
        """Every file below ``path`` (as reads see them), by path: for tests and debugging."""
        out: dict[str, bytes] = {}
        stack = [(os.path.normpath(path), self._dir(path))]
        while stack:
            where, d = stack.pop()
            for name, node in d.live.items():
                full = os.path.join(where, name)
                if isinstance(node, _Dir):
                    stack.append((full, node))
                else:
                    out[full] = bytes(node.data)
        return dict(sorted(out.items()))


def _parts(path: str) -> list[str]:
    norm = os.path.normpath(path)
    if not norm.startswith("/"):
        raise ValueError(f"SimFS needs absolute paths, got {path!r}")
    return [p for p in norm.split("/") if p]
