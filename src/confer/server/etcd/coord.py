"""etcd's ``v3lockpb.Lock`` and ``v3electionpb.Election``, on the native Coordinator.

The queueing (create-or-reuse a key ``<name>/<lease hex>``, wait for the predecessor's
deletion, confirm with a ReadIndex round) is :class:`confer.server.coord.Coordinator`'s; only
the key rules (any bytes, as etcd) and the transactions (etcd Txns) differ.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from confer.etcdpb.etcdserverpb import rpc_pb2
from confer.etcdpb.v3electionpb import v3election_pb2, v3election_pb2_grpc
from confer.etcdpb.v3lockpb import v3lock_pb2, v3lock_pb2_grpc
from confer.kv import CompactedError, InvalidArgument, prefix_end
from confer.server.app import ConferServer
from confer.server.coord import Candidate, Coordinator, lease_hex
from confer.server.etcd.common import (
    Code,
    etcd_error,
    etcd_rpc,
    etcd_stream,
    header,
    kv_to_etcd,
    require_key,
)
from confer.server.etcd.kv import EtcdKV
from confer.server.services import timeout_of

ERR_NOT_LEADER = (Code.FAILED_PRECONDITION, "election: not leader")
ERR_NO_LEADER = (Code.NOT_FOUND, "election: no leader")
ERR_SESSION_EXPIRED = (Code.NOT_FOUND, "etcdserver: requested lease not found")


def _cmp_create(key: bytes, rev: int) -> rpc_pb2.Compare:
    return rpc_pb2.Compare(key=key, target=rpc_pb2.Compare.CREATE,
                           result=rpc_pb2.Compare.EQUAL, create_revision=rev)


class EtcdCoordinator(Coordinator):
    """A Coordinator whose names and keys are etcd byte keys and whose writes are etcd Txns."""

    def __init__(self, server: ConferServer) -> None:
        super().__init__(server)
        self.etcd_kv = EtcdKV(server)

    def candidate_key(self, name: bytes, lease: int) -> bytes:
        """``<name>/<lease hex>``, as etcd's concurrency package names a session's key."""
        return require_key(name) + b"/" + lease_hex(lease).encode()

    async def create_or_reuse(self, key: bytes, value: bytes, lease: int, timeout: float
                              ) -> Candidate:
        get = rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))
        resp = await self.etcd_kv.run_txn(rpc_pb2.TxnRequest(
            compare=[_cmp_create(key, 0)],
            success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
                key=key, value=value, lease=lease)), get],
            failure=[get]), timeout)
        kvs = resp.responses[-1].response_range.kvs
        if not kvs:
            raise etcd_error(ERR_SESSION_EXPIRED, f"{key!r}: the create-or-reuse txn read no key")
        return Candidate(key, kvs[0].create_revision, lease, resp.succeeded,
                         resp.header.revision, kvs[0].value)

    async def delete_if_created_at(self, key: bytes, rev: int, timeout: float
                                   ) -> rpc_pb2.TxnResponse:
        return await self.etcd_kv.run_txn(rpc_pb2.TxnRequest(
            compare=[_cmp_create(key, rev)],
            success=[rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(
                key=key))]), timeout)


class EtcdLock(v3lock_pb2_grpc.LockServicer):
    """``v3lockpb.Lock``: the lock is held while the caller's lease lives."""

    def __init__(self, server: ConferServer, coordinator: EtcdCoordinator) -> None:
        self.server = server
        self.coord = coordinator

    @etcd_rpc
    async def Lock(self, req: v3lock_pb2.LockRequest, context: Any) -> v3lock_pb2.LockResponse:
        key = self.coord.candidate_key(req.name, req.lease)
        cand = await self.coord.acquire("lock", req.name, key, b"", req.lease, context)
        return v3lock_pb2.LockResponse(header=header(self.server), key=cand.key)

    @etcd_rpc
    async def Unlock(self, req: v3lock_pb2.UnlockRequest, context: Any
                     ) -> v3lock_pb2.UnlockResponse:
        resp = await self.coord.etcd_kv.run_txn(rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(
            request_delete_range=rpc_pb2.DeleteRangeRequest(key=require_key(req.key)))]),
            timeout_of(context))
        return v3lock_pb2.UnlockResponse(header=resp.header)


