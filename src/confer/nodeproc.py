"""One `confer serve` child process on 127.0.0.1 with its own data dir and log file.

`confer dev` runs its local cluster with these; the test and fault-injection harnesses
(``testing``, ``chaos`` at the repository root) build theirs on the same class.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from confer.v1 import kv_pb2, kv_pb2_grpc


@dataclass
class NodeProcess:
    """``confer serve --id node_id`` on loopback: start, signal, stop and probe it by its PID.

    Its output goes to ``node<id>.log`` beside ``data_dir``. ``args`` are added to every start
    (cluster flags); :meth:`start` may add more, and environment variables, for one start.
    """

    node_id: int
    data_dir: Path
    client_port: int
    peer_port: int
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    credentials: grpc.ChannelCredentials | None = None
    """How :meth:`status` reaches a client port that serves TLS (None: plaintext)."""
    program: list[str] = field(default_factory=lambda: ["-m", "confer", "serve"])
    """What the Python interpreter runs, given ``confer serve``'s flags (a script that
    embeds a member takes the same)."""

    @property
    def client_addr(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_addr(self) -> str:
        return f"127.0.0.1:{self.peer_port}"

    def start(self, extra: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        """Launch ``confer serve``; ``env`` adds variables (e.g. CONFER_FAILPOINTS)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir.parent / f"node{self.node_id}.log"
        cmd = [sys.executable, *self.program, "--id", str(self.node_id),
               "--data-dir", str(self.data_dir), "--listen-client", self.client_addr,
               "--listen-peer", self.peer_addr, *self.args, *(extra or [])]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL,
                                         env={**os.environ, **env} if env else None)
        finally:
            log.close()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL and reap: a crash."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return self.proc.returncode

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until the process answers Status."""
        deadline = time.monotonic() + timeout
        while self.status(timeout=0.5) is None:
            if not self.alive():
                raise RuntimeError(f"node {self.node_id} exited:\n{self.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {self.node_id} not ready in {timeout}s")
            time.sleep(0.05)

    def status(self, timeout: float = 1.0) -> kv_pb2.StatusResponse | None:
        with (grpc.insecure_channel(self.client_addr) if self.credentials is None
              else grpc.secure_channel(self.client_addr, self.credentials)) as ch:
            try:
                resp: kv_pb2.StatusResponse = kv_pb2_grpc.ClusterStub(ch).Status(
                    kv_pb2.StatusRequest(), timeout=timeout)
                return resp
            except grpc.RpcError:
                return None
