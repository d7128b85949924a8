"""Stream scenarios: abandoned, concurrent, flooded and half-closed streams.

Each scenario is bounded in streams, bytes and time, and ends with every stream closed by the
fuzzer. What is asserted: every stream the server ends gets a status other than INTERNAL or
UNKNOWN; a watch the server accepted delivers the write made under it (no event lost while
others stream); and afterwards the node is checked as after every phase (canary, health, log,
state). The node's memory before and after is noted in the report.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc

from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.v1 import coord_pb2, coord_pb2_grpc, kv_pb2, kv_pb2_grpc
from testing.fuzz.calls import Outcome
from testing.fuzz.report import Failure, Report
from testing.fuzz.target import FuzzTarget

STREAM_DEADLINE = 30.0
"""Seconds any stream of a scenario may stay open, whatever happens."""
WATCH = "/etcdserverpb.Watch/Watch"
NATIVE_WATCH = "/confer.v1.KV/Watch"
KEEPALIVE = "/etcdserverpb.Lease/LeaseKeepAlive"


class _Held:
    """A request stream that sends its requests, then stays open until released."""

    def __init__(self, requests: list[Any], half_close: bool = False) -> None:
        self.requests = requests
        self.half_close = half_close
        self.release = threading.Event()

    def __iter__(self) -> Iterator[Any]:
        yield from self.requests
        if not self.half_close:
            self.release.wait(STREAM_DEADLINE)


def _watch_create(own: str, watch_id: int = 0) -> rpc_pb2.WatchRequest:
    return rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
        key=own.encode() + b"/", range_end=own.encode() + b"0", prev_kv=True,
        watch_id=watch_id))


def _record(report: Report, path: str, outcome: Outcome, what: str) -> None:
    report.record_call("streams", path, [], outcome, may_block=True)
    if outcome.code in ("INTERNAL", "UNKNOWN"):
        return  # recorded as a status failure
    if outcome.code == "LOST_EVENT":
        report.add(Failure("stream", path, outcome.code, f"{what}: {outcome.details}"))


def _end(stream: Any) -> Outcome:
    """Cancel a response stream the fuzzer is done with; the server's status if it had
    already ended it."""
    code = stream.code() if stream.done() else None
    if code is None:
        stream.cancel()
        return Outcome("CLIENT_CANCELLED", "", 0)
    return Outcome(code.name, stream.details() or "", 0)


def abandoned(target: FuzzTarget, report: Report, scale: int) -> None:
    """Watch streams of both APIs (and keep-alive streams flooding requests) that are opened,
    sent to, never read and dropped with their connection, while the owned prefix takes
    writes the watches must queue."""
    own = target.own
    channels = [target.open_channel()
                for _ in range(4 * scale)]
    held: list[_Held] = []
    calls: list[Any] = []  # referenced until the connections drop, so none is collected early
    try:
        lease = rpc_pb2_grpc.LeaseStub(channels[0]).LeaseGrant(
            rpc_pb2.LeaseGrantRequest(TTL=60), timeout=10).ID
        for i, ch in enumerate(channels):
            watch = _Held([_watch_create(own)])
            held.append(watch)
            calls.append(rpc_pb2_grpc.WatchStub(ch).Watch(iter(watch), timeout=STREAM_DEADLINE))
            calls.append(kv_pb2_grpc.KVStub(ch).Watch(
                kv_pb2.WatchRequest(path=own, recursive=True), timeout=STREAM_DEADLINE))
            if i % 2 == 0:
                flood = _Held([rpc_pb2.LeaseKeepAliveRequest(ID=lease)] * (2000 * scale))
                held.append(flood)
                calls.append(rpc_pb2_grpc.LeaseStub(ch).LeaseKeepAlive(
                    iter(flood), timeout=STREAM_DEADLINE))
        time.sleep(0.5)  # let the watches be created before the writes they must queue
        kv = rpc_pb2_grpc.KVStub(channels[0])
        value = b"v" * (64 << 10)
        for i in range(32 * scale):
            kv.Put(rpc_pb2.PutRequest(key=f"{own}/abandoned/{i % 8}".encode(), value=value),
                   timeout=10)
            report.record_call("streams", "/etcdserverpb.KV/Put", [], Outcome("OK", "", 1),
                               may_block=False)
    except grpc.RpcError as e:
        report.add(Failure("stream", "abandoned streams", e.code().name, e.details() or ""))
    finally:
        for ch in channels:
            ch.close()  # dropped: no cancel, no half-close, nothing read
        for h in held:
            h.release.set()


def concurrent(target: FuzzTarget, report: Report, scale: int) -> None:
    """Many watch streams on one connection, each with several watches, all read: every watch
    the server accepted must deliver the one write made under it."""
    own = target.own
    n = 48 * scale
    with target.open_channel() as ch:
        stub = rpc_pb2_grpc.WatchStub(ch)
        opened = []
        for _ in range(n):
            req = _Held([_watch_create(own), _watch_create(own, 0), _watch_create(own, 2**62)])
            opened.append((req, stub.Watch(iter(req), timeout=STREAM_DEADLINE)))
        accepted: list[tuple[Any, set[int]]] = []
        for req, stream in opened:
            ids = set()
            answers = 0
            try:
                for resp in stream:  # one answer per create: created, or refused (canceled)
                    answers += resp.created or resp.canceled
                    if resp.created and not resp.canceled:
                        ids.add(resp.watch_id)
                    if answers >= len(req.requests):
                        break
            except grpc.RpcError as e:
                _record(report, WATCH, Outcome(e.code().name, e.details() or "", 0),
                        "watch create")
                continue
            accepted.append((stream, ids))
        key = f"{own}/concurrent".encode()
        rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=key, value=b"1"), timeout=10)
        for stream, ids in accepted:
            _record(report, WATCH, _await_event(stream, ids, key), "concurrent watch")
            stream.cancel()
        for req, _ in opened:
            req.release.set()


def _await_event(stream: Any, ids: set[int], key: bytes, *, may_end: bool = False) -> Outcome:
    """Read until every watch in ``ids`` saw a write to ``key``. ``may_end``: the client
    half-closed, so the server may also end the stream (OK) instead of delivering."""
    missing = set(ids)
    try:
        for resp in stream:
            if any(ev.kv.key == key for ev in resp.events):
                missing.discard(resp.watch_id)
            if not missing:
                return Outcome("OK", "", 1)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return Outcome("LOST_EVENT", f"watches {sorted(missing)} never saw {key!r}", 0)
        return Outcome(e.code().name, e.details() or "", 0)
    if may_end:
        return Outcome("OK", "ended after the client half-closed", 0)
    return Outcome("LOST_EVENT", f"stream ended before watches {sorted(missing)} saw {key!r}",
                   0)


def half_closed(target: FuzzTarget, report: Report, scale: int) -> None:
    """Streams whose client says it is done sending: keep-alives must be answered and the
    stream ended; a watch either goes on delivering or ends with a proper status."""
    own = target.own
    with target.open_channel() as ch:
        lease = rpc_pb2_grpc.LeaseStub(ch).LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60),
                                                       timeout=10).ID
        for _ in range(4 * scale):
            reqs = [rpc_pb2.LeaseKeepAliveRequest(ID=lease)] * 3
            stream = rpc_pb2_grpc.LeaseStub(ch).LeaseKeepAlive(iter(reqs), timeout=10)
            _record(report, KEEPALIVE, _drain(stream), "half-closed keep-alive")
            native = coord_pb2_grpc.LeaseStub(ch).KeepAlive(
                iter([coord_pb2.LeaseKeepAliveRequest(id=lease)] * 3), timeout=10)
            _record(report, "/confer.v1.Lease/KeepAlive", _drain(native),
                    "half-closed native keep-alive")
            watch = rpc_pb2_grpc.WatchStub(ch).Watch(iter([_watch_create(own)]), timeout=10)
            key = f"{own}/half-closed".encode()
            created = _first(watch)
            if created is not None:
                rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=key, value=b"1"), timeout=10)
                _record(report, WATCH, _await_event(watch, {created}, key, may_end=True),
                        "half-closed watch")
            watch.cancel()


def _first(stream: Any) -> int | None:
    try:
        for resp in stream:
            if resp.created and not resp.canceled:
                return int(resp.watch_id)
            return None
    except grpc.RpcError:
        return None
    return None


def _drain(stream: Any) -> Outcome:
    n = 0
    try:
        for _ in stream:
            n += 1
    except grpc.RpcError as e:
        code = e.code().name
        return Outcome("LOST_EVENT" if code == "DEADLINE_EXCEEDED" else code,
                       e.details() or "stream not ended after the client half-closed", n)
    return Outcome("OK", "", n)


def many_watches(target: FuzzTarget, report: Report, scale: int) -> None:
    """One stream asking for thousands of watches: created or refused, each answered."""
    own = target.own
    n = 1000 * scale
    with target.open_channel() as ch:
        req = _Held([_watch_create(own)] * n)
        stream = rpc_pb2_grpc.WatchStub(ch).Watch(iter(req), timeout=STREAM_DEADLINE)
        answered = 0
        try:
            for resp in stream:
                if resp.created or resp.canceled:
                    answered += 1
                if answered >= n:
                    break
            outcome = Outcome("OK", "", answered)
        except grpc.RpcError as e:
            outcome = Outcome(e.code().name, e.details() or "", answered)
        finally:
            req.release.set()
        _record(report, WATCH, outcome if outcome.code != "OK" else _end(stream),
                "many watches")
        report.notes.append(f"streams: one stream asked for {n} watches; {answered} answered, "
                            f"status {outcome.code}")


def run_all(target: FuzzTarget, report: Report, scale: int = 1) -> None:
    """Every scenario, with the node's memory before and after in the notes."""
    before = target.rss_bytes() or 0
    for scenario in (abandoned, concurrent, half_closed, many_watches):
        scenario(target, report, scale)
    after = target.rss_bytes() or 0
    report.notes.append(f"streams: node rss {before >> 20} MiB -> {after >> 20} MiB")
