"""gRPC services: the original ``ConferService``, the extended ``KV`` and ``Cluster`` APIs.

Reads are linearizable by default (ReadIndex through the local node), or serializable on
request. Writes are proposed through the local node: a follower forwards them to the leader
through Raft (batched with the other writes it receives) and answers once it has applied them
itself. Membership changes and lease clock queries are forwarded to the leader as gRPC calls.
Every user error becomes a gRPC status whose message names the rule.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar, TypeVar

import grpc

from confer import __version__
from confer.kv import (
    Compact,
    CompactedError,
    Compare,
    DeleteRange,
    ErrorResult,
    Event,
    EventType,
    FutureRevisionError,
    InvalidArgument,
    KeyNotFound,
    KeyValue,
    LeaseExists,
    LeaseNotFound,
    Put,
    RangeOp,
    Txn,
    encode_command,
    validate_txn,
)
from confer.kv import CompareResult as KvCompareResult
from confer.kv import CompareTarget as KvCompareTarget
from confer.kv.paths import subtree_range, validate_path, validate_value
from confer.raft.errors import (
    ConfChangeInProgress,
    LeadershipTransferInProgress,
    NotLeader,
    ProposalDropped,
)
from confer.raft.types import ConfChangeType, StateRole
from confer.server.app import FORWARDED, ConferServer, NoLeader, member_change
from confer.server.members import Member
from confer.server.node import NodeStopped, OutcomeUnknown
from confer.server.watch import WatchClosed, Watcher
from confer.v1 import confer_pb2, confer_pb2_grpc, kv_pb2, kv_pb2_grpc

log = logging.getLogger("confer.api")

DEFAULT_TIMEOUT = 10.0
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Code = grpc.StatusCode


class RpcError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _status_for(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    if isinstance(exc, RpcError):
        return exc.code, str(exc)
    if isinstance(exc, InvalidArgument):
        return Code.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, CompactedError):
        return Code.OUT_OF_RANGE, (f"{exc}; the oldest revision still available is "
                                   f"{exc.compact_revision + 1}")
    if isinstance(exc, (KeyNotFound, LeaseNotFound)):
        return Code.NOT_FOUND, str(exc)
    if isinstance(exc, LeaseExists):
        return Code.ALREADY_EXISTS, str(exc)
    if isinstance(exc, FutureRevisionError):
        return Code.OUT_OF_RANGE, str(exc)
    if isinstance(exc, ConfChangeInProgress):
        return Code.FAILED_PRECONDITION, str(exc)
    if isinstance(exc, LeadershipTransferInProgress):
        return Code.UNAVAILABLE, str(exc)  # temporary, and the write was not applied
    if isinstance(exc, (NoLeader, NotLeader, ProposalDropped, NodeStopped, WatchClosed)):
        return Code.UNAVAILABLE, str(exc)
    if isinstance(exc, OutcomeUnknown):
        return Code.UNKNOWN, f"outcome unknown: {exc}"
    if isinstance(exc, TimeoutError):
        return Code.DEADLINE_EXCEEDED, (
            "request timed out; if it was a write, it may or may not have been applied")
    return None


ORIGIN = "x-confer-origin"
"""Trailing metadata on statuses a Confer server chose, as opposed to transport failures."""


def forwarded_status(e: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    """The status to return for a request whose forwarding to the leader failed.

    A transport failure after the request left (the leader died mid-call) leaves the outcome
    unknown; only a refused connection proves the request never arrived.
    """
    details = e.details() or ""
    from_server = any(k == ORIGIN for k, _ in (e.trailing_metadata() or ()))
    if e.code() == Code.UNAVAILABLE and not from_server and "failed to connect" not in details:
        return Code.UNKNOWN, f"outcome unknown: the leader failed mid-request ({details})"
    return e.code(), details


async def abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> None:
    context.set_trailing_metadata(((ORIGIN, "server"),))
    await context.abort(code, message)


AbortWith = Callable[[grpc.aio.ServicerContext, Exception, str], Awaitable[None]]
"""Ends an RPC with the status an exception maps to (never returns)."""


def error_mapping(abort_with: AbortWith) -> tuple[
        Callable[[Callable[..., Awaitable[Resp]]], Callable[..., Awaitable[Resp]]],
        Callable[[Callable[..., AsyncIterator[Resp]]], Callable[..., AsyncIterator[Resp]]]]:
    """Decorators for unary and streaming handlers that turn exceptions into statuses with
    ``abort_with`` (the native and the etcd API differ only in that mapping)."""

    def unary(fn: Callable[..., Awaitable[Resp]]) -> Callable[..., Awaitable[Resp]]:
        @functools.wraps(fn)
        async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Resp:
            try:
                return await fn(self, request, context)
            except Exception as e:
                await abort_with(context, e, fn.__name__)
            raise AssertionError("unreachable")

        return wrapper

    def stream(fn: Callable[..., AsyncIterator[Resp]]) -> Callable[..., AsyncIterator[Resp]]:
        @functools.wraps(fn)
        async def wrapper(self: Any, request: Any,
                          context: grpc.aio.ServicerContext) -> AsyncIterator[Resp]:
            try:
                async for item in fn(self, request, context):
                    yield item
            except Exception as e:
                await abort_with(context, e, fn.__name__)

        return wrapper

    return unary, stream


async def _abort_native(context: grpc.aio.ServicerContext, exc: Exception, name: str) -> None:
    if isinstance(exc, grpc.aio.AioRpcError):  # a forwarded call failed: pass its status on
        await context.abort(*forwarded_status(exc))
    status = _status_for(exc)
    if status is None:
        log.exception("%s failed", name)
        status = (Code.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
    await abort(context, *status)


rpc, stream_rpc = error_mapping(_abort_native)
"""Decorators for the native API's handlers: exceptions become gRPC statuses."""


