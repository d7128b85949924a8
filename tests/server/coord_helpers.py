"""Raw-gRPC helpers shared by the lease, lock and election process tests."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

import grpc

from confer.v1 import coord_pb2, coord_pb2_grpc, kv_pb2, kv_pb2_grpc
from testing import ProcessCluster


class Client:
    """One connection to one member, with every stub a coordination test needs."""

    def __init__(self, addr: str) -> None:
        # A private connection, as a separate client process would have.
        self.channel = grpc.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool",
                                                             1)])
        self.kv = kv_pb2_grpc.KVStub(self.channel)
        self.lease = coord_pb2_grpc.LeaseStub(self.channel)
        self.lock = coord_pb2_grpc.LockStub(self.channel)
        self.election = coord_pb2_grpc.ElectionStub(self.channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.channel.close()

    def grant(self, ttl: int, lease: int = 0) -> int:
        return self.lease.Grant(coord_pb2.LeaseGrantRequest(ttl=ttl, id=lease), timeout=10).id

    def put(self, path: str, value: bytes = b"v", lease: int = 0) -> int:
        resp = self.kv.Put(kv_pb2.PutRequest(path=path, value=value, lease=lease), timeout=10)
        return resp.header.revision

    def paths(self, prefix: str) -> list[str]:
        resp = self.kv.Range(kv_pb2.RangeRequest(path=prefix, recursive=True), timeout=10)
        return [kv.path for kv in resp.kvs]

    def get(self, path: str) -> kv_pb2.KeyValue | None:
        resp = self.kv.Range(kv_pb2.RangeRequest(path=path), timeout=10)
        return resp.kvs[0] if resp.kvs else None


def follower_addr(c: ProcessCluster) -> str:
    leader = c.leader()
    return next(n.client_addr for i, n in c.nodes.items() if i != leader)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except grpc.RpcError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    """Run ``call``, which must fail; return its error."""
    try:
        call()
    except grpc.RpcError as e:
        return e
    raise AssertionError("the call succeeded")


class KeepAlive(threading.Thread):
    """Renew one lease every ``interval`` seconds over a KeepAlive stream, moving to another
    member when the stream fails. Records each answered renewal as (sent, received, ttl)."""

    def __init__(self, endpoints: Callable[[], list[str]], lease: int, interval: float = 0.25,
                 seconds: float = 60.0) -> None:
        super().__init__(daemon=True)
        self.endpoints = endpoints
        self.lease = lease
        self.interval = interval
        self.seconds = seconds
        self.renewals: list[tuple[float, float, int]] = []
        self.failures = 0
        self._halt = threading.Event()

    def _requests(self, sent: deque[float]) -> Iterator[coord_pb2.LeaseKeepAliveRequest]:
        while not self._halt.is_set():
            sent.append(time.monotonic())
            yield coord_pb2.LeaseKeepAliveRequest(id=self.lease)
            self._halt.wait(self.interval)

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        while not self._halt.is_set() and time.monotonic() < deadline:
            for addr in self.endpoints():
                if self._halt.is_set():
                    return
                sent: deque[float] = deque()  # answers come in order, one per request
                try:
                    with grpc.insecure_channel(addr) as ch:
                        stream = coord_pb2_grpc.LeaseStub(ch).KeepAlive(
                            self._requests(sent), timeout=max(0.1, deadline - time.monotonic()))
                        for resp in stream:
                            self.renewals.append((sent.popleft(), time.monotonic(), resp.ttl))
                except grpc.RpcError:
                    self.failures += 1
            time.sleep(0.05)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=15)

    def last_renewal_sent(self) -> float:
        """When the last answered renewal was sent: the lease must live TTL from then."""
        return self.renewals[-1][0]


class Watch(threading.Thread):
    """Collect the events of a recursive KV watch in the background."""

    def __init__(self, addr: str, path: str, start_revision: int = 0) -> None:
        super().__init__(daemon=True)
        self.channel = grpc.insecure_channel(addr)
        self.call = kv_pb2_grpc.KVStub(self.channel).Watch(
            kv_pb2.WatchRequest(path=path, recursive=True, start_revision=start_revision),
            timeout=60)
        self.created = threading.Event()
        self.events: list[tuple[float, kv_pb2.Event]] = []  # (when received, event)

    def run(self) -> None:
        try:
            for resp in self.call:
                if resp.created:
                    self.created.set()
                now = time.monotonic()
                self.events.extend((now, e) for e in resp.events)
        except grpc.RpcError:
            pass

    def close(self) -> None:
        self.call.cancel()
        self.join(timeout=10)
        self.channel.close()


class Background(threading.Thread):
    """Run one blocking call in a thread; keep its result or error."""

    def __init__(self, call: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.call = call
        self.result: Any = None
        self.error: grpc.RpcError | None = None
        self.finished_at = 0.0
        self.start()

    def run(self) -> None:
        try:
            self.result = self.call()
        except grpc.RpcError as e:
            self.error = e
        self.finished_at = time.monotonic()

    def done(self) -> bool:
        return not self.is_alive()

    def value(self, timeout: float = 20) -> Any:
        self.join(timeout)
        assert not self.is_alive(), "the call is still running"
        if self.error is not None:
            raise self.error
        return self.result
