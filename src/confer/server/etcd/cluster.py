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

import crc32c
import grpc

from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.kv import InvalidArgument, KeyValue
from confer.raft.types import ConfChangeType
from confer.server.app import ConferServer
from confer.server.etcd.common import (
    ERR_BAD_LEADER_TRANSFEREE,
    ERR_LEARNER_NOT_READY,
    ERR_MEMBER_NOT_FOUND,
    ERR_MEMBER_NOT_LEARNER,
    ERR_PEER_URL_EXIST,
    etcd_error,
    etcd_rpc,
    etcd_stream,
    header,
)
from confer.server.members import Member
from confer.server.services import Base, ClusterService, to_leader
from confer.v1 import kv_pb2

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
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or not parts.port or parts.path not in (
            "", "/"):
        raise InvalidArgument(f"etcdserver: peer URL {urls[0]!r}: expected http://host:port")
    return parts.netloc


def member_to_etcd(m: Member) -> rpc_pb2.Member:
    return rpc_pb2.Member(ID=m.id, name=m.name, peerURLs=url_of(m.peer_addr),
                          clientURLs=url_of(m.client_addr), isLearner=m.is_learner)


class EtcdCluster(Base, rpc_pb2_grpc.ClusterServicer):
    """``etcdserverpb.Cluster``: the native ClusterService's changes, etcd's messages."""

    def __init__(self, server: ConferServer) -> None:
        super().__init__(server)
        self.native = ClusterService(server)

    def members(self) -> list[rpc_pb2.Member]:
        return [member_to_etcd(m) for m in sorted(self.server.fsm.membership.members.values(),
                                                  key=lambda m: m.id)]

    def existing(self, member_id: int) -> Member:
        member = self.server.fsm.membership.members.get(member_id)
        if member is None:
            raise etcd_error(ERR_MEMBER_NOT_FOUND, f"member {member_id:x}")
        return member

    def check_new_peer(self, peer: str, except_id: int = 0) -> None:
        for m in self.server.fsm.membership.members.values():
            if m.peer_addr == peer and m.id != except_id:
                raise etcd_error(ERR_PEER_URL_EXIST, f"{peer} is member {m.id:x}")

    @etcd_rpc
    async def MemberList(self, req: rpc_pb2.MemberListRequest, context: Any
                         ) -> rpc_pb2.MemberListResponse:
        await self.read_barrier(not req.linearizable, context)
        return rpc_pb2.MemberListResponse(header=header(self.server), members=self.members())

    @etcd_rpc
    async def MemberAdd(self, req: rpc_pb2.MemberAddRequest, context: Any
                        ) -> rpc_pb2.MemberAddResponse:
        peer = addr_of(req.peerURLs)
        self.check_new_peer(peer)
        resp = await self.native.add_member(kv_pb2.MemberAddRequest(
            peer_addr=peer, is_learner=req.isLearner), context)
        m = resp.member
        added = Member(m.id, m.name, m.peer_addr, m.client_addr, m.is_learner)
        return rpc_pb2.MemberAddResponse(header=header(self.server),
                                         member=member_to_etcd(added),
                                         members=self.members())

    @etcd_rpc
    async def MemberRemove(self, req: rpc_pb2.MemberRemoveRequest, context: Any
                           ) -> rpc_pb2.MemberRemoveResponse:
        self.existing(req.ID)
        await self.native.remove_member(kv_pb2.MemberRemoveRequest(id=req.ID), context)
        return rpc_pb2.MemberRemoveResponse(header=header(self.server), members=self.members())

    @etcd_rpc
    async def MemberPromote(self, req: rpc_pb2.MemberPromoteRequest, context: Any
                            ) -> rpc_pb2.MemberPromoteResponse:
        if not self.existing(req.ID).is_learner:
            raise etcd_error(ERR_MEMBER_NOT_LEARNER)
        try:
            await self.native.promote_member(kv_pb2.MemberPromoteRequest(id=req.ID), context)
        except grpc.aio.AioRpcError as e:  # forwarded: the leader's native refusal
            if e.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise etcd_error(ERR_LEARNER_NOT_READY, e.details() or "") from None
            raise
        except Exception as e:
            if getattr(e, "code", None) == grpc.StatusCode.FAILED_PRECONDITION:
                raise etcd_error(ERR_LEARNER_NOT_READY, str(e)) from None
            raise
        return rpc_pb2.MemberPromoteResponse(header=header(self.server),
                                             members=self.members())

    @etcd_rpc
    async def MemberUpdate(self, req: rpc_pb2.MemberUpdateRequest, context: Any
                           ) -> rpc_pb2.MemberUpdateResponse:
        """A new peer address: the member is announced again with it (same id, same role)."""
        old = self.existing(req.ID)
        peer = addr_of(req.peerURLs)
        self.check_new_peer(peer, except_id=req.ID)
        if peer != old.peer_addr:
            new = Member(old.id, old.name, peer, old.client_addr, old.is_learner)
            kind = ConfChangeType.ADD_LEARNER if old.is_learner else ConfChangeType.ADD_VOTER
            await self.native.change(kind, new, context,
                                     to_leader(rpc_pb2_grpc.ClusterStub, "MemberUpdate", req))
        return rpc_pb2.MemberUpdateResponse(header=header(self.server), members=self.members())


