"""etcd's ``KV`` and ``Watch`` services on Confer's MVCC store.

The store already follows etcd's semantics (ranges, revisions, txn, compaction), so requests
map one to one onto :mod:`confer.kv` commands. Keys are any non-empty bytes: the native path
rules do not apply here (see docs/etcd-compatibility.md). Writes go through the log as the
native API's do: a follower forwards the command to the leader through Raft (as etcd does)
and answers from its own application of the entry.
"""

from __future__ import annotations

import asyncio
import enum
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confer import kv as store
from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.kv import Put as PutCommand
from confer.kv.keyrange import FROM_KEY
from confer.server.api import RequestContext, RequestLayer
from confer.server.api.errors import PermissionDenied
from confer.server.api.watches import MAX_WATCHES_PER_STREAM, ResponseQueue
from confer.server.etcd.common import (
    etcd_rpc,
    etcd_stream,
    event_to_etcd,
    header,
    kv_to_etcd,
    require_key,
)
from confer.server.rpc import COMPARE_VALUE_FIELDS, Adapter
from confer.server.watch import Watcher, event_bytes, split_batch

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
    resp = rpc_pb2.RangeResponse(header=header(layer, r.revision), more=r.more,
                                 count=int(r.count))
    # Filled in place: a KeyValue built apart and then copied in cost about four times
    # as much (100k keys: seconds), and a fifth more for one key.
    add = resp.kvs.add
    for kv in r.kvs:
        add(key=kv.key, create_revision=kv.create_revision, mod_revision=kv.mod_revision,
            version=kv.version, value=b"" if keys_only else kv.value, lease=kv.lease)
    return resp


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
    skip: frozenset[store.EventType]
    """Event types its filters drop (NOPUT, NODELETE)."""
    quiet: bool = True
    """Nothing sent since the last progress tick (for ``progress_notify``)."""


CONTROL_RESPONSE_BYTES = 64
"""What a response without events counts in its stream's queue."""


def filtered_types(c: rpc_pb2.WatchCreateRequest) -> frozenset[store.EventType]:
    return frozenset(store.EventType.PUT if f == rpc_pb2.WatchCreateRequest.NOPUT
                     else store.EventType.DELETE for f in c.filters)


ENCODINGS_BYTES = 4 << 20
"""Bytes of encoded responses one stream round keeps for reuse (the watches of a prefix
all get the same revision: one encoding serves them all); beyond, it starts afresh, so a
round of many distinct catch-ups holds no more than this besides the queue."""


class Encodings:
    """The responses one round of a stream has built, by the runs of events they carry,
    so that a run many watches get is encoded once and copied for each."""

    def __init__(self, layer: RequestLayer) -> None:
        self.layer = layer
        self.bytes = 0
        # (prev_kv, id of each event) -> (the run, kept so no id is reused; response; size)
        self.built: dict[tuple[Any, ...], tuple[list[store.Event], rpc_pb2.WatchResponse,
                                                int]] = {}

    def response(self, run: list[store.Event], prev_kv: bool
                 ) -> tuple[rpc_pb2.WatchResponse, int]:
        """A response (without watch id) carrying ``run``, and its size for the queue."""
        key = (prev_kv, *map(id, run))
        hit = self.built.get(key)
        if hit is None:
            size = sum(map(event_bytes, run))
            if self.bytes + size > ENCODINGS_BYTES:
                self.built.clear()
                self.bytes = 0
            hit = self.built[key] = (run, rpc_pb2.WatchResponse(
                header=header(self.layer), events=[event_to_etcd(e, prev_kv) for e in run]),
                size)
            self.bytes += size
        return hit[1], hit[2]


