"""The backup file: a member's store as ``Maintenance.Snapshot`` streams it and
``confer snapshot save`` (or ``etcdctl snapshot save``) writes it.

Layout: the line ``CONFER-KV-SNAPSHOT\\n``, the state's length (8 bytes, big-endian), the
state (``KVStore.snapshot()``: every key with its history, the leases, at one revision),
for a member that runs an app (``confer serve --app``) the app's state at the same log entry
(its length, 8 bytes, then ``Replica.snapshot()``; never empty, so its length's bytes are not
all zeros), zeros up to a multiple of 512 bytes, then the SHA-256 of everything before. A
file of a member without an app is byte for byte what it was before apps. etcd appends
the same hash to its snapshots, and its tools (``etcdctl snapshot save``) keep it; the
padding makes the file's size tell that a hash is there, as etcd's restore checks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from confer.kv import KVStore

MAGIC = b"CONFER-KV-SNAPSHOT\n"
_LENGTH = 8
_HASH = hashlib.sha256().digest_size
_BLOCK = 512
READ_CHUNK = 1 << 20


class SnapshotFileError(ValueError):
    """The file is not a complete, intact Confer snapshot; the message says why."""


def frame(state: bytes, app: bytes = b"") -> bytes:
    """The backup file holding ``state`` (a ``KVStore.snapshot()``) and ``app`` (the app's
    snapshot taken with it; empty: no app)."""
    body = MAGIC + len(state).to_bytes(_LENGTH, "big") + state
    if app:
        body += len(app).to_bytes(_LENGTH, "big") + app
    body += b"\0" * (-len(body) % _BLOCK)
    return body + hashlib.sha256(body).digest()


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """A verified backup file: its store state, app state, size and checksum."""

    state: bytes
    size: int
    sha256: str
    """Hex digest of the file without its last 32 bytes (the digest itself)."""
    app: bytes = b""
    """The app's snapshot (``Replica.snapshot()``) taken with the store; empty: none."""

    def store(self) -> KVStore:
        """The store the file holds (raises :class:`SnapshotFileError` if it does not
        decode)."""
        store = KVStore()
        try:
            store.restore(self.state)
        except Exception as e:  # whatever a damaged state makes the decoders raise
            raise SnapshotFileError(f"the store state does not decode ({type(e).__name__}: "
                                    f"{e})") from None
        return store


def unframe(blob: bytes | bytearray | memoryview) -> SnapshotFile:
    """Check a whole backup file and return its contents. Raises
    :class:`SnapshotFileError`."""
    view = memoryview(blob)
    size = len(view)
    if size >= len(MAGIC) and bytes(view[:len(MAGIC)]) != MAGIC:
        raise SnapshotFileError("not a Confer snapshot (no CONFER-KV-SNAPSHOT header; "
                                "etcd's own bolt database snapshots cannot be restored)")
    if size < len(MAGIC) + _LENGTH + _HASH or (size - _HASH) % _BLOCK:
        raise SnapshotFileError(f"truncated: {size} bytes is not a multiple of {_BLOCK} plus "
                                f"the {_HASH}-byte SHA-256 a complete snapshot ends with")
    body = view[:size - _HASH]
    digest = hashlib.sha256(body).hexdigest()
    if digest != view[size - _HASH:].hex():
        raise SnapshotFileError("checksum mismatch: the SHA-256 at the end does not match "
                                "the contents (corrupt or truncated)")
    start = len(MAGIC) + _LENGTH
    length = int.from_bytes(view[len(MAGIC):start], "big")
    end = start + length
    if length > len(body) - start:
        raise SnapshotFileError("the state's length does not match the file (malformed)")
    app = b""
    if any(body[end:]):  # an app's state follows the store's
        app_start = end + _LENGTH
        app_length = int.from_bytes(body[end:app_start], "big")
        end = app_start + app_length
        if end > len(body):
            raise SnapshotFileError("the app state's length does not match the file "
                                    "(malformed)")
        app = bytes(body[app_start:end])
    if any(body[end:]):
        raise SnapshotFileError("the states' lengths do not match the file (malformed)")
    return SnapshotFile(bytes(view[start:start + length]), size, digest, app)


def read(path: Path, progress: Callable[[int], None] | None = None) -> SnapshotFile:
    """Read and check the backup file at ``path``; ``progress`` is told the bytes of each
    chunk read. Raises :class:`SnapshotFileError` (an unreadable file included)."""
    buf = bytearray()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(READ_CHUNK):
                buf += chunk
                if progress is not None:
                    progress(len(chunk))
    except OSError as e:
        raise SnapshotFileError(f"cannot read the file: {e.strerror or e}") from None
    return unframe(buf)


@dataclass(frozen=True, slots=True)
class SnapshotStatus:
    """What ``confer snapshot status`` shows of a backup file."""

    revision: int
    compact_revision: int
    keys: int
    """Live keys at the snapshot's revision."""
    leases: int
    size: int
    """Bytes in the file."""
    checksum: str
    """``sha256:<hex>``: the digest the file ends with."""


def status(snap: SnapshotFile) -> SnapshotStatus:
    """Decode the file's store and describe it (raises :class:`SnapshotFileError`)."""
    store = snap.store()
    return SnapshotStatus(store.revision, store.compact_revision, len(store),
                          len(store.leases()), snap.size, f"sha256:{snap.sha256}")
