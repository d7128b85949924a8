"""Storage keeps its files private, as etcd does: directories 0700, files 0600 (WAL segments,
snapshot files, the lock file), whatever the umask lets through."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from confer.raft.types import ConfState, Entry, Snapshot, SnapshotMeta
from confer.storage import DurableStorage


def test_directories_are_0700_and_files_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the common umask, which lets 0644 files through
    try:
        root = tmp_path / "raft"
        with DurableStorage.open(root, segment_size=512) as st:
            st.append([Entry(i, 1, b"x" * 100) for i in range(1, 21)])
            st.sync()  # past 512 bytes: a new segment is cut
            conf = ConfState(voters=frozenset({1}))
            st.create_snapshot(10, conf, b"state")
            st.apply_snapshot(Snapshot(SnapshotMeta(30, 2, conf), b"new"))
            st.sync()
    finally:
        os.umask(old)
    found = {p.relative_to(root).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in [root, *root.rglob("*")]}
    assert any(p.endswith(".wal") for p in found)
    assert any(p.endswith(".snap") for p in found)
    for path, mode in found.items():
        is_dir = (root / path).is_dir()
        assert mode == (0o700 if is_dir else 0o600), (path, oct(mode))
