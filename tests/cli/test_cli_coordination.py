"""`confer lease`, `lock`, `elect` and `service`, end to end through the real entry point.

Every background process is started by a test, tracked by PID and killed and reaped in a
``finally``; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import confer as confer_client
from testing import ProcessCluster


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with ProcessCluster(1, tmp_path_factory.mktemp("cli-coord"), tick_ms=50) as c:
        c.leader()
        yield ",".join(c.endpoints)


def env_for(endpoints: str) -> dict[str, str]:
    return {**os.environ, "CONFER_ENDPOINTS": endpoints, "PYTHONUNBUFFERED": "1"}


def confer(*args: str, endpoints: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "confer", *args], capture_output=True,
                          text=True, env=env_for(endpoints), timeout=timeout)


def ok(*args: str, endpoints: str) -> str:
    r = confer(*args, endpoints=endpoints)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


class Background:
    """A `confer` process in the background whose stdout lines are collected by a thread."""

    def __init__(self, *args: str, endpoints: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "confer", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env_for(endpoints))
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_line(self, pattern: str, timeout: float = 15) -> str:
        """The next line matching ``pattern`` (earlier lines are kept in ``seen``)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching {pattern!r} in {timeout}s; "
                                     f"seen {self.seen}; stderr: {self.stderr()}")
            try:
                line = self.lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    raise AssertionError(f"exited {self.proc.returncode} before a line "
                                         f"matching {pattern!r}; seen {self.seen}; "
                                         f"stderr: {self.stderr()}") from None
                continue
            self.seen.append(line)
            if re.search(pattern, line):
                return line

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(running)"
        return self.proc.stderr.read()

    def terminate(self, timeout: float = 15) -> int:
        """SIGTERM (the command cleans up and exits); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def test_lease_grant_ttl_list_keep_alive_revoke(endpoints: str) -> None:
    granted = json.loads(ok("lease", "grant", "2", "-o", "json", endpoints=endpoints))
    lease, hex_id = granted["id"], f"{granted['id']:#x}"
    assert granted["ttl"] == 2
    keeper: Background | None = None
    try:
        # Kept alive from here until the CLI has taken over, however slow its start is.
        with confer_client.Client(endpoints, timeout=5) as c, c.lease_keep_alive(lease):
            c.put("/cli-lease/a", b"x", lease=lease)
            keeper = Background("lease", "keep-alive", hex_id, endpoints=endpoints)
            assert "TTL 2s" in keeper.wait_line("keeping lease")
        time.sleep(2.5)  # beyond the TTL: only `confer lease keep-alive` renews it now
        out = ok("lease", "ttl", str(lease), "--keys", endpoints=endpoints)
        assert out.startswith(f"lease {lease} ({hex_id}):") and "/cli-lease/a" in out
        listed = json.loads(ok("lease", "list", "-o", "json", endpoints=endpoints))
        assert {"id": lease, "granted_ttl": 2} in listed
        assert "1 keys deleted" in ok("lease", "revoke", str(lease), endpoints=endpoints)
        assert keeper.proc.wait(10) == 3  # the keep-alive noticed the loss
        assert "lost" in keeper.stderr()
    finally:
        if keeper is not None:
            keeper.kill()
    missing = confer("lease", "ttl", str(lease), endpoints=endpoints)
    assert missing.returncode == 4 and missing.stderr.startswith("Error: lease")


HOLD = """
import os, sys, time
with open(sys.argv[1], "a") as log:
    log.write(f"start {os.getpid()} {os.environ['CONFER_FENCING_TOKEN']} "
              f"{os.environ['CONFER_LOCK_KEY']}\\n")
    log.flush()
    time.sleep(0.3)
    log.write(f"end {os.getpid()}\\n")