class EtcdElection(v3election_pb2_grpc.ElectionServicer):
    """``v3electionpb.Election``: the candidate with the oldest key under the name leads."""

    def __init__(self, server: ConferServer, coordinator: EtcdCoordinator) -> None:
        self.server = server
        self.coord = coordinator

    def leader_key(self, leader: v3election_pb2.LeaderKey) -> bytes:
        if not leader.key.startswith(require_key(leader.name) + b"/") or leader.rev <= 0:
            raise InvalidArgument(f"election {leader.name!r}: {leader.key!r} at revision "
                                  f"{leader.rev} is not a leader key of this election")
        return leader.key

    async def proclaim(self, key: bytes, rev: int, lease: int, value: bytes, timeout: float
                       ) -> rpc_pb2.TxnResponse:
        resp = await self.coord.etcd_kv.run_txn(rpc_pb2.TxnRequest(
            compare=[_cmp_create(key, rev)],
            success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
                key=key, value=value, lease=lease))]), timeout)
        if not resp.succeeded:
            raise etcd_error(ERR_NOT_LEADER, f"{key!r} created at {rev} is gone")
        return resp

    @etcd_rpc
    async def Campaign(self, req: v3election_pb2.CampaignRequest, context: Any
                       ) -> v3election_pb2.CampaignResponse:
        key = self.coord.candidate_key(req.name, req.lease)

        async def on_reuse(cand: Candidate) -> None:  # campaigning again: new value (etcd)
            if cand.value != req.value:
                await self.proclaim(cand.key, cand.rev, cand.lease, req.value,
                                    timeout_of(context))

        cand = await self.coord.acquire("election", req.name, key, req.value, req.lease,
                                        context, on_reuse)
        return v3election_pb2.CampaignResponse(
            header=header(self.server),
            leader=v3election_pb2.LeaderKey(name=req.name, key=cand.key, rev=cand.rev,
                                            lease=cand.lease))

    @etcd_rpc
    async def Proclaim(self, req: v3election_pb2.ProclaimRequest, context: Any
                       ) -> v3election_pb2.ProclaimResponse:
        resp = await self.proclaim(self.leader_key(req.leader), req.leader.rev,
                                   req.leader.lease, req.value, timeout_of(context))
        return v3election_pb2.ProclaimResponse(header=resp.header)

    @etcd_rpc
    async def Leader(self, req: v3election_pb2.LeaderRequest, context: Any
                     ) -> v3election_pb2.LeaderResponse:
        await self.server.read_barrier(timeout_of(context))
        kv = self.coord.first(require_key(req.name))
        if kv is None:
            raise etcd_error(ERR_NO_LEADER)
        return v3election_pb2.LeaderResponse(header=header(self.server), kv=kv_to_etcd(kv))

    @etcd_stream
    async def Observe(self, req: v3election_pb2.LeaderRequest, context: Any
                      ) -> AsyncIterator[v3election_pb2.LeaderResponse]:
        """Each new leader (or new value of the leader's key), from the current one on."""
        name = require_key(req.name)
        await self.server.read_barrier(timeout_of(context))
        prefix = name + b"/"
        hub = self.server.hub
        watcher = hub.watcher(prefix, prefix_end(prefix), self.coord.kv.revision + 1)
        last: tuple[bytes, int] | None = None
        revision = 0
        async with contextlib.aclosing(hub.events(watcher)) as batches:
            while True:
                try:
                    current = self.coord.first(name, revision)
                except CompactedError:
                    current = self.coord.first(name)
                if current is not None and (current.key, current.mod_revision) != last:
                    last = (current.key, current.mod_revision)
                    yield v3election_pb2.LeaderResponse(header=header(self.server, revision),
                                                        kv=kv_to_etcd(current))
                revision = (await anext(batches))[-1].kv.mod_revision

    @etcd_rpc
    async def Resign(self, req: v3election_pb2.ResignRequest, context: Any
                     ) -> v3election_pb2.ResignResponse:
        resp = await self.coord.delete_if_created_at(self.leader_key(req.leader),
                                                     req.leader.rev, timeout_of(context))
        return v3election_pb2.ResignResponse(header=resp.header)
