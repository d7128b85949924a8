"""etcd's ``KV`` and ``Watch`` services on Confer's MVCC store.

The store already follows etcd's semantics (ranges, revisions, txn, compaction), so requests
map one to one onto :mod:`confer.kv` commands. Keys are any non-empty bytes: the native path
rules do not apply here (see docs/etcd-compatibility.md). Writes go through the log as the
native API's do: a follower forwards the command to the leader through Raft (as etcd does)
and answers from its own application of the entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confer import kv as store
from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.kv import Put as PutCommand
from confer.server.api import RequestContext, RequestLayer
from confer.server.api.errors import PermissionDenied
from confer.server.api.watches import MAX_WATCHES_PER_STREAM, ResponseQueue, with_progress
from confer.server.etcd.common import (
    etcd_rpc,
    etcd_stream,
    event_to_etcd,
    header,
    kv_to_etcd,
    require_key,
)
from confer.server.rpc import COMPARE_VALUE_FIELDS, Adapter
from confer.server.watch import Watcher, event_bytes

# -- requests to commands ---------------------------------------------------------------------
E = TypeVar("E", bound=enum.IntEnum)


def known(kind: type[E], value: int, what: str) -> E:
    """``value`` as a member of ``kind``; InvalidArgument naming the field for a number the
    protocol does not define (proto3 enums carry any number)."""
    try:
        return kind(value)
    except ValueError:
        raise store.InvalidArgument(f"etcdserver: unknown {what} {value}") from None


def range_op(r: rpc_pb2.RangeRequest) -> store.RangeOp:
    """etcd sorts ascending by default when a sort target other than the key is named."""
    if r.sort_order or r.sort_target:  # most reads sort nothing: no enum lookups for them
        order = known(store.SortOrder, r.sort_order, "sort order")
        target = known(store.SortTarget, r.sort_target, "sort target")
        if order == store.SortOrder.NONE and target != store.SortTarget.KEY:
            order = store.SortOrder.ASCEND
    else:
        order, target = store.SortOrder.NONE, store.SortTarget.KEY
    return store.RangeOp(require_key(r.key), r.range_end, r.revision, r.limit, r.keys_only,
                         r.count_only, order, target, r.min_mod_revision,
                         r.max_mod_revision, r.min_create_revision, r.max_create_revision)


def compare(c: rpc_pb2.Compare) -> store.Compare:
    target = known(store.CompareTarget, c.target, "compare target")
    return store.Compare(require_key(c.key), c.range_end, target,
                         known(store.CompareResult, c.result, "compare result"),
                         getattr(c, COMPARE_VALUE_FIELDS[target]))


class Commands:
    """etcd requests as store commands, checked as etcd checks them before proposing (the
    sizes of keys, values and the whole request: by the request layer, for both APIs)."""

    @staticmethod
    def put(r: rpc_pb2.PutRequest) -> PutCommand:
        return PutCommand(require_key(r.key), r.value, r.lease, r.prev_kv, r.ignore_value,
                          r.ignore_lease)

    @staticmethod
    def delete(r: rpc_pb2.DeleteRangeRequest) -> store.DeleteRange:
        return store.DeleteRange(require_key(r.key), r.range_end, r.prev_kv)

    def op(self, op: rpc_pb2.RequestOp) -> Any:
        kind = op.WhichOneof("request")
        if kind == "request_range":
            return range_op(op.request_range)
        if kind == "request_put":
            return self.put(op.request_put)
        if kind == "request_delete_range":
            return self.delete(op.request_delete_range)
        if kind == "request_txn":
            return self.txn(op.request_txn)
        return store.RangeOp(b"")  # an empty op: refused by validation, as etcd refuses it

    def txn(self, r: rpc_pb2.TxnRequest) -> store.Txn:
        """A txn, checked by the request layer with every other write."""
        return store.Txn([compare(c) for c in r.compare], [self.op(o) for o in r.success],
                   [self.op(o) for o in r.failure])


# -- results to responses ---------------------------------------------------------------------
def range_response(layer: RequestLayer, r: store.RangeResult, keys_only: bool = False
                   ) -> rpc_pb2.RangeResponse:
    return rpc_pb2.RangeResponse(header=header(layer, r.revision),
                                 kvs=[kv_to_etcd(kv, keys_only) for kv in r.kvs],
                                 more=r.more, count=int(r.count))


def put_response(layer: RequestLayer, r: store.PutResult) -> rpc_pb2.PutResponse:
    return rpc_pb2.PutResponse(header=header(layer, r.revision),
                               prev_kv=kv_to_etcd(r.prev_kv) if r.prev_kv else None)


def delete_response(layer: RequestLayer, r: store.DeleteResult) -> rpc_pb2.DeleteRangeResponse:
    return rpc_pb2.DeleteRangeResponse(header=header(layer, r.revision), deleted=r.deleted,
                                       prev_kvs=[kv_to_etcd(kv) for kv in r.prev_kvs])


def txn_response(layer: RequestLayer, r: store.TxnResult) -> rpc_pb2.TxnResponse:
    resp = rpc_pb2.TxnResponse(header=header(layer, r.revision), succeeded=r.succeeded)
    for sub in r.responses:
        if isinstance(sub, store.RangeResult):
            resp.responses.add(response_range=range_response(layer, sub))
        elif isinstance(sub, store.PutResult):
            resp.responses.add(response_put=put_response(layer, sub))
        elif isinstance(sub, store.DeleteResult):
            resp.responses.add(response_delete_range=delete_response(layer, sub))
        else:
            resp.responses.add(response_txn=txn_response(layer, sub))
    return resp


# -- KV ---------------------------------------------------------------------------------------
class EtcdKV(Adapter, rpc_pb2_grpc.KVServicer):
    """``etcdserverpb.KV``."""

    def __init__(self, layer: RequestLayer) -> None:
        super().__init__(layer)
        self.commands = Commands()

    @etcd_rpc
    async def Range(self, req: rpc_pb2.RangeRequest, ctx: RequestContext
                    ) -> rpc_pb2.RangeResponse:
        res = await self.layer.kv.range(ctx, range_op(req), req.serializable)
        return range_response(self.layer, res, req.keys_only)

    @etcd_rpc
    async def Put(self, req: rpc_pb2.PutRequest, ctx: RequestContext) -> rpc_pb2.PutResponse:
        return put_response(self.layer, await self.layer.kv.put(ctx, self.commands.put(req)))

    @etcd_rpc
    async def DeleteRange(self, req: rpc_pb2.DeleteRangeRequest, ctx: RequestContext
                          ) -> rpc_pb2.DeleteRangeResponse:
        return delete_response(self.layer,
                               await self.layer.kv.delete(ctx, self.commands.delete(req)))

    @etcd_rpc
    async def Txn(self, req: rpc_pb2.TxnRequest, ctx: RequestContext) -> rpc_pb2.TxnResponse:
        return txn_response(self.layer, await self.layer.kv.txn(ctx, self.commands.txn(req)))

    @etcd_rpc
    async def Compact(self, req: rpc_pb2.CompactionRequest, ctx: RequestContext
                      ) -> rpc_pb2.CompactionResponse:
        result = await self.layer.kv.compact(ctx, req.revision)
        return rpc_pb2.CompactionResponse(header=header(self.layer, result.revision))


# -- Watch ------------------------------------------------------------------------------------
PROGRESS_INTERVAL = float(os.environ.get("CONFER_ETCD_WATCH_PROGRESS_INTERVAL", "600"))
"""Seconds between progress notifications of an idle watch that asked for them (etcd: 10
minutes by default)."""
CANCELED_WATCH_ID = -1
"""The watch id of a refused create and of a stream-wide progress response (etcd)."""


@dataclass(eq=False)
class _Watch:
    id: int
    create: rpc_pb2.WatchCreateRequest
    watcher: Watcher
    task: asyncio.Task[None] | None = None


CONTROL_RESPONSE_BYTES = 64
"""What a response without events counts in its stream's queue."""


