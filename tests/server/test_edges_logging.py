"""Bad requests cost one status and at most one log line a minute (issue 12, finding 13):
undecodable request bodies are INVALID_ARGUMENT with one WARNING per (method, client host)
per minute and no traceback; an unexpected exception still logs its traceback, once."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.etcdpb.v3electionpb import v3election_pb2, v3election_pb2_grpc
from confer.server.log_limit import LogLimiter
from confer.server.metrics import CallStats
from confer.server.rpc import client_host, handlers, register
from confer.v1 import coord_pb2, coord_pb2_grpc, kv_pb2, kv_pb2_grpc
from testing import ProcessCluster

GARBAGE = b"\xff\xff\xff\xff"
PER_METHOD = 100


def identity(b: bytes) -> bytes:
    return b


def test_undecodable_requests_are_invalid_argument_and_logged_once_per_minute(
        tmp_path: Path) -> None:
    with ProcessCluster(1, tmp_path) as c:
        c.leader()
        node = c.nodes[1]
        with grpc.insecure_channel(node.client_addr) as ch:
            calls = {
                "Put": ch.unary_unary("/confer.v1.KV/Put", request_serializer=identity,
                                      response_deserializer=identity),
                "Range": ch.unary_unary("/etcdserverpb.KV/Range",
                                        request_serializer=identity,
                                        response_deserializer=identity),
                "Watch": ch.unary_stream("/confer.v1.KV/Watch", request_serializer=identity,
                                         response_deserializer=identity),
                "LeaseKeepAlive": ch.stream_stream("/etcdserverpb.Lease/LeaseKeepAlive",
                                                   request_serializer=identity,
                                                   response_deserializer=identity),
                "etcd Watch": ch.stream_stream("/etcdserverpb.Watch/Watch",
                                               request_serializer=identity,
                                               response_deserializer=identity),
            }
            for name, call in calls.items():
                for _ in range(PER_METHOD):
                    with pytest.raises(grpc.RpcError) as info:
                        if name in ("LeaseKeepAlive", "etcd Watch"):
                            list(call(iter([GARBAGE]), timeout=10))
                        elif name == "Watch":
                            list(call(GARBAGE, timeout=10))
                        else:
                            call(GARBAGE, timeout=10)
                    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
                    assert "does not decode" in (info.value.details() or "")
            # The node still answers valid requests.
            kv_pb2_grpc.KVStub(ch).Put(kv_pb2.PutRequest(path="/ok", value=b"1"), timeout=10)
        log = node.log_text()
        assert "Traceback" not in log
        lines = [line for line in log.splitlines() if "does not decode" in line]
        assert len(lines) == len(calls), lines
        assert all(" WARNING " in line and "from 127.0.0.1:" in line for line in lines)


def test_log_limiter_admits_one_line_per_key_per_interval_and_counts_the_rest() -> None:
    now = [0.0]
    limiter = LogLimiter(interval=60, max_keys=2, clock=lambda: now[0])
    assert limiter.admit("a") == 0
    assert limiter.admit("a") is None
    assert limiter.admit("a") is None
    assert limiter.admit("b") == 0
    # Bounded: with max_keys keys live, new keys share one line per interval.
    assert limiter.admit("c") == 0
    assert limiter.admit("d") is None
    now[0] = 61
    assert limiter.admit("a") == 2  # the two held back are reported
    assert limiter.admit("a") is None
    # Keys whose interval is over make room again.
    assert limiter.admit("e") == 0


def test_client_host_drops_the_port() -> None:
    assert client_host("ipv4:127.0.0.1:5555") == "127.0.0.1"
    assert client_host("ipv6:[::1]:5555") == "[::1]"
    assert client_host("unix:/tmp/s") == "unix:/tmp/s"


class FakeContext:
    def __init__(self) -> None:
        self.status: tuple[Any, str] | None = None

    def time_remaining(self) -> float:
        return 5.0

    def peer(self) -> str:
        return "ipv4:10.0.0.1:4000"

    def cancelled(self) -> bool:
        return False

    def set_trailing_metadata(self, md: Any) -> None:
        pass

    def invocation_metadata(self) -> tuple[Any, ...]:
        return ()

    async def abort(self, code: Any, message: str) -> None:
        self.status = (code, message)
        raise RuntimeError("aborted")


def test_an_unexpected_exception_logs_its_traceback_once_a_minute(
        caplog: pytest.LogCaptureFixture) -> None:
    unary, _ = handlers("test", lambda e: None, lambda e: f"internal: {e}")

    class Servicer:
        @unary
        async def Boom(self, request: Any, ctx: Any) -> None:
            raise KeyError("bug")

    async def run() -> list[Any]:
        statuses = []
        for _ in range(5):
            context = FakeContext()
            with pytest.raises(RuntimeError):
                await Servicer().Boom(object(), context)
            statuses.append(context.status)
        return statuses

    with caplog.at_level(logging.ERROR, logger="confer.api"):
        statuses = asyncio.run(run())
    assert all(s == (grpc.StatusCode.INTERNAL, "internal: 'bug'") for s in statuses)
    failures = [r for r in caplog.records if "Boom failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None


def test_register_passes_on_the_handlers_of_code_without_registered_methods() -> None:
    """Code generated by an older grpcio-tools only adds generic handlers: they are kept."""
    added: list[object] = []

    class Server:
        def add_generic_rpc_handlers(self, handlers: Any) -> None:
            added.extend(handlers)

    def add_old_style(servicer: object, server: Any) -> None:
        server.add_generic_rpc_handlers(("generic handler",))

    layer = SimpleNamespace(calls=CallStats(), crl=None)  # all register() reads of it
    register(cast(Any, layer), Server(), [(add_old_style, lambda layer: object())])
    assert added == ["generic handler"]


def test_the_peer_and_health_services_refuse_undecodable_requests_quietly(
        tmp_path: Path) -> None:
    """Raft on the peer port and health on both ports are not request-layer adapters, yet
    a body that does not decode is INVALID_ARGUMENT there too, without a traceback."""
    with ProcessCluster(1, tmp_path) as c:
        c.leader()
        node = c.nodes[1]
        for addr in (node.client_addr, node.peer_addr):
            with grpc.insecure_channel(addr) as ch:
                _refuses_garbage(ch.unary_unary, "/grpc.health.v1.Health/Check")
                _refuses_garbage(ch.unary_stream, "/grpc.health.v1.Health/Watch")
                if addr == node.peer_addr:
                    _refuses_garbage(ch.stream_unary, "/confer.v1.Peer/Raft")
                health = health_pb2_grpc.HealthStub(ch)
                serving = health_pb2.HealthCheckResponse(
                    status=health_pb2.HealthCheckResponse.SERVING)
                assert health.Check(health_pb2.HealthCheckRequest(), timeout=10) == serving
                # List: declared by the proto; grpcio's servicer logs a traceback for it.
                listed = ch.unary_unary("/grpc.health.v1.Health/List",
                                        request_serializer=identity,
                                        response_deserializer=identity)(b"", timeout=10)
                expected = health_pb2.HealthListResponse(  # type: ignore[attr-defined]
                    statuses={"": serving})
                assert listed == expected.SerializeToString()
        with grpc.insecure_channel(node.client_addr) as ch:
            kv_pb2_grpc.KVStub(ch).Put(kv_pb2.PutRequest(path="/ok", value=b"1"), timeout=10)
        log = node.log_text()
        assert "Traceback" not in log and " ERROR " not in log, log


def _refuses_garbage(kind: Any, method: str) -> None:
    """A call of ``method`` (``kind``: a channel's unary_unary, unary_stream or
    stream_unary) with a body that does not decode is INVALID_ARGUMENT."""
    call = kind(method, request_serializer=identity, response_deserializer=identity)
    with pytest.raises(grpc.RpcError) as info:
        if kind.__name__ == "unary_stream":
            list(call(GARBAGE, timeout=10))
        elif kind.__name__ == "stream_unary":
            call(iter([GARBAGE]), timeout=10)
        else:
            call(GARBAGE, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
    assert "does not decode" in (info.value.details() or ""), method


@pytest.mark.serial  # 0.2 s deadlines: under the parallel run's load a call may miss them
def test_a_call_that_waits_out_its_callers_deadline_ends_quietly(tmp_path: Path) -> None:
    """A Campaign (or Lock) waits until the caller's deadline, when gRPC ends the call
    itself, and a keep-alive stream answers until then: the server must not then try to
    send a status or a message (which fails in gRPC's core and was logged as ERROR
    ExecuteBatchError with a traceback, about one call in three)."""
    with ProcessCluster(1, tmp_path) as c:
        c.leader()
        node = c.nodes[1]
        with grpc.insecure_channel(node.client_addr) as ch:
            leases = rpc_pb2_grpc.LeaseStub(ch)
            election = v3election_pb2_grpc.ElectionStub(ch)
            holder = leases.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), timeout=10).ID
            election.Campaign(v3election_pb2.CampaignRequest(name=b"e", lease=holder,
                                                             value=b"a"), timeout=10)
            waiter = leases.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), timeout=10).ID
            for _ in range(30):
                with pytest.raises(grpc.RpcError) as info:
                    election.Campaign(v3election_pb2.CampaignRequest(
                        name=b"e", lease=waiter, value=b"b"), timeout=0.2)
                assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # A stream answering as its deadline comes: keep-alives sent without pause.
            lease = coord_pb2_grpc.LeaseStub(ch)
            lease_id = lease.Grant(coord_pb2.LeaseGrantRequest(ttl=60), timeout=10).id
            for held_open in [False, True] * 15:
                with pytest.raises(grpc.RpcError) as info:
                    for _answer in lease.KeepAlive(
                            keep_alives(lease_id, held_open), timeout=0.2):
                        pass
                assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            kv_pb2_grpc.KVStub(ch).Put(kv_pb2.PutRequest(path="/ok", value=b"1"), timeout=10)
        log = node.log_text()
        assert "ExecuteBatchError" not in log and "Traceback" not in log, log[-3000:]


def keep_alives(lease_id: int, held_open: bool) -> Iterator[coord_pb2.LeaseKeepAliveRequest]:
    """Keep-alives as fast as they go, or two and then the request stream held open (until
    the call's deadline cancels it)."""
    if not held_open:
        yield from itertools.repeat(coord_pb2.LeaseKeepAliveRequest(id=lease_id), 5000)
        return
    yield from itertools.repeat(coord_pb2.LeaseKeepAliveRequest(id=lease_id), 2)
    time.sleep(0.4)
