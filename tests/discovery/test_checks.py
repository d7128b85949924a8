"""Health checks and the catalog record, without a cluster: each probe against a real local
server (HTTP, TCP, gRPC), flap damping, and how records are written and read."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from confer import Check, HealthStatus, InvalidArgument, Weights
from confer.catalog import Record, decode, encode, split_address
from confer.client.checks import CheckKind, Damper, Result
from tests.discovery.helpers import (
    StatusServer,
    client_files,
    closed_port,
    grpc_health_server,
    grpc_mutual_tls,
    server_tls,
)

PASSING, WARNING, CRITICAL = HealthStatus.PASSING, HealthStatus.WARNING, HealthStatus.CRITICAL


def test_http_check_2xx_is_passing_429_warning_anything_else_critical(web: StatusServer
                                                                      ) -> None:
    web.codes.update({"/created": 201, "/busy": 429, "/down": 503, "/gone": 404})
    assert Check.http(web.url("/ok")).probe() == Result(PASSING, "HTTP 200 OK")
    assert Check.http(web.url("/created")).probe() == Result(PASSING, "HTTP 201 Created")
    assert Check.http(web.url("/busy")).probe() == Result(WARNING,
                                                          "HTTP 429 Too Many Requests")
    assert Check.http(web.url("/down")).probe() == Result(CRITICAL,
                                                          "HTTP 503 Service Unavailable")
    assert Check.http(web.url("/gone")).probe().status is CRITICAL


def test_http_check_of_nothing_listening_or_a_silent_server_is_critical() -> None:
    refused = Check.http(f"http://127.0.0.1:{closed_port()}/health").probe()
    assert refused.status is CRITICAL and "refused" in refused.output.lower()
    with socket.socket() as silent:  # accepts (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        slow = Check.http(f"http://127.0.0.1:{port}/", timeout=0.2).probe()
    assert slow.status is CRITICAL and "timed out" in slow.output


def test_tcp_check(web: StatusServer) -> None:
    assert Check.tcp(f"127.0.0.1:{web.port}").probe().status is PASSING
    down = Check.tcp(f"127.0.0.1:{closed_port()}").probe()
    assert down.status is CRITICAL and "refused" in down.output.lower()


def test_grpc_check_asks_the_health_service() -> None:
    server, port, servicer = grpc_health_server()
    try:
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        servicer.set("api", health_pb2.HealthCheckResponse.NOT_SERVING)
        address = f"127.0.0.1:{port}"
        assert Check.grpc(address).probe() == Result(PASSING,
                                                      f"gRPC health {address}: SERVING")
        assert Check.grpc(address, "api").probe() == Result(
            CRITICAL, f"gRPC health {address}: NOT_SERVING")
        unknown = Check.grpc(address, "other").probe()
        assert unknown.status is CRITICAL and "NOT_FOUND" in unknown.output
    finally:
        server.stop(None)
    gone = Check.grpc(address, timeout=0.3).probe()
    assert gone.status is CRITICAL and "UNAVAILABLE" in gone.output


@pytest.fixture
def https(certs: Path) -> Iterator[tuple[StatusServer, StatusServer]]:
    """Two HTTPS servers of the certs fixture's CA: one open, one asking for a client
    certificate of that CA."""
    open_, mutual = (StatusServer(server_tls(certs, client_auth=auth)) for auth in (False, True))
    try:
        yield open_, mutual
    finally:
        open_.close()
        mutual.close()


def test_https_check_verifies_the_server_with_the_given_ca(
        https: tuple[StatusServer, StatusServer], certs: Path, stranger: Path) -> None:
    server, _ = https
    ca = str(certs / "ca.pem")
    assert Check.http(server.url("/ok"), cacert=ca).probe() == Result(PASSING, "HTTP 200 OK")
    # The system's CAs (no cacert) and another CA do not know the server's certificate.
    for check in (Check.http(server.url("/ok")),
                  Check.http(server.url("/ok"), cacert=str(stranger / "ca.pem"))):
        result = check.probe()
        assert result.status is CRITICAL and "CERTIFICATE_VERIFY_FAILED" in result.output


def test_https_check_presents_its_client_certificate(
        https: tuple[StatusServer, StatusServer], certs: Path, stranger: Path) -> None:
    _, mutual = https
    ca = str(certs / "ca.pem")
    assert Check.http(mutual.url("/ok"), cacert=ca, **client_files(certs)).probe() == Result(
        PASSING, "HTTP 200 OK")
    assert Check.http(mutual.url("/ok"), cacert=ca).probe().status is CRITICAL
    assert Check.http(mutual.url("/ok"), cacert=ca,
                      **client_files(stranger)).probe().status is CRITICAL
    assert mutual.hits == {"/ok": 1}  # the refused handshakes never reached the handler


def test_grpc_check_over_tls(certs: Path, stranger: Path) -> None:
    server, port, servicer = grpc_health_server(grpc_mutual_tls(certs))
    address = f"127.0.0.1:{port}"
    ca = str(certs / "ca.pem")
    try:
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert Check.grpc(address, tls=True, cacert=ca, timeout=5,
                          **client_files(certs)).probe() == Result(
            PASSING, f"gRPC health {address}: SERVING")
        for wrong in (Check.grpc(address, timeout=2),  # plaintext to a TLS server
                      Check.grpc(address, tls=True, cacert=ca, timeout=2),  # no client cert
                      Check.grpc(address, tls=True, timeout=2, **client_files(certs)),
                      Check.grpc(address, tls=True, cacert=ca, timeout=2,
                                 **client_files(stranger))):
            result = wrong.probe()
            assert result.status is CRITICAL and "UNAVAILABLE" in result.output, wrong
    finally:
        server.stop(None)


def test_check_tls_options_are_validated_when_made(certs: Path, tmp_path: Path) -> None:
    ca, files = str(certs / "ca.pem"), client_files(certs)
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("nothing\n")
    for bad, words in [
            (lambda: Check.http("http://h/", cacert=ca), "https://"),
            (lambda: Check.grpc("h:1", cacert=ca), "need tls"),
            (lambda: Check(CheckKind.TCP, "h:1", tls=True), "gRPC checks"),
            (lambda: Check.http("https://h/", cert=files["cert"]), "both cert and key"),
            (lambda: Check.http("https://h/", cacert=str(tmp_path / "none.pem")),
             "none.pem"),
            (lambda: Check.grpc("h:1", tls=True, cacert=str(not_pem)), "PEM")]:
        with pytest.raises(InvalidArgument, match=words):
            bad()
    assert Check.grpc("h:1", tls=True).uses_tls and not Check.grpc("h:1").uses_tls


def test_checks_are_validated_when_made() -> None:
    for bad in (lambda: Check.http("ftp://x/"), lambda: Check.tcp("no-port"),
                lambda: Check.grpc("h:0"), lambda: Check.tcp("h:1", interval=0),
                lambda: Check.tcp("h:1", timeout=float("nan")),
                lambda: Check.tcp("h:1", threshold=0)):
        with pytest.raises(InvalidArgument):
            bad()
    assert Check.ttl().describe() == "" and not Check.ttl().active
    assert Check.grpc("h:1", "svc").describe() == "grpc h:1/svc"
    assert Check.http("https://h/x").kind is CheckKind.HTTP


def test_the_damper_changes_status_only_after_threshold_consecutive_results() -> None:
    up, down = Result(PASSING, "up"), Result(CRITICAL, "down")
    d = Damper(3, up)
    # Two failures, then a success: the streak is broken, nothing changes.
    assert [d.observe(r).status for r in (down, down, up)] == [PASSING] * 3
    assert [d.observe(r).status for r in (down, down, down)] == [PASSING, PASSING, CRITICAL]
    assert d.current == down
    # A warning streak is not a critical streak: each status needs its own run.
    warn = Result(WARNING, "busy")
    assert [d.observe(r).status for r in (warn, warn, up, up, up)] == [CRITICAL] * 4 + [
        PASSING]
    # Threshold 1: every result counts at once; the output follows the latest result.
    d1 = Damper(1, up)
    assert d1.observe(down) == down and d1.observe(Result(CRITICAL, "other")).output == "other"


def test_records_round_trip_and_old_or_foreign_values_are_read_leniently() -> None:
    record = Record("10.0.0.7:8080", ("v2",), {"zone": "eu"}, Weights(10, 1), WARNING,
                    "HTTP 429", "http http://10.0.0.7:8080/h")
    assert decode(encode(record)) == record
    plain = Record("10.0.0.1:80", metadata={"a": 1})
    assert encode(plain) == b'{"address":"10.0.0.1:80","metadata":{"a":1}}'  # as before
    assert decode(b"10.0.0.9:9") == Record("10.0.0.9:9")  # `confer put` of an address
    odd = decode(b'{"address":"h:1","status":"unknown","tags":"x","weights":{"passing":-1}}')
    assert odd.status is CRITICAL and odd.tags == () and odd.weights == Weights()
    with pytest.raises(ValueError):
        encode(Record("h:1", metadata={"x": object()}))


@pytest.mark.parametrize(("address", "expected"), [
    ("10.0.0.1:80", ("10.0.0.1", 80)), ("[::1]:53", ("::1", 53)), ("host", ("host", 0)),
    ("::1", ("::1", 0)), ("h:99999", ("h:99999", 0)), ("db.internal:5432", ("db.internal", 5432)),
])
def test_split_address(address: str, expected: tuple[str, int]) -> None:
    assert split_address(address) == expected
