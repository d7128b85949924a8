"""etcd's ``Maintenance`` service: status, alarms (the NOSPACE alarm of the space quota),
hashes, snapshots and leadership moves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.kv import AlarmAction, AlarmType
from confer.server.api import RequestContext
from confer.server.etcd.common import (
    ERR_BAD_LEADER_TRANSFEREE,
    etcd_error,
    etcd_rpc,
    etcd_stream,
    header,
)
from confer.server.etcd.kv import known
from confer.server.rpc import Adapter
from confer.server.snapshot_file import frame

ETCD_VERSION = "3.5.0"
"""The etcd API version Confer reports (Status, Snapshot): what etcd's clients check."""
SNAPSHOT_CHUNK = 64 * 1024


class EtcdMaintenance(Adapter, rpc_pb2_grpc.MaintenanceServicer):
    """``etcdserverpb.Maintenance``."""

    @etcd_rpc
    async def Status(self, req: rpc_pb2.StatusRequest, ctx: RequestContext
                     ) -> rpc_pb2.StatusResponse:
        st = self.layer.cluster.status(ctx)
        # etcd lists the active alarms as the status's errors (etcdctl's ERRORS column).
        errors = [f"memberID:{m} alarm:{AlarmType(a).name} "
                  for m, a in self.layer.core.kv.alarms()]
        return rpc_pb2.StatusResponse(errors=errors,
            header=header(self.layer), version=ETCD_VERSION, dbSize=st.storage_bytes,
            dbSizeInUse=st.storage_bytes, leader=st.leader_id, raftIndex=st.commit_index,
            raftTerm=st.raft_term, raftAppliedIndex=st.applied_index,
            isLearner=st.is_learner, storageVersion=ETCD_VERSION[:3] + ".0")

    @etcd_rpc
    async def Alarm(self, req: rpc_pb2.AlarmRequest, ctx: RequestContext
                    ) -> rpc_pb2.AlarmResponse:
        """GET lists the active alarms (of type ``alarm``; NONE: all); ACTIVATE and
        DEACTIVATE change one through the log and answer with what changed (etcd's
        ``etcdctl alarm disarm`` lists, then deactivates each). Confer raises only NOSPACE."""
        action = known(AlarmAction, req.action, "alarm action")
        kind = known(AlarmType, req.alarm, "alarm type")
        if action == AlarmAction.GET:
            alarms = [a for a in await self.layer.kv.alarms(ctx)
                      if kind == AlarmType.NONE or a[1] == kind]
        else:
            alarms = await self.layer.kv.alarm(ctx, action, req.memberID, kind)
        return rpc_pb2.AlarmResponse(header=header(self.layer), alarms=[
            rpc_pb2.AlarmMember(memberID=m, alarm=AlarmType(a).name) for m, a in alarms])

    @etcd_rpc
    async def Defragment(self, req: rpc_pb2.DefragmentRequest, ctx: RequestContext
                         ) -> rpc_pb2.DefragmentResponse:
        """A no-op: Confer's storage has no free pages to reclaim (docs/etcd-compatibility.md).
        Still root only with auth on, as in etcd."""
        await self.layer.core.admin(ctx)
        return rpc_pb2.DefragmentResponse(header=header(self.layer))

    @etcd_rpc
    async def Hash(self, req: rpc_pb2.HashRequest, ctx: RequestContext) -> rpc_pb2.HashResponse:
        value, _, revision = await self.layer.kv.hash(ctx)
        return rpc_pb2.HashResponse(header=header(self.layer, revision), hash=value)

    @etcd_rpc
    async def HashKV(self, req: rpc_pb2.HashKVRequest, ctx: RequestContext
                     ) -> rpc_pb2.HashKVResponse:
        """The hash of the keys as of ``revision`` (0: now)."""
        value, compact, revision = await self.layer.kv.hash(ctx, req.revision)
        return rpc_pb2.HashKVResponse(header=header(self.layer), hash=value,
                                      compact_revision=compact, hash_revision=revision)

    @etcd_stream
    async def Snapshot(self, req: rpc_pb2.SnapshotRequest, ctx: RequestContext
                       ) -> AsyncIterator[rpc_pb2.SnapshotResponse]:
        """This member's store at one revision, with its app's state if it runs one, in
        Confer's backup file format (``confer snapshot restore`` reads it, etcd's tools
        cannot: see docs/etcd-compatibility.md)."""
        blob = await asyncio.to_thread(frame, *await self.layer.kv.snapshot(ctx))
        for start in range(0, len(blob), SNAPSHOT_CHUNK):
            chunk = blob[start:start + SNAPSHOT_CHUNK]
            yield rpc_pb2.SnapshotResponse(header=header(self.layer), blob=chunk,
                                           remaining_bytes=len(blob) - start - len(chunk),
                                           version=ETCD_VERSION)

    @etcd_rpc
    async def MoveLeader(self, req: rpc_pb2.MoveLeaderRequest, ctx: RequestContext
                         ) -> rpc_pb2.MoveLeaderResponse:
        # Who asks before whom to: a caller that may not transfer learns nothing of the
        # membership (etcd's authMaintenanceServer checks first too).
        await self.layer.core.admin(ctx)
        target = next((m for m in self.layer.cluster.member_list() if m.id == req.targetID),
                      None)
        if target is None or target.is_learner:
            raise etcd_error(ERR_BAD_LEADER_TRANSFEREE)
        await self.layer.cluster.transfer_leadership(ctx, req.targetID)
        return rpc_pb2.MoveLeaderResponse(header=header(self.layer))

    @etcd_rpc
    async def Downgrade(self, req: rpc_pb2.DowngradeRequest, ctx: RequestContext
                        ) -> rpc_pb2.DowngradeResponse:
        raise etcd_error((grpc.StatusCode.UNIMPLEMENTED,
                          "etcdserver: downgrade is not supported by Confer"))