Forward = Callable[[grpc.aio.Channel, float], Awaitable[Any]]
"""Re-issues a request on the leader's channel, within a timeout."""


FORWARD_METADATA = ((FORWARDED, "1"),)
"""Marks a request a follower forwarded to the leader: it must not bounce again."""


def to_leader(stub: Callable[[grpc.aio.Channel], Any], method: str, req: Any) -> Forward:
    """Forward ``req`` to the leader as ``stub.method``, marked so it never bounces again."""
    return lambda ch, t: getattr(stub(ch), method)(req, timeout=t, metadata=FORWARD_METADATA)


def timeout_of(context: grpc.aio.ServicerContext) -> float:
    remaining = context.time_remaining()
    return DEFAULT_TIMEOUT if remaining is None else max(0.0, min(remaining, 60.0))


def forwarded(context: grpc.aio.ServicerContext) -> bool:
    return any(k == FORWARDED for k, _ in (context.invocation_metadata() or ()))


# -- conversions ------------------------------------------------------------------------------
def kv_to_pb(kv: KeyValue | None, keys_only: bool = False) -> kv_pb2.KeyValue | None:
    if kv is None:
        return None
    return kv_pb2.KeyValue(path=kv.key.decode("utf-8", "surrogateescape"),
                           create_revision=kv.create_revision, mod_revision=kv.mod_revision,
                           version=kv.version, value=b"" if keys_only else kv.value,
                           lease=kv.lease)


def event_to_pb(e: Event, prev_kv: bool) -> kv_pb2.Event:
    out = kv_pb2.Event(type=kv_pb2.Event.PUT if e.type == EventType.PUT else kv_pb2.Event.DELETE,
                       kv=kv_to_pb(e.kv))
    if prev_kv and e.prev_kv is not None:
        out.prev_kv.CopyFrom(kv_to_pb(e.prev_kv))
    return out


def path_key(path: str, limits: tuple[int, int], *, allow_root: bool = False) -> bytes:
    """Validate a path; the root ``/`` is accepted only where a subtree is meant."""
    if allow_root and path == "/":
        return b"/"
    return validate_path(path, limits[0], allow_root=False)


def boundary_match(path: bytes) -> Callable[[bytes], bool]:
    """Does a key lie at ``path`` or below it (``/app`` does not cover ``/application``)?"""
    if path == b"/":
        return lambda k: k.startswith(b"/")
    under = path + b"/"
    return lambda k: k == path or k.startswith(under)


def subtree(path: bytes) -> tuple[bytes, bytes]:
    """The key range strictly below ``path``."""
    return (b"/", b"0") if path == b"/" else subtree_range(path)


