"""Leases on a real 3-process cluster: keep-alive, expiry, revoke, queries, failover."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from confer.v1 import coord_pb2, kv_pb2
from testing import ProcessCluster

from .coord_helpers import Client, KeepAlive, Watch, follower_addr, rpc_error, wait_for

TICK_MS = 50  # election timeout 0.5-1 s; the minimum lease TTL is then 1 s


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    with ProcessCluster(3, tmp_path_factory.mktemp("leases"), tick_ms=TICK_MS) as c:
        c.leader()
        yield c


def test_keepalive_keeps_keys_beyond_the_ttl_and_expiry_deletes_them_in_one_revision(
        cluster: ProcessCluster) -> None:
    addr = follower_addr(cluster)  # every call goes through a follower
    with Client(addr) as cl:
        lease = cl.grant(ttl=1)
        cl.put("/ka/a", lease=lease)
        cl.put("/ka/b", lease=lease)
        revision = cl.put("/ka/plain")
        watch = Watch(addr, "/ka", start_revision=revision + 1)
        watch.start()
        assert watch.created.wait(10)
        renew = KeepAlive(lambda: [addr], lease, interval=0.25)
        renew.start()
        time.sleep(3.0)  # three TTLs
        assert cl.paths("/ka") == ["/ka/a", "/ka/b", "/ka/plain"]
        renew.stop()
        assert len(renew.renewals) >= 8 and {ttl for _, _, ttl in renew.renewals} == {1}
        wait_for(lambda: cl.paths("/ka") == ["/ka/plain"], 5, "the lease to expire")
        wait_for(lambda: len(watch.events) >= 2, 5, "the DELETE events")
        watch.close()
    (seen_at, first), (_, second) = watch.events[:2]
    assert [(e.type, e.kv.path) for e in (first, second)] == [
        (kv_pb2.Event.DELETE, "/ka/a"), (kv_pb2.Event.DELETE, "/ka/b")]
    assert first.kv.mod_revision == second.kv.mod_revision  # one revision
    assert len(watch.events) == 2
    # Never before TTL from the last renewal the leader acknowledged; not much later either.
    lived = seen_at - renew.last_renewal_sent()
    assert 1.0 <= lived < 1.0 + 2.0, lived


def test_revoke_deletes_the_keys_at_once(cluster: ProcessCluster) -> None:
    with Client(follower_addr(cluster)) as cl:
        lease = cl.grant(ttl=60)
        for name in ("x", "y", "z"):
            cl.put(f"/revoke/{name}", lease=lease)
        resp = cl.lease.Revoke(coord_pb2.LeaseRevokeRequest(id=lease), timeout=10)
        assert resp.deleted == 3
        assert cl.paths("/revoke") == []
        watch = Watch(cluster.endpoints[0], "/revoke", start_revision=resp.header.revision)
        watch.start()
        wait_for(lambda: len(watch.events) == 3, 10, "the history of the revocation")
        watch.close()
        assert {e.kv.mod_revision for _, e in watch.events} == {resp.header.revision}
        ttl = cl.lease.TimeToLive(coord_pb2.LeaseTimeToLiveRequest(id=lease), timeout=10)
        assert (ttl.ttl, ttl.granted_ttl) == (-1, 0)
        err = rpc_error(lambda: cl.lease.Revoke(coord_pb2.LeaseRevokeRequest(id=lease),
                                                timeout=10))
        assert err.code() == grpc.StatusCode.NOT_FOUND
        # Renewing a lease that is gone answers TTL 0 (as etcd), not an error.
        answers = cl.lease.KeepAlive(iter([coord_pb2.LeaseKeepAliveRequest(id=lease)]),
                                     timeout=10)
        assert [(a.id, a.ttl) for a in answers] == [(lease, 0)]


def test_time_to_live_leases_and_grant_rules(cluster: ProcessCluster) -> None:
    with Client(follower_addr(cluster)) as cl:
        assert cl.grant(ttl=5, lease=0xABC) == 0xABC
        err = rpc_error(lambda: cl.grant(ttl=5, lease=0xABC))
        assert err.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "lease already exists" in (err.details() or "")
        a, b = cl.grant(ttl=5), cl.grant(ttl=5)
        assert len({a, b, 0xABC}) == 3
        cl.put("/ttl/k2", lease=0xABC)
        cl.put("/ttl/k1", lease=0xABC)
        time.sleep(0.3)
        resp = cl.lease.TimeToLive(coord_pb2.LeaseTimeToLiveRequest(id=0xABC, keys=True),
                                   timeout=10)
        assert resp.granted_ttl == 5 and 2 <= resp.ttl <= 4
        assert 2000 < resp.remaining_ms <= 4700 and resp.ttl == resp.remaining_ms // 1000
        assert list(resp.keys) == ["/ttl/k1", "/ttl/k2"]
        assert resp.header.member_id == resp.header.leader_id  # the leader's clock answered
        leases = cl.lease.Leases(coord_pb2.LeaseLeasesRequest(), timeout=10).leases
        assert {(s.id, s.granted_ttl) for s in leases} >= {(0xABC, 5), (a, 5), (b, 5)}
        for bad in (coord_pb2.LeaseGrantRequest(ttl=0), coord_pb2.LeaseGrantRequest(ttl=-1),
                    coord_pb2.LeaseGrantRequest(ttl=10**10),
                    coord_pb2.LeaseGrantRequest(ttl=5, id=-2)):
            err = rpc_error(lambda bad=bad: cl.lease.Grant(bad, timeout=10))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        for lease in (a, b, 0xABC):
            cl.lease.Revoke(coord_pb2.LeaseRevokeRequest(id=lease), timeout=10)


def test_put_with_an_unknown_lease_fails(cluster: ProcessCluster) -> None:
    with Client(follower_addr(cluster)) as cl:
        err = rpc_error(lambda: cl.put("/unknown/k", lease=0x7777))
        assert err.code() == grpc.StatusCode.NOT_FOUND
        assert "etcdserver: requested lease not found" in (err.details() or "")
        txn = kv_pb2.TxnRequest(success=[kv_pb2.RequestOp(put=kv_pb2.PutRequest(
            path="/unknown/t", lease=0x7777))])
        err = rpc_error(lambda: cl.kv.Txn(txn, timeout=10))
        assert err.code() == grpc.StatusCode.NOT_FOUND
        assert cl.paths("/unknown") == []


def test_leases_survive_a_leader_kill_9_and_expire_once_renewals_stop(tmp_path: Path) -> None:
    with ProcessCluster(3, tmp_path, tick_ms=TICK_MS) as c:
        old = c.leader()
        others = [i for i in c.nodes if i != old]
        with Client(c.nodes[others[0]].client_addr) as cl:
            kept = cl.grant(ttl=2)
            cl.put("/failover/kept", lease=kept)
            idle = cl.grant(ttl=2)  # never renewed
            cl.put("/failover/idle", lease=idle)
            granted_idle = time.monotonic()
            renew = KeepAlive(lambda: [n.client_addr for n in c.nodes.values() if n.alive()],
                              kept, interval=0.3)
            renew.start()
            time.sleep(1.2)
            c.nodes[old].kill()
            killed = time.monotonic()
            assert c.leader(among=others) != old
            # The idle lease's old deadline (granted + 2 s) passes during the failover; the
            # new leader gave it a full TTL again, so it is still there.
            while time.monotonic() < granted_idle + 2.4:
                assert cl.paths("/failover") == ["/failover/idle", "/failover/kept"]
                time.sleep(0.1)
            wait_for(lambda: cl.paths("/failover") == ["/failover/kept"], 5,
                     "the idle lease to expire on the new leader")
            # The renewed one lives on through the failover and afterwards.
            until = time.monotonic() + 2.5
            while time.monotonic() < until:
                assert cl.paths("/failover") == ["/failover/kept"]
                time.sleep(0.1)
            renew.stop()
            after = [(sent, ttl) for sent, _, ttl in renew.renewals if sent > killed]
            assert after and all(ttl == 2 for _, ttl in after), renew.renewals
            wait_for(lambda: cl.paths("/failover") == [], 6, "the kept lease to expire")
            assert time.monotonic() - renew.last_renewal_sent() >= 2.0
