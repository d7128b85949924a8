"""etcd's ``Lease`` service, on the request layer's leases (one lease logic for both APIs:
Grant and Revoke through the log; TimeToLive and renewals on the leader's clock)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.kv import MAX_LEASE_TTL
from confer.server.api import RequestContext, RequestLayer
from confer.server.etcd.common import (
    ERR_LEASE_TTL_TOO_LARGE,
    etcd_error,
    etcd_rpc,
    etcd_stream,
    header,
    header_pb,
)
from confer.server.rpc import Adapter


class EtcdLease(Adapter, rpc_pb2_grpc.LeaseServicer):
    """``etcdserverpb.Lease``."""

    def __init__(self, layer: RequestLayer) -> None:
        super().__init__(layer)
        self.leases = layer.leases

    @etcd_rpc
    async def LeaseGrant(self, req: rpc_pb2.LeaseGrantRequest, ctx: RequestContext
                         ) -> rpc_pb2.LeaseGrantResponse:
        if req.TTL > MAX_LEASE_TTL:
            raise etcd_error(ERR_LEASE_TTL_TOO_LARGE)
        result = await self.leases.grant(ctx, req.TTL, req.ID)
        return rpc_pb2.LeaseGrantResponse(header=header(self.layer, result.revision),
                                          ID=result.id, TTL=result.ttl)

    @etcd_rpc
    async def LeaseRevoke(self, req: rpc_pb2.LeaseRevokeRequest, ctx: RequestContext
                          ) -> rpc_pb2.LeaseRevokeResponse:
        result = await self.leases.revoke(ctx, req.ID)
        return rpc_pb2.LeaseRevokeResponse(header=header(self.layer, result.revision))

    @etcd_rpc
    async def LeaseTimeToLive(self, req: rpc_pb2.LeaseTimeToLiveRequest, ctx: RequestContext
                              ) -> rpc_pb2.LeaseTimeToLiveResponse:
        got = await self.leases.time_to_live(ctx, req.ID, req.keys)
        resp = rpc_pb2.LeaseTimeToLiveResponse(
            header=header(self.layer) if got is None else header_pb(got.header), ID=req.ID)
        if got is None:  # etcd answers a missing lease with TTL -1, not an error
            resp.TTL = -1
            return resp
        resp.TTL = int(got.remaining)
        resp.grantedTTL = got.granted_ttl
        resp.keys.extend(got.keys)
        return resp

    @etcd_rpc
    async def LeaseLeases(self, req: rpc_pb2.LeaseLeasesRequest, ctx: RequestContext
                          ) -> rpc_pb2.LeaseLeasesResponse:
        return rpc_pb2.LeaseLeasesResponse(
            header=header(self.layer),
            leases=[rpc_pb2.LeaseStatus(ID=info.id) for info in await self.leases.leases(ctx)])

    @etcd_stream
    async def LeaseKeepAlive(self, requests: AsyncIterator[rpc_pb2.LeaseKeepAliveRequest],
                             ctx: RequestContext
                             ) -> AsyncIterator[rpc_pb2.LeaseKeepAliveResponse]:
        """Each request renews one lease; a missing lease answers TTL 0 (etcd)."""
        session = self.leases.keep_alive(ctx, self.layer.leader_link.renewals())
        try:
            async for req in requests:
                ttl = await session.renew(req.ID)
                yield rpc_pb2.LeaseKeepAliveResponse(header=header(self.layer), ID=req.ID,
                                                     TTL=ttl)
        finally:
            session.close()