class Base:
    def __init__(self, server: ConferServer) -> None:
        self.server = server
        self.kv = server.fsm.kv
        cfg = server.cfg
        self.limits = (cfg.max_key_bytes, cfg.max_value_bytes)

    async def read_barrier(self, serializable: bool, context: grpc.aio.ServicerContext) -> None:
        if serializable:
            self.server.require_node()
        else:
            await self.server.read_barrier(timeout_of(context))

    async def write(self, command: Any, context: grpc.aio.ServicerContext) -> Any:
        """Replicate a write command; returns the state machine's result (an error result is
        raised). On a follower the command is forwarded to the leader through Raft, and the
        result is the one this node computes when it applies the entry."""
        return await self.submit(command, timeout_of(context))

    async def submit(self, command: Any, timeout: float) -> Any:
        """:meth:`write` without a request context: ``timeout`` in seconds."""
        deadline = time.monotonic() + timeout
        data = encode_command(command)
        server = self.server
        while True:
            try:
                result = await server.propose(data, max(0.0, deadline - time.monotonic()),
                                              forward=True)
            except NotLeader:
                # No leader known (an election is under way): wait for one, then again.
                await asyncio.sleep(server.cfg.tick_ms / 1000)
                await server.wait_for_leader(max(0.0, deadline - time.monotonic()))
                continue
            if isinstance(result, ErrorResult):
                raise result.to_exception()
            return result

    def range(self, path: bytes, recursive: bool, revision: int, limit: int, start_after: bytes,
              keys_only: bool, count_only: bool) -> tuple[list[KeyValue], int, bool, int]:
        """The key itself, then (recursive) its subtree; ``start_after`` paginates."""
        ranges: list[tuple[bytes, bytes]] = []
        if path != b"/":
            ranges.append((path, b""))
        if recursive:
            ranges.append(subtree(path))
        kvs: list[KeyValue] = []
        count = 0
        more = False
        rev = self.kv.revision
        for key, end in ranges:
            if start_after:
                if not end:
                    if key <= start_after:
                        continue
                elif key <= start_after:
                    key = start_after + b"\0"
                    if key >= end:
                        continue
            remaining = 0 if not limit else max(limit - len(kvs), 0)
            res = self.kv.range(key, end, revision=revision, limit=remaining or (1 if limit else 0),
                                keys_only=keys_only, count_only=count_only)
            rev = res.revision
            count += res.count
            if limit and len(kvs) >= limit:
                more = more or res.count > 0
                continue
            kvs.extend(res.kvs)
            more = more or res.more
        return kvs, count, more, rev


