"""etcd's API through gRPC stubs, for what etcdctl does not show: watch ids, cancel and
progress, Lock/Election services, Auth with auth disabled, errors and headers."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator

import grpc
import pytest

from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.etcdpb.v3electionpb import v3election_pb2, v3election_pb2_grpc
from confer.etcdpb.v3lockpb import v3lock_pb2, v3lock_pb2_grpc
from testing import ProcessCluster


@pytest.fixture(scope="module")
def channel(cluster: ProcessCluster) -> Iterator[grpc.Channel]:
    follower = next(i for i in cluster.nodes if i != cluster.leader())
    with grpc.insecure_channel(cluster.nodes[follower].client_addr) as ch:
        yield ch  # a follower: every write is forwarded to the leader


def code_of(call, *args, **kw) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        call(*args, timeout=10, **kw)
    return info.value.code(), info.value.details()


def test_errors_and_headers(channel: grpc.Channel) -> None:
    kv = rpc_pb2_grpc.KVStub(channel)
    put = kv.Put(rpc_pb2.PutRequest(key=b"\xff\x00raw", value=b"v"), timeout=10)
    assert put.header.revision > 0 and put.header.cluster_id and put.header.raft_term
    got = kv.Range(rpc_pb2.RangeRequest(key=b"\xff\x00raw"), timeout=10)
    assert got.kvs[0].value == b"v" and got.count == 1
    everything = kv.Range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0", count_only=True),
                          timeout=10)
    assert everything.count >= 1 and not everything.kvs
    assert code_of(kv.Put, rpc_pb2.PutRequest(key=b"")) == (
        grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided")
    dup = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"d"))
    assert code_of(kv.Txn, rpc_pb2.TxnRequest(success=[dup, dup])) == (
        grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request")
    assert code_of(kv.Range, rpc_pb2.RangeRequest(key=b"a", revision=1 << 40)) == (
        grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision")
    # Enum numbers the protocol does not define: refused, naming the field; nothing written.
    assert code_of(kv.Range, rpc_pb2.RangeRequest(key=b"a", sort_order=9)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: unknown sort order 9")
    assert code_of(kv.Range, rpc_pb2.RangeRequest(key=b"a", sort_target=9)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: unknown sort target 9")
    odd = [rpc_pb2.Compare(key=b"odd", target=7), rpc_pb2.Compare(key=b"odd", result=7)]
    for bad, field in zip(odd, ("compare target 7", "compare result 7"), strict=True):
        assert code_of(kv.Txn, rpc_pb2.TxnRequest(compare=[bad], success=[
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"odd"))])) == (
            grpc.StatusCode.INVALID_ARGUMENT, f"etcdserver: unknown {field}")
    assert not kv.Range(rpc_pb2.RangeRequest(key=b"odd"), timeout=10).kvs
    lease = rpc_pb2_grpc.LeaseStub(channel)
    assert code_of(lease.LeaseRevoke, rpc_pb2.LeaseRevokeRequest(ID=987654)) == (
        grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found")
    assert lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=987654),
                                 timeout=10).TTL == -1


def test_auth_disabled(channel: grpc.Channel) -> None:
    auth = rpc_pb2_grpc.AuthStub(channel)
    assert not auth.AuthStatus(rpc_pb2.AuthStatusRequest(), timeout=10).enabled
    assert code_of(auth.Authenticate, rpc_pb2.AuthenticateRequest(name="u", password="p")) == (
        grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: authentication is not enabled")
    assert not auth.UserList(rpc_pb2.AuthUserListRequest(), timeout=10).users


def test_watch_ids_cancel_progress_and_filters(channel: grpc.Channel) -> None:
    kv = rpc_pb2_grpc.KVStub(channel)
    requests: queue.Queue[rpc_pb2.WatchRequest | None] = queue.Queue()
    responses = rpc_pb2_grpc.WatchStub(channel).Watch(iter(requests.get, None), timeout=30)
    got: queue.Queue[rpc_pb2.WatchResponse] = queue.Queue()

    def read() -> None:
        with contextlib.suppress(grpc.RpcError):  # cancelled at the end
            for r in responses:
                got.put(r)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        requests.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=b"g/", range_end=b"g0", watch_id=7, prev_kv=True,
            filters=[rpc_pb2.WatchCreateRequest.NODELETE])))
        requests.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=b"g/a")))
        created = [got.get(timeout=10), got.get(timeout=10)]
        assert [(r.watch_id, r.created) for r in created] == [(7, True), (0, True)]
        requests.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=b"x", watch_id=7)))
        refused = got.get(timeout=10)
        assert refused.canceled and refused.watch_id == -1
        kv.Put(rpc_pb2.PutRequest(key=b"g/a", value=b"1"), timeout=10)
        kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"g/a"), timeout=10)
        seen: dict[int, list[int]] = {7: [], 0: []}
        while len(seen[7]) < 1 or len(seen[0]) < 2:
            r = got.get(timeout=10)
            seen[r.watch_id] += [e.type for e in r.events]
        assert seen == {7: [0], 0: [0, 1]}  # NODELETE filtered watch 7's delete
        requests.put(rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(
            watch_id=0)))
        assert got.get(timeout=10).canceled
        requests.put(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
        progress = got.get(timeout=10)
        assert progress.header.revision > 0 and not progress.events
    finally:
        requests.put(None)
        responses.cancel()


def test_lock_and_election_services(channel: grpc.Channel) -> None:
    lease = rpc_pb2_grpc.LeaseStub(channel).LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30),
                                                        timeout=10).ID
    locks = v3lock_pb2_grpc.LockStub(channel)
    held = locks.Lock(v3lock_pb2.LockRequest(name=b"svc-lock", lease=lease), timeout=10)
    assert held.key == b"svc-lock/" + f"{lease:x}".encode()
    locks.Unlock(v3lock_pb2.UnlockRequest(key=held.key), timeout=10)
    election = v3election_pb2_grpc.ElectionStub(channel)
    won = election.Campaign(v3election_pb2.CampaignRequest(name=b"svc-e", lease=lease,
                                                           value=b"one"), timeout=10)
    election.Proclaim(v3election_pb2.ProclaimRequest(leader=won.leader, value=b"two"),
                      timeout=10)
    leader = election.Leader(v3election_pb2.LeaderRequest(name=b"svc-e"), timeout=10)
    assert leader.kv.value == b"two"
    observed = election.Observe(v3election_pb2.LeaderRequest(name=b"svc-e"), timeout=10)
    assert next(observed).kv.value == b"two"
    observed.cancel()
    election.Resign(v3election_pb2.ResignRequest(leader=won.leader), timeout=10)
    assert code_of(election.Leader, v3election_pb2.LeaderRequest(name=b"svc-e"))[0] == (
        grpc.StatusCode.NOT_FOUND)
    rpc_pb2_grpc.LeaseStub(channel).LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lease),
                                                timeout=10)
