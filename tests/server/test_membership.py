"""Members are added, removed and replaced while writes continue; nothing acknowledged is lost."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from confer.v1 import kv_pb2, kv_pb2_grpc
from testing import ProcessCluster

from .test_durability import put_with_retry, read_all


class Writer(threading.Thread):
    """Puts /m/k0000, /m/k0001, ... through whichever member answers; bounded in count/time."""

    def __init__(self, cluster: ProcessCluster, limit: int = 2000, seconds: float = 60) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.limit = limit
        self.deadline = time.monotonic() + seconds
        self.acked: dict[str, bytes] = {}
        self.stop_flag = threading.Event()

    def run(self) -> None:
        i = 0
        while i < self.limit and not self.stop_flag.is_set() and time.monotonic() < self.deadline:
            live = [n.client_addr for n in list(self.cluster.nodes.values()) if n.alive()]
            path, value = f"/m/k{i:04d}", b"v%d" % i
            if put_with_retry(live, path, value, min(self.deadline, time.monotonic() + 10)):
                self.acked[path] = value
            i += 1


def cluster_stub(addr: str) -> tuple[grpc.Channel, kv_pb2_grpc.ClusterStub]:
    ch = grpc.insecure_channel(addr)
    return ch, kv_pb2_grpc.ClusterStub(ch)


def members(addr: str) -> dict[int, bool]:
    """id -> is_learner."""
    ch, stub = cluster_stub(addr)
    with ch:
        resp = stub.MemberList(kv_pb2.MemberListRequest(), timeout=10)
    return {m.id: m.is_learner for m in resp.members}


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except grpc.RpcError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_add_remove_and_replace_members_under_write_load(tmp_path: Path) -> None:
    with ProcessCluster(3, tmp_path) as c:
        c.leader()
        writer = Writer(c)
        writer.start()
        try:
            # Add: a fresh node joins as a learner, catches up and is promoted to voter.
            c.add_node(4, join=c.nodes[1].client_addr)
            wait_for(lambda: members(c.nodes[1].client_addr) == {1: False, 2: False, 3: False,
                                                               4: False},
                     30, "node 4 to join as a voter")
            # Remove: node 2 leaves and its process exits cleanly.
            ch, stub = cluster_stub(c.nodes[1].client_addr)
            with ch:
                stub.MemberRemove(kv_pb2.MemberRemoveRequest(id=2), timeout=15)
            assert c.nodes[2].proc is not None
            assert c.nodes[2].proc.wait(timeout=20) == 0
            # Replace: node 5 joins, then node 3 is removed.
            c.add_node(5, join=c.nodes[4].client_addr)
            wait_for(lambda: members(c.nodes[4].client_addr) == {1: False, 3: False, 4: False,
                                                               5: False},
                     30, "node 5 to join as a voter")
            ch, stub = cluster_stub(c.nodes[5].client_addr)
            with ch:
                stub.MemberRemove(kv_pb2.MemberRemoveRequest(id=3), timeout=15)
            assert c.nodes[3].proc is not None
            assert c.nodes[3].proc.wait(timeout=20) == 0
        finally:
            time.sleep(0.5)  # a few more writes on the final membership
            writer.stop_flag.set()
            writer.join(timeout=30)
        assert len(writer.acked) > 20
        c.leader(among=[1, 4, 5])
        for i in (1, 4, 5):
            wait_for(lambda i=i: read_all(c.nodes[i].client_addr, "/m") == writer.acked, 20,
                     f"node {i} to hold every acknowledged write")


def test_bad_membership_requests_are_refused(tmp_path: Path) -> None:
    with ProcessCluster(3, tmp_path) as c:
        c.leader()
        ch, stub = cluster_stub(c.nodes[1].client_addr)
        with ch:
            for request, call, code in [
                (kv_pb2.MemberRemoveRequest(id=99), stub.MemberRemove, grpc.StatusCode.NOT_FOUND),
                (kv_pb2.MemberPromoteRequest(id=2), stub.MemberPromote,
                 grpc.StatusCode.FAILED_PRECONDITION),
                (kv_pb2.MemberAddRequest(peer_addr=c.nodes[2].peer_addr), stub.MemberAdd,
                 grpc.StatusCode.ALREADY_EXISTS),
                (kv_pb2.MemberAddRequest(), stub.MemberAdd, grpc.StatusCode.INVALID_ARGUMENT),
            ]:
                try:
                    call(request, timeout=10)
                except grpc.RpcError as e:
                    assert e.code() == code, (request, e.details())
                else:
                    raise AssertionError(f"{request} was accepted")
        assert members(c.nodes[1].client_addr) == {1: False, 2: False, 3: False}


def test_leadership_transfer(tmp_path: Path) -> None:
    with ProcessCluster(3, tmp_path) as c:
        old = c.leader()
        target = next(i for i in c.nodes if i != old)
        ch, stub = cluster_stub(c.nodes[target].client_addr)  # a follower forwards it
        with ch:
            st = stub.TransferLeadership(kv_pb2.TransferLeadershipRequest(target_id=target),
                                         timeout=15)
        assert st.leader_id == target
        assert c.leader() == target


@contextlib.contextmanager
def paused(pid: int | None) -> Iterator[None]:
    """The process ``pid`` stopped (SIGSTOP) until the block ends, however it ends."""
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_leadership_transfer_outlasts_a_target_that_is_slow_to_take_over(
        tmp_path: Path) -> None:
    """Raft gives a transfer up when the target has not won within an election timeout
    (here it is paused for four); the leader tries again while the request has time."""
    with ProcessCluster(3, tmp_path) as c:
        old = c.leader()
        target = next(i for i in c.nodes if i != old)
        ch, stub = cluster_stub(c.nodes[old].client_addr)
        with ch:
            with paused(c.nodes[target].pid):
                answer = stub.TransferLeadership.future(
                    kv_pb2.TransferLeadershipRequest(target_id=target), timeout=20)
                time.sleep(2.0)  # 40 ticks of 50 ms: four election timeouts
            assert answer.result().leader_id == target
        assert c.leader() == target


def test_a_leadership_transfer_follows_the_leadership_when_another_member_takes_over(
        tmp_path: Path) -> None:
    """While the target is paused, another member becomes leader (a second transfer): the
    first request moves to the new leader, which hands leadership on once the target runs."""
    with ProcessCluster(3, tmp_path) as c:
        old = c.leader()
        target, other = (i for i in c.nodes if i != old)
        ch, stub = cluster_stub(c.nodes[old].client_addr)
        with ch:
            with paused(c.nodes[target].pid):
                answer = stub.TransferLeadership.future(
                    kv_pb2.TransferLeadershipRequest(target_id=target), timeout=30)
                time.sleep(0.5)
                took_over = stub.TransferLeadership(
                    kv_pb2.TransferLeadershipRequest(target_id=other), timeout=15)
                assert took_over.leader_id == other
                time.sleep(0.5)
            assert answer.result().leader_id == target
        assert c.leader() == target


def test_a_joining_node_retries_until_the_cluster_can_add_it(tmp_path: Path) -> None:
    """--join keeps asking through refusals that pass (here: nobody answers yet)."""
    c = ProcessCluster(1, tmp_path)
    try:
        joiner = c.add_node(2, join=c.nodes[1].client_addr)  # the cluster is not up yet
        time.sleep(2.5)
        assert joiner.alive(), joiner.log_text()
        c.nodes[1].start()
        c.leader()
        deadline = time.monotonic() + 30
        while members(c.nodes[1].client_addr).get(2) is not False:  # False: a voter
            assert time.monotonic() < deadline, "node 2 never became a voter"
            time.sleep(0.2)
        assert "retrying" in joiner.log_text()
    finally:
        c.stop()
