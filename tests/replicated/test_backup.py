"""Backups of an app's members: `confer snapshot save` carries the app's state, and a member
restored from the file and started with `--app` has it back (real processes)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from confer.client import Client
from confer.replicated import AppClient
from confer.server.snapshot_file import MAGIC, SnapshotFileError, frame, unframe
from examples.counter import Counter
from testing import ProcessCluster
from tests.cli.test_cli import ok

COUNTER = str(Path(__file__).resolve().parents[2] / "examples" / "counter.py") + ":Counter"


def test_a_file_holds_the_app_state_beside_the_store_and_a_kv_file_is_unchanged() -> None:
    kv_only = frame(b"store")
    body = MAGIC + (5).to_bytes(8, "big") + b"store"
    body += b"\0" * (-len(body) % 512)
    assert kv_only == body + hashlib.sha256(body).digest()  # the layout before apps
    assert unframe(kv_only).app == b""
    snap = unframe(frame(b"store", b"app state"))
    assert (snap.state, snap.app) == (b"store", b"app state")
    damaged = bytearray(frame(b"store", b"app state"))
    start = len(MAGIC) + 8 + 5
    damaged[start:start + 8] = (10**6).to_bytes(8, "big")  # an app length past the end
    damaged[-32:] = hashlib.sha256(damaged[:-32]).digest()
    with pytest.raises(SnapshotFileError, match="app state's length"):
        unframe(damaged)


def test_an_app_member_restored_from_a_backup_has_the_apps_state(tmp_path: Path) -> None:
    backup = tmp_path / "backup.snap"
    with ProcessCluster(1, tmp_path / "old", extra_args=["--app", COUNTER]) as old:
        old.leader()
        with AppClient(Counter, old.endpoints, timeout=15) as counter:
            for n in range(1, 6):
                counter.incr(n)
            assert counter.get() == 15
        with Client(old.endpoints) as c:
            c.put("/kv/beside", "the app")
        ok("snapshot", "save", str(backup), "--endpoints", old.endpoints[0])
    new = ProcessCluster(1, tmp_path / "new", extra_args=["--app", COUNTER])
    (node,) = new.nodes.values()
    out = ok("snapshot", "restore", str(backup), "--data-dir", str(node.data_dir),
             "--id", "1", "--initial-cluster", f"1={node.peer_addr}")
    assert "app Counter" in out
    with new:
        new.leader()
        with AppClient(Counter, new.endpoints, timeout=15) as counter:
            assert counter.get() == 15  # not 0: the app's state came back
            assert counter.incr(1) == 16
        with Client(new.endpoints) as c:
            assert c.get("/kv/beside").value == b"the app"
    # A member without the app refuses the restored state, in one line, at once.
    bare = tmp_path / "bare"
    ok("snapshot", "restore", str(backup), "--data-dir", str(bare))
    run = subprocess.run([sys.executable, "-m", "confer", "serve", "--data-dir", str(bare),
                          "--listen-client", "127.0.0.1:0", "--listen-peer", "127.0.0.1:0",
                          "--listen-metrics", "none", "--listen-dns", "none"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "runs none (confer serve --app)" in run.stderr, run.stderr
