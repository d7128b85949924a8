"""etcd's ``Cluster`` service, on the native membership logic (``Maintenance``:
:mod:`confer.server.etcd.maintenance`).

Addresses: Confer names members by ``host:port``; etcd by URLs. A member's address is shown
as ``http://host:port`` (``https://`` for a port that serves TLS: the cluster's ports are
configured alike), and a URL given to MemberAdd/MemberUpdate is taken as its ``host:port``
(``http://``, ``https://`` or no scheme; one URL per member). See docs/etcd-compatibility.md.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.kv import InvalidArgument
from confer.server.api import RequestContext, RequestLayer
from confer.server.etcd.common import etcd_rpc, header
from confer.server.members import Member
from confer.server.rpc import Adapter


def url_of(addr: str, tls: bool = False) -> list[str]:
    return [f"{'https' if tls else 'http'}://{addr}"] if addr else []


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
    if (port is None or parts.scheme not in ("http", "https") or not parts.hostname
            or parts.path not in ("", "/") or parts.query or parts.fragment):
        raise InvalidArgument(f"etcdserver: peer URL {urls[0][:80]!r}: expected "
                              f"http://host:port or https://host:port")
    return parts.netloc


def member_to_etcd(m: Member, peer_tls: bool = False, client_tls: bool = False
                   ) -> rpc_pb2.Member:
    return rpc_pb2.Member(ID=m.id, name=m.name, peerURLs=url_of(m.peer_addr, peer_tls),
                          clientURLs=url_of(m.client_addr, client_tls),
                          isLearner=m.is_learner)


class EtcdCluster(Adapter, rpc_pb2_grpc.ClusterServicer):
    """``etcdserverpb.Cluster``: the request layer's membership changes, etcd's messages."""

    def __init__(self, layer: RequestLayer) -> None:
        super().__init__(layer)
        self.cluster = layer.cluster
        cfg = layer.core.host.cfg
        self._tls = (cfg.peer_tls is not None, cfg.client_tls is not None)

    def _members(self, members: list[Member]) -> list[rpc_pb2.Member]:
        return [member_to_etcd(m, *self._tls) for m in members]

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
                                         member=member_to_etcd(added, *self._tls),
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