class KVService(Base, kv_pb2_grpc.KVServicer):
    @rpc
    async def Range(self, req: kv_pb2.RangeRequest, context: Any) -> kv_pb2.RangeResponse:
        path = path_key(req.path, self.limits, allow_root=req.recursive)
        if req.limit < 0 or req.revision < 0:
            raise InvalidArgument("limit and revision must be >= 0")
        await self.read_barrier(req.serializable, context)
        kvs, count, more, _ = self.range(path, req.recursive, req.revision, req.limit,
                                         req.start_after.encode(), req.keys_only,
                                         req.count_only)
        return kv_pb2.RangeResponse(header=self.server.header(),
                                    kvs=[kv_to_pb(kv, req.keys_only) for kv in kvs],
                                    more=more, count=count)

    @rpc
    async def Children(self, req: kv_pb2.ChildrenRequest, context: Any
                       ) -> kv_pb2.ChildrenResponse:
        path = path_key(req.path, self.limits, allow_root=True)
        if req.limit < 0 or req.revision < 0:
            raise InvalidArgument("limit and revision must be >= 0")
        if req.revision:
            raise InvalidArgument("children: reading children at a past revision is not "
                                  "supported; use Range with recursive and revision")
        await self.read_barrier(req.serializable, context)
        names, more = self.kv.children(path, start_after=req.start_after.encode(),
                                       limit=req.limit)
        return kv_pb2.ChildrenResponse(
            header=self.server.header(),
            names=[n.decode("utf-8", "surrogateescape") for n in names], more=more)

    def put_command(self, req: kv_pb2.PutRequest) -> Put:
        key = path_key(req.path, self.limits)
        validate_value(req.value, self.limits[1])
        return Put(key, req.value, lease=req.lease, prev_kv=req.prev_kv)

    def delete_command(self, req: kv_pb2.DeleteRequest) -> DeleteRange | Txn:
        key = path_key(req.path, self.limits, allow_root=req.recursive)
        if not req.recursive:
            return DeleteRange(key, prev_kv=req.prev_kv)
        start, end = subtree(key)
        ops: list[Any] = [DeleteRange(start, end, prev_kv=req.prev_kv)]
        if key != b"/":
            ops.insert(0, DeleteRange(key, prev_kv=req.prev_kv))
        return Txn([], ops, [])

    @rpc
    async def Put(self, req: kv_pb2.PutRequest, context: Any) -> kv_pb2.PutResponse:
        return self.put_response(await self.write(self.put_command(req), context))

    def put_response(self, result: Any) -> kv_pb2.PutResponse:
        resp = kv_pb2.PutResponse(header=self.server.header())
        resp.header.revision = result.revision
        if result.prev_kv is not None:
            resp.prev_kv.CopyFrom(kv_to_pb(result.prev_kv))
        return resp

    @rpc
    async def Delete(self, req: kv_pb2.DeleteRequest, context: Any) -> kv_pb2.DeleteResponse:
        return self.delete_response(await self.write(self.delete_command(req), context))

    def delete_response(self, result: Any) -> kv_pb2.DeleteResponse:
        if hasattr(result, "succeeded"):  # a recursive delete is a txn of two deletes
            deleted = sum(r.deleted for r in result.responses)
            prev = [kv for r in result.responses for kv in r.prev_kvs]
        else:
            deleted, prev = result.deleted, list(result.prev_kvs)
        resp = kv_pb2.DeleteResponse(header=self.server.header(), deleted=deleted,
                                     prev_kvs=[kv_to_pb(kv) for kv in prev])
        resp.header.revision = result.revision
        return resp

    # -- transactions -----------------------------------------------------------------------
    _TARGETS: ClassVar[dict[int, tuple[KvCompareTarget, str]]] = {
        kv_pb2.Compare.VERSION: (KvCompareTarget.VERSION, "version"),
        kv_pb2.Compare.CREATE: (KvCompareTarget.CREATE, "create_revision"),
        kv_pb2.Compare.MOD: (KvCompareTarget.MOD, "mod_revision"),
        kv_pb2.Compare.VALUE: (KvCompareTarget.VALUE, "value"),
        kv_pb2.Compare.LEASE: (KvCompareTarget.LEASE, "lease"),
    }
    _RESULTS: ClassVar[dict[int, KvCompareResult]] = {
        kv_pb2.Compare.EQUAL: KvCompareResult.EQUAL,
        kv_pb2.Compare.NOT_EQUAL: KvCompareResult.NOT_EQUAL,
        kv_pb2.Compare.GREATER: KvCompareResult.GREATER,
        kv_pb2.Compare.LESS: KvCompareResult.LESS,
    }

    def compare(self, c: kv_pb2.Compare) -> Compare:
        key = path_key(c.path, self.limits)
        if c.result not in self._RESULTS:
            raise InvalidArgument(f"compare on {c.path}: unknown result {c.result}")
        if c.target == kv_pb2.Compare.EXISTS:
            # exists == true  <=>  version > 0
            want = c.exists if c.WhichOneof("target_union") == "exists" else True
            if c.result not in (kv_pb2.Compare.EQUAL, kv_pb2.Compare.NOT_EQUAL):
                raise InvalidArgument(f"compare on {c.path}: EXISTS takes EQUAL or NOT_EQUAL")
            if c.result == kv_pb2.Compare.NOT_EQUAL:
                want = not want
            result = KvCompareResult.GREATER if want else KvCompareResult.EQUAL
            return Compare(key, target=KvCompareTarget.VERSION, result=result, value=0)
        if c.target not in self._TARGETS:
            raise InvalidArgument(f"compare on {c.path}: unknown target {c.target}")
        target, field = self._TARGETS[c.target]
        return Compare(key, target=target, result=self._RESULTS[c.result],
                       value=getattr(c, field))

    def op(self, op: kv_pb2.RequestOp) -> Any:
        kind = op.WhichOneof("request")
        if kind == "put":
            return self.put_command(op.put)
        if kind == "delete":
            return self.delete_command(op.delete)
        if kind == "range":
            r = op.range
            key = path_key(r.path, self.limits, allow_root=r.recursive)
            if r.recursive:
                raise InvalidArgument("recursive ranges are not supported inside a txn; "
                                      "read the subtree before or after")
            return RangeOp(key, b"", revision=r.revision, limit=r.limit,
                           keys_only=r.keys_only, count_only=r.count_only)
        if kind == "txn":
            return self.txn_command(op.txn)
        raise InvalidArgument("a txn operation must set one of range, put, delete, txn")

    def txn_command(self, req: kv_pb2.TxnRequest) -> Txn:
        txn = Txn([self.compare(c) for c in req.compare], [self.op(o) for o in req.success],
                  [self.op(o) for o in req.failure])
        validate_txn(txn)
        return txn

    def txn_response(self, result: Any, req: kv_pb2.TxnRequest | None = None
                     ) -> kv_pb2.TxnResponse:
        """``req``, when given, lets a recursive delete (a txn of two deletes inside) answer
        as one delete, as the unary Delete does."""
        resp = kv_pb2.TxnResponse(header=self.server.header(), succeeded=result.succeeded)
        resp.header.revision = result.revision
        ops = list((req.success if result.succeeded else req.failure) if req is not None
                   else [])
        for i, r in enumerate(result.responses):
            op = ops[i] if i < len(ops) else None
            resp.responses.append(self.op_response(r, op))
        return resp

    def op_response(self, r: Any, op: kv_pb2.RequestOp | None = None) -> kv_pb2.ResponseOp:
        name = type(r).__name__
        kind = op.WhichOneof("request") if op is not None else None
        if name == "TxnResult" and kind == "delete":
            return kv_pb2.ResponseOp(delete=self.delete_response(r))
        if name == "TxnResult" and kind == "txn":
            return kv_pb2.ResponseOp(txn=self.txn_response(r, op.txn))  # type: ignore[union-attr]
        if name == "RangeResult":
            return kv_pb2.ResponseOp(range=kv_pb2.RangeResponse(
                header=self.server.header(), kvs=[kv_to_pb(kv) for kv in r.kvs], more=r.more,
                count=r.count))
        if name == "PutResult":
            return kv_pb2.ResponseOp(put=self.put_response(r))
        if name == "DeleteResult":
            return kv_pb2.ResponseOp(delete=self.delete_response(r))
        if name == "TxnResult":
            return kv_pb2.ResponseOp(txn=self.txn_response(r))
        raise TypeError(f"unexpected txn response {name}")

    @rpc
    async def Txn(self, req: kv_pb2.TxnRequest, context: Any) -> kv_pb2.TxnResponse:
        return self.txn_response(await self.write(self.txn_command(req), context), req)

    @rpc
    async def Compact(self, req: kv_pb2.CompactRequest, context: Any
                      ) -> kv_pb2.CompactResponse:
        if req.revision <= 0:
            raise InvalidArgument("compact revision must be positive")
        await self.write(Compact(req.revision), context)
        return kv_pb2.CompactResponse(header=self.server.header())

    # -- watch --------------------------------------------------------------------------------
    @stream_rpc
    async def Watch(self, req: kv_pb2.WatchRequest, context: Any
                    ) -> AsyncIterator[kv_pb2.WatchResponse]:
        path = path_key(req.path, self.limits, allow_root=req.recursive)
        if req.start_revision < 0 or req.progress_interval < 0:
            raise InvalidArgument("start_revision and progress_interval must be >= 0")
        self.server.require_node()
        w = watcher_for(self.server, path, req.recursive, req.start_revision)
        yield kv_pb2.WatchResponse(header=self.server.header(), created=True)
        interval = req.progress_interval or None
        try:
            async for batch in timed(self.server.hub.events(w), interval):
                if batch is None:
                    yield kv_pb2.WatchResponse(header=self.server.header(), progress=True)
                    continue
                events = [event_to_pb(e, req.prev_kv) for e in batch
                          if not (req.no_put and e.type == EventType.PUT)
                          and not (req.no_delete and e.type == EventType.DELETE)]
                if events:
                    resp = kv_pb2.WatchResponse(header=self.server.header(), events=events)
                    resp.header.revision = batch[-1].kv.mod_revision
                    yield resp
        except CompactedError as e:
            yield kv_pb2.WatchResponse(
                header=self.server.header(), canceled=True, compact_revision=e.compact_revision,
                cancel_reason=f"{e}; the oldest revision still available is "
                              f"{e.compact_revision + 1}")


