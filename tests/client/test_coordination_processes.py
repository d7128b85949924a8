"""Coordination recipes across real client processes: contention, and holders killed with -9."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import confer
from testing import ProcessCluster

CONTEND = r"""
import sys, time, confer
endpoints, record, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
deadline = time.monotonic() + seconds
with confer.Client(endpoints.split(","), timeout=10) as c:
    for _ in range(50):  # bounded in count and time
        if time.monotonic() > deadline:
            break
        with c.lock("/proc-lock/record", ttl=5, timeout=30) as lock:
            with open(record, "a") as f:
                f.write(f"start {lock.fencing_token}\n"); f.flush()
                time.sleep(0.02)
                f.write(f"end {lock.fencing_token}\n"); f.flush()
"""

HOLD = r"""
import sys, time, confer
endpoints, flag = sys.argv[1], sys.argv[2]
with confer.Client(endpoints.split(","), timeout=10) as c:
    with c.lock("/proc-lock/held", ttl=2, timeout=30) as lock:
        open(flag, "w").write(str(lock.fencing_token))
        time.sleep(60)  # killed long before this ends
"""

CAMPAIGN = r"""
import sys, time, confer
endpoints, name = sys.argv[1], sys.argv[2]
with confer.Client(endpoints.split(","), timeout=10) as c:
    election = c.election("/proc-election", ttl=2)
    election.campaign(name, timeout=60)
    time.sleep(60)  # killed long before this ends
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    with ProcessCluster(3, tmp_path_factory.mktemp("coordproc")) as c:
        c.leader()
        yield c


def spawn(script: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", script, *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def reap(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=30)


def wait_until(predicate, timeout: float) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, "timed out"
        time.sleep(0.05)
    return time.monotonic() - start


def test_five_processes_contend_without_overlap_and_tokens_increase(
        cluster: ProcessCluster, tmp_path: Path) -> None:
    record = tmp_path / "record"
    procs = [spawn(CONTEND, ",".join(cluster.endpoints), str(record), "4") for _ in range(5)]
    try:
        for p in procs:
            assert p.wait(timeout=90) == 0, p.stderr.read() if p.stderr else ""
    finally:
        reap(procs)
    lines = [line.split() for line in record.read_text().splitlines()]
    assert len(lines) >= 10 and len(lines) % 2 == 0
    tokens = []
    for start, end in zip(lines[0::2], lines[1::2], strict=True):
        assert start[0] == "start" and end == ["end", start[1]], "two holders overlapped"
        tokens.append(int(start[1]))
    assert tokens == sorted(set(tokens)), "fencing tokens must strictly increase"


def test_kill_9_of_the_holder_hands_the_lock_to_the_next_waiter(
        cluster: ProcessCluster, tmp_path: Path) -> None:
    flag = tmp_path / "held"
    holder = spawn(HOLD, ",".join(cluster.endpoints), str(flag))
    try:
        wait_until(flag.exists, 30)
        first_token = int(flag.read_text())
        with confer.Client(cluster.endpoints, timeout=10) as c:
            lock = c.lock("/proc-lock/held", ttl=2, timeout=30)
            holder.kill()
            killed = time.monotonic()
            with lock:
                waited = time.monotonic() - killed
                assert lock.fencing_token > first_token
        assert waited < 2 + 5, f"next waiter got the lock {waited:.1f}s after the kill"
    finally:
        reap([holder])


def test_kill_9_of_the_elected_process_lets_another_take_over(
        cluster: ProcessCluster) -> None:
    eps = ",".join(cluster.endpoints)
    first = spawn(CAMPAIGN, eps, "first")
    second: subprocess.Popen[bytes] | None = None
    try:
        with confer.Client(cluster.endpoints, timeout=10) as c:
            election = c.election("/proc-election")

            def leader_is(value: bytes) -> bool:
                kv = election.leader()
                return kv is not None and kv.value == value

            wait_until(lambda: leader_is(b"first"), 30)
            second = spawn(CAMPAIGN, eps, "second")
            seen: list[bytes] = []
            watch = election.observe()
            try:
                first.kill()
                for kv in watch:
                    seen.append(kv.value if kv is not None else b"")
                    if seen[-1] == b"second":
                        break
            finally:
                watch.cancel()
            assert seen[-1] == b"second"
            assert leader_is(b"second")
    finally:
        reap([first] + ([second] if second is not None else []))
