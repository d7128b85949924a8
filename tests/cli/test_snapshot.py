"""`confer snapshot save|status|restore` through the real entry point, against a real node
(and `etcdctl snapshot save`)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from confer.client import Client
from confer.server.snapshot_file import frame
from testing import ProcessCluster
from tests.cli.test_cli import confer, ok


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A 1-node cluster with keys (some with history) and a lease: (endpoint, revision)."""
    with ProcessCluster(1, tmp_path_factory.mktemp("snapshot-source")) as c:
        c.leader()
        with Client(c.endpoints) as client:
            for i in range(30):
                client.put(f"/cfg/k{i:02}", "x" * 100)
            client.put("/cfg/k00", "second")
            client.delete("/cfg/k01")
            lease = client.lease_grant(300).id
            revision = client.put("/cfg/leased", "yes", lease=lease).revision
        yield c.endpoints[0], revision


@pytest.fixture(scope="module")
def backup(source: tuple[str, int], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("backup") / "backup.snap"
    r = confer("snapshot", "save", str(path), "--endpoints", source[0])
    assert r.returncode == 0 and r.stderr == "", r  # no progress bar off a terminal
    assert r.stdout.startswith(f"Snapshot saved at {path}: revision {source[1]}, 30 keys")
    return path


def on_a_terminal(*args: str) -> str:
    """Run `confer ARGS` with stderr on a pseudo-terminal; what it wrote there."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "confer", *args], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=slave)
    finally:
        os.close(slave)
    out = b""
    try:
        for _ in range(10_000):  # until the child closes the terminal (EIO), bounded
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        assert proc.wait(timeout=60) == 0, out
    return out.decode(errors="replace")


def test_save_and_restore_show_a_progress_bar_on_a_terminal(
        source: tuple[str, int], backup: Path, tmp_path: Path) -> None:
    shown = on_a_terminal("snapshot", "save", str(tmp_path / "tty.snap"), "--endpoints",
                          source[0])
    assert f"Saving from {source[0]}" in shown and "100%" in shown and "MiB/s" in shown
    shown = on_a_terminal("snapshot", "restore", str(backup), "--data-dir",
                          str(tmp_path / "member"))
    assert f"Reading {backup}" in shown and "100%" in shown and "MiB/s" in shown


def test_save_then_status_shows_the_revision_keys_size_and_checksum(
        backup: Path, source: tuple[str, int]) -> None:
    assert sorted(os.listdir(backup.parent)) == [backup.name]  # no .part left behind
    data = backup.read_bytes()
    digest = hashlib.sha256(data[:-32]).hexdigest()
    assert data[-32:].hex() == digest
    status = json.loads(ok("snapshot", "status", str(backup), "-o", "json"))
    assert status == {"revision": source[1], "compact_revision": 0, "keys": 30, "leases": 1,
                      "size": len(data), "checksum": f"sha256:{digest}"}
    table = ok("snapshot", "status", str(backup)).splitlines()
    assert table[0].split() == ["REVISION", "COMPACT_REVISION", "KEYS", "LEASES", "SIZE",
                                "CHECKSUM"]
    assert table[2].split() == [str(source[1]), "0", "30", "1", str(len(data)),
                                f"sha256:{digest}"]


def test_a_single_member_restore_serves_every_key_with_its_history_and_lease(
        backup: Path, source: tuple[str, int], tmp_path: Path) -> None:
    cluster = ProcessCluster(1, tmp_path)
    node = cluster.nodes[1]
    node.data_dir.mkdir()  # an existing empty dir is fine
    out = ok("snapshot", "restore", str(backup), "--data-dir", str(node.data_dir),
             "--advertise-peer", f"http://{node.peer_addr}")  # etcd's URL form too
    assert out.startswith("Restored member 1 of new cluster") and "(1 member)" in out
    with cluster, Client(cluster.endpoints) as c:
        cluster.leader()
        assert c.status().revision == source[1]
        assert c.get("/cfg/k00").value == b"second"
        assert c.get("/cfg/k00", revision=source[1] - 5).value == b"x" * 100
        assert c.get("/cfg/k01") is None
        leased = c.get("/cfg/leased")
        assert leased is not None and leased.mod_revision == source[1]
        ttl = c.lease_time_to_live(leased.lease, keys=True)
        assert ttl is not None and ttl.granted_ttl == 300 and ttl.keys == ("/cfg/leased",)
        assert [(m.id, m.peer_addr) for m in c.member_list()] == [(1, node.peer_addr)]
        assert c.put("/new", "1").revision == source[1] + 1


def damaged(data: bytes) -> dict[str, bytes]:
    """Ways a backup file goes bad."""
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x40
    return {
        "truncated": data[: len(data) // 2],
        "one byte short": data[:-1],
        "a block short": data[:-544] + data[-32:],  # the size a complete file could have
        "a flipped bit": bytes(flipped),
        "empty": b"",
        "a bolt database": b"\0" * 16 + b"\xed\xda\x0c\xed" + b"\0" * 4076,
        "a state that does not decode": frame(b"\x03not msgpack"),
    }


REASONS = {
    "truncated": "truncated",
    "one byte short": "truncated",
    "a block short": "checksum mismatch",
    "a flipped bit": "checksum mismatch",
    "empty": "truncated",
    "a bolt database": "not a Confer snapshot",
    "a state that does not decode": "does not decode",
}


@pytest.mark.parametrize("kind", sorted(REASONS))
def test_a_damaged_file_is_refused_in_one_line_and_nothing_is_written(
        backup: Path, tmp_path: Path, kind: str) -> None:
    bad = tmp_path / "bad.snap"
    bad.write_bytes(damaged(backup.read_bytes())[kind])
    target = tmp_path / "restored" / "member"
    r = confer("snapshot", "restore", str(bad), "--data-dir", str(target))
    assert r.returncode == 1, r
    assert r.stdout == "" and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"Error: {bad}: ") and REASONS[kind] in r.stderr
    assert "nothing restored" in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["bad.snap"]  # not even the parent dir
    r = confer("snapshot", "status", str(bad))
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1 and REASONS[kind] in r.stderr


def test_restore_refuses_a_non_empty_data_dir_and_bad_flags_writing_nothing(
        backup: Path, tmp_path: Path) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep").write_text("mine")
    r = confer("snapshot", "restore", str(backup), "--data-dir", str(used))
    assert r.returncode == 1 and "already exists and is not empty" in r.stderr, r.stderr
    assert os.listdir(used) == ["keep"]
    r = confer("snapshot", "restore", str(backup), "--data-dir", str(tmp_path / "x"),
               "--initial-cluster", "1=127.0.0.1:20001,2=127.0.0.1:20002", "--id", "3")
    assert r.returncode == 2 and "id 3 is not in initial-cluster" in r.stderr, r.stderr
    r = confer("snapshot", "restore", str(tmp_path / "missing.snap"), "--data-dir",
               str(tmp_path / "y"))
    assert r.returncode == 1 and "cannot read" in r.stderr and len(r.stderr.splitlines()) == 1
    assert sorted(os.listdir(tmp_path)) == ["used"]


def test_save_takes_one_reachable_member_and_leaves_no_file_otherwise(
        source: tuple[str, int], tmp_path: Path) -> None:
    out = tmp_path / "s.snap"
    r = confer("snapshot", "save", str(out), "--endpoints", f"{source[0]},{source[0]}")
    assert r.returncode == 2 and "give one endpoint" in r.stderr
    r = confer("snapshot", "save", str(out), "--endpoints", "127.0.0.1:1", "--timeout", "2")
    assert r.returncode == 3 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "UNAVAILABLE" in r.stderr
    assert os.listdir(tmp_path) == []


ETCDCTL = shutil.which("etcdctl")


def test_a_file_saved_by_etcdctl_restores_the_same_way(
        source: tuple[str, int], backup: Path, tmp_path: Path) -> None:
    assert ETCDCTL, "etcdctl is not installed (apt-get install etcd-client)"
    path = tmp_path / "etcdctl.snap"
    env = {**os.environ, "ETCDCTL_API": "3"}
    subprocess.run([ETCDCTL, f"--endpoints={source[0]}", "snapshot", "save", str(path)],
                   env=env, check=True, capture_output=True, timeout=30)
    status = json.loads(ok("snapshot", "status", str(path), "-o", "json"))
    assert status["revision"] == source[1] and status["keys"] == 30
    cluster = ProcessCluster(1, tmp_path / "restored")
    ok("snapshot", "restore", str(path), "--data-dir", str(cluster.nodes[1].data_dir))
    with cluster, Client(cluster.endpoints) as c:
        cluster.leader()
        assert c.status().revision == source[1] and c.get("/cfg/k00").value == b"second"
    # etcd's own `snapshot status` reads bolt databases only (docs/etcd-compatibility.md).
    r = subprocess.run([ETCDCTL, "snapshot", "status", str(path)], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