def watcher_for(server: ConferServer, path: bytes, recursive: bool, start: int) -> Watcher:
    """A watcher on one key, or (recursive) on the key and its subtree."""
    if recursive:
        key, end = (b"/", b"0") if path == b"/" else (path, subtree(path)[1])
        return server.hub.watcher(key, end, start, boundary_match(path))
    return server.hub.watcher(path, b"", start)


async def timed(it: AsyncIterator[list[Event]], interval: float | None
                ) -> AsyncIterator[list[Event] | None]:
    """Yield from ``it``; when idle for ``interval`` seconds, yield None (a progress tick)."""
    if interval is None:
        async for item in it:
            yield item
        return
    nxt = asyncio.ensure_future(anext(it))
    try:
        while True:
            done, _ = await asyncio.wait({nxt}, timeout=interval)
            if not done:
                yield None
                continue
            try:
                item = nxt.result()
            except StopAsyncIteration:
                return
            yield item
            nxt = asyncio.ensure_future(anext(it))
    finally:
        nxt.cancel()


# -- cluster ----------------------------------------------------------------------------------
def member_to_pb(m: Member) -> kv_pb2.Member:
    return kv_pb2.Member(id=m.id, name=m.name, peer_addr=m.peer_addr, client_addr=m.client_addr,
                         is_learner=m.is_learner)


