"""etcd's ``Cluster`` and ``Maintenance`` services, on the native membership logic.

Addresses: Confer names members by ``host:port``; etcd by URLs. A member's address is shown
as ``http://host:port``, and a URL given to MemberAdd/MemberUpdate is taken as its
``host:port`` (``http://`` or no scheme; one URL per member). See docs/etcd-compatibility.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import grpc

from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.kv import InvalidArgument
from confer.server.api import RequestContext, RequestLayer
from confer.server.etcd.common import (
    ERR_BAD_LEADER_TRANSFEREE,
    etcd_error,
    etcd_rpc,
    etcd_stream,
    header,
)
from confer.server.members import Member
from confer.server.rpc import Adapter

ETCD_VERSION = "3.5.0"
"""The etcd API version Confer reports (Status, Snapshot): what etcd's clients check."""
SNAPSHOT_MAGIC = b"CONFER-KV-SNAPSHOT\n"
SNAPSHOT_CHUNK = 64 * 1024


def url_of(addr: str) -> list[str]:
    return [f"http://{addr}"] if addr else []


def addr_of(urls: list[str] | Any) -> str:
    """The ``host:port`` of the one URL etcd's MemberAdd/MemberUpdate passes."""
    urls = list(urls)
    if len(urls) != 1:
        raise InvalidArgument(f"etcdserver: Confer members have exactly one peer URL, got "
                              f"{len(urls)}")
    url = urls[0] if "://" in urls[0] else f"http://{urls[0]}"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError when out of range
    except ValueError:
        port = None
    if port is None or parts.scheme != "http" or not parts.hostname or parts.path not in (
            "", "/") or parts.query or parts.fragment:
        raise InvalidArgument(f"etcdserver: peer URL {urls[0][:80]!r}: expected "
                              f"http://host:port")
    return parts.netloc


def member_to_etcd(m: Member) -> rpc_pb2.Member:
    return rpc_pb2.Member(ID=m.id, name=m.name, peerURLs=url_of(m.peer_addr),
                          clientURLs=url_of(m.client_addr), isLearner=m.is_learner)


class EtcdCluster(Adapter, rpc_pb2_grpc.ClusterServicer):
    """``etcdserverpb.Cluster``: the request layer's membership changes, etcd's messages."""

    def __init__(self, layer: RequestLayer) -> None:
        super().__init__(layer)
        self.cluster = layer.cluster

    def _members(self, members: list[Member]) -> list[rpc_pb2.Member]:
        return [member_to_etcd(m) for m in members]

    @etcd_rpc
    async def MemberList(self, req: rpc_pb2.MemberListRequest, ctx: RequestContext
                         ) -> rpc_pb2.MemberListResponse:
        members = await self.cluster.members(ctx, serializable=not req.linearizable)
        return rpc_pb2.MemberListResponse(header=header(self.layer),
                                          members=self._members(members))

    @etcd_rpc
    async def MemberAdd(self, req: rpc_pb2.MemberAddRequest, ctx: RequestContext
                        ) -> rpc_pb2.MemberAddResponse:
        peer = addr_of(req.peerURLs)
        added, members = await self.cluster.add_member(ctx, 0, "", peer, "", req.isLearner)
        return rpc_pb2.MemberAddResponse(header=header(self.layer),
                                         member=member_to_etcd(added),
                                         members=self._members(members))

    @etcd_rpc
    async def MemberRemove(self, req: rpc_pb2.MemberRemoveRequest, ctx: RequestContext
                           ) -> rpc_pb2.MemberRemoveResponse:
        members = await self.cluster.remove_member(ctx, req.ID)
        return rpc_pb2.MemberRemoveResponse(header=header(self.layer),
                                            members=self._members(members))

    @etcd_rpc
    async def MemberPromote(self, req: rpc_pb2.MemberPromoteRequest, ctx: RequestContext
                            ) -> rpc_pb2.MemberPromoteResponse:
        members = await self.cluster.promote_member(ctx, req.ID)
        return rpc_pb2.MemberPromoteResponse(header=header(self.layer),
                                             members=self._members(members))

    @etcd_rpc
    async def MemberUpdate(self, req: rpc_pb2.MemberUpdateRequest, ctx: RequestContext
                           ) -> rpc_pb2.MemberUpdateResponse:
        """A new peer address: the member is announced again with it (same id, same role)."""
        members = await self.cluster.update_member(ctx, req.ID, addr_of(req.peerURLs))
        return rpc_pb2.MemberUpdateResponse(header=header(self.layer),
                                            members=self._members(members))


def snapshot_blob(state: bytes) -> bytes:
    """Confer's store snapshot framed as etcd's clients expect a snapshot stream: a magic
    line, the state's length (8 bytes), the state, zeros up to a multiple of 512 bytes, then
    the SHA-256 of everything before (etcd appends that hash; its tools look for it)."""
    body = SNAPSHOT_MAGIC + len(state).to_bytes(8, "big") + state
    body += b"\0" * (-len(body) % 512)
    return body + hashlib.sha256(body).digest()


class EtcdMaintenance(Adapter, rpc_pb2_grpc.MaintenanceServicer):
    """``etcdserverpb.Maintenance``."""

    @etcd_rpc
    async def Status(self, req: rpc_pb2.StatusRequest, ctx: RequestContext
                     ) -> rpc_pb2.StatusResponse:
        st = self.layer.cluster.status(ctx)
        return rpc_pb2.StatusResponse(
            header=header(self.layer), version=ETCD_VERSION, dbSize=st.storage_bytes,
            dbSizeInUse=st.storage_bytes, leader=st.leader_id, raftIndex=st.commit_index,
            raftTerm=st.raft_term, raftAppliedIndex=st.applied_index,
            isLearner=st.is_learner, storageVersion=ETCD_VERSION[:3] + ".0")

    @etcd_rpc
    async def Alarm(self, req: rpc_pb2.AlarmRequest, ctx: RequestContext
                    ) -> rpc_pb2.AlarmResponse:
        """Confer raises no alarms (no space quota, no corruption check): always none."""
        return rpc_pb2.AlarmResponse(header=header(self.layer))

    @etcd_rpc
    async def Defragment(self, req: rpc_pb2.DefragmentRequest, ctx: RequestContext
                         ) -> rpc_pb2.DefragmentResponse:
        """A no-op: Confer's storage has no free pages to reclaim (docs/etcd-compatibility.md)."""
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
        """This member's store, in Confer's snapshot format (``etcdutl snapshot restore``
        cannot read it; see docs/etcd-compatibility.md)."""
        blob = snapshot_blob(await self.layer.kv.snapshot(ctx))
        for start in range(0, len(blob), SNAPSHOT_CHUNK):
            chunk = blob[start:start + SNAPSHOT_CHUNK]
            yield rpc_pb2.SnapshotResponse(header=header(self.layer), blob=chunk,
                                           remaining_bytes=len(blob) - start - len(chunk),
                                           version=ETCD_VERSION)

    @etcd_rpc
    async def MoveLeader(self, req: rpc_pb2.MoveLeaderRequest, ctx: RequestContext
                         ) -> rpc_pb2.MoveLeaderResponse:
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
