"""confer.v1 ``KV``: paths, subtrees, writes, transactions, compaction and watches.

Reads are linearizable by default (ReadIndex through the local member), or serializable on
request. Writes go through the request layer: a follower forwards them to the leader through
Raft and answers once it has applied them itself.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

from confer import kv as store
from confer.server.api import RequestContext, RequestLayer
from confer.server.api.kv import tree_delete, tree_deleted
from confer.server.api.watches import with_progress
from confer.server.native.common import (
    header_pb,
    kv_to_pb,
    path_key,
    path_of,
    rpc,
    shown_events,
    shown_kvs,
    stream_rpc,
)
from confer.server.rpc import COMPARE_VALUE_FIELDS, Adapter
from confer.v1 import kv_pb2, kv_pb2_grpc

_RESULTS = frozenset(int(r) for r in store.CompareResult)


class Commands:
    """confer.v1 requests as store commands, checked against the path rules."""

    def __init__(self, max_key_bytes: int) -> None:
        self.max_key_bytes = max_key_bytes

    def path(self, path: str, *, allow_root: bool = False) -> bytes:
        return path_key(path, self.max_key_bytes, allow_root=allow_root)

    def put(self, req: kv_pb2.PutRequest) -> store.Put:
        key = self.path(req.path)
        return store.Put(key, req.value, lease=req.lease, prev_kv=req.prev_kv)

    def delete(self, req: kv_pb2.DeleteRequest) -> store.DeleteRange | store.Txn:
        """One key, or (recursive) the key and its subtree in one txn of two deletes."""
        key = self.path(req.path, allow_root=req.recursive)
        if not req.recursive:
            return store.DeleteRange(key, prev_kv=req.prev_kv)
        return tree_delete(key, req.prev_kv)

    def compare(self, c: kv_pb2.Compare) -> store.Compare:
        key = self.path(c.path)
        if c.result not in _RESULTS:
            raise store.InvalidArgument(f"compare on {c.path}: unknown result {c.result}")
        if c.target == kv_pb2.Compare.EXISTS:
            # exists == true  <=>  version > 0
            want = c.exists if c.WhichOneof("target_union") == "exists" else True
            if c.result not in (kv_pb2.Compare.EQUAL, kv_pb2.Compare.NOT_EQUAL):
                raise store.InvalidArgument(f"compare on {c.path}: EXISTS takes EQUAL or NOT_EQUAL")
            if c.result == kv_pb2.Compare.NOT_EQUAL:
                want = not want
            result = store.CompareResult.GREATER if want else store.CompareResult.EQUAL
            return store.Compare(key, target=store.CompareTarget.VERSION, result=result, value=0)
        field = COMPARE_VALUE_FIELDS.get(c.target)
        if field is None:
            raise store.InvalidArgument(f"compare on {c.path}: unknown target {c.target}")
        return store.Compare(key, target=store.CompareTarget(c.target),
                             result=store.CompareResult(c.result), value=getattr(c, field))

    def op(self, op: kv_pb2.RequestOp) -> Any:
        kind = op.WhichOneof("request")
        if kind == "put":
            return self.put(op.put)
        if kind == "delete":
            return self.delete(op.delete)
        if kind == "range":
            r = op.range
            key = self.path(r.path, allow_root=r.recursive)
            if r.recursive:
                raise store.InvalidArgument("recursive ranges are not supported inside a txn; "
                                      "read the subtree before or after")
            return store.RangeOp(key, b"", revision=r.revision, limit=r.limit,
                           keys_only=r.keys_only, count_only=r.count_only)
        if kind == "txn":
            return self.txn(op.txn)
        raise store.InvalidArgument("a txn operation must set one of range, put, delete, txn")

    def txn(self, req: kv_pb2.TxnRequest) -> store.Txn:
        return store.Txn([self.compare(c) for c in req.compare], [self.op(o) for o in req.success],
                   [self.op(o) for o in req.failure])


class Responses:
    """Store results as confer.v1 responses."""

    def __init__(self, layer: RequestLayer) -> None:
        self.layer = layer

    def header(self, revision: int = 0) -> kv_pb2.ResponseHeader:
        return header_pb(self.layer.header(revision))

    def put(self, result: store.PutResult) -> kv_pb2.PutResponse:
        resp = kv_pb2.PutResponse(header=self.header(result.revision))
        if result.prev_kv is not None:
            resp.prev_kv.CopyFrom(kv_to_pb(result.prev_kv))
        return resp

    def delete(self, deleted: int, prev: list[store.KeyValue], revision: int
               ) -> kv_pb2.DeleteResponse:
        return kv_pb2.DeleteResponse(header=self.header(revision), deleted=deleted,
                                     prev_kvs=[kv_to_pb(kv) for kv in prev])

    def delete_result(self, result: store.DeleteResult | store.TxnResult) -> kv_pb2.DeleteResponse:
        """A delete's result; a recursive delete's is a txn of two deletes."""
        if isinstance(result, store.TxnResult):
            return self.delete(*tree_deleted(result))
        return self.delete(result.deleted, list(result.prev_kvs), result.revision)

    def txn(self, result: store.TxnResult, req: kv_pb2.TxnRequest | None = None
            ) -> kv_pb2.TxnResponse:
        """``req``, when given, lets a recursive delete (a txn of two deletes inside) answer
        as one delete, as the unary Delete does."""
        resp = kv_pb2.TxnResponse(header=self.header(result.revision),
                                  succeeded=result.succeeded)
        ops = list((req.success if result.succeeded else req.failure) if req is not None
                   else [])
        for i, r in enumerate(result.responses):
            op = ops[i] if i < len(ops) else None
            resp.responses.append(self.op(r, op))
        return resp

    def op(self, r: Any, op: kv_pb2.RequestOp | None = None) -> kv_pb2.ResponseOp:
        kind = op.WhichOneof("request") if op is not None else None
        if isinstance(r, store.TxnResult):
            if kind == "delete":
                return kv_pb2.ResponseOp(delete=self.delete_result(r))
            return kv_pb2.ResponseOp(txn=self.txn(r, op.txn if op is not None and kind == "txn"
                                                  else None))
        if isinstance(r, store.RangeResult):
            return kv_pb2.ResponseOp(range=kv_pb2.RangeResponse(
                header=self.header(), kvs=[kv_to_pb(kv) for kv in r.kvs], more=r.more,
                count=r.count))
        if isinstance(r, store.PutResult):
            return kv_pb2.ResponseOp(put=self.put(r))
        if isinstance(r, store.DeleteResult):
            return kv_pb2.ResponseOp(delete=self.delete_result(r))
        raise TypeError(f"unexpected txn response {type(r).__name__}")


class KVService(Adapter, kv_pb2_grpc.KVServicer):
    def __init__(self, layer: RequestLayer) -> None:
        super().__init__(layer)
        self.commands = Commands(layer.max_key_bytes)
        self.responses = Responses(layer)

    @rpc
    async def Range(self, req: kv_pb2.RangeRequest, ctx: RequestContext
                    ) -> kv_pb2.RangeResponse:
        path = self.commands.path(req.path, allow_root=req.recursive)
        if req.limit < 0 or req.revision < 0:
            raise store.InvalidArgument("limit and revision must be >= 0")
        tree = self.layer.kv.tree
        kvs, count, more, rev = await tree(
            ctx, path, recursive=req.recursive, revision=req.revision, limit=req.limit,
            start_after=req.start_after.encode(), keys_only=req.keys_only,
            count_only=req.count_only, serializable=req.serializable)
        shown = shown_kvs(kvs, req.keys_only)
        # Keys that are no native paths took places in the page: fill it from after the
        # last key read, at the same revision, so that a page is never empty while `more`.
        while req.limit and more and kvs and len(shown) < req.limit:
            kvs, _, more, _ = await tree(
                ctx, path, recursive=req.recursive, revision=rev,
                limit=req.limit - len(shown), start_after=kvs[-1].key,
                keys_only=req.keys_only, serializable=True)
            shown.extend(shown_kvs(kvs, req.keys_only))
        return kv_pb2.RangeResponse(header=self.responses.header(), kvs=shown, more=more,
                                    count=count)

    @rpc
    async def Children(self, req: kv_pb2.ChildrenRequest, ctx: RequestContext
                       ) -> kv_pb2.ChildrenResponse:
        path = self.commands.path(req.path, allow_root=True)
        if req.limit < 0 or req.revision < 0:
            raise store.InvalidArgument("limit and revision must be >= 0")
        if req.revision:
            raise store.InvalidArgument("children: reading children at a past revision is not "
                                  "supported; use Range with recursive and revision")
        children = self.layer.kv.children
        names, more = await children(ctx, path, start_after=req.start_after.encode(),
                                     limit=req.limit, serializable=req.serializable)
        shown = [name for name in map(path_of, names) if name is not None]
        while req.limit and more and names and len(shown) < req.limit:  # as in Range
            names, more = await children(ctx, path, start_after=names[-1],
                                         limit=req.limit - len(shown), serializable=True)
            shown.extend(name for name in map(path_of, names) if name is not None)
        return kv_pb2.ChildrenResponse(header=self.responses.header(), names=shown,
                                       more=more)

    @rpc
    async def Put(self, req: kv_pb2.PutRequest, ctx: RequestContext) -> kv_pb2.PutResponse:
        return self.responses.put(await self.layer.kv.put(ctx, self.commands.put(req)))

    @rpc
    async def Delete(self, req: kv_pb2.DeleteRequest, ctx: RequestContext
                     ) -> kv_pb2.DeleteResponse:
        path = self.commands.path(req.path, allow_root=req.recursive)
        if req.recursive:
            return self.responses.delete(*await self.layer.kv.delete_tree(ctx, path,
                                                                           req.prev_kv))
        return self.responses.delete_result(
            await self.layer.kv.delete(ctx, store.DeleteRange(path, prev_kv=req.prev_kv)))

    @rpc
    async def Txn(self, req: kv_pb2.TxnRequest, ctx: RequestContext) -> kv_pb2.TxnResponse:
        return self.responses.txn(await self.layer.kv.txn(ctx, self.commands.txn(req)), req)

    @rpc
    async def Compact(self, req: kv_pb2.CompactRequest, ctx: RequestContext
                      ) -> kv_pb2.CompactResponse:
        if req.revision <= 0:
            raise store.InvalidArgument("compact revision must be positive")
        await self.layer.kv.compact(ctx, req.revision)
        return kv_pb2.CompactResponse(header=self.responses.header())

    @stream_rpc
    async def Watch(self, req: kv_pb2.WatchRequest, ctx: RequestContext
                    ) -> AsyncIterator[kv_pb2.WatchResponse]:
        path = self.commands.path(req.path, allow_root=req.recursive)
        if req.start_revision < 0:
            raise store.InvalidArgument("start_revision must be >= 0")
        if not (math.isfinite(req.progress_interval) and req.progress_interval >= 0):
            raise store.InvalidArgument(f"progress_interval {req.progress_interval}: must be a "
                                        f"finite number of seconds >= 0")
        watches = self.layer.watches
        w = watches.watch_tree(ctx, path, req.recursive, req.start_revision)
        yield kv_pb2.WatchResponse(header=self.responses.header(), created=True)
        try:
            async for batch in with_progress(watches.events(w), req.progress_interval or None):
                if batch is None:
                    yield kv_pb2.WatchResponse(header=self.responses.header(), progress=True)
                    continue
                events = shown_events(
                    (e for e in batch if not (req.no_put and e.type == store.EventType.PUT)
                     and not (req.no_delete and e.type == store.EventType.DELETE)),
                    req.prev_kv)
                if events:
                    yield kv_pb2.WatchResponse(
                        header=self.responses.header(batch[-1].kv.mod_revision),
                        events=events)
        except store.CompactedError as e:
            yield kv_pb2.WatchResponse(
                header=self.responses.header(), canceled=True,
                compact_revision=e.compact_revision,
                cancel_reason=f"{e}; the oldest revision still available is "
                              f"{e.compact_revision + 1}")
