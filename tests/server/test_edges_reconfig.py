"""Safe reconfiguration (issue 12, findings 8 and 12): a membership change that would leave
fewer live voters than a quorum of the new configuration is refused, on both APIs, and the
cluster stays writable; removing the last voter is refused; etcd's MemberUpdate moves a
member to a new peer URL."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc
import pytest

from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.raft import StateRole
from confer.v1 import kv_pb2, kv_pb2_grpc
from testing import ProcessCluster

from ..raft.harness import Net
from .test_membership import members, wait_for

DEADLINE = 30.0


def test_the_leader_status_names_the_live_members() -> None:
    """The core's view, deterministic: live = heard from within the last one or two
    CheckQuorum periods (election timeouts), so not every follower drops out of it right
    after each check; a member cut off drops out within two."""
    net = Net(3)
    net.elect(1)
    net.tick_all(2)
    assert net.node(1).status().live == {1, 2, 3}
    # Right after a CheckQuorum (recent_active all reset), before anyone answered again.
    for _ in range(30):
        net.node(1).tick()
        if not any(pr.recent_active for i, pr in net.node(1).raft.prs.items() if i != 1):
            break
    else:
        raise AssertionError("no CheckQuorum happened")
    assert net.node(1).status().live == {1, 2, 3}
    net.stabilize()
    net.isolate(3)
    net.tick_all(25)
    assert net.role(1) == StateRole.LEADER
    assert net.node(1).status().live == {1, 2}
    assert net.node(2).status().live == frozenset()  # only the leader knows


def native(addr: str) -> tuple[grpc.Channel, kv_pb2_grpc.ClusterStub, kv_pb2_grpc.KVStub]:
    ch = grpc.insecure_channel(addr)
    return ch, kv_pb2_grpc.ClusterStub(ch), kv_pb2_grpc.KVStub(ch)


def refused(call, *args, **kwargs) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        call(*args, timeout=10, **kwargs)
    return info.value


def put_ok(kv: kv_pb2_grpc.KVStub, path: str) -> None:
    kv.Put(kv_pb2.PutRequest(path=path, value=b"1"), timeout=10)


def test_single_node_refuses_a_voter_that_would_lose_quorum_and_stays_writable(
        tmp_path: Path) -> None:
    with ProcessCluster(1, tmp_path) as c:
        c.leader()
        ch, cluster, kv = native(c.nodes[1].client_addr)
        with ch:
            err = refused(cluster.MemberAdd,
                          kv_pb2.MemberAddRequest(id=7, peer_addr="127.0.0.1:1"))
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "only 1 of the 2 voters" in (err.details() or "")
            etcd = rpc_pb2_grpc.ClusterStub(ch)
            err = refused(etcd.MemberAdd, rpc_pb2.MemberAddRequest(
                peerURLs=["http://127.0.0.1:2"]))
            assert (err.code(), err.details()) == (grpc.StatusCode.UNAVAILABLE,
                                                   "etcdserver: unhealthy cluster")
            # Nothing changed: one member, and writes are still committed.
            assert members(c.nodes[1].client_addr) == {1: False}
            put_ok(kv, "/still/writable")
            # A learner does not count towards quorum: always allowed.
            added = cluster.MemberAdd(kv_pb2.MemberAddRequest(id=7, peer_addr="127.0.0.1:1",
                                                              is_learner=True), timeout=10)
            # No client address until it starts and publishes one: its peer port serves no
            # client API, so it must not be advertised as one.
            assert (added.member.peer_addr, added.member.client_addr) == ("127.0.0.1:1", "")
            put_ok(kv, "/still/writable")
            # Promoting a learner that never answered is refused as before (not caught up).
            err = refused(cluster.MemberPromote, kv_pb2.MemberPromoteRequest(id=7))
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
            # Removing the last voter is refused (it was INTERNAL), on both APIs.
            err = refused(cluster.MemberRemove, kv_pb2.MemberRemoveRequest(id=1))
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "last voter" in (err.details() or "")
            err = refused(etcd.MemberRemove, rpc_pb2.MemberRemoveRequest(ID=1))
            assert (err.code(), err.details()) == (
                grpc.StatusCode.FAILED_PRECONDITION,
                "etcdserver: re-configuration failed due to not enough started members")
            # Removing the learner is fine.
            cluster.MemberRemove(kv_pb2.MemberRemoveRequest(id=7), timeout=10)
            assert members(c.nodes[1].client_addr) == {1: False}
            put_ok(kv, "/still/writable")


def test_three_nodes_with_one_down_refuse_changes_that_leave_no_live_quorum(
        tmp_path: Path) -> None:
    with ProcessCluster(3, tmp_path) as c:
        leader = c.leader()
        down = next(i for i in c.nodes if i != leader)
        up = next(i for i in c.nodes if i not in (leader, down))
        ch, cluster, kv = native(c.nodes[leader].client_addr)
        with ch:
            c.nodes[down].signal(signal.SIGSTOP)
            try:
                # A member counts as live for up to two election timeouts (here 2 x 10 ticks
                # of 50 ms) after it last answered; give the leader four times that.
                time.sleep(4)
                err = refused(cluster.MemberAdd, kv_pb2.MemberAddRequest(
                    id=9, peer_addr="127.0.0.1:3", name="n9"))
                assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err
                assert "only 2 of the 4 voters" in (err.details() or "")
                # Removing a live voter would leave 1 live of 2: refused. The cluster is
                # still writable and still has its three members.
                err = refused(cluster.MemberRemove, kv_pb2.MemberRemoveRequest(id=up))
                assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert set(members(c.nodes[leader].client_addr)) == {1, 2, 3}
                put_ok(kv, "/after/refusals")
            finally:
                c.nodes[down].signal(signal.SIGCONT)

            # All live again: adding a 4th voter (3 live of 4) is allowed.
            def add_accepted() -> bool:
                try:
                    cluster.MemberAdd(kv_pb2.MemberAddRequest(
                        id=9, peer_addr="127.0.0.1:3", name="n9"), timeout=10)
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.FAILED_PRECONDITION:
                        raise
                    return False
                return True

            wait_for(add_accepted, DEADLINE, "the voter to be accepted once all are live")
            assert set(members(c.nodes[leader].client_addr)) == {1, 2, 3, 9}
            put_ok(kv, "/after/add")


def test_etcd_member_update_moves_a_member_to_a_new_peer_url(tmp_path: Path) -> None:
    with ProcessCluster(1, tmp_path) as c:
        c.leader()
        ch = grpc.insecure_channel(c.nodes[1].client_addr)
        with ch:
            etcd = rpc_pb2_grpc.ClusterStub(ch)
            native_cluster = kv_pb2_grpc.ClusterStub(ch)
            native_cluster.MemberAdd(kv_pb2.MemberAddRequest(
                id=5, peer_addr="127.0.0.1:5", is_learner=True), timeout=10)
            resp = etcd.MemberUpdate(rpc_pb2.MemberUpdateRequest(
                ID=5, peerURLs=["http://127.0.0.1:6"]), timeout=10)
            moved = {m.ID: list(m.peerURLs) for m in resp.members}
            assert moved[5] == ["http://127.0.0.1:6"]
            listed = etcd.MemberList(rpc_pb2.MemberListRequest(linearizable=True), timeout=10)
            assert {m.ID: list(m.peerURLs) for m in listed.members}[5] == ["http://127.0.0.1:6"]
            assert {m.ID: m.isLearner for m in listed.members} == {1: False, 5: True}
            # The same URL again changes nothing and is not an error.
            etcd.MemberUpdate(rpc_pb2.MemberUpdateRequest(
                ID=5, peerURLs=["http://127.0.0.1:6"]), timeout=10)
            put_ok(kv_pb2_grpc.KVStub(ch), "/after/update")
