"""confer.v1 ``Lease``, ``Lock`` and ``Election``, on the request layer (see
:mod:`confer.server.api.leases` and :mod:`confer.server.api.coordination`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from confer.kv import InvalidArgument, TxnResult, validate_path
from confer.server.api import RequestContext, RequestLayer
from confer.server.api.coordination import candidate_key
from confer.server.native.common import (
    header_pb,
    kv_to_pb,
    path_key,
    path_of,
    rpc,
    stream_rpc,
    text,
)
from confer.server.rpc import Adapter
from confer.v1 import coord_pb2, coord_pb2_grpc, kv_pb2


class LeaseService(Adapter, coord_pb2_grpc.LeaseServicer):
    def __init__(self, layer: RequestLayer) -> None:
        super().__init__(layer)
        self.leases = layer.leases

    def _header(self, revision: int = 0) -> kv_pb2.ResponseHeader:
        return header_pb(self.layer.header(revision))

    @rpc
    async def Grant(self, req: coord_pb2.LeaseGrantRequest, ctx: RequestContext
                    ) -> coord_pb2.LeaseGrantResponse:
        result = await self.leases.grant(ctx, req.ttl, req.id)
        return coord_pb2.LeaseGrantResponse(header=self._header(result.revision), id=result.id,
                                            ttl=result.ttl)

    @rpc
    async def Revoke(self, req: coord_pb2.LeaseRevokeRequest, ctx: RequestContext
                     ) -> coord_pb2.LeaseRevokeResponse:
        result = await self.leases.revoke(ctx, req.id)
        return coord_pb2.LeaseRevokeResponse(header=self._header(result.revision),
                                             deleted=len(result.deleted))

    @rpc
    async def TimeToLive(self, req: coord_pb2.LeaseTimeToLiveRequest, ctx: RequestContext
                         ) -> coord_pb2.LeaseTimeToLiveResponse:
        got = await self.leases.time_to_live(ctx, req.id, req.keys)
        header = self._header() if got is None else header_pb(got.header)
        resp = coord_pb2.LeaseTimeToLiveResponse(header=header, id=req.id)
        if got is None:
            resp.ttl = resp.remaining_ms = -1
            return resp
        resp.granted_ttl = got.granted_ttl
        resp.ttl = int(got.remaining)
        resp.remaining_ms = int(got.remaining * 1000)
        resp.keys.extend(p for p in map(path_of, got.keys) if p is not None)
        return resp

    @rpc
    async def Leases(self, req: coord_pb2.LeaseLeasesRequest, ctx: RequestContext
                     ) -> coord_pb2.LeaseLeasesResponse:
        return coord_pb2.LeaseLeasesResponse(
            header=self._header(),
            leases=[coord_pb2.LeaseStatus(id=info.id, granted_ttl=info.ttl)
                    for info in await self.leases.leases(ctx)])

    @stream_rpc
    async def KeepAlive(self, requests: AsyncIterator[coord_pb2.LeaseKeepAliveRequest],
                        ctx: RequestContext) -> AsyncIterator[coord_pb2.LeaseKeepAliveResponse]:
        session = self.leases.keep_alive(ctx, self.layer.leader_link.renewals())
        try:
            async for req in requests:
                ttl = await session.renew(req.id)
                yield coord_pb2.LeaseKeepAliveResponse(header=self._header(), id=req.id,
                                                       ttl=ttl)
        finally:
            session.close()


class LockService(Adapter, coord_pb2_grpc.LockServicer):
    @rpc
    async def Lock(self, req: coord_pb2.LockRequest, ctx: RequestContext
                   ) -> coord_pb2.LockResponse:
        name = path_key(req.name, self.layer.max_key_bytes)
        if req.lease <= 0:
            raise InvalidArgument(f"lock {req.name}: a lease is required (Lease.Grant)")
        validate_path(candidate_key(name, req.lease), self.layer.max_key_bytes)
        cand = await self.layer.coordination.lock(ctx, name, req.lease)
        return coord_pb2.LockResponse(header=header_pb(self.layer.header()), key=cand.path,
                                      fencing_token=cand.rev)

    @rpc
    async def Unlock(self, req: coord_pb2.UnlockRequest, ctx: RequestContext
                     ) -> coord_pb2.UnlockResponse:
        key = path_key(req.key, self.layer.max_key_bytes)
        result = await self.layer.coordination.unlock(ctx, key, req.lease)
        return coord_pb2.UnlockResponse(header=header_pb(self.layer.header(result.revision)))


class ElectionService(Adapter, coord_pb2_grpc.ElectionServicer):
    def __init__(self, layer: RequestLayer) -> None:
        super().__init__(layer)
        self.elections = layer.coordination

    def _header(self, revision: int = 0) -> kv_pb2.ResponseHeader:
        return header_pb(self.layer.header(revision))

    def _txn_header(self, result: TxnResult) -> kv_pb2.ResponseHeader:
        return self._header(result.revision)

    def leader_key(self, leader: coord_pb2.LeaderKey) -> bytes:
        """Check a LeaderKey: its name and key are paths, and the key is under the name."""
        name = path_key(leader.name, self.layer.max_key_bytes)
        key = path_key(leader.key, self.layer.max_key_bytes)
        if not key.startswith(name + b"/") or leader.rev <= 0:
            raise InvalidArgument(f"election {leader.name}: {leader.key!r} at revision "
                                  f"{leader.rev} is not a leader key of this election")
        return key

    @rpc
    async def Campaign(self, req: coord_pb2.CampaignRequest, ctx: RequestContext
                       ) -> coord_pb2.CampaignResponse:
        name = path_key(req.name, self.layer.max_key_bytes)
        if req.lease <= 0:
            raise InvalidArgument(f"election {req.name}: a lease is required (Lease.Grant)")
        validate_path(candidate_key(name, req.lease), self.layer.max_key_bytes)
        cand = await self.elections.campaign(ctx, name, req.lease, req.value)
        return coord_pb2.CampaignResponse(
            header=self._header(),
            leader=coord_pb2.LeaderKey(name=text(name), key=cand.path, rev=cand.rev,
                                       lease=cand.lease))

    @rpc
    async def Proclaim(self, req: coord_pb2.ProclaimRequest, ctx: RequestContext
                       ) -> coord_pb2.ProclaimResponse:
        result = await self.elections.proclaim(ctx, self.leader_key(req.leader),
                                               req.leader.rev, req.leader.lease, req.value)
        return coord_pb2.ProclaimResponse(header=self._txn_header(result))

    @rpc
    async def Leader(self, req: coord_pb2.LeaderRequest, ctx: RequestContext
                     ) -> coord_pb2.LeaderResponse:
        name = path_key(req.name, self.layer.max_key_bytes)
        kv = await self.elections.leader(ctx, name)
        return coord_pb2.LeaderResponse(header=self._header(), kv=kv_to_pb(kv))

    @stream_rpc
    async def Observe(self, req: coord_pb2.LeaderRequest, ctx: RequestContext
                      ) -> AsyncIterator[coord_pb2.LeaderResponse]:
        name = path_key(req.name, self.layer.max_key_bytes)
        async for change in self.elections.observe(ctx, name):
            yield coord_pb2.LeaderResponse(header=self._header(change.revision),
                                           kv=kv_to_pb(change.kv))

    @rpc
    async def Resign(self, req: coord_pb2.ResignRequest, ctx: RequestContext
                     ) -> coord_pb2.ResignResponse:
        result = await self.elections.resign(ctx, self.leader_key(req.leader), req.leader.rev)
        return coord_pb2.ResignResponse(header=self._txn_header(result))
