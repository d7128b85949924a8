"""The request layer (confer.server.api): one path, one set of guards, for both APIs; and the
codec that carries a leader's answer or error back to the member that forwarded to it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.kv import CompactedError, FutureRevisionError, LeaseNotFound, TooManyOps
from confer.raft.errors import ConfChangeInProgress, NotLeader
from confer.server.api import Access, AccessKind, RequestContext
from confer.server.api import errors as api
from confer.server.api.forwarding import (
    ERROR_TYPES,
    LeaderError,
    decode_answer,
    decode_error,
    encode_error,
    error_name,
)
from confer.server.app import ConferServer
from confer.server.config import ServerConfig
from confer.server.consensus import NoLeader
from confer.server.node import OutcomeUnknown
from confer.v1 import coord_pb2, coord_pb2_grpc, kv_pb2, kv_pb2_grpc

ERRORS: list[BaseException] = [
    api.MemberNotFound(7), api.PeerAddressInUse("127.0.0.1:2380", 3), api.LearnerNotReady(4),
    api.WaiterLost("lock", "/locks/a", "/locks/a/1f", 0x1F, True),
    api.NotElectionLeader("/e/1", 9, 1), api.PermissionDenied("no"),
    CompactedError(12), FutureRevisionError(30, 20), TooManyOps("too many"),
    LeaseNotFound("gone"), NotLeader(2), ConfChangeInProgress(1), NoLeader("none"),
    OutcomeUnknown("lost"), TimeoutError("slow"),
]


@pytest.mark.parametrize("exc", ERRORS, ids=lambda e: type(e).__name__)
def test_a_forwarded_error_comes_back_with_its_type_message_and_fields(
        exc: BaseException) -> None:
    with pytest.raises(type(exc)) as caught:
        decode_answer(encode_error(exc))
    back = caught.value
    assert type(back) is type(exc) and str(back) == str(exc)
    assert vars(back) == vars(exc)


def test_every_error_an_adapter_maps_can_cross_between_members() -> None:
    for cls in (api.MemberExists, api.LockHeldByOther, api.Unsupported, CompactedError,
                NotLeader, NoLeader, OutcomeUnknown):
        assert ERROR_TYPES[error_name(cls)] is cls


def test_an_unknown_error_from_the_leader_is_a_leader_error() -> None:
    err = decode_error("builtins.KeyError", "'x'", {})
    assert isinstance(err, LeaderError) and "KeyError" in str(err)


# -- guards, through both APIs of a real (in-process) single-node server ----------------------
async def _guarded(tmp_path: Path) -> None:
    cfg = ServerConfig(data_dir=tmp_path / "node", listen_client="127.0.0.1:0",
                       listen_peer="127.0.0.1:0", tick_ms=20)
    srv = ConferServer(cfg)
    await srv.start()
    seen: list[tuple[str, str, AccessKind, bytes]] = []

    def guard(ctx: RequestContext, access: Access) -> None:
        seen.append((ctx.api, ctx.method, access.kind, access.key))
        if access.kind == AccessKind.WRITE and access.key.startswith(b"/secret"):
            raise api.PermissionDenied(f"writing {access.key!r} is not allowed")

    try:
        deadline = asyncio.get_running_loop().time() + 10
        while not srv.consensus.is_leader():
            assert asyncio.get_running_loop().time() < deadline, "no leader in 10 s"
            await asyncio.sleep(0.02)
        srv.api.guards.append(guard)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.client_port}") as ch:
            native = kv_pb2_grpc.KVStub(ch)
            etcd = rpc_pb2_grpc.KVStub(ch)
            await native.Put(kv_pb2.PutRequest(path="/open/a", value=b"1"), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await native.Put(kv_pb2.PutRequest(path="/secret/a", value=b"1"), timeout=5)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "/secret/a" in (refused.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await etcd.Put(rpc_pb2.PutRequest(key=b"/secret/b", value=b"1"), timeout=5)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert refused.value.details() == "etcdserver: permission denied"
            # A txn is checked op by op: one refused write refuses the whole txn.
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await etcd.Txn(rpc_pb2.TxnRequest(success=[
                    rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"/open/b")),
                    rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"/secret/c"))]),
                    timeout=5)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            # Locks go through the same guards (their key is a write).
            lease = await coord_pb2_grpc.LeaseStub(ch).Grant(
                coord_pb2.LeaseGrantRequest(ttl=10), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await coord_pb2_grpc.LockStub(ch).Lock(
                    coord_pb2.LockRequest(name="/secret/lock", lease=lease.id), timeout=5)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            # Nothing refused changed anything.
            got = await etcd.Range(rpc_pb2.RangeRequest(key=b"/", range_end=b"0"), timeout=5)
            assert [kv.key for kv in got.kvs] == [b"/open/a"]
    finally:
        await srv.stop()
    assert ("confer", "Put", AccessKind.WRITE, b"/open/a") in seen
    assert ("etcd", "Put", AccessKind.WRITE, b"/secret/b") in seen
    assert ("etcd", "Range", AccessKind.READ, b"/") in seen
    assert ("confer", "Lock", AccessKind.WRITE, b"/secret/lock/" + f"{lease.id:x}".encode()
            ) in seen


def test_a_guard_sees_and_can_refuse_every_access_of_both_apis(tmp_path: Path) -> None:
    asyncio.run(_guarded(tmp_path))
