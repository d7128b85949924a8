"""Exact revocation for writes against real processes: a follower that has not yet applied
a revocation checks a write as allowed and forwards it; the leader's log puts it after the
revocation, so every member refuses it when applying it (the write is stamped with the auth
revision it was checked at, as etcd stamps its request header).

The follower is made to lag by delaying the leader's connection to it (every Raft message
the leader sends it arrives DELAY_S late), while the follower's own connection to the leader,
which carries its forwarded proposal, is not delayed. The refusal's message tells the
apply-time check from the follower's own check, so the outcome cannot pass by accident."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

import confer
from chaos.cluster import ChaosCluster
from chaos.proxy import Mode
from confer.client import PermissionDenied
from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc

DELAY_S = 3.0
"""How late the lagging follower hears from the leader: far longer than the revocation and
the write take to be sent (milliseconds), and shorter than the follower waits for a write it
forwarded (5 s plus two election timeouts)."""


def wait_for(what: str, check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.serial  # a follower made to lag DELAY_S behind: keep other load away
def test_a_write_checked_before_a_revoke_and_applied_after_it_is_refused(tmp_path: Path
                                                                        ) -> None:
    with ChaosCluster(3, tmp_path, seed=7) as c:
        leader = c.leader()
        follower = next(i for i in sorted(c.members) if i != leader)
        with confer.Client([c.node(leader).client_addr], user="root", password="rootpw",
                           timeout=30) as root:
            root.user_add("root", "rootpw")
            root.user_grant_role("root", "root")
            root.role_add("app")
            root.role_grant_permission("app", "readwrite", "/app/", prefix=True)
            root.user_add("alice", "alicepw")
            root.user_grant_role("alice", "app")
            root.auth_enable()
            revision = root.put("/app/before", b"1").revision
            addr = c.node(follower).client_addr
            with grpc.insecure_channel(addr) as ch:
                token = rpc_pb2_grpc.AuthStub(ch).Authenticate(rpc_pb2.AuthenticateRequest(
                    name="alice", password="alicepw"), timeout=30).token
                kv = rpc_pb2_grpc.KVStub(ch)
                alice = [("token", token)]
                wait_for("the follower to catch up", lambda: kv.Range(
                    rpc_pb2.RangeRequest(key=b"/app/before", serializable=True),
                    metadata=alice, timeout=10).header.revision >= revision)

                c.net.set_link(leader, follower, Mode.DELAY, delay_ms=DELAY_S * 1000)
                # The follower hears the leader again, DELAY_S late: it follows it.
                maintenance = rpc_pb2_grpc.MaintenanceStub(ch)
                time.sleep(DELAY_S)
                wait_for("the lagging follower to follow the leader", lambda: maintenance.Status(
                    rpc_pb2.StatusRequest(), timeout=10).leader == leader, DELAY_S * 4)

                root.role_revoke_permission("app", "/app/", prefix=True)  # applied at the leader
                with pytest.raises(grpc.RpcError) as e:
                    kv.Put(rpc_pb2.PutRequest(key=b"/app/x", value=b"2"), metadata=alice,
                           timeout=DELAY_S * 4)
                assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
                # The etcd API answers etcd's message; the node's log names the cause.
                assert e.value.details() == "etcdserver: permission denied"
                c.net.heal()
            assert root.get("/app/x") is None
        log = c.node(follower).log_text()
        assert "lost the permission before the write was applied" in log, log[-2000:]
        with (confer.Client([c.node(leader).client_addr], user="alice", password="alicepw",
                            timeout=30) as alice_client,
              pytest.raises(PermissionDenied)):
            alice_client.put("/app/y", b"3")  # refused at once now, everywhere
