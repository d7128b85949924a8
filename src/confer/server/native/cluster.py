"""confer.v1 ``Cluster``: status, members, membership changes, leadership transfer."""

from __future__ import annotations

from confer.kv import InvalidArgument
from confer.server.api import RequestContext, RequestLayer
from confer.server.members import Member
from confer.server.native.common import header_pb, member_to_pb, rpc
from confer.server.rpc import Adapter
from confer.v1 import kv_pb2, kv_pb2_grpc


class ClusterService(Adapter, kv_pb2_grpc.ClusterServicer):
    def __init__(self, layer: RequestLayer) -> None:
        super().__init__(layer)
        self.cluster = layer.cluster

    def _members(self, members: list[Member]) -> kv_pb2.MemberListResponse:
        return kv_pb2.MemberListResponse(header=header_pb(self.layer.header()),
                                         members=[member_to_pb(m) for m in members])

    @rpc
    async def Status(self, req: kv_pb2.StatusRequest, ctx: RequestContext
                     ) -> kv_pb2.StatusResponse:
        return self.status(ctx)

    def status(self, ctx: RequestContext) -> kv_pb2.StatusResponse:
        st = self.cluster.status(ctx)
        return kv_pb2.StatusResponse(
            header=header_pb(self.layer.header()), member_id=st.member_id,
            leader_id=st.leader_id, raft_term=st.raft_term, commit_index=st.commit_index,
            applied_index=st.applied_index, revision=st.revision,
            compact_revision=st.compact_revision, storage_bytes=st.storage_bytes,
            version=st.version, is_learner=st.is_learner, raft_index=st.raft_index,
            role=st.role)

    @rpc
    async def MemberList(self, req: kv_pb2.MemberListRequest, ctx: RequestContext
                         ) -> kv_pb2.MemberListResponse:
        return self._members(await self.cluster.members(ctx, req.serializable))

    @rpc
    async def MemberAdd(self, req: kv_pb2.MemberAddRequest, ctx: RequestContext
                        ) -> kv_pb2.MemberAddResponse:
        if not req.peer_addr:
            raise InvalidArgument("member add: peer_addr is required")
        added, members = await self.cluster.add_member(ctx, req.id, req.name, req.peer_addr,
                                                       req.client_addr, req.is_learner)
        return kv_pb2.MemberAddResponse(header=header_pb(self.layer.header()),
                                        member=member_to_pb(added),
                                        members=[member_to_pb(m) for m in members])

    @rpc
    async def MemberRemove(self, req: kv_pb2.MemberRemoveRequest, ctx: RequestContext
                           ) -> kv_pb2.MemberListResponse:
        return self._members(await self.cluster.remove_member(ctx, req.id))

    @rpc
    async def MemberPromote(self, req: kv_pb2.MemberPromoteRequest, ctx: RequestContext
                            ) -> kv_pb2.MemberListResponse:
        return self._members(await self.cluster.promote_member(ctx, req.id))

    @rpc
    async def TransferLeadership(self, req: kv_pb2.TransferLeadershipRequest,
                                 ctx: RequestContext) -> kv_pb2.StatusResponse:
        await self.cluster.transfer_leadership(ctx, req.target_id)
        return self.status(ctx)