@dataclass(eq=False)
class WatchStream:
    """One client's Watch stream: many watches (at most ``MAX_WATCHES_PER_STREAM``), all
    feeding one bounded queue of responses. A client that stops reading fills the queue;
    its watches then wait, and the hub lets each fall back to the history, so the server
    holds at most the queue's bound for it (and a watch whose history was compacted
    meanwhile is cancelled with ``compact_revision``, as etcd does)."""

    layer: RequestLayer
    ctx: RequestContext
    out: ResponseQueue[rpc_pb2.WatchResponse | None]
    watches: dict[int, _Watch] = field(default_factory=dict)
    next_id: int = 0

    async def send(self, watch_id: int, size: int = CONTROL_RESPONSE_BYTES,
                   **fields: Any) -> None:
        await self.out.put(rpc_pb2.WatchResponse(header=header(self.layer),
                                                 watch_id=watch_id, **fields), size)

    async def handle(self, req: rpc_pb2.WatchRequest) -> None:
        kind = req.WhichOneof("request_union")
        if kind == "create_request":
            await self.create(req.create_request)
        elif kind == "cancel_request":
            await self.cancel(req.cancel_request.watch_id)
        elif kind == "progress_request":
            await self.send(CANCELED_WATCH_ID)

    async def create(self, c: rpc_pb2.WatchCreateRequest) -> None:
        wid = c.watch_id
        if wid < 0 or (wid and wid in self.watches):  # 0 is never a duplicate: it is "any"
            await self.send(CANCELED_WATCH_ID, created=True, canceled=True,
                            cancel_reason="mvcc: duplicate watch ID provided on the "
                                          "WatchStream")
            return
        if len(self.watches) >= MAX_WATCHES_PER_STREAM:
            await self.send(CANCELED_WATCH_ID, created=True, canceled=True,
                            cancel_reason=f"etcdserver: too many watches on one stream "
                                          f"(at most {MAX_WATCHES_PER_STREAM}); cancel one "
                                          "or open another stream")
            return
        if not wid:  # 0 asks the server to choose: the lowest unused id from next_id on
            while self.next_id in self.watches:
                self.next_id += 1
            wid = self.next_id
            self.next_id += 1
        # Registered before the "created" response goes out: no event can be missed.
        try:
            watcher = self.layer.watches.watch(self.ctx, c.key, c.range_end, c.start_revision)
        except PermissionDenied:  # as etcd: this watch is refused, the stream goes on
            await self.send(wid, created=True, canceled=True,
                            cancel_reason="etcdserver: permission denied")
            return
        w = _Watch(wid, c, watcher)
        self.watches[wid] = w
        await self.send(wid, created=True)
        w.task = asyncio.ensure_future(self.feed(w))

    async def cancel(self, wid: int) -> None:
        w = self.watches.pop(wid, None)
        if w is not None:
            self.layer.watches.cancel(w.watcher)
            if w.task is not None:
                w.task.cancel()
            await self.send(wid, canceled=True)

    async def feed(self, w: _Watch) -> None:
        """Send ``w``'s events as the hub hands them over (runs of about a MiB), filtered,
        one response per run; waits while the stream's queue is full."""
        c = w.create
        skip = {store.EventType.PUT if f == rpc_pb2.WatchCreateRequest.NOPUT
                else store.EventType.DELETE for f in c.filters}
        batches = self.layer.watches.events(w.watcher)
        try:
            async for batch in with_progress(batches,
                                             PROGRESS_INTERVAL if c.progress_notify else None):
                if batch is None:
                    await self.send(w.id)  # progress: no events, the header's revision
                    continue
                events = [e for e in batch if e.type not in skip] if skip else batch
                if events:
                    await self.send(w.id, sum(map(event_bytes, events)),
                                    events=[event_to_etcd(e, c.prev_kv) for e in events])
        except store.CompactedError as e:
            self.watches.pop(w.id, None)
            await self.send(w.id, canceled=True, compact_revision=e.compact_revision,
                            cancel_reason="mvcc: required revision has been compacted")
        except PermissionDenied:  # the user lost read permission on the range (auth)
            self.watches.pop(w.id, None)
            await self.send(w.id, canceled=True, cancel_reason="etcdserver: permission denied")
        finally:
            with contextlib.suppress(Exception):
                await batches.aclose()

    def close(self) -> None:
        for w in self.watches.values():
            self.layer.watches.cancel(w.watcher)
            if w.task is not None:
                w.task.cancel()
        self.watches.clear()


class EtcdWatch(Adapter, rpc_pb2_grpc.WatchServicer):
    """``etcdserverpb.Watch``: served by any member from its applied state."""

    @etcd_stream
    async def Watch(self, requests: AsyncIterator[rpc_pb2.WatchRequest], ctx: RequestContext
                    ) -> AsyncIterator[rpc_pb2.WatchResponse]:
        self.layer.core.consensus.require_node()
        stream = WatchStream(self.layer, ctx, self.layer.watches.queue())

        async def read() -> None:
            try:
                async for req in requests:
                    await stream.handle(req)  # waits while the queue is full
                # As etcd: the client closing its side does not end the watches.
            finally:
                stream.out.put_nowait(None)

        reader = asyncio.ensure_future(read())
        try:
            while True:
                resp = await stream.out.get()
                if resp is None:  # the reader ended: the client half-closed, or it failed
                    await reader
                    continue
                yield resp
        finally:
            reader.cancel()
            stream.close()