@dataclass(eq=False)
class WatchStream:
    """One client's Watch stream: many watches (at most ``MAX_WATCHES_PER_STREAM``), served
    by one task (:meth:`pump`) that takes the events of each watch the hub marked ready and
    queues its responses, all in one bounded queue. A revision's responses for the
    stream's watches are built from one encoding of its events (:meth:`send_events`).

    A client that stops reading fills the queue; the pump then waits, its watches' events
    wait in the hub, which lets each fall back to the history, so the server holds at most
    the queue's bound for it (and a watch whose history was compacted meanwhile is
    cancelled with ``compact_revision``, as etcd does)."""

    layer: RequestLayer
    ctx: RequestContext
    out: ResponseQueue[rpc_pb2.WatchResponse | None]
    watches: dict[int, _Watch] = field(default_factory=dict)
    next_id: int = 0
    ready: dict[_Watch, None] = field(default_factory=dict)
    """Watches with something to take, in the order they became ready (an ordered set)."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tasks.append(asyncio.ensure_future(self.pump()))

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

    def refusal(self, c: rpc_pb2.WatchCreateRequest) -> str | None:
        """Why etcd would refuse this create (answered created + canceled, the stream goes
        on), or None. Only an explicit id can be a duplicate: 0 asks for any free one."""
        if c.start_revision < 0:
            return "etcdserver: mvcc: required revision has been compacted"
        if c.range_end not in (b"", FROM_KEY) and (c.key or b"\0") >= c.range_end:
            return "mvcc: watcher range is empty"
        if c.watch_id < 0 or (c.watch_id and c.watch_id in self.watches):
            return "mvcc: duplicate watch ID provided on the WatchStream"
        if len(self.watches) >= MAX_WATCHES_PER_STREAM:
            return (f"etcdserver: too many watches on one stream (at most "
                    f"{MAX_WATCHES_PER_STREAM}); cancel one or open another stream")
        return None

    async def create(self, c: rpc_pb2.WatchCreateRequest) -> None:
        reason = self.refusal(c)
        if reason is not None:
            await self.send(CANCELED_WATCH_ID, created=True, canceled=True,
                            cancel_reason=reason)
            return
        wid = c.watch_id
        if not wid:  # etcd's auto id: the lowest id from next_id on that no watch holds
            while self.next_id in self.watches:
                self.next_id += 1
            wid = self.next_id
            self.next_id += 1
        # Registered before the "created" response goes out: no event can be missed (the
        # hub keeps them until the pump takes them). An empty key is etcd's smallest, "\0".
        w: _Watch
        try:
            watcher = self.layer.watches.watch(self.ctx, c.key or b"\0", c.range_end,
                                               c.start_revision, lambda: self.mark_ready(w))
        except PermissionDenied:  # as etcd: this watch is refused, the stream goes on
            await self.send(wid, created=True, canceled=True,
                            cancel_reason="etcdserver: permission denied")
            return
        w = _Watch(wid, c, watcher, filtered_types(c))
        await self.send(wid, created=True)
        # Served only from now on: its events follow its "created" response.
        self.watches[wid] = w
        self.mark_ready(w)
        if c.progress_notify and len(self.tasks) == 1:
            self.tasks.append(asyncio.ensure_future(self.progress()))

    def mark_ready(self, w: _Watch) -> None:
        self.ready[w] = None
        self.wake.set()

    async def cancel(self, wid: int) -> None:
        w = self.watches.pop(wid, None)
        if w is not None:
            self.layer.watches.cancel(w.watcher)
            await self.send(wid, canceled=True)

    async def pump(self) -> None:
        """Serve the watches as they become ready, each in turn: what one has now, then
        the next (a long catch-up goes round with the others). If it fails, the stream
        ends with its error."""
        try:
            await self._pump()
        finally:
            self.out.put_nowait(None)

    async def _pump(self) -> None:
        watches = self.layer.watches
        while True:
            if not self.ready:
                self.wake.clear()
                await self.wake.wait()
                continue
            ready, self.ready = self.ready, {}
            encoded = Encodings(self.layer)
            for w in ready:
                if self.watches.get(w.id) is not w:
                    continue  # cancelled, or not yet announced (it is marked again then)
                if w.watcher.cancelled and watches.revoked(w.watcher):
                    # The user lost read permission on the range (auth).
                    del self.watches[w.id]
                    await self.send(w.id, canceled=True,
                                    cancel_reason="etcdserver: permission denied")
                    continue
                try:
                    batch = watches.take(w.watcher)
                except store.CompactedError as e:
                    del self.watches[w.id]
                    watches.cancel(w.watcher)
                    await self.send(w.id, canceled=True, compact_revision=e.compact_revision,
                                    cancel_reason="mvcc: required revision has been compacted")
                    continue
                if watches.pending(w.watcher):
                    self.ready[w] = None
                if batch:
                    await self.send_events(w, batch, encoded)

    async def send_events(self, w: _Watch, batch: list[store.Event], encoded: Encodings
                          ) -> None:
        """Queue ``w``'s events, filtered, one response per run of about a MiB (never
        splitting a revision), each copied from the round's :class:`Encodings` with the
        watch's id."""
        events = [e for e in batch if e.type not in w.skip] if w.skip else batch
        if not events:
            return
        for run in split_batch(events):
            template, size = encoded.response(run, w.create.prev_kv)
            await self.out.room(size)
            if self.watches.get(w.id) is not w:
                return  # cancelled while the queue was full: its "canceled" went out
            resp = rpc_pb2.WatchResponse()
            resp.CopyFrom(template)
            resp.watch_id = w.id
            self.out.append(resp, size)
            w.quiet = False

    async def progress(self) -> None:
        """etcd's progress notifications: every ``PROGRESS_INTERVAL``, a response without
        events (the header's revision) to each watch that asked for them and was sent
        nothing since the last tick."""
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL)
            for w in list(self.watches.values()):
                if w.create.progress_notify:
                    if w.quiet and self.watches.get(w.id) is w:
                        await self.send(w.id)
                    w.quiet = True

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for w in self.watches.values():
            self.layer.watches.cancel(w.watcher)
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
                if resp is None:  # the reader ended (the client half-closed) or a task failed
                    for task in (reader, *stream.tasks):
                        if task.done():
                            task.result()  # raises its failure, ending the stream
                    continue
                yield resp
        finally:
            reader.cancel()
            stream.close()
