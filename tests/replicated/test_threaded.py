"""The examples embedded in one process with the threaded API (ThreadedMember): the leader
member stops, the others carry on with every acknowledged effect; confer status and confer
member work against an app's members."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from confer.replicated import AppClient, StateMachine, ThreadedMember
from examples.counter import Counter
from examples.jobqueue import JobQueue
from examples.ratelimit import RateLimiter
from testing.procs import free_port


@pytest.fixture
def trio(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[list[ThreadedMember]]:
    cls: type[StateMachine] = request.param
    peers = {i: f"127.0.0.1:{free_port()}" for i in (1, 2, 3)}
    initial = ",".join(f"{i}={addr}" for i, addr in peers.items())
    group = [ThreadedMember(cls, node_id=i, data_dir=tmp_path / f"m{i}", listen_peer=peers[i],
                            listen_client=f"127.0.0.1:{free_port()}", initial_cluster=initial,
                            tick_ms=20, listen_metrics="none") for i in peers]
    try:
        for m in group:
            m.start()
        yield group
    finally:
        for m in group:
            m.stop()


def new_leader(rest: list[ThreadedMember], old: ThreadedMember) -> None:
    """Wait until the survivors have elected another leader."""
    deadline = time.monotonic() + 20
    while any(m.leader_id in (0, old.member.node_id) for m in rest):
        assert time.monotonic() < deadline, "no new leader"
        time.sleep(0.02)


def split(group: list[ThreadedMember]) -> tuple[ThreadedMember, list[ThreadedMember]]:
    leader = group[0].wait_for_leader()
    return (next(m for m in group if m.member.node_id == leader),
            [m for m in group if m.member.node_id != leader])


@pytest.mark.parametrize("trio", [Counter], indirect=True)
def test_counter(trio: list[ThreadedMember]) -> None:
    leader, rest = split(trio)
    assert [rest[0].incr(2), leader.incr(), rest[1].call("incr", 3)] == [2, 3, 6]
    # The CLI's status and member commands speak to an app's members as to any.
    endpoints = ",".join(m.client_address for m in trio)
    for command, shows in ((["member", "list"], "127.0.0.1"), (["status"], "leader")):
        out = subprocess.run([sys.executable, "-m", "confer", "--endpoints", endpoints,
                              *command], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.count(shows) >= 1, out.stderr
        assert command == ["status"] or out.stdout.count("127.0.0.1") >= 3, out.stdout
    leader.stop()
    new_leader(rest, leader)
    assert rest[1].incr() == 7
    with AppClient(Counter, [m.client_address for m in rest]) as client:
        assert client.get() == 7
        assert client.call("get", serializable=True) in (6, 7)  # may lag one command


@pytest.mark.parametrize("trio", [JobQueue], indirect=True)
def test_jobqueue(trio: list[ThreadedMember]) -> None:
    leader, rest = split(trio)
    ids = [leader.put(f"job {i}") for i in range(3)]
    assert rest[0].take("w1", 0.0) == [ids[0], "job 0"]  # a lease that ends at once
    assert rest[1].take("w2", 60.0) == [ids[0], "job 0"]  # redelivered
    assert rest[1].ack(ids[0]) and not leader.ack(ids[0])
    leader.stop()
    new_leader(rest, leader)
    assert rest[0].take("w3") == [ids[1], "job 1"]
    assert rest[1].pending() == 2


@pytest.mark.parametrize("trio", [RateLimiter], indirect=True)
def test_ratelimiter(trio: list[ThreadedMember]) -> None:
    leader, rest = split(trio)
    grants = [m.acquire("k", 4.0) for m in (leader, rest[0], rest[1])]
    assert grants == [True, True, False]  # 10 tokens: 4, 4, then 2 left (and a trickle)
    leader.stop()
    new_leader(rest, leader)
    # The survivors hold the same bucket: the same answers, whatever the election took.
    assert rest[0].acquire("k", 1.0)
    assert rest[0].available("k") == rest[1].available("k") <= 10.0
