"""Leader election on a real 3-process cluster: campaign, proclaim, leader, observe, resign."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from confer.v1 import coord_pb2, coord_pb2_grpc
from testing import ProcessCluster

from .coord_helpers import Background, Client, follower_addr, rpc_error, wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    with ProcessCluster(3, tmp_path_factory.mktemp("election"), tick_ms=50) as c:
        c.leader()
        yield c


class Observer(threading.Thread):
    """Collect an Observe stream's (key, value) pairs in the background."""

    def __init__(self, addr: str, name: str) -> None:
        super().__init__(daemon=True)
        self.channel = grpc.insecure_channel(addr)
        self.call = coord_pb2_grpc.ElectionStub(self.channel).Observe(
            coord_pb2.LeaderRequest(name=name), timeout=60)
        self.seen: list[tuple[str, bytes]] = []
        self.start()

    def run(self) -> None:
        try:
            for resp in self.call:
                self.seen.append((resp.kv.path, resp.kv.value))
        except grpc.RpcError:
            pass

    def close(self) -> None:
        self.call.cancel()
        self.join(timeout=10)
        self.channel.close()


def campaign(addr: str, name: str, lease: int, value: bytes, timeout: float = 20
             ) -> coord_pb2.CampaignResponse:
    with Client(addr) as cl:
        return cl.election.Campaign(coord_pb2.CampaignRequest(name=name, lease=lease,
                                                              value=value), timeout=timeout)


def leader(cl: Client, name: str) -> tuple[str, bytes]:
    kv = cl.election.Leader(coord_pb2.LeaderRequest(name=name), timeout=10).kv
    return kv.path, kv.value


def test_two_campaigners_campaign_proclaim_observe_resign(cluster: ProcessCluster) -> None:
    name = "/election/scheduler"
    with Client(follower_addr(cluster)) as cl:
        err = rpc_error(lambda: cl.election.Leader(coord_pb2.LeaderRequest(name=name),
                                                   timeout=10))
        assert err.code() == grpc.StatusCode.NOT_FOUND
        observer = Observer(follower_addr(cluster), name)
        one, two = cl.grant(ttl=60), cl.grant(ttl=60)
        first = cl.election.Campaign(coord_pb2.CampaignRequest(name=name, lease=one,
                                                               value=b"alpha"), timeout=10)
        me = first.leader
        assert (me.name, me.key, me.lease) == (name, f"{name}/{one:x}", one)
        second = Background(lambda: campaign(cluster.endpoints[0], name, two, b"beta"))
        wait_for(lambda: len(cl.paths(name)) == 2, 10, "the second candidate to queue")
        assert leader(cl, name) == (me.key, b"alpha")
        cl.election.Proclaim(coord_pb2.ProclaimRequest(leader=me, value=b"alpha-2"),
                             timeout=10)
        assert leader(cl, name) == (me.key, b"alpha-2")
        stale = coord_pb2.LeaderKey(name=me.name, key=me.key, rev=me.rev + 1, lease=me.lease)
        err = rpc_error(lambda: cl.election.Proclaim(
            coord_pb2.ProclaimRequest(leader=stale, value=b"x"), timeout=10))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        time.sleep(0.3)
        assert not second.done()
        cl.election.Resign(coord_pb2.ResignRequest(leader=me), timeout=10)
        elected = second.value().leader
        assert elected.key == f"{name}/{two:x}" and elected.rev > me.rev
        assert leader(cl, name) == (elected.key, b"beta")
        # The resigned leader can no longer proclaim; resigning again changes nothing.
        err = rpc_error(lambda: cl.election.Proclaim(
            coord_pb2.ProclaimRequest(leader=me, value=b"late"), timeout=10))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        cl.election.Resign(coord_pb2.ResignRequest(leader=me), timeout=10)
        assert leader(cl, name) == (elected.key, b"beta")
        wait_for(lambda: len(observer.seen) >= 3, 10, "the observer to see three leaders")
        observer.close()
        assert observer.seen == [(me.key, b"alpha"), (me.key, b"alpha-2"),
                                 (elected.key, b"beta")]
        cl.election.Resign(coord_pb2.ResignRequest(leader=elected), timeout=10)
        err = rpc_error(lambda: cl.election.Leader(coord_pb2.LeaderRequest(name=name),
                                                   timeout=10))
        assert err.code() == grpc.StatusCode.NOT_FOUND
        cl.lease.Revoke(coord_pb2.LeaseRevokeRequest(id=one), timeout=10)
        cl.lease.Revoke(coord_pb2.LeaseRevokeRequest(id=two), timeout=10)


def test_a_leader_whose_lease_expires_loses_to_the_next_candidate(
        cluster: ProcessCluster) -> None:
    name = "/election/expiry"
    with Client(cluster.endpoints[1]) as cl:
        short, long_ = cl.grant(ttl=1), cl.grant(ttl=60)
        first = campaign(cluster.endpoints[1], name, short, b"short-lived").leader
        # Campaigning again with the same lease reuses the key and proclaims the new value.
        again = campaign(cluster.endpoints[2], name, short, b"renamed").leader
        assert (again.key, again.rev) == (first.key, first.rev)
        assert leader(cl, name) == (first.key, b"renamed")
        nxt = campaign(cluster.endpoints[0], name, long_, b"next", timeout=10).leader
        assert nxt.rev > first.rev
        assert leader(cl, name) == (nxt.key, b"next")
        # A candidate that gives up (deadline) withdraws its key.
        third = cl.grant(ttl=60)
        err = rpc_error(lambda: campaign(cluster.endpoints[2], name, third, b"x", timeout=1))
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        wait_for(lambda: cl.paths(name) == [nxt.key], 10, "the quitter's key to go")
        bad = coord_pb2.LeaderKey(name="/election/other", key=nxt.key, rev=nxt.rev,
                                  lease=nxt.lease)
        err = rpc_error(lambda: cl.election.Resign(coord_pb2.ResignRequest(leader=bad),
                                                   timeout=10))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        cl.election.Resign(coord_pb2.ResignRequest(leader=nxt), timeout=10)
        for lease in (long_, third):
            cl.lease.Revoke(coord_pb2.LeaseRevokeRequest(id=lease), timeout=10)