class ClusterService(Base, kv_pb2_grpc.ClusterServicer):
    def members(self) -> list[kv_pb2.Member]:
        return [member_to_pb(m) for m in sorted(self.server.fsm.membership.members.values(),
                                                key=lambda m: m.id)]

    @rpc
    async def Status(self, req: kv_pb2.StatusRequest, context: Any) -> kv_pb2.StatusResponse:
        server = self.server
        node = server.node
        st = node.status() if node else None
        return kv_pb2.StatusResponse(
            header=server.header(), member_id=server.node_id,
            leader_id=node.leader if node else 0, raft_term=st.term if st else 0,
            commit_index=st.commit if st else 0, applied_index=node.applied_index if node else 0,
            revision=self.kv.revision, compact_revision=self.kv.compact_revision,
            storage_bytes=server.storage_bytes(),
            version=__version__, is_learner=bool(st and server.node_id in st.conf_state.learners),
            raft_index=st.last_index if st else 0,
            role=st.role.name.lower() if st else "uninitialised")

    @rpc
    async def MemberList(self, req: kv_pb2.MemberListRequest, context: Any
                         ) -> kv_pb2.MemberListResponse:
        await self.read_barrier(req.serializable, context)
        return kv_pb2.MemberListResponse(header=self.server.header(), members=self.members())

    async def change(self, kind: ConfChangeType, member: Member, context: Any,
                     forward: Forward) -> Any:
        server = self.server
        timeout = timeout_of(context)
        cc = member_change(kind, member, server.fsm.membership.cluster_id)
        try:
            return await server.change_membership(cc, timeout)
        except NotLeader:
            if forwarded(context):
                raise NoLeader("forwarded to a node that is no longer the leader") from None
            await server.wait_for_leader(timeout)
            if server.is_leader():
                return await server.change_membership(cc, timeout)
            return await forward(server.leader_channel(), timeout)

    @rpc
    async def MemberAdd(self, req: kv_pb2.MemberAddRequest, context: Any
                        ) -> kv_pb2.MemberAddResponse:
        return await self.add_member(req, context)

    async def add_member(self, req: kv_pb2.MemberAddRequest, context: Any
                         ) -> kv_pb2.MemberAddResponse:
        members = self.server.fsm.membership.members
        if not req.peer_addr:
            raise InvalidArgument("member add: peer_addr is required")
        for m in members.values():
            if m.peer_addr == req.peer_addr:
                raise RpcError(Code.ALREADY_EXISTS,
                               f"peer address {req.peer_addr} is already member {m.id}")
        if req.id and req.id in members:
            raise RpcError(Code.ALREADY_EXISTS, f"member {req.id} already exists")
        new_id = req.id or max(members, default=0) + 1
        member = Member(new_id, req.name or f"node-{new_id}", req.peer_addr,
                        req.client_addr or req.peer_addr, req.is_learner)
        kind = ConfChangeType.ADD_LEARNER if req.is_learner else ConfChangeType.ADD_VOTER
        result = await self.change(kind, member, context,
                                   to_leader(kv_pb2_grpc.ClusterStub, "MemberAdd", req))
        if isinstance(result, kv_pb2.MemberAddResponse):
            return result
        return kv_pb2.MemberAddResponse(header=self.server.header(),
                                        member=member_to_pb(member), members=self.members())

    def existing(self, node_id: int) -> Member:
        member = self.server.fsm.membership.members.get(node_id)
        if member is None:
            raise RpcError(Code.NOT_FOUND, f"member {node_id} not found")
        return member

    @rpc
    async def MemberRemove(self, req: kv_pb2.MemberRemoveRequest, context: Any
                           ) -> kv_pb2.MemberListResponse:
        return await self.remove_member(req, context)

    async def remove_member(self, req: kv_pb2.MemberRemoveRequest, context: Any
                            ) -> kv_pb2.MemberListResponse:
        member = self.existing(req.id)
        result = await self.change(ConfChangeType.REMOVE, member, context,
                                   to_leader(kv_pb2_grpc.ClusterStub, "MemberRemove", req))
        if isinstance(result, kv_pb2.MemberListResponse):
            return result
        return kv_pb2.MemberListResponse(header=self.server.header(), members=self.members())

    @rpc
    async def MemberPromote(self, req: kv_pb2.MemberPromoteRequest, context: Any
                            ) -> kv_pb2.MemberListResponse:
        return await self.promote_member(req, context)

    async def promote_member(self, req: kv_pb2.MemberPromoteRequest, context: Any
                             ) -> kv_pb2.MemberListResponse:
        member = self.existing(req.id)
        if not member.is_learner:
            raise RpcError(Code.FAILED_PRECONDITION, f"member {req.id} is not a learner")
        if self.server.is_leader() and not self.server.learner_caught_up(req.id):
            raise RpcError(Code.FAILED_PRECONDITION,
                           f"learner {req.id} is not yet in sync with the leader")
        result = await self.change(ConfChangeType.ADD_VOTER, member, context,
                                   to_leader(kv_pb2_grpc.ClusterStub, "MemberPromote", req))
        if isinstance(result, kv_pb2.MemberListResponse):
            return result
        return kv_pb2.MemberListResponse(header=self.server.header(), members=self.members())

    @rpc
    async def TransferLeadership(self, req: kv_pb2.TransferLeadershipRequest, context: Any
                                 ) -> kv_pb2.StatusResponse:
        server = self.server
        member = self.existing(req.target_id)
        if member.is_learner:
            raise RpcError(Code.FAILED_PRECONDITION, f"member {req.target_id} is a learner")
        timeout = timeout_of(context)
        await server.wait_for_leader(timeout)
        if not server.is_leader():
            if forwarded(context):
                raise NoLeader("forwarded to a node that is no longer the leader")
            return await kv_pb2_grpc.ClusterStub(server.leader_channel()).TransferLeadership(
                req, timeout=timeout, metadata=FORWARD_METADATA)
        node = server.require_node()
        if req.target_id != server.node_id:
            node.transfer_leadership(req.target_id)
            deadline = time.monotonic() + timeout
            while node.leader != req.target_id:
                if time.monotonic() >= deadline:
                    raise TimeoutError("leadership transfer did not complete in time")
                await asyncio.sleep(server.cfg.tick_ms / 1000)
        return await self.Status(kv_pb2.StatusRequest(), context)


