"""The original ``ConferService``, with its known flaws fixed (see docs/api.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from confer.kv import DeleteRange, EventType, InvalidArgument, Put, RangeOp
from confer.server.api import AccessKind, RequestContext, RequestLayer
from confer.server.api.cluster import ClusterEvent
from confer.server.api.kv import tree_accesses
from confer.server.members import Member
from confer.server.native.common import Code, RpcError, path_key, path_of, rpc, stream_rpc
from confer.server.rpc import Adapter
from confer.server.watch import Watcher
from confer.v1 import confer_pb2, confer_pb2_grpc


class LegacyService(Adapter, confer_pb2_grpc.ConferServiceServicer):
    def __init__(self, layer: RequestLayer) -> None:
        super().__init__(layer)
        self.max_key_bytes = layer.max_key_bytes
        # UnwatchConfig ends one watch: the caller's latest on that path. The caller is known
        # only by its connection (the original API has no watch id): (peer, path) -> watchers.
        self.watches: dict[tuple[str, bytes], list[Watcher]] = {}

    def _path(self, path: str, *, allow_root: bool = False) -> bytes:
        return path_key(path, self.max_key_bytes, allow_root=allow_root)

    @rpc
    async def Get(self, req: confer_pb2.ConfigPath, ctx: RequestContext
                  ) -> confer_pb2.ConfigValue:
        res = await self.layer.kv.range(ctx, RangeOp(self._path(req.path)))
        if not res.kvs:
            raise RpcError(Code.NOT_FOUND, f"{req.path} not found")
        return confer_pb2.ConfigValue(value=res.kvs[0].value)

    @rpc
    async def Set(self, req: confer_pb2.SetConfigRequest, ctx: RequestContext
                  ) -> confer_pb2.Empty:
        key = self._path(req.path.path)
        await self.layer.kv.put(ctx, Put(key, req.value.value))
        return confer_pb2.Empty()

    @rpc
    async def Remove(self, req: confer_pb2.ConfigPath, ctx: RequestContext
                     ) -> confer_pb2.Empty:
        await self.layer.kv.delete(ctx, DeleteRange(self._path(req.path)))
        return confer_pb2.Empty()

    @rpc
    async def List(self, req: confer_pb2.ConfigPath, ctx: RequestContext
                   ) -> confer_pb2.ConfigList:
        path = self._path(req.path or "/", allow_root=True)
        kvs, _, _, _ = await self.layer.kv.tree(ctx, path, recursive=True, keys_only=True)
        return confer_pb2.ConfigList(paths=[p for p in (path_of(kv.key) for kv in kvs)
                                            if p is not None])

    @stream_rpc
    async def WatchConfig(self, req: confer_pb2.ConfigPath, ctx: RequestContext
                          ) -> AsyncIterator[confer_pb2.ConfigUpdate]:
        path = self._path(req.path, allow_root=True)
        watches = self.layer.watches
        w = watches.watch_tree(ctx, path, True, 0)
        handle = (ctx.peer, path)
        self.watches.setdefault(handle, []).append(w)
        try:
            async for batch in watches.events(w):
                for e in batch:
                    changed = path_of(e.kv.key)
                    if changed is None:
                        continue  # not a native path (docs/api.md)
                    upd = confer_pb2.ConfigUpdate(path=changed, revision=e.kv.mod_revision)
                    if e.type == EventType.PUT:
                        upd.updated_value = e.kv.value
                    else:
                        upd.removed.SetInParent()
                    yield upd
        finally:
            watchers = self.watches.get(handle)
            if watchers is not None and w in watchers:
                watchers.remove(w)
                if not watchers:
                    del self.watches[handle]

    @rpc
    async def UnwatchConfig(self, req: confer_pb2.ConfigPath, ctx: RequestContext
                            ) -> confer_pb2.Empty:
        path = self._path(req.path, allow_root=True)
        for access in tree_accesses(AccessKind.READ, path):
            self.layer.core.check(ctx, access)
        watchers = self.watches.get((ctx.peer, path))
        if watchers:
            self.layer.watches.cancel(watchers.pop())
        return confer_pb2.Empty()

    @stream_rpc
    async def WatchCluster(self, req: confer_pb2.Empty, ctx: RequestContext
                           ) -> AsyncIterator[confer_pb2.ClusterUpdate]:
        async for event in self.layer.cluster.events(ctx):
            yield cluster_update(event)

    @rpc
    async def Init(self, req: confer_pb2.InitRequest, ctx: RequestContext) -> confer_pb2.Empty:
        if not req.nodes:
            raise InvalidArgument("Init needs at least one node")
        if any(n.node_id <= 0 or not n.addr for n in req.nodes):
            raise InvalidArgument("every Init node needs a positive node_id and an addr")
        founders = [Member(n.node_id, f"node-{n.node_id}", n.addr, n.addr) for n in req.nodes]
        await self.layer.cluster.initialize(ctx, founders, req.token)
        return confer_pb2.Empty()

    def membership_response(self) -> confer_pb2.ClientWriteResponse:
        resp = confer_pb2.ClientWriteResponse()
        configs = resp.membership.configs.add()
        for v in sorted(self.layer.cluster.voters()):
            configs.node_ids[v].SetInParent()
        for m in self.layer.cluster.member_list():
            resp.membership.nodes[m.id].CopyFrom(confer_pb2.Node(node_id=m.id,
                                                                 addr=m.client_addr))
        return resp

    @rpc
    async def AddLearner(self, req: confer_pb2.AddLearnerRequest, ctx: RequestContext
                         ) -> confer_pb2.ClientWriteResponse:
        n = req.node
        if n.node_id <= 0 or not n.addr:
            raise InvalidArgument("AddLearner needs a positive node_id and an addr")
        await self.layer.core.admin(ctx)  # even when the learner is already a member
        if all(m.id != n.node_id for m in self.layer.cluster.member_list()):
            await self.layer.cluster.add_member(ctx, n.node_id, "", n.addr, n.addr, True)
        return self.membership_response()

    @rpc
    async def ChangeMembership(self, req: confer_pb2.ChangeMembershipRequest,
                               ctx: RequestContext) -> confer_pb2.ClientWriteResponse:
        """Move the voter set to ``members`` one single-server step at a time."""
        if not req.members:
            raise InvalidArgument("ChangeMembership needs at least one member")
        await self.layer.cluster.set_voters(ctx, set(req.members), req.retain)
        return self.membership_response()


def cluster_update(event: ClusterEvent) -> confer_pb2.ClusterUpdate:
    kind, member = event.kind, event.member
    if kind == "leader":
        addr = member.client_addr if member else ""
        return confer_pb2.ClusterUpdate(leader_changed=confer_pb2.Node(node_id=event.leader,
                                                                        addr=addr))
    assert member is not None
    node = confer_pb2.Node(node_id=member.id, addr=member.client_addr)
    if kind == "added":
        return confer_pb2.ClusterUpdate(member_added=node)
    if kind == "learner_added":
        return confer_pb2.ClusterUpdate(learner_added=node)
    if kind == "promoted":
        return confer_pb2.ClusterUpdate(member_promoted=member.id)
    return confer_pb2.ClusterUpdate(member_removed=member.id)
