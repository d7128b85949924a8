"""Bounds on etcd Watch streams: a client that never reads holds at most its stream's queue
bound on the server (its watches fall back to the history, and are cancelled with
``compact_revision`` if that history is compacted meanwhile), a stream holds at most
``MAX_WATCHES_PER_STREAM`` watches, and a connection at most ``MAX_CONCURRENT_STREAMS``
calls at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.kv import Event, EventType, KeyValue
from confer.server import config, watch
from confer.server.api.watches import ResponseQueue
from confer.server.app import ConferServer
from confer.server.config import ServerConfig
from confer.server.watch import split_batch
from confer.v1 import kv_pb2, kv_pb2_grpc

MiB = 1 << 20
CREATE = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
    key=b"/w/", range_end=b"/w0"))


async def with_server(tmp_path: Path, body: Callable[[ConferServer, grpc.aio.Channel],
                                                      Awaitable[None]]) -> None:
    """Run ``body`` against a started single-node server, then stop both."""
    srv = ConferServer(ServerConfig(data_dir=tmp_path / "node", listen_client="127.0.0.1:0",
                                    listen_peer="127.0.0.1:0", tick_ms=20,
                                    auto_compaction_retention=0))
    await srv.start()
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while not srv.consensus.is_leader():
            assert asyncio.get_running_loop().time() < deadline, "no leader in 10 s"
            await asyncio.sleep(0.02)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.client_port}", options=[
                ("grpc.max_receive_message_length", 64 * MiB)]) as ch:
            await asyncio.wait_for(body(srv, ch), 120)
    finally:
        await srv.stop(grace=0)


async def requests(*reqs: rpc_pb2.WatchRequest) -> AsyncIterator[rpc_pb2.WatchRequest]:
    for r in reqs:
        yield r
    await asyncio.Event().wait()  # keep the stream open


async def put_mib(ch: grpc.aio.Channel, count: int) -> None:
    """``count`` values of 1 MiB."""
    kv = rpc_pb2_grpc.KVStub(ch)
    for i in range(count):
        await kv.Put(rpc_pb2.PutRequest(key=b"/w/%d" % (i % 4), value=b"%08d" % i * (MiB // 8)),
                     timeout=20)


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    for _ in range(600):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def read_events(call: grpc.aio.StreamStreamCall, until_revision: int
                      ) -> list[rpc_pb2.WatchResponse]:
    responses = []
    while True:
        resp = await call.read()
        assert resp is not grpc.aio.EOF
        responses.append(resp)
        if resp.canceled or (resp.events and resp.events[-1].kv.mod_revision >= until_revision):
            return responses


def test_a_watcher_that_never_reads_holds_at_most_its_queue_bound(tmp_path: Path) -> None:
    async def body(srv: ConferServer, ch: grpc.aio.Channel) -> None:
        call = rpc_pb2_grpc.WatchStub(ch).Watch(requests(CREATE))
        assert (await call.read()).created
        queues = list(srv.api.watches.queues)
        assert len(queues) == 1
        queue = queues[0]
        await put_mib(ch, 40)  # 40 MiB, never read
        await wait_for(lambda: queue.bytes >= MiB, "responses to wait in the queue")
        # At most the documented 4 MiB of the 40 MiB (80 counting each event's prev_kv).
        assert queue.peak_bytes <= 4 * MiB
        # Reading now, every event arrives once, in order: the watch fell back to history.
        last = srv.fsm.kv.revision
        got = [e.kv.mod_revision for r in await read_events(call, last) for e in r.events]
        assert got == list(range(2, last + 1))
        call.cancel()

    asyncio.run(with_server(tmp_path, body))


def test_a_stalled_watch_whose_history_was_compacted_is_cancelled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "MAX_BUFFERED_EVENTS", 4)  # fall back to history early

    async def body(srv: ConferServer, ch: grpc.aio.Channel) -> None:
        call = rpc_pb2_grpc.WatchStub(ch).Watch(requests(CREATE))
        assert (await call.read()).created
        queue = next(iter(srv.api.watches.queues))
        await put_mib(ch, 40)
        await wait_for(lambda: queue.bytes >= MiB, "responses to wait in the queue")
        await put_mib(ch, 10)  # more than the hub buffers for a watcher: history it is
        compacted = srv.fsm.kv.revision
        await rpc_pb2_grpc.KVStub(ch).Compact(rpc_pb2.CompactionRequest(revision=compacted),
                                              timeout=10)
        responses = await read_events(call, compacted + 1)
        assert responses[-1].canceled and responses[-1].compact_revision == compacted
        revisions = [e.kv.mod_revision for r in responses for e in r.events]
        assert revisions == list(range(2, 2 + len(revisions)))  # no gap before the cancel

    asyncio.run(with_server(tmp_path, body))


def test_a_stream_holds_a_bounded_number_of_watches(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("confer.server.etcd.kv.MAX_WATCHES_PER_STREAM", 3)

    async def body(srv: ConferServer, ch: grpc.aio.Channel) -> None:
        call = rpc_pb2_grpc.WatchStub(ch).Watch(requests(*[CREATE] * 4))
        created = [await call.read() for _ in range(4)]
        assert [r.canceled for r in created] == [False, False, False, True]
        assert "too many watches on one stream (at most 3)" in created[3].cancel_reason
        call.cancel()

    asyncio.run(with_server(tmp_path, body))


def test_a_connection_holds_a_bounded_number_of_streams(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "MAX_CONCURRENT_STREAMS", 2)

    async def body(srv: ConferServer, ch: grpc.aio.Channel) -> None:
        stub = rpc_pb2_grpc.WatchStub(ch)
        first, second = stub.Watch(requests(CREATE)), stub.Watch(requests(CREATE))
        assert (await first.read()).created and (await second.read()).created
        third = stub.Watch(requests(CREATE))
        pending = asyncio.ensure_future(third.read())
        await asyncio.sleep(1.0)
        assert not pending.done()  # waits in the client for a free stream
        first.cancel()
        assert (await asyncio.wait_for(pending, 20)).created
        second.cancel()
        third.cancel()

    asyncio.run(with_server(tmp_path, body))


def test_a_catch_up_of_large_values_comes_in_responses_of_about_a_mib(tmp_path: Path) -> None:
    """70 values of 1 MiB replayed from revision 1 were one 70 MiB response, over gRPC's
    64 MiB limit: the watch failed on both APIs."""
    async def body(srv: ConferServer, ch: grpc.aio.Channel) -> None:
        await put_mib(ch, 70)
        last = srv.fsm.kv.revision
        etcd = rpc_pb2_grpc.WatchStub(ch).Watch(requests(rpc_pb2.WatchRequest(
            create_request=rpc_pb2.WatchCreateRequest(key=b"/w/", range_end=b"/w0",
                                                      start_revision=1))))
        assert (await etcd.read()).created
        responses = await read_events(etcd, last)
        assert [e.kv.mod_revision for r in responses for e in r.events] == list(
            range(2, last + 1))
        assert max(r.ByteSize() for r in responses) < 3 * MiB
        etcd.cancel()
        native = kv_pb2_grpc.KVStub(ch).Watch(kv_pb2.WatchRequest(path="/w", recursive=True,
                                                                  start_revision=1))
        revisions: list[int] = []
        async for resp in native:
            assert resp.ByteSize() < 3 * MiB
            revisions += [e.kv.mod_revision for e in resp.events]
            if revisions and revisions[-1] == last:
                break
        assert revisions == list(range(2, last + 1))
        native.cancel()

    asyncio.run(with_server(tmp_path, body))


def event(revision: int, size: int) -> Event:
    return Event(EventType.PUT, KeyValue(b"/k", revision, revision, 1, b"v" * size))


def test_batches_are_split_between_revisions_only() -> None:
    batch = [event(2, 600), event(2, 600), event(3, 600), event(4, 10)]
    runs = split_batch(batch, limit=1000)
    assert [[e.kv.mod_revision for e in run] for run in runs] == [[2, 2], [3, 4]]


def test_the_response_queue_waits_for_room() -> None:
    async def body() -> None:
        q: ResponseQueue[str] = ResponseQueue(max_bytes=100, max_items=10)
        await q.put("a", 80)
        blocked = asyncio.ensure_future(q.put("b", 80))
        await asyncio.sleep(0.05)
        assert not blocked.done() and len(q) == 1
        assert await q.get() == "a"
        await asyncio.wait_for(blocked, 5)
        assert (len(q), q.bytes, q.peak_bytes) == (1, 80, 80)

    asyncio.run(body())