# -- the original service ----------------------------------------------------------------------
class LegacyService(Base, confer_pb2_grpc.ConferServiceServicer):
    """The original ``ConferService``, with its known flaws fixed (see docs/api.md)."""

    def __init__(self, server: ConferServer) -> None:
        super().__init__(server)
        self.kv_service = KVService(server)
        # UnwatchConfig ends one watch: the caller's latest on that path. The caller is known
        # only by its connection (the original API has no watch id): (peer, path) -> watchers.
        self.watches: dict[tuple[str, bytes], list[Watcher]] = {}

    @rpc
    async def Get(self, req: confer_pb2.ConfigPath, context: Any) -> confer_pb2.ConfigValue:
        key = path_key(req.path, self.limits)
        await self.read_barrier(False, context)
        res = self.kv.range(key, b"")
        if not res.kvs:
            raise RpcError(Code.NOT_FOUND, f"{req.path} not found")
        return confer_pb2.ConfigValue(value=res.kvs[0].value)

    @rpc
    async def Set(self, req: confer_pb2.SetConfigRequest, context: Any) -> confer_pb2.Empty:
        put = kv_pb2.PutRequest(path=req.path.path, value=req.value.value)
        await self.kv_service.write(self.kv_service.put_command(put), context)
        return confer_pb2.Empty()

    @rpc
    async def Remove(self, req: confer_pb2.ConfigPath, context: Any) -> confer_pb2.Empty:
        key = path_key(req.path, self.limits)
        await self.kv_service.write(DeleteRange(key), context)
        return confer_pb2.Empty()

    @rpc
    async def List(self, req: confer_pb2.ConfigPath, context: Any) -> confer_pb2.ConfigList:
        path = path_key(req.path or "/", self.limits, allow_root=True)
        await self.read_barrier(False, context)
        kvs, _, _, _ = self.range(path, True, 0, 0, b"", True, False)
        return confer_pb2.ConfigList(paths=[kv.key.decode("utf-8", "surrogateescape")
                                            for kv in kvs])

    @stream_rpc
    async def WatchConfig(self, req: confer_pb2.ConfigPath, context: Any
                          ) -> AsyncIterator[confer_pb2.ConfigUpdate]:
        path = path_key(req.path, self.limits, allow_root=True)
        self.server.require_node()
        w = watcher_for(self.server, path, True, 0)
        handle = (context.peer(), path)
        self.watches.setdefault(handle, []).append(w)
        try:
            async for batch in self.server.hub.events(w):
                for e in batch:
                    upd = confer_pb2.ConfigUpdate(
                        path=e.kv.key.decode("utf-8", "surrogateescape"),
                        revision=e.kv.mod_revision)
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
    async def UnwatchConfig(self, req: confer_pb2.ConfigPath, context: Any) -> confer_pb2.Empty:
        path = path_key(req.path, self.limits, allow_root=True)
        watchers = self.watches.get((context.peer(), path))
        if watchers:
            self.server.hub.cancel(watchers.pop())
        return confer_pb2.Empty()

    @stream_rpc
    async def WatchCluster(self, req: confer_pb2.Empty, context: Any
                           ) -> AsyncIterator[confer_pb2.ClusterUpdate]:
        server = self.server
        node = server.require_node()
        queue: asyncio.Queue[confer_pb2.ClusterUpdate] = asyncio.Queue()

        def listener(kind: str, member: Member | None, leader: int) -> None:
            queue.put_nowait(cluster_update(kind, member, leader))

        server.cluster_listeners.append(listener)
        try:
            for m in sorted(server.fsm.membership.members.values(), key=lambda m: m.id):
                yield cluster_update("learner_added" if m.is_learner else "added", m, 0)
            if node.leader:
                yield cluster_update("leader", server.fsm.membership.members.get(node.leader),
                                     node.leader)
            while not server.stopped.is_set():
                yield await queue.get()
        finally:
            server.cluster_listeners.remove(listener)

    @rpc
    async def Init(self, req: confer_pb2.InitRequest, context: Any) -> confer_pb2.Empty:
        if not req.nodes:
            raise InvalidArgument("Init needs at least one node")
        founders = [Member(n.node_id, f"node-{n.node_id}", n.addr, n.addr) for n in req.nodes]
        if any(n.node_id <= 0 or not n.addr for n in req.nodes):
            raise InvalidArgument("every Init node needs a positive node_id and an addr")
        try:
            await self.server.initialize(founders)
        except FileExistsError as e:
            raise RpcError(Code.FAILED_PRECONDITION, str(e)) from None
        except ValueError as e:
            raise InvalidArgument(str(e)) from None
        return confer_pb2.Empty()

    async def membership_response(self) -> confer_pb2.ClientWriteResponse:
        node = self.server.require_node()
        conf = node.status().conf_state
        resp = confer_pb2.ClientWriteResponse()
        configs = resp.membership.configs.add()
        for v in sorted(conf.voters):
            configs.node_ids[v].SetInParent()
        for m in self.server.fsm.membership.members.values():
            resp.membership.nodes[m.id].CopyFrom(confer_pb2.Node(node_id=m.id,
                                                                 addr=m.client_addr))
        return resp

    @rpc
    async def AddLearner(self, req: confer_pb2.AddLearnerRequest, context: Any
                         ) -> confer_pb2.ClientWriteResponse:
        n = req.node
        if n.node_id <= 0 or not n.addr:
            raise InvalidArgument("AddLearner needs a positive node_id and an addr")
        cluster = ClusterService(self.server)
        if n.node_id not in self.server.fsm.membership.members:
            add = kv_pb2.MemberAddRequest(id=n.node_id, peer_addr=n.addr, client_addr=n.addr,
                                          is_learner=True)
            await cluster.add_member(add, context)
        return await self.membership_response()

    @rpc
    async def ChangeMembership(self, req: confer_pb2.ChangeMembershipRequest, context: Any
                               ) -> confer_pb2.ClientWriteResponse:
        """Move the voter set to ``members`` one single-server step at a time."""
        target = set(req.members)
        if not target:
            raise InvalidArgument("ChangeMembership needs at least one member")
        server = self.server
        members = server.fsm.membership.members
        unknown = target - set(members)
        if unknown:
            raise RpcError(Code.FAILED_PRECONDITION,
                           f"nodes {sorted(unknown)} are not members; add them as learners first")
        cluster = ClusterService(server)
        current = {m.id for m in members.values() if not m.is_learner}
        for node_id in sorted(target - current):
            await cluster.promote_member(kv_pb2.MemberPromoteRequest(id=node_id), context)
        for node_id in sorted(current - target):
            member = cluster.existing(node_id)
            if req.retain:
                await cluster.change(ConfChangeType.ADD_LEARNER, member, context,
                                     self._forward_change(req))
            else:
                await cluster.remove_member(kv_pb2.MemberRemoveRequest(id=node_id), context)
        return await self.membership_response()

    @staticmethod
    def _forward_change(req: confer_pb2.ChangeMembershipRequest
                        ) -> Forward:
        return to_leader(confer_pb2_grpc.ConferServiceStub, "ChangeMembership", req)


def cluster_update(kind: str, member: Member | None, leader: int) -> confer_pb2.ClusterUpdate:
    if kind == "leader":
        addr = member.client_addr if member else ""
        return confer_pb2.ClusterUpdate(leader_changed=confer_pb2.Node(node_id=leader, addr=addr))
    assert member is not None
    node = confer_pb2.Node(node_id=member.id, addr=member.client_addr)
    if kind == "added":
        return confer_pb2.ClusterUpdate(member_added=node)
    if kind == "learner_added":
        return confer_pb2.ClusterUpdate(learner_added=node)
    if kind == "promoted":
        return confer_pb2.ClusterUpdate(member_promoted=member.id)
    return confer_pb2.ClusterUpdate(member_removed=member.id)


__all__ = ["ClusterService", "KVService", "LegacyService", "StateRole"]