sys.exit(int(sys.argv[2]))
"""


def test_lock_runs_concurrent_commands_one_at_a_time_with_their_fencing_tokens(
        endpoints: str, tmp_path: Path) -> None:
    log = tmp_path / "holders.log"
    procs = [subprocess.Popen([sys.executable, "-m", "confer", "lock", "/cli-lock/job", "--ttl",
                               "2", "--wait", "30", "--", sys.executable, "-c", HOLD, str(log),
                               str(code)], env=env_for(endpoints))
             for code in (0, 0, 5)]
    try:
        codes = [p.wait(60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
    assert codes == [0, 0, 5]  # each exits with its command's code
    lines = log.read_text().splitlines()
    assert len(lines) == 6
    starts = [line.split() for line in lines[0::2]]
    ends = [line.split() for line in lines[1::2]]
    # Never two holders: each start is followed by the same process's end.
    assert [s[0] for s in starts] == ["start"] * 3 and [e[0] for e in ends] == ["end"] * 3
    assert [s[1] for s in starts] == [e[1] for e in ends]
    tokens = [int(s[2]) for s in starts]
    assert tokens == sorted(set(tokens))  # strictly increasing
    assert all(s[3].startswith("/cli-lock/job/") for s in starts)
    with confer_client.Client(endpoints, timeout=5) as c:
        assert c.list("/cli-lock/job").kvs == ()  # every holder released it


def test_lock_errors_a_wait_that_times_out_and_a_lock_lost_while_the_command_runs(
        endpoints: str) -> None:
    r = confer("lock", "/cli-lock/x", "--", "/nonexistent/command", endpoints=endpoints)
    assert r.returncode == 127 and r.stderr.startswith("Error: cannot run /nonexistent")
    with confer_client.Client(endpoints, timeout=5) as c:
        with c.lock("/cli-lock/busy"):
            r = confer("lock", "/cli-lock/busy", "--wait", "0.5", "--", "true",
                       endpoints=endpoints)
            assert r.returncode == 3 and "not acquired within 0.5s" in r.stderr
        worker = Background("lock", "/cli-lock/lost", "--ttl", "5", "--", sys.executable, "-c",
                            "import time; print('working', flush=True); time.sleep(30)",
                            endpoints=endpoints)
        try:
            worker.wait_line("working")
            [held] = c.list("/cli-lock/lost").kvs
            c.lease_revoke(held.lease)  # the holder's lease ends behind its back
            assert worker.proc.wait(10) == 3  # the command was terminated
            assert "lock /cli-lock/lost was lost" in worker.stderr()
        finally:
            worker.kill()
        assert c.list("/cli-lock").kvs == ()  # nothing left behind


def test_service_register_in_the_background_then_list_and_watch(endpoints: str) -> None:
    reg = Background("service", "register", "cli-web", "w1", "10.0.0.1:8080", "--meta",
                     "zone=eu", "--meta", "v=2", "--ttl", "2", endpoints=endpoints)
    try:
        assert "registered /services/cli-web/w1" in reg.wait_line("registered")
        table = ok("service", "list", "cli-web", endpoints=endpoints)
        assert re.search(r"w1\s+10\.0\.0\.1:8080\s+v=2,zone=eu", table)
        listed = json.loads(ok("service", "list", "cli-web", "-o", "json", endpoints=endpoints))
        assert [(i["id"], i["address"], i["metadata"]) for i in listed] == [
            ("w1", "10.0.0.1:8080", {"zone": "eu", "v": "2"})]
        out = ok("service", "watch", "cli-web", "--count", "1", endpoints=endpoints)
        assert out.split()[:3] == ["JOIN", "w1", "10.0.0.1:8080"]
        assert reg.terminate() == 0  # deregisters on the way out
    finally:
        reg.kill()
    assert json.loads(ok("service", "list", "cli-web", "-o", "json", endpoints=endpoints)) == []


def test_elect_two_processes_and_a_listener(endpoints: str) -> None:
    listener = Background("elect", "/cli-elect", "--listen", "-o", "json", endpoints=endpoints)
    first = Background("elect", "/cli-elect", "alpha", "--ttl", "2", endpoints=endpoints)
    second: Background | None = None
    try:
        elected = first.wait_line("^elected")
        second = Background("elect", "/cli-elect", "beta", "--ttl", "2", endpoints=endpoints)
        assert second.wait_line("^leader").startswith("leader alpha (key /cli-elect/")
        time.sleep(0.3)
        assert not any(line.startswith("elected") for line in second.seen)
        assert first.terminate() == 0  # resigns
        second_elected = second.wait_line("^elected")
        assert int(second_elected.split("rev ")[1].rstrip(")")) > int(
            elected.split("rev ")[1].rstrip(")"))
        if not any(line.startswith("leader beta") for line in second.seen):
            second.wait_line("^leader beta")  # its observer may print before or after
        leaders = [json.loads(listener.wait_line('"leader"'))["value"] for _ in range(2)]
        assert leaders == ["YWxwaGE=", "YmV0YQ=="]  # values are base64 in JSON: alpha, beta
        assert second.terminate() == 0
        assert listener.terminate() == 0
    finally:
        for p in (listener, first, second):
            if p is not None:
                p.kill()
