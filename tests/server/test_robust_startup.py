"""`confer serve` refuses to start with one line on stderr and a non-zero exit, never a
traceback: a data dir another process holds, an unusable data dir, a bad log level, a
damaged log (naming the file and the offset, and what to do). And the data dir is private
(0700, files 0600), as etcd's."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from confer.server.app import ConferServer
from confer.server.config import ServerConfig
from confer.storage import Disk, DurableStorage
from confer.storage.snapfile import SnapshotStore, snapshot_name
from confer.v1 import kv_pb2, kv_pb2_grpc


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `confer serve` on free ports until it exits (it must: every case here fails)."""
    return subprocess.run(
        [sys.executable, "-m", "confer", "serve", "--listen-client", "127.0.0.1:0",
         "--listen-peer", "127.0.0.1:0", *args],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_a_data_dir_in_use_by_another_process_is_refused_in_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    data_dir.mkdir(mode=0o700)
    with DurableStorage.open(data_dir / "raft"):  # holds the data dir's lock meanwhile
        r = serve("--data-dir", str(data_dir))
    assert r.returncode == 1
    line = one_line(r)
    assert str(data_dir / "raft") in line and "already open" in line


def test_an_unusable_data_dir_is_refused_in_one_line(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    r = serve("--data-dir", str(not_a_dir / "node"))
    assert r.returncode == 1
    line = one_line(r)
    assert line.startswith(f"cannot use data dir {not_a_dir / 'node'}: ")
    assert "Not a directory" in line


def test_a_bad_log_level_is_a_usage_error_not_a_traceback(tmp_path: Path) -> None:
    r = serve("--data-dir", str(tmp_path / "node"), "--log-level", "loud")
    assert r.returncode == 2
    assert "log-level must be debug, info, warning or error, not 'loud'" in r.stderr
    assert "Traceback" not in r.stderr


def _config(data_dir: Path) -> ServerConfig:
    return ServerConfig(data_dir=data_dir, listen_client="127.0.0.1:0",
                        listen_peer="127.0.0.1:0", tick_ms=20)


async def _member_with_some_writes(data_dir: Path) -> None:
    srv = ConferServer(_config(data_dir))
    await srv.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.client_port}") as ch:
            kv = kv_pb2_grpc.KVStub(ch)
            for i in range(10):  # ten writes, ten syncs: later syncs follow any middle byte
                await kv.Put(kv_pb2.PutRequest(path=f"/k/{i}", value=b"v" * 64), timeout=20)
    finally:
        await srv.stop()


def test_a_flipped_bit_in_the_wal_is_refused_naming_file_offset_and_remedy(
        tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    asyncio.run(_member_with_some_writes(data_dir))
    [segment] = (data_dir / "raft" / "wal").iterdir()
    buf = bytearray(segment.read_bytes())
    buf[len(buf) // 2] ^= 0x10
    segment.write_bytes(bytes(buf))
    r = serve("--data-dir", str(data_dir))
    assert r.returncode == 1
    line = one_line(r)
    assert line.startswith(f"{segment}: corrupt WAL at byte offset ")
    assert "remove it from the cluster and add a new one" in line
    assert "docs/operations.md" in line


def test_an_unreadable_member_identity_is_refused_in_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    asyncio.run(_member_with_some_writes(data_dir))
    (data_dir / "member.json").write_text("{not json")
    r = serve("--data-dir", str(data_dir))
    assert r.returncode == 1
    assert one_line(r).startswith(f"{data_dir / 'member.json'}: unreadable member identity")


async def _member_with_a_snapshot(data_dir: Path) -> None:
    cfg = _config(data_dir)
    cfg.snapshot_every = 5
    srv = ConferServer(cfg)
    await srv.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.client_port}") as ch:
            kv = kv_pb2_grpc.KVStub(ch)
            for i in range(10):
                await kv.Put(kv_pb2.PutRequest(path=f"/k/{i}", value=b"v"), timeout=20)
        deadline = time.monotonic() + 20
        while not list((data_dir / "raft" / "snap").glob("*.snap")):
            assert time.monotonic() < deadline, "no snapshot written"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # let the node record it in the log (and sync it)
    finally:
        await srv.stop()


def test_a_damaged_snapshot_is_refused_in_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    asyncio.run(_member_with_a_snapshot(data_dir))
    [snap] = (data_dir / "raft" / "snap").glob("*.snap")
    buf = bytearray(snap.read_bytes())
    buf[-1] ^= 0x01
    snap.write_bytes(bytes(buf))
    r = serve("--data-dir", str(data_dir))
    assert r.returncode == 1
    line = one_line(r)
    assert line.startswith(f"{snap}: corrupt snapshot file: checksum mismatch")
    assert "remove it from the cluster and add a new one" in line


def test_a_snapshot_the_state_machine_cannot_read_is_refused_in_one_line(
        tmp_path: Path) -> None:
    """A snapshot file whose checksum holds but whose data does not decode (finding 6: the
    node used to die with a msgpack traceback at every restart)."""
    data_dir = tmp_path / "node"
    asyncio.run(_member_with_a_snapshot(data_dir))
    [snap] = (data_dir / "raft" / "snap").glob("*.snap")
    with DurableStorage.open(data_dir / "raft") as storage:
        meta = storage.snapshot().meta
    assert meta.index and snap.name == snapshot_name(meta)
    SnapshotStore(str(snap.parent), Disk()).save(meta, b"\x93garbage")
    r = serve("--data-dir", str(data_dir))
    assert r.returncode == 1
    line = one_line(r)
    assert line.startswith(f"{data_dir}: cannot recover this member's state (")
    assert "remove it from the cluster and add a new one" in line


# -- file modes -----------------------------------------------------------------------------
@pytest.fixture
def umask_022() -> Iterator[None]:
    """The common umask, which lets 0644 files through: the modes must come from Confer."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("umask_022")
def test_the_data_dir_is_0700_and_its_files_0600(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    asyncio.run(_member_with_some_writes(data_dir))
    assert mode(data_dir) == 0o700
    for path in data_dir.rglob("*"):
        assert mode(path) == (0o700 if path.is_dir() else 0o600), path


@pytest.mark.usefixtures("umask_022")
def test_an_open_data_dir_is_tightened_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data_dir = tmp_path / "node"
    data_dir.mkdir(mode=0o755)
    (data_dir / "member.json.tmp").write_text("left over")  # a crash's leftover, 0644
    caplog.set_level(logging.WARNING)
    asyncio.run(_member_with_some_writes(data_dir))
    assert mode(data_dir) == 0o700
    assert mode(data_dir / "member.json") == 0o600
    assert any("was open to other users (mode 0755); set to 0700" in r.getMessage()
               for r in caplog.records)
