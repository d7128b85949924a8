"""An etcd Watch stream in process (its one serving task, its bounded queue) over a real
store and watch hub: the orders a client relies on when many watches share the stream."""

from __future__ import annotations

import asyncio
from typing import Any

from confer.etcdpb.etcdserverpb import rpc_pb2
from confer.kv import Compact, KVStore, Put, encode_command
from confer.raft.types import Entry
from confer.server.api.core import Header
from confer.server.api.watches import ResponseQueue
from confer.server.etcd import kv as etcd_kv
from confer.server.etcd.kv import WatchStream
from confer.server.watch import Watcher, WatchHub

Create = rpc_pb2.WatchCreateRequest


class Watches:
    """The request layer's watch calls, straight onto a hub (no guards, no node)."""

    def __init__(self, hub: WatchHub) -> None:
        self.hub = hub

    def watch(self, ctx: Any, key: bytes, range_end: bytes, start: int, notify: Any) -> Watcher:
        return self.hub.watcher(key, range_end, start, notify=notify)

    def take(self, w: Watcher) -> list[Any]:
        return self.hub.take(w)

    def pending(self, w: Watcher) -> bool:
        return self.hub.pending(w)

    def cancel(self, w: Watcher) -> None:
        self.hub.cancel(w)


class Layer:
    def __init__(self) -> None:
        self.kv = KVStore()
        self.watches = Watches(WatchHub(self.kv))
        self.index = 0

    def header(self, revision: int = 0) -> Header:
        return Header(1, 1, revision or self.kv.revision, 1, 1)

    def do(self, cmd: object) -> None:
        self.index += 1
        self.kv.apply(Entry(self.index, 1, encode_command(cmd)))  # type: ignore[arg-type]


def create(**fields: Any) -> rpc_pb2.WatchRequest:
    return rpc_pb2.WatchRequest(create_request=Create(**fields))


def cancel(watch_id: int) -> rpc_pb2.WatchRequest:
    return rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=watch_id))


def summary(r: rpc_pb2.WatchResponse) -> tuple[Any, ...]:
    kind = "created" if r.created else "canceled" if r.canceled else "events"
    return (kind, r.watch_id, *[e.kv.value for e in r.events])


async def drain(out: ResponseQueue[Any]) -> list[tuple[Any, ...]]:
    """Everything queued once the stream's task has nothing more to do."""
    got = []
    for _ in range(100):  # bounded: the task needs a few turns at most
        await asyncio.sleep(0)
        while len(out):
            got.append(summary(await out.get()))
    return got


def test_a_watch_cancelled_while_the_queue_is_full_sends_nothing_after_its_cancel() -> None:
    async def main() -> None:
        layer = Layer()
        out: ResponseQueue[Any] = ResponseQueue(max_items=2)
        stream = WatchStream(layer, None, out)  # type: ignore[arg-type]
        try:
            await stream.handle(create(key=b"k", watch_id=5))
            assert summary(await out.get()) == ("created", 5)
            for i in range(4):  # more responses than the queue holds: the task waits
                layer.do(Put(b"k", b"%d" % i))
                await asyncio.sleep(0)
            canceling = asyncio.ensure_future(stream.handle(cancel(5)))  # waits for room
            await asyncio.sleep(0)
            got = [summary(await out.get()) for _ in range(3)]
            await asyncio.wait_for(canceling, 5)
            got += await drain(out)
            assert got[-1] == ("canceled", 5)
            sent = [g[2] for g in got if g[0] == "events"]
            assert sent == [b"0", b"1", b"2", b"3"][:len(sent)]  # a prefix, in order
            # The id is free again; the new watch gets only what follows its creation.
            await stream.handle(create(key=b"k", watch_id=5))
            layer.do(Put(b"k", b"new"))
            assert await drain(out) == [("created", 5), ("events", 5, b"new")]
        finally:
            stream.close()

    asyncio.run(main())


def test_each_watch_gets_its_events_after_its_created() -> None:
    async def main() -> None:
        layer = Layer()
        layer.do(Put(b"p/a", b"old"))
        out: ResponseQueue[Any] = ResponseQueue()
        stream = WatchStream(layer, None, out)  # type: ignore[arg-type]
        try:
            await stream.handle(create(key=b"p/", range_end=b"p0", start_revision=1))
            await stream.handle(create(key=b"p/", range_end=b"p0"))
            await stream.handle(create(key=b"p/a", prev_kv=True))
            layer.do(Put(b"p/a", b"new"))
            await stream.handle(create(key=b"p/", range_end=b"p0", watch_id=9))
            got = await drain(out)
            assert sorted(got) == [("created", 0), ("created", 1), ("created", 2),
                                   ("created", 9), ("events", 0, b"old", b"new"),
                                   ("events", 1, b"new"), ("events", 2, b"new")]
            for wid in (0, 1, 2):
                kinds = [g[0] for g in got if g[1] == wid]
                assert kinds == ["created", "events"]
        finally:
            stream.close()

    asyncio.run(main())


def test_a_watch_behind_compaction_is_cancelled_with_its_revision_and_the_rest_go_on() -> None:
    async def main() -> None:
        layer = Layer()
        for i in range(5):
            layer.do(Put(b"k", b"%d" % i))
        layer.do(Compact(4))
        out: ResponseQueue[Any] = ResponseQueue()
        stream = WatchStream(layer, None, out)  # type: ignore[arg-type]
        try:
            await stream.handle(create(key=b"k", start_revision=2))
            await stream.handle(create(key=b"k"))
            await asyncio.sleep(0)
            responses = [await out.get() for _ in range(3)]
            compacted = next(r for r in responses if r.canceled)
            assert (compacted.watch_id, compacted.compact_revision) == (0, 4)
            layer.do(Put(b"k", b"live"))
            assert await drain(out) == [("events", 1, b"live")]
            assert list(stream.watches) == [1]
        finally:
            stream.close()

    asyncio.run(main())


def test_a_run_is_encoded_once_per_round_within_a_bound(monkeypatch: Any) -> None:
    layer = Layer()
    events: list[Any] = []
    layer.kv.add_listener(events.extend)
    for i in range(20):
        layer.do(Put(b"k%d" % i, b"x" * 100))
    enc = etcd_kv.Encodings(layer)  # type: ignore[arg-type]
    first, size = enc.response(events[:2], False)
    assert enc.response(events[:2], False)[0] is first  # the same run: not encoded again
    assert enc.response(events[:2], True)[0] is not first  # prev_kv asked: another encoding
    assert [e.kv.value for e in first.events] == [b"x" * 100] * 2 and size > 200
    monkeypatch.setattr(etcd_kv, "ENCODINGS_BYTES", 3 * size)
    for i in range(0, 20, 2):  # distinct runs: the round keeps at most the bound
        enc.response(events[i:i + 2], False)
        assert enc.bytes <= 3 * size
