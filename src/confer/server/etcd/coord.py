"""etcd's ``v3lockpb.Lock`` and ``v3electionpb.Election``, on the request layer's locks and
elections (:mod:`confer.server.api.coordination`). Only the key rules differ from the native
API: names and keys are any non-empty bytes, as in etcd."""

from __future__ import annotations

from collections.abc import AsyncIterator

from confer.etcdpb.v3electionpb import v3election_pb2, v3election_pb2_grpc
from confer.etcdpb.v3lockpb import v3lock_pb2, v3lock_pb2_grpc
from confer.kv import DeleteRange, InvalidArgument
from confer.server.api import RequestContext, RequestLayer
from confer.server.etcd.common import etcd_rpc, etcd_stream, header, kv_to_etcd, require_key
from confer.server.rpc import Adapter


class EtcdLock(Adapter, v3lock_pb2_grpc.LockServicer):
    """``v3lockpb.Lock``: the lock is held while the caller's lease lives."""

    @etcd_rpc
    async def Lock(self, req: v3lock_pb2.LockRequest, ctx: RequestContext
                   ) -> v3lock_pb2.LockResponse:
        cand = await self.layer.coordination.lock(ctx, require_key(req.name), req.lease)
        return v3lock_pb2.LockResponse(header=header(self.layer), key=cand.key)

    @etcd_rpc
    async def Unlock(self, req: v3lock_pb2.UnlockRequest, ctx: RequestContext
                     ) -> v3lock_pb2.UnlockResponse:
        result = await self.layer.kv.delete(ctx, DeleteRange(require_key(req.key)))
        return v3lock_pb2.UnlockResponse(header=header(self.layer, result.revision))


class EtcdElection(Adapter, v3election_pb2_grpc.ElectionServicer):
    """``v3electionpb.Election``: the candidate with the oldest key under the name leads."""

    def __init__(self, layer: RequestLayer) -> None:
        super().__init__(layer)
        self.elections = layer.coordination

    @staticmethod
    def leader_key(leader: v3election_pb2.LeaderKey) -> bytes:
        if not leader.key.startswith(require_key(leader.name) + b"/") or leader.rev <= 0:
            raise InvalidArgument(f"election {leader.name!r}: {leader.key!r} at revision "
                                  f"{leader.rev} is not a leader key of this election")
        return leader.key

    @etcd_rpc
    async def Campaign(self, req: v3election_pb2.CampaignRequest, ctx: RequestContext
                       ) -> v3election_pb2.CampaignResponse:
        cand = await self.elections.campaign(ctx, require_key(req.name), req.lease, req.value)
        return v3election_pb2.CampaignResponse(
            header=header(self.layer),
            leader=v3election_pb2.LeaderKey(name=req.name, key=cand.key, rev=cand.rev,
                                            lease=cand.lease))

    @etcd_rpc
    async def Proclaim(self, req: v3election_pb2.ProclaimRequest, ctx: RequestContext
                       ) -> v3election_pb2.ProclaimResponse:
        # etcd compares only the key's create revision, not its lease.
        result = await self.elections.proclaim(ctx, self.leader_key(req.leader),
                                               req.leader.rev, req.leader.lease, req.value,
                                               check_lease=False)
        return v3election_pb2.ProclaimResponse(header=header(self.layer, result.revision))

    @etcd_rpc
    async def Leader(self, req: v3election_pb2.LeaderRequest, ctx: RequestContext
                     ) -> v3election_pb2.LeaderResponse:
        kv = await self.elections.leader(ctx, require_key(req.name))
        return v3election_pb2.LeaderResponse(header=header(self.layer), kv=kv_to_etcd(kv))

    @etcd_stream
    async def Observe(self, req: v3election_pb2.LeaderRequest, ctx: RequestContext
                      ) -> AsyncIterator[v3election_pb2.LeaderResponse]:
        """Each new leader (or new value of the leader's key), from the current one on."""
        async for change in self.elections.observe(ctx, require_key(req.name)):
            yield v3election_pb2.LeaderResponse(header=header(self.layer, change.revision),
                                                kv=kv_to_etcd(change.kv))

    @etcd_rpc
    async def Resign(self, req: v3election_pb2.ResignRequest, ctx: RequestContext
                     ) -> v3election_pb2.ResignResponse:
        result = await self.elections.resign(ctx, self.leader_key(req.leader), req.leader.rev)
        return v3election_pb2.ResignResponse(header=header(self.layer, result.revision))
