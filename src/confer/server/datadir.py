"""The layout of a member's data dir: its log (``raft/``, see confer.storage) and its
identity file (``member.json``: its id, name and cluster id), written by the server as it
starts, joins or learns its cluster, and by ``confer snapshot restore`` for the members it
creates."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from confer.storage import Disk
from confer.storage.disk import FILE_MODE

RAFT_DIR = "raft"
IDENTITY_FILE = "member.json"


def save_identity(data_dir: Path, ident: dict[str, Any]) -> None:
    """Replace ``data_dir``'s identity file by ``ident`` atomically and durably."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / IDENTITY_FILE
    tmp = path.with_suffix(".tmp")
    _write_private(tmp, json.dumps(ident))
    tmp.replace(path)
    Disk().fsync_dir(str(data_dir))  # the rename, durable


def _write_private(path: Path, text: str) -> None:
    """Write a new file that only this user may read (mode 0600), durably: the identity it
    holds must survive a crash that the WAL written after it survives."""
    path.unlink(missing_ok=True)  # a leftover would keep its old mode
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
