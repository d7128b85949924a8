"""No zombie node: when the Raft loop fails (a bug, a failed or full disk), the node stops
serving visibly (health NOT_SERVING, one ERROR line naming the cause, waiting requests
failed) and `confer serve` exits non-zero; nothing whose WAL write failed was acknowledged,
and after a restart every acknowledged write is there."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from confer.raft.fsm import ListStateMachine
from confer.raft.types import Entry, EntryType
from confer.server.app import ConferServer
from confer.server.config import ServerConfig
from confer.server.local import LocalCluster
from confer.server.node import NodeOptions, NodeStopped, OutcomeUnknown
from confer.storage import Disk, DurableStorage, StorageFailedError
from confer.v1 import kv_pb2, kv_pb2_grpc


class FullDisk(Disk):
    """The real disk, until ``full`` is set: then every write fails with ENOSPC. With
    ``failing_sync``, instead, every fdatasync fails with EIO (a failed disk)."""

    def __init__(self, failing_sync: bool = False) -> None:
        self.full = False
        self.failing_sync = failing_sync

    def write(self, fd: int, data: bytes | bytearray | memoryview) -> None:
        if self.full and not self.failing_sync:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        super().write(fd, data)

    def fdatasync(self, fd: int) -> None:
        if self.full and self.failing_sync:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        super().fdatasync(fd)


class Bug(Exception):
    """What a bug in the state machine raises."""


class BuggyStateMachine(ListStateMachine):
    """Raises on the command ``b"boom"``."""

    def apply(self, entry: Entry) -> int:
        if entry.data == b"boom":
            raise Bug("cannot apply boom")
        return super().apply(entry)


def _errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


def _assert_one_line_at_error(caplog: pytest.LogCaptureFixture, cause: str) -> None:
    errors = _errors(caplog)
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert cause in errors[0].getMessage() and "\n" not in errors[0].getMessage()
    assert errors[0].exc_info is None  # the traceback goes to DEBUG only


# -- the node driver ----------------------------------------------------------------------
async def _node_on_a_disk_that_fails(tmp_path: Path, failing_sync: bool) -> None:
    disk = FullDisk(failing_sync)
    cluster = LocalCluster(1, lambda i: DurableStorage.open(tmp_path / "raft", disk=disk),
                           options=NodeOptions(tick_interval=0.01))
    await cluster.start()
    try:
        node = await cluster.wait_leader()
        failures: list[Exception] = []
        node.failure_listeners.append(failures.append)
        await node.propose(b"acknowledged")
        applied = node.applied_index
        disk.full = True
        # In the log but not durable: this node may yet commit it after a restart.
        with pytest.raises(OutcomeUnknown, match="may still be applied"):
            await asyncio.wait_for(node.propose(b"lost"), 10)
        assert isinstance(node.failure, StorageFailedError)
        assert failures == [node.failure]
        # The Ready whose append failed was neither applied nor advanced.
        fsm = node.fsm
        assert isinstance(fsm, ListStateMachine) and b"lost" not in fsm.applied
        assert node.applied_index == applied
        with pytest.raises(NodeStopped):
            await node.propose(b"after")
    finally:
        await cluster.stop()
        for storage in cluster.storages.values():
            assert isinstance(storage, DurableStorage)
            storage.close()
    with DurableStorage.open(tmp_path / "raft") as reopened:
        data = [e.data for e in reopened.entries(reopened.first_index(),
                                                 reopened.last_index() + 1)
                if e.type == EntryType.NORMAL]
    assert b"acknowledged" in data
    if not failing_sync:
        assert b"lost" not in data  # never written


@pytest.mark.parametrize(("failing_sync", "cause"), [(False, "No space left on device"),
                                                     (True, "Input/output error")],
                         ids=["ENOSPC on write", "EIO on fdatasync"])
def test_a_failed_disk_stops_the_node_fails_the_write_and_keeps_what_was_acknowledged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, failing_sync: bool,
        cause: str) -> None:
    caplog.set_level(logging.INFO)
    asyncio.run(_node_on_a_disk_that_fails(tmp_path, failing_sync))
    _assert_one_line_at_error(caplog, cause)


async def _node_with_a_buggy_state_machine() -> None:
    cluster = LocalCluster(1, fsm_factory=BuggyStateMachine,
                           options=NodeOptions(tick_interval=0.01))
    await cluster.start()
    try:
        node = await cluster.wait_leader()
        waiting = asyncio.ensure_future(node.read_barrier())
        with pytest.raises(OutcomeUnknown, match="cannot apply boom"):
            await asyncio.wait_for(node.propose(b"boom"), 10)
        assert isinstance(node.failure, Bug)
        with pytest.raises(NodeStopped):  # every request waiting was failed too
            await asyncio.wait_for(waiting, 10)
    finally:
        await cluster.stop()


def test_an_exception_in_the_raft_loop_stops_the_node_with_one_error_line(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    asyncio.run(_node_with_a_buggy_state_machine())
    _assert_one_line_at_error(caplog, "Bug: cannot apply boom")
    assert any(r.levelno == logging.DEBUG and r.exc_info for r in caplog.records)


class FailingSnapshotDisk(Disk):
    """The real disk, but ``fsync`` (which snapshot files use; the WAL appends with
    fdatasync) fails with EIO once ``failing`` is set."""

    def __init__(self) -> None:
        self.failing = False

    def fsync(self, fd: int) -> None:
        if self.failing:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        super().fsync(fd)


async def _node_whose_snapshot_cannot_be_written(tmp_path: Path) -> None:
    disk = FailingSnapshotDisk()
    cluster = LocalCluster(1, lambda i: DurableStorage.open(tmp_path / "raft", disk=disk),
                           options=NodeOptions(tick_interval=0.01, snapshot_every=5))
    await cluster.start()
    try:
        node = await cluster.wait_leader()
        disk.failing = True
        with pytest.raises((NodeStopped, OutcomeUnknown)):
            for i in range(100):  # the snapshot after the 5th entry fails, in a thread
                await asyncio.wait_for(node.propose(b"%d" % i), 10)
        assert isinstance(node.failure, OSError)
    finally:
        await cluster.stop()
        for storage in cluster.storages.values():
            assert isinstance(storage, DurableStorage)
            storage.close()


def test_a_snapshot_that_cannot_be_written_stops_the_node(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    asyncio.run(_node_whose_snapshot_cannot_be_written(tmp_path))
    _assert_one_line_at_error(caplog, "Input/output error")


# -- the server process, in process -------------------------------------------------------
def _config(data_dir: Path) -> ServerConfig:
    return ServerConfig(data_dir=data_dir, listen_client="127.0.0.1:0",
                        listen_peer="127.0.0.1:0", tick_ms=20)


async def _wait_leader(srv: ConferServer) -> None:
    deadline = time.monotonic() + 20
    while not srv.consensus.is_leader():
        assert time.monotonic() < deadline, "no leader in 20 s"
        await asyncio.sleep(0.02)


async def _health(srv: ConferServer) -> int:
    assert srv.health is not None
    # Asked in process: the member's ports are closed once it stopped. Check ignores its
    # context argument.
    resp = await srv.health.Check(health_pb2.HealthCheckRequest(service=""),
                                  None)  # type: ignore[arg-type]
    return int(resp.status)


async def _server_that_fails(tmp_path: Path, break_it: str) -> tuple[str, set[str]]:
    """Start a member, write, break its disk or its state machine, write again; returns
    the member's recorded failure and the paths acknowledged."""
    disk = FullDisk()
    srv = ConferServer(_config(tmp_path / "node"), disk=disk)
    await srv.start()
    acked: set[str] = set()
    try:
        await _wait_leader(srv)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.client_port}") as ch:
            kv = kv_pb2_grpc.KVStub(ch)
            for i in range(5):
                await kv.Put(kv_pb2.PutRequest(path=f"/ok/{i}", value=b"v"), timeout=10)
                acked.add(f"/ok/{i}")
            assert await _health(srv) == health_pb2.HealthCheckResponse.SERVING
            if break_it == "disk":
                disk.full = True
            else:
                def boom(entry: Entry) -> object:
                    raise Bug("the state machine broke")
                srv.fsm.apply = boom  # type: ignore[method-assign]
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await kv.Put(kv_pb2.PutRequest(path="/failed", value=b"v"), timeout=10)
            # Never acknowledged; but in the log, so not "unavailable" (not applied) either.
            assert failed.value.code() == grpc.StatusCode.UNKNOWN
        await asyncio.wait_for(srv.stopped.wait(), 20)
        assert await _health(srv) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert srv.fatal is not None
        return srv.fatal, acked
    finally:
        await srv.stop()


