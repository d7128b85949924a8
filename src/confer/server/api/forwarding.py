"""How a follower's request layer reaches the leader's, for what only the leader can do.

Writes never come here: a follower forwards them through Raft. What does come here needs the
leader itself: membership changes and leadership transfer (only the leader proposes a
configuration change) and the lease clock (TimeToLive, renewals). A follower sends the
operation, in Confer's own terms, to the leader's request layer over one internal gRPC
service, ``confer.internal.Leader``; the leader's answer, or its error, comes back as the
same domain value or exception. So each API's adapter maps a leader's refusal with its own
error table, exactly as it maps a local one, whichever API the request came in through.

Messages are msgpack: a call is ``[op, args]``; an answer is ``[0, result]`` or
``[1, error type, message, error fields]``.

The service is on the peer port only, beside Raft, and admits the same callers Raft does:
each call names the calling member and its cluster in its metadata (:data:`MEMBER_KEY`,
:data:`CLUSTER_KEY`), and the leader refuses (PERMISSION_DENIED) a caller that its admission
check refuses (see ``ConferServer.admit_peer``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import msgpack

import confer.server.api.errors as api_errors
from confer.kv import errors as kv_errors
from confer.raft import errors as raft_errors
from confer.server.api.cluster import ClusterRequests, _pack
from confer.server.api.context import RequestContext
from confer.server.api.core import Core
from confer.server.api.leases import LeaseRequests
from confer.server.consensus import NoLeader
from confer.server.node import NodeStopped, OutcomeUnknown
from confer.server.peer_transport import dial

SERVICE = "confer.internal.Leader"
CALL = f"/{SERVICE}/Call"
RENEW = f"/{SERVICE}/Renew"
MEMBER_KEY = "confer-member-id"
CLUSTER_KEY = "confer-cluster-id"


class LeaderError(api_errors.RequestError):
    """The leader failed with an error this member does not know."""


def error_name(cls: type[BaseException]) -> str:
    """An error type's name across members: module and class (two modules have a
    CompactedError)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _error_types() -> dict[str, type[BaseException]]:
    types: list[type[BaseException]] = [NoLeader, OutcomeUnknown, NodeStopped, TimeoutError]
    for module, base in ((api_errors, api_errors.RequestError), (kv_errors, kv_errors.KVError),
                         (raft_errors, raft_errors.RaftError)):
        types.extend(value for value in vars(module).values()
                     if isinstance(value, type) and issubclass(value, base))
    return {error_name(cls): cls for cls in types}


ERROR_TYPES = _error_types()
"""The errors that cross between members with their type (any other is a LeaderError)."""


def pack(obj: object) -> bytes:
    data: bytes = msgpack.packb(obj)
    return data


def encode_error(exc: BaseException) -> bytes:
    fields = {k: v for k, v in vars(exc).items()
              if isinstance(v, str | int | bool | bytes | float | None)}
    return pack([1, error_name(type(exc)), str(exc), fields])


def decode_error(name: str, message: str, fields: dict[str, Any]) -> BaseException:
    """The leader's exception, rebuilt with its type, message and fields."""
    cls = ERROR_TYPES.get(name)
    if cls is None:
        return LeaderError(f"the leader failed: {name}: {message}")
    exc = cls.__new__(cls)
    BaseException.__init__(exc, message)
    exc.__dict__.update(fields)
    return exc


def decode_answer(data: bytes) -> Any:
    answer = msgpack.unpackb(data, strict_map_key=False)
    if answer[0]:
        raise decode_error(*answer[1:])
    return answer[1]


def transport_error(e: grpc.aio.AioRpcError) -> Exception:
    """What a failed internal call means: a refused connection proves the request never
    arrived (try again); a failure after it left leaves its outcome unknown."""
    details = e.details() or ""
    if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return TimeoutError("the leader did not answer in time")
    if e.code() == grpc.StatusCode.UNAVAILABLE and "failed to connect" in details:
        return NoLeader(f"the leader is unreachable ({details})")
    return OutcomeUnknown(f"the leader failed mid-request ({e.code().name}: {details})")


# -- the follower's side -------------------------------------------------------------------------
class LeaderLink:
    """Channels to the leader, and the calls a follower makes on them."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self._channels: dict[str, tuple[grpc.ChannelCredentials | None, grpc.aio.Channel]] = {}
        self._stale: list[grpc.aio.Channel] = []
        """Channels made with certificates since rotated: closed with the link (calls may
        still be running on them)."""

    def channel(self) -> grpc.aio.Channel:
        """A channel to the current leader's peer port (where this service is served; the
        same address Raft uses, so through ``--peer-routes`` if given)."""
        host = self.core.host
        leader = self.core.consensus.require_node().leader
        addr = host.peer_address(leader)
        if not addr:
            raise NoLeader(f"leader {leader} has no known address")
        creds = host.peer_channel_credentials()
        cached = self._channels.get(addr)
        if cached is not None and cached[0] is creds:
            return cached[1]
        if cached is not None:
            self._stale.append(cached[1])
        ch = dial(addr, creds)
        self._channels[addr] = (creds, ch)
        return ch

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Who calls: this member and its cluster (the leader admits members only)."""
        host = self.core.host
        return ((MEMBER_KEY, str(host.node_id)), (CLUSTER_KEY, str(host.cluster_id())))

    async def call(self, op: str, args: list[Any], deadline: float) -> Any:
        """Run ``op`` on the leader's request layer (:data:`LeaderCall`)."""
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self.channel().unary_unary(CALL)
        try:
            data = await call(pack([op, args]), metadata=self.metadata(),
                              timeout=max(0.0, deadline - time.monotonic()))
        except grpc.aio.AioRpcError as e:
            raise transport_error(e) from None
        return decode_answer(data)

    def renewals(self) -> UpstreamRenewals:
        return UpstreamRenewals(self)

    async def close(self) -> None:
        channels = [ch for _, ch in self._channels.values()] + self._stale
        self._channels.clear()
        self._stale.clear()
        for ch in channels:
            await ch.close()


