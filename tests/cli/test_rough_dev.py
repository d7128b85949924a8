"""`confer dev`: a node that dies is reported, the others keep running, and the node comes
back (after --restart-delay, or on SIGHUP)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from confer.nodeproc import NodeProcess
from testing.procs import free_port


def free_base_port() -> int:
    """A port with the five after it free too (a 3-node dev cluster's client and peer ports)."""
    for _ in range(200):
        base = free_port()
        if base + 5 > 32767:
            continue
        try:
            for port in range(base, base + 6):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no 6 consecutive free ports")


class Dev:
    def __init__(self, proc: subprocess.Popen[bytes], out: Path, err: Path) -> None:
        self.proc, self.out, self.err = proc, out, err

    def wait_for(self, pattern: str, where: str = "out", timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        path = self.out if where == "out" else self.err
        while (m := re.search(pattern, path.read_text())) is None:
            assert self.proc.poll() is None, (self.out.read_text(), self.err.read_text())
            assert time.monotonic() < deadline, (pattern, path.read_text())
            time.sleep(0.1)
        return m


@contextmanager
def dev(tmp_path: Path, *args: str) -> Iterator[tuple[Dev, int]]:
    base = free_base_port()
    out, err = tmp_path / "dev.out", tmp_path / "dev.err"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "confer", "dev", "--nodes", "3", "--base-port", str(base),
             "--data-dir", str(tmp_path / "data"), "--tick-ms", "50", *args],
            stdout=o, stderr=e, stdin=subprocess.DEVNULL)
    d = Dev(proc, out, err)
    try:
        yield d, base
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert "confer dev: stopped" in out.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            kill_orphans(out.read_text(), str(tmp_path / "data"))


def kill_orphans(output: str, data_dir: str) -> None:
    """After `confer dev` was killed: SIGKILL the nodes it printed (pids) that still run on
    this test's data dir."""
    for pid in map(int, re.findall(r"pid (\d+)", output)):
        with contextlib.suppress(OSError):
            if data_dir in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                os.kill(pid, signal.SIGKILL)


def node(tmp_path: Path, base: int, i: int) -> NodeProcess:
    """A handle on node i of the dev cluster, to ask its status."""
    return NodeProcess(i, tmp_path / "data" / f"node{i}", base + 2 * (i - 1), base + 2 * i - 1)


def wait_answers(n: NodeProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while n.status(timeout=1) is None:
        assert time.monotonic() < deadline, f"node {n.node_id} does not answer"
        time.sleep(0.2)


@pytest.mark.parametrize("restart", ["delay", "sighup"])
def test_a_dead_node_is_reported_and_restarted_while_the_others_run(
        tmp_path: Path, restart: str) -> None:
    # The default delay (5 s), or none: only SIGHUP restarts.
    with dev(tmp_path, *([] if restart == "delay" else ["--restart-delay", "0"])) as (d, base):
        pid = int(d.wait_for(r"node 2: client \S+  peer \S+  pid (\d+)").group(1))
        for i in (1, 2, 3):
            wait_answers(node(tmp_path, base, i))
        os.kill(pid, signal.SIGKILL)
        d.wait_for(r"node 2 exited \(code -9\); the others keep running", "err")
        assert d.proc.poll() is None
        for i in (1, 3):
            assert node(tmp_path, base, i).status(timeout=10) is not None
        if restart == "sighup":
            assert "kill -HUP" in d.err.read_text()
            d.proc.send_signal(signal.SIGHUP)
        new_pid = int(d.wait_for(r"node 2 restarted \(pid (\d+)\)").group(1))
        assert new_pid != pid
        wait_answers(node(tmp_path, base, 2))