def kv_hash(kvs: list[KeyValue], compact_revision: int) -> int:
    """A CRC-32C of every key's version (key, revisions, version, value, lease) in key order,
    after the compact revision: equal on members that applied the same revisions."""
    h = crc32c.crc32c(compact_revision.to_bytes(8, "big"))
    for kv in kvs:
        for n in (len(kv.key), kv.create_revision, kv.mod_revision, kv.version, kv.lease,
                  len(kv.value)):
            h = crc32c.crc32c(n.to_bytes(8, "big", signed=True), h)
        h = crc32c.crc32c(kv.value, crc32c.crc32c(kv.key, h))
    return h


def snapshot_blob(state: bytes) -> bytes:
    """Confer's store snapshot framed as etcd's clients expect a snapshot stream: a magic
    line, the state's length (8 bytes), the state, zeros up to a multiple of 512 bytes, then
    the SHA-256 of everything before (etcd appends that hash; its tools look for it)."""
    body = SNAPSHOT_MAGIC + len(state).to_bytes(8, "big") + state
    body += b"\0" * (-len(body) % 512)
    return body + hashlib.sha256(body).digest()


class EtcdMaintenance(Base, rpc_pb2_grpc.MaintenanceServicer):
    """``etcdserverpb.Maintenance``."""

    def __init__(self, server: ConferServer) -> None:
        super().__init__(server)
        self.cluster = ClusterService(server)

    @etcd_rpc
    async def Status(self, req: rpc_pb2.StatusRequest, context: Any) -> rpc_pb2.StatusResponse:
        server = self.server
        node = server.node
        st = node.status() if node else None
        size = server.storage_bytes()
        return rpc_pb2.StatusResponse(
            header=header(server), version=ETCD_VERSION, dbSize=size, dbSizeInUse=size,
            leader=node.leader if node else 0, raftIndex=st.commit if st else 0,
            raftTerm=st.term if st else 0,
            raftAppliedIndex=node.applied_index if node else 0,
            isLearner=bool(st and server.node_id in st.conf_state.learners),
            storageVersion=ETCD_VERSION[:3] + ".0")

    @etcd_rpc
    async def Alarm(self, req: rpc_pb2.AlarmRequest, context: Any) -> rpc_pb2.AlarmResponse:
        """Confer raises no alarms (no space quota, no corruption check): always none."""
        return rpc_pb2.AlarmResponse(header=header(self.server))

    @etcd_rpc
    async def Defragment(self, req: rpc_pb2.DefragmentRequest, context: Any
                         ) -> rpc_pb2.DefragmentResponse:
        """A no-op: Confer's storage has no free pages to reclaim (docs/etcd-compatibility.md)."""
        return rpc_pb2.DefragmentResponse(header=header(self.server))

    @etcd_rpc
    async def Hash(self, req: rpc_pb2.HashRequest, context: Any) -> rpc_pb2.HashResponse:
        res = self.kv.range(b"\0", b"\0")
        return rpc_pb2.HashResponse(header=header(self.server, res.revision),
                                    hash=kv_hash(res.kvs, self.kv.compact_revision))

    @etcd_rpc
    async def HashKV(self, req: rpc_pb2.HashKVRequest, context: Any) -> rpc_pb2.HashKVResponse:
        """The hash of the keys as of ``revision`` (0: now)."""
        rev = req.revision or self.kv.revision
        res = self.kv.range(b"\0", b"\0", revision=rev)
        compact = self.kv.compact_revision
        return rpc_pb2.HashKVResponse(header=header(self.server), hash=kv_hash(res.kvs, compact),
                                      compact_revision=compact, hash_revision=rev)

    @etcd_stream
    async def Snapshot(self, req: rpc_pb2.SnapshotRequest, context: Any
                       ) -> AsyncIterator[rpc_pb2.SnapshotResponse]:
        """This member's store, in Confer's snapshot format (``etcdutl snapshot restore``
        cannot read it; see docs/etcd-compatibility.md)."""
        self.server.require_node()
        blob = snapshot_blob(self.kv.snapshot())
        for start in range(0, len(blob), SNAPSHOT_CHUNK):
            chunk = blob[start:start + SNAPSHOT_CHUNK]
            yield rpc_pb2.SnapshotResponse(header=header(self.server), blob=chunk,
                                           remaining_bytes=len(blob) - start - len(chunk),
                                           version=ETCD_VERSION)

    @etcd_rpc
    async def MoveLeader(self, req: rpc_pb2.MoveLeaderRequest, context: Any
                         ) -> rpc_pb2.MoveLeaderResponse:
        target = self.server.fsm.membership.members.get(req.targetID)
        if target is None or target.is_learner:
            raise etcd_error(ERR_BAD_LEADER_TRANSFEREE)
        await self.cluster.TransferLeadership.__wrapped__(  # type: ignore[attr-defined]
            self.cluster, kv_pb2.TransferLeadershipRequest(target_id=req.targetID), context)
        return rpc_pb2.MoveLeaderResponse(header=header(self.server))

    @etcd_rpc
    async def Downgrade(self, req: rpc_pb2.DowngradeRequest, context: Any
                        ) -> rpc_pb2.DowngradeResponse:
        raise etcd_error((grpc.StatusCode.UNIMPLEMENTED,
                          "etcdserver: downgrade is not supported by Confer"))
