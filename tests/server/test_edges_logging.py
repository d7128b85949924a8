"""Bad requests cost one status and at most one log line a minute (issue 12, finding 13):
undecodable request bodies are INVALID_ARGUMENT with one WARNING per (method, client host)
per minute and no traceback; an unexpected exception still logs its traceback, once."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, cast

import grpc
import pytest

from confer.server.rpc import LogLimiter, client_host, handlers, register
from confer.v1 import kv_pb2, kv_pb2_grpc
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

    def set_trailing_metadata(self, md: Any) -> None:
        pass

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

    register(cast(Any, None), Server(), [(add_old_style, lambda layer: object())])
    assert added == ["generic handler"]