class UpstreamRenewals:
    """A follower's renewal stream to the leader, on behalf of one client's keep-alive
    stream; reopened on the current leader whenever the leader changes."""

    def __init__(self, link: LeaderLink) -> None:
        self.link = link
        self.call: Any = None
        self.leader = 0

    async def renew(self, lease: int, deadline: float) -> int:
        leader = self.link.core.consensus.require_node().leader
        if self.call is None or leader != self.leader:
            self.close()
            self.call = self.link.channel().stream_stream(RENEW)(
                metadata=self.link.metadata())
            self.leader = leader
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await self.call.write(pack(lease))
                data = await self.call.read()
        except grpc.aio.AioRpcError as e:
            self.close()
            raise transport_error(e) from None
        if data is grpc.aio.EOF:
            self.close()
            raise NoLeader("the leader ended the keep-alive stream")
        ttl: int = decode_answer(data)
        return ttl

    def close(self) -> None:
        if self.call is not None:
            self.call.cancel()
            self.call = None


# -- the leader's side ---------------------------------------------------------------------------
def _members(members: list[Any]) -> list[list[Any]]:
    return [_pack(m) for m in members]


class LeaderService:
    """Serves ``confer.internal.Leader``: runs a forwarded operation on this member's
    request layer, which answers NoLeader if this member no longer leads."""

    def __init__(self, core: Core, cluster: ClusterRequests, leases: LeaseRequests) -> None:
        self.core = core
        cl, ls = cluster, leases

        async def member_add(ctx: RequestContext, *args: Any) -> Any:
            added, members = await cl.add_member(ctx, *args)
            return [_pack(added), _members(members)]

        async def lease_ttl(ctx: RequestContext, lease: int, keys: bool) -> Any:
            got = await ls.time_to_live(ctx, lease, keys)
            return None if got is None else [got.remaining, got.granted_ttl, got.keys,
                                             list(got.header)]

        def listing(fn: Callable[..., Awaitable[list[Any]]]) -> Callable[..., Awaitable[Any]]:
            async def run(ctx: RequestContext, *args: Any) -> Any:
                return _members(await fn(ctx, *args))
            return run

        self.ops: dict[str, Callable[..., Awaitable[Any]]] = {
            "member_add": member_add,
            "member_remove": listing(cl.remove_member),
            "member_promote": listing(cl.promote_member),
            "member_demote": listing(cl.demote_member),
            "member_update": listing(cl.update_member),
            "transfer_leadership": cl.transfer_leadership,
            "lease_ttl": lease_ttl,
        }
        self.leases = leases

    def method_handlers(self) -> dict[str, grpc.RpcMethodHandler[bytes, bytes]]:
        """The service's methods (:data:`SERVICE`), by name."""
        return {"Call": grpc.unary_unary_rpc_method_handler(self.call),
                "Renew": grpc.stream_stream_rpc_method_handler(self.renew)}

    @staticmethod
    def _context(context: grpc.aio.ServicerContext[Any, bytes], method: str) -> RequestContext:
        return RequestContext.with_timeout("internal", method, context.time_remaining(),
                                           forwarded=True, peer=context.peer())

    async def _admit(self, context: grpc.aio.ServicerContext[Any, bytes]) -> None:
        """Abort the call (PERMISSION_DENIED) unless a member of this cluster makes it."""
        meta = {k: v for k, v in (context.invocation_metadata() or ())}
        member, cluster = str(meta.get(MEMBER_KEY, "")), str(meta.get(CLUSTER_KEY, ""))
        refused = self.core.host.peer_identity_refusal(
            context.auth_context(), int(member) if member.isdigit() else None)
        if refused is not None:
            why: str | None = refused
        elif not (member.isdigit() and cluster.isdigit()):
            why = "the caller does not name its member id and cluster id"
        else:
            why = self.core.host.admit_peer(int(member), int(cluster), first_contact=False)
        if why is not None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, why)

    async def call(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await self._admit(context)
        try:
            op, args = msgpack.unpackb(request)
        except Exception:  # any undecodable call is just a bad call
            return encode_error(LeaderError("undecodable internal call"))
        fn = self.ops.get(op)
        if fn is None:
            return encode_error(LeaderError(f"unknown internal operation {op!r}"))
        try:
            return pack([0, await fn(self._context(context, op), *args)])
        except Exception as e:
            return encode_error(e)

    async def renew(self, requests: AsyncIterator[bytes],
                    context: grpc.aio.ServicerContext[bytes, bytes]) -> AsyncIterator[bytes]:
        await self._admit(context)
        ctx = self._context(context, "lease_keep_alive")
        session = self.leases.keep_alive(ctx, _NoUpstream())
        async for request in requests:
            try:
                yield pack([0, await session.renew(msgpack.unpackb(request))])
            except Exception as e:
                yield encode_error(e)


class _NoUpstream:
    """A forwarded renewal is never forwarded again."""

    leader = 0

    async def renew(self, lease: int, deadline: float) -> int:
        raise NoLeader("forwarded to a member that no longer leads")

    def close(self) -> None:
        pass