async def _restart_and_read(data_dir: Path) -> set[str]:
    srv = ConferServer(_config(data_dir))
    await srv.start()
    try:
        await _wait_leader(srv)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.client_port}") as ch:
            resp = await kv_pb2_grpc.KVStub(ch).Range(
                kv_pb2.RangeRequest(path="/", recursive=True), timeout=10)
        return {kv.path for kv in resp.kvs}
    finally:
        await srv.stop()


def test_a_member_whose_disk_fills_stops_serving_and_restarts_with_every_ack(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    fatal, acked = asyncio.run(_server_that_fails(tmp_path, "disk"))
    assert "No space left on device" in fatal
    _assert_one_line_at_error(caplog, "No space left on device")
    stored = asyncio.run(_restart_and_read(tmp_path / "node"))
    assert acked <= stored and "/failed" not in stored


def test_a_member_whose_raft_loop_fails_stops_serving(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    fatal, _ = asyncio.run(_server_that_fails(tmp_path, "state machine"))
    assert "Bug: the state machine broke" in fatal
    _assert_one_line_at_error(caplog, "Bug: the state machine broke")


async def _server_whose_duty_dies(tmp_path: Path) -> str | None:
    srv = ConferServer(_config(tmp_path / "node"))

    async def broken_expiry() -> None:
        raise Bug("lease expiry broke")

    srv.lessor.run = broken_expiry  # type: ignore[method-assign]
    await srv.start()
    try:
        await asyncio.wait_for(srv.stopped.wait(), 20)
        return srv.fatal
    finally:
        await srv.stop()


def test_a_member_stops_when_an_essential_duty_dies(tmp_path: Path) -> None:
    fatal = asyncio.run(_server_whose_duty_dies(tmp_path))
    assert fatal == "lease expiry failed: Bug: lease expiry broke"


def test_a_clean_stop_records_no_failure(tmp_path: Path) -> None:
    async def run() -> str | None:
        srv = ConferServer(_config(tmp_path / "node"))
        await srv.start()
        await _wait_leader(srv)
        await srv.stop()
        return srv.fatal

    assert asyncio.run(run()) is None


# -- `confer serve` as a process ------------------------------------------------------------
FILE_SIZE_LIMIT = 64 << 10
"""RLIMIT_FSIZE of the child: its WAL segment cannot grow past this (writes fail with EFBIG,
as they would with ENOSPC; Python ignores SIGXFSZ). No root, no tmpfs needed."""


_LIMITED = ("import os, resource, sys; "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]),) * 2); "
            "os.execv(sys.executable, [sys.executable, '-m', 'confer', *sys.argv[2:]])")
