"""etcd's ``Lease`` service, on the same lessor and lease logic as the native one.

Grant and Revoke are log writes; TimeToLive and KeepAlive need the leader's clock, and reuse
:class:`confer.server.coord.LeaseService`'s leader-following (``at_leader``) and keep-alive
proxying (a follower renews through a native stream to the leader).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.kv import MAX_LEASE_TTL, LeaseGrant, LeaseRevoke, validate_command
from confer.server.app import ConferServer
from confer.server.coord import LeaseService, _Upstream
from confer.server.etcd.common import (
    ERR_LEASE_TTL_TOO_LARGE,
    etcd_error,
    etcd_rpc,
    etcd_stream,
    header,
)
from confer.server.services import Base, to_leader
from confer.v1 import coord_pb2


class EtcdLease(Base, rpc_pb2_grpc.LeaseServicer):
    """``etcdserverpb.Lease``."""

    def __init__(self, server: ConferServer) -> None:
        super().__init__(server)
        self.native = LeaseService(server)
        self.lessor = server.lessor

    @staticmethod
    def stub(ch: Any) -> rpc_pb2_grpc.LeaseStub:
        return rpc_pb2_grpc.LeaseStub(ch)

    @etcd_rpc
    async def LeaseGrant(self, req: rpc_pb2.LeaseGrantRequest, context: Any
                         ) -> rpc_pb2.LeaseGrantResponse:
        if req.TTL > MAX_LEASE_TTL:
            raise etcd_error(ERR_LEASE_TTL_TOO_LARGE)
        validate_command(LeaseGrant(req.TTL, req.ID))
        cmd = LeaseGrant(max(req.TTL, self.lessor.min_ttl), req.ID)  # etcd's minimum TTL rule
        result = await self.write(cmd, context)
        return rpc_pb2.LeaseGrantResponse(header=header(self.server, result.revision),
                                          ID=result.id, TTL=result.ttl)

    @etcd_rpc
    async def LeaseRevoke(self, req: rpc_pb2.LeaseRevokeRequest, context: Any
                          ) -> rpc_pb2.LeaseRevokeResponse:
        cmd = LeaseRevoke(req.ID)
        validate_command(cmd)
        result = await self.write(cmd, context)
        return rpc_pb2.LeaseRevokeResponse(header=header(self.server, result.revision))

    @etcd_rpc
    async def LeaseTimeToLive(self, req: rpc_pb2.LeaseTimeToLiveRequest, context: Any
                              ) -> rpc_pb2.LeaseTimeToLiveResponse:
        async def local(timeout: float) -> rpc_pb2.LeaseTimeToLiveResponse:
            got = await self.lessor.time_to_live(req.ID, timeout)
            resp = rpc_pb2.LeaseTimeToLiveResponse(header=header(self.server), ID=req.ID)
            if got is None:  # etcd answers a missing lease with TTL -1, not an error
                resp.TTL = -1
                return resp
            remaining, resp.grantedTTL = got
            resp.TTL = int(remaining)
            if req.keys:
                resp.keys.extend(self.kv.lease_keys(req.ID))
            return resp

        return await self.native.at_leader(context, local,
                                           to_leader(self.stub, "LeaseTimeToLive", req))

    @etcd_rpc
    async def LeaseLeases(self, req: rpc_pb2.LeaseLeasesRequest, context: Any
                          ) -> rpc_pb2.LeaseLeasesResponse:
        await self.read_barrier(False, context)
        return rpc_pb2.LeaseLeasesResponse(
            header=header(self.server),
            leases=[rpc_pb2.LeaseStatus(ID=info.id) for info in self.kv.leases()])

    @etcd_stream
    async def LeaseKeepAlive(self, requests: AsyncIterator[rpc_pb2.LeaseKeepAliveRequest],
                             context: Any) -> AsyncIterator[rpc_pb2.LeaseKeepAliveResponse]:
        """Each request renews one lease; a missing lease answers TTL 0 (etcd)."""
        upstream = _Upstream(self.server)
        try:
            async for req in requests:
                native = await self.native._keep_alive(
                    coord_pb2.LeaseKeepAliveRequest(id=req.ID), upstream, context)
                yield rpc_pb2.LeaseKeepAliveResponse(header=header(self.server), ID=req.ID,
                                                     TTL=native.ttl)
        finally:
            upstream.close()
