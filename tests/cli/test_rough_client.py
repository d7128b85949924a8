"""Rough edges of the Python client met by a new user: ``confer.Client()`` with no
arguments, ``http(s)://`` endpoints, and failing fast when nothing listens anywhere."""

from __future__ import annotations

import asyncio

import pytest

import confer
import confer.aio
from confer.client import InvalidArgument, Unavailable, calls, plans
from confer.client.endpoints import Endpoint, parse_endpoint, parse_endpoints
from confer.client.plans import Unary
from confer.client.policy import Failure, Options
from confer.client.transport import tls_credentials
from confer.v1 import kv_pb2
from tests.client.fakes import FakeIO, header

REFUSED = Failure("UNAVAILABLE", "failed to connect to all addresses; last error: UNKNOWN: "
                  "ipv4:127.0.0.1:1: Failed to connect to remote host: Connection refused")


def test_a_client_without_endpoints_uses_confer_endpoints_or_localhost(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONFER_ENDPOINTS", raising=False)
    with confer.Client() as c:
        assert c._core.options.endpoints == ("127.0.0.1:7379",)
    monkeypatch.setenv("CONFER_ENDPOINTS", "127.0.0.1:7381, http://127.0.0.1:7383")
    with confer.Client() as c:
        assert c._core.options.endpoints == ("127.0.0.1:7381", "127.0.0.1:7383")

    async def main() -> tuple[str, ...]:
        async with confer.aio.Client() as c:
            return c._core.options.endpoints

    assert asyncio.run(main()) == ("127.0.0.1:7381", "127.0.0.1:7383")


def test_endpoints_may_be_urls_whose_scheme_is_kept_apart() -> None:
    assert parse_endpoint("http://127.0.0.1:7379/") == Endpoint("127.0.0.1:7379", "http")
    assert parse_endpoint("HTTPS://node-1.example:2379").tls
    assert parse_endpoint("[::1]:7379") == Endpoint("[::1]:7379", "")
    options = Options("https://a:1,https://b:2")  # type: ignore[arg-type]  # split by Options
    assert options.endpoints == ("a:1", "b:2")
    assert tls_credentials(("https://a:1", "https://b:2"), None, None, None)[1] is not None
    assert tls_credentials(("http://a:1", "b:2"), None, None, None)[1] is None


@pytest.mark.parametrize("bad", ["ftp://a:1", "http://a", "http://a:0", "https://a:70000",
                                 "http://a:1/v3", "http://a: 1", "http://:1", " , "])
def test_a_malformed_endpoint_is_refused_with_the_rule(bad: str) -> None:
    with pytest.raises(InvalidArgument, match=r"HOST:PORT|at least one endpoint"):
        parse_endpoints(bad)


def test_https_and_plaintext_endpoints_do_not_mix() -> None:
    with pytest.raises(InvalidArgument, match="mix https"):
        parse_endpoints(["https://a:1", "b:2"])


def test_fail_fast_gives_up_once_every_endpoint_refused_the_connection() -> None:
    io = FakeIO(lambda a: REFUSED, fail_fast=True, timeout=60)
    start = io.clock.now
    with pytest.raises(Unavailable) as e:
        io.run(io_plan(io))
    assert [a.endpoint for a in io.calls] == ["a:1", "b:2", "c:3"]  # each tried once
    assert str(e.value) == "Get /k: could not connect to a:1, b:2, c:3 (connection refused)"
    assert io.clock.now - start < 1  # three refusals and two short backoffs, no more


def test_without_fail_fast_a_refused_connection_is_retried_until_the_deadline() -> None:
    io = FakeIO(lambda a: REFUSED, timeout=5)
    with pytest.raises(Unavailable, match="gave up after"):
        io.run(io_plan(io))
    assert len(io.calls) > 3


def test_fail_fast_still_fails_over_past_a_refusing_endpoint() -> None:
    def respond(a: Unary) -> object:
        if a.endpoint != "c:3":
            return REFUSED
        return kv_pb2.RangeResponse(header=header(revision=3))

    io = FakeIO(respond, fail_fast=True)
    assert io.run(io_plan(io)) is None  # not found, answered by c:3
    assert [a.endpoint for a in io.calls] == ["a:1", "b:2", "c:3"]


def io_plan(io: FakeIO) -> object:
    return plans.unary(io.core, calls.get("/k"))