"""Runs `confer` with a file size limit (set in the child itself: no preexec_fn, which is
unsafe in a test process that has threads)."""


def _serve(data_dir: Path, limit_files: bool) -> subprocess.Popen[str]:
    prefix = ["-c", _LIMITED, str(FILE_SIZE_LIMIT)] if limit_files else ["-m", "confer"]
    return subprocess.Popen(
        [sys.executable, *prefix, "serve", "--data-dir", str(data_dir),
         "--listen-client", "127.0.0.1:0", "--listen-peer", "127.0.0.1:0", "--tick-ms", "20"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _client_port(proc: subprocess.Popen[str]) -> int:
    """Read the child's stderr up to its ready line; the client port it bound."""
    assert proc.stderr is not None
    for _ in range(200):  # bounded: the ready line comes within a few log lines
        line = proc.stderr.readline()
        if not line:
            break
        if found := re.search(r"ready: clients \S+ \(port (\d+)\)", line):
            return int(found.group(1))
    raise AssertionError("confer serve printed no ready line")


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    if proc.stderr is not None:
        proc.stderr.close()


def _put_until_refused(port: int) -> set[str]:
    """Write 1 KiB values until one fails (the disk is full); the paths acknowledged."""
    acked: set[str] = set()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        kv = kv_pb2_grpc.KVStub(ch)
        for i in range(4 * FILE_SIZE_LIMIT // 1024):
            try:
                kv.Put(kv_pb2.PutRequest(path=f"/k/{i:04d}", value=b"x" * 1024), timeout=10)
            except grpc.RpcError:
                return acked
            acked.add(f"/k/{i:04d}")
    raise AssertionError(f"{len(acked)} KiB written past a {FILE_SIZE_LIMIT >> 10} KiB limit")


def test_confer_serve_exits_non_zero_on_a_full_disk_with_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    proc = _serve(data_dir, limit_files=True)
    try:
        acked = _put_until_refused(_client_port(proc))
        assert acked
        assert proc.stderr is not None
        _, rest = proc.communicate(timeout=30)
    finally:
        _stop(proc)
    assert proc.returncode == 1, rest
    errors = [line for line in rest.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "File too large" in errors[0], rest
    assert "Traceback" not in rest
    proc = _serve(data_dir, limit_files=False)
    try:
        port = _client_port(proc)
        deadline = time.monotonic() + 20
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            while True:
                try:
                    resp = kv_pb2_grpc.KVStub(ch).Range(
                        kv_pb2.RangeRequest(path="/k", recursive=True), timeout=5)
                    break
                except grpc.RpcError:
                    assert time.monotonic() < deadline, "the restarted member never answered"
                    time.sleep(0.1)
        assert acked <= {kv.path for kv in resp.kvs}
    finally:
        _stop(proc)

