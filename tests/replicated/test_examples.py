"""The examples on 3 real processes, of `confer serve --app` or of a program that embeds a
member (embedded_node.py): the leader is killed (SIGKILL by its PID) while a client works,
and every acknowledged command's effect is on the survivors."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from confer.client import OutcomeUnknown
from confer.replicated import AppClient, StateMachine
from examples.counter import Counter
from examples.jobqueue import JobQueue
from examples.ratelimit import BURST, RATE, RateLimiter
from testing.procs import ProcessCluster

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EMBEDDED = Path(__file__).with_name("embedded_node.py")
BOTH = pytest.mark.parametrize("embedded", [False, True], ids=["serve-app", "embedded"])


def cluster(tmp_path: Path, cls: type[StateMachine], module: str, embedded: bool
            ) -> ProcessCluster:
    """3 processes of ``confer serve --app``, or of a program that embeds a Member."""
    c = ProcessCluster(3, tmp_path,
                       extra_args=["--app", f"{EXAMPLES}/{module}.py:{cls.__name__}"])
    if embedded:
        for node in c.nodes.values():
            node.program = [str(EMBEDDED)]
    return c


class Run:
    """Paces a client's loop around the leader's death: warm after 10 operations (the
    leader is then killed), done 15 operations after the kill (3000 at most)."""

    def __init__(self) -> None:
        self.warm = threading.Event()
        self.killed = threading.Event()
        self.ops = self.after = 0

    def more(self) -> bool:
        self.ops += 1
        if self.ops > 10:
            self.warm.set()
        if self.killed.is_set():
            self.after += 1
        return self.after <= 15 and self.ops <= 3000


def kill_leader_while(c: ProcessCluster, cls: type[StateMachine],
                      work: Callable[[Run], None]) -> list[AppClient[Any]]:
    """Run ``work`` in a thread, SIGKILL the leader once it is warm, wait for it to end;
    then a client of each surviving member alone (its own linearizable reads)."""
    run = Run()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            work(run)
        except BaseException as e:
            errors.append(e)
        finally:
            run.warm.set()

    leader = c.leader()
    worker = threading.Thread(target=target)
    worker.start()
    assert run.warm.wait(60)
    c.nodes[leader].kill()
    run.killed.set()
    worker.join(120)
    assert not worker.is_alive() and not errors, errors
    assert run.after > 15, "the work ended before the leader's death"
    rest = [i for i in c.nodes if i != leader]
    c.leader(among=rest)
    return [AppClient(cls, [c.nodes[i].client_addr], timeout=15) for i in rest]


@BOTH
def test_counter_keeps_every_acknowledged_increment(tmp_path: Path, embedded: bool) -> None:
    acked: list[int] = []
    unknown = 0

    def work(run: Run) -> None:
        nonlocal unknown
        with AppClient(Counter, c.endpoints, timeout=15) as counter:
            while run.more():
                try:
                    acked.append(counter.incr(1))
                except OutcomeUnknown:
                    unknown += 1

    with cluster(tmp_path, Counter, "counter", embedded) as c:
        clients = kill_leader_while(c, Counter, work)
        assert acked == sorted(set(acked))  # one client, one increment at a time
        for client in clients:
            with client:
                assert len(acked) <= client.get() <= len(acked) + unknown
                assert client.get() >= acked[-1]


@BOTH
def test_jobqueue_loses_and_repeats_no_acknowledged_job(tmp_path: Path, embedded: bool) -> None:
    enqueued: list[int] = []
    done: set[int] = set()
    unsure: set[int] = set()
    """Jobs whose ack's outcome is unknown: acknowledged, or to come out again."""

    def work(run: Run) -> None:
        with AppClient(JobQueue, c.endpoints, timeout=15) as queue:
            while run.more():
                job = None
                try:
                    enqueued.append(queue.put(f"job {run.ops}"))
                    job = queue.take("w1", lease_seconds=0.5)
                    if job is not None and queue.ack(job[0]):
                        assert job[0] not in done, "a job acknowledged twice"
                        done.add(job[0])
                except OutcomeUnknown:
                    if job is not None:
                        unsure.add(job[0])

    with cluster(tmp_path, JobQueue, "jobqueue", embedded) as c:
        first, *others = kill_leader_while(c, JobQueue, work)
        time.sleep(0.6)  # the leases of jobs taken and not acknowledged run out
        seen: set[int] = set()
        with first:
            while (job := first.take("w2", lease_seconds=60)) is not None:
                assert job[0] not in done, "an acknowledged job came out again"
                seen.add(job[0])
                first.ack(job[0])
            assert set(enqueued) - done - unsure <= seen
        for client in others:
            with client:
                assert client.pending() == 0  # the drain reached every member


@BOTH
def test_ratelimiter_grants_no_more_than_the_bucket_holds(tmp_path: Path, embedded: bool) -> None:
    granted = 0
    begin = 0.0

    def work(run: Run) -> None:
        nonlocal granted, begin
        begin = time.time()
        with AppClient(RateLimiter, c.endpoints, timeout=15) as limiter:
            while run.more():
                with contextlib.suppress(OutcomeUnknown):
                    granted += limiter.acquire("api")

    with cluster(tmp_path, RateLimiter, "ratelimit", embedded) as c:
        clients = kill_leader_while(c, RateLimiter, work)
        # The burst, then what the replicated clock refilled (the proposers' clocks: this
        # machine's); the kill took some of the time.
        assert BURST <= granted <= BURST + RATE * (time.time() - begin) + 1
        for client in clients:
            with client:
                assert 0.0 <= client.available("api") <= BURST


def test_a_bad_app_stops_serve_with_one_line(tmp_path: Path) -> None:
    for spec, message in [("nowhere.py:X", "no such file nowhere.py"),
                          (f"{EXAMPLES}/counter.py:Nope", "examples/counter.py has no subclass "
                           "of confer.replicated.StateMachine named 'Nope'"),
                          ("counter", "expected module:Class or path/to/file.py:Class")]:
        out = subprocess.run([sys.executable, "-m", "confer", "serve", "--app", spec,
                              "--data-dir", str(tmp_path / "d"), "--listen-client",
                              "127.0.0.1:0", "--listen-peer", "127.0.0.1:0",
                              "--listen-metrics", "none"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode != 0
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"--app {spec!r}: "), out.stderr
        assert lines[0].endswith(message), out.stderr
