"""A 3-node Confer cluster driven by the real ``etcdctl`` (Debian's etcd-client).

etcdctl is required, never skipped: CI (``.ci/run``) installs it, and these tests prove that
etcd's own client works against Confer.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testing import ProcessCluster

ETCDCTL = shutil.which("etcdctl")


@dataclass
class Etcdctl:
    """Runs etcdctl subprocesses against ``endpoints``; every one bounded by a timeout."""

    endpoints: list[str]

    def argv(self, *args: str, endpoints: list[str] | None = None) -> list[str]:
        assert ETCDCTL, "etcdctl is not installed (apt-get install etcd-client)"
        return [ETCDCTL, f"--endpoints={','.join(endpoints or self.endpoints)}",
                "--command-timeout=8s", "--dial-timeout=3s", *args]

    @staticmethod
    def env() -> dict[str, str]:
        return {**os.environ, "ETCDCTL_API": "3"}

    def run(self, *args: str, stdin: str | None = None, check: bool = True,
            endpoints: list[str] | None = None, timeout: float = 20) -> str:
        """Run to completion; returns stdout (stderr too when ``check`` is False)."""
        proc = subprocess.Popen(self.argv(*args, endpoints=endpoints), env=self.env(),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(stdin.encode() if stdin else None, timeout=timeout)
        finally:
            kill(proc)
        if check and proc.returncode != 0:
            raise AssertionError(f"etcdctl {' '.join(args)} failed ({proc.returncode}): "
                                 f"{err.decode(errors='replace')}")
        return out.decode() + ("" if check else err.decode())

    def start(self, *args: str, out: Path) -> subprocess.Popen[bytes]:
        """A background etcdctl (watch, lock, elect) writing to ``out``; kill it with
        :func:`kill`."""
        with open(out, "wb") as f:
            return subprocess.Popen(self.argv(*args), env=self.env(), stdout=f,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill one process we started, by its PID, and reap it."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def wait_until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    base = tmp_path_factory.mktemp("etcd-cluster")
    with ProcessCluster(3, base, tick_ms=50) as c:
        for n in c.nodes.values():
            n.wait_ready()
        c.leader()
        yield c


@pytest.fixture(scope="module")
def etcdctl(cluster: ProcessCluster) -> Etcdctl:
    assert ETCDCTL, "etcdctl is not installed (apt-get install etcd-client): required"
    ctl = Etcdctl(cluster.endpoints)
    # Every member has published its client address (endpoint --cluster needs them).
    wait_until(lambda: "http://" + cluster.endpoints[-1] in ctl.run("member", "list"), 20,
               "client URLs in the member list")
    return ctl
