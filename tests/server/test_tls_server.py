"""A real (in-process) member with mTLS on its client port: who gets in, what the refused
are told, and certificates rotated without a restart."""

from __future__ import annotations

import asyncio
import datetime
import os
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import confer.aio
from confer.cli.tls import issue, load_ca
from confer.client import Unavailable
from confer.client.transport import tls_problem
from confer.server.app import ConferServer
from confer.server.config import ServerConfig
from confer.server.tls import PeerChannelCredentials, TlsFiles


@asynccontextmanager
async def serving(tmp_path: Path, cert: Path, key: Path, ca: Path) -> AsyncIterator[ConferServer]:
    cfg = ServerConfig(data_dir=tmp_path / "node", listen_client="127.0.0.1:0",
                       listen_peer="127.0.0.1:0", tick_ms=20, cert_file=str(cert),
                       key_file=str(key), trusted_ca_file=str(ca), client_cert_auth=True)
    srv = ConferServer(cfg)
    await srv.start()
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while not srv.consensus.is_leader():
            assert asyncio.get_running_loop().time() < deadline, "no leader in 10 s"
            await asyncio.sleep(0.02)
        yield srv
    finally:
        await srv.stop(grace=0)


def client(srv: ConferServer, d: Path, timeout: float = 5, **kw: object) -> confer.aio.Client:
    files = {"cacert": str(d / "ca.pem"), "cert": str(d / "client.pem"),
             "key": str(d / "client-key.pem"), **kw}
    return confer.aio.Client([f"127.0.0.1:{srv.client_port}"], timeout=timeout,
                             **files)  # type: ignore[arg-type]


def presented_cn(port: int, certs: Path) -> str:
    """The common name of the certificate the member presents to a new connection."""
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    ctx.load_cert_chain(str(certs / "client.pem"), str(certs / "client-key.pem"))
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        subject = dict(x[0] for x in tls.getpeercert()["subject"])  # type: ignore[index]
        return str(subject["commonName"])


def test_mtls_client_port_admits_trusted_clients_only(
        tmp_path: Path, certs: Path, stranger: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("CONFER_CACERT", "CONFER_CERT", "CONFER_KEY"):
        monkeypatch.delenv(var, raising=False)
    asyncio.run(_mtls_client_port(tmp_path, certs, stranger))


async def _mtls_client_port(tmp_path: Path, certs: Path, stranger: Path) -> None:
    async with serving(tmp_path, certs / "server.pem", certs / "server-key.pem",
                       certs / "ca.pem") as srv:
        endpoint = f"127.0.0.1:{srv.client_port}"
        async with client(srv, certs) as c:
            await c.put("/tls/a", b"1")
            assert (await c.get("/tls/a")).value == b"1"  # type: ignore[union-attr]
        # Health follows the port: over TLS, with a client certificate.
        creds = grpc.ssl_channel_credentials(*((certs / f).read_bytes() for f in
                                               ("ca.pem", "client-key.pem", "client.pem")))
        async with grpc.aio.secure_channel(endpoint, creds) as ch:
            health = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        now = datetime.datetime.now(datetime.UTC)
        issue(load_ca(certs), "old", not_before=now - datetime.timedelta(days=2),
              not_after=now - datetime.timedelta(days=1)).write(tmp_path / "old.pem",
                                                                 tmp_path / "old-key.pem")
        refused = [
            ({"cert": str(stranger / "client.pem"), "key": str(stranger / "client-key.pem")},
             "is not signed by a CA it trusts"),
            ({"cert": str(tmp_path / "old.pem"), "key": str(tmp_path / "old-key.pem")},
             "old.pem expired on"),
            ({"cert": None, "key": None}, "it requires a client certificate"),
            ({"cacert": str(stranger / "ca.pem")}, "certificate is not trusted"),
        ]
        for files, why in refused:
            async with client(srv, certs, timeout=0.5, **files) as c:
                with pytest.raises(Unavailable):
                    await c.put("/tls/a", b"2")
            problem = await asyncio.to_thread(
                tls_problem, endpoint, **{"cacert": str(certs / "ca.pem"),
                                          "cert": str(certs / "client.pem"),
                                          "key": str(certs / "client-key.pem"), **files})
            assert problem is not None and why in problem, (files, problem)
        async with confer.aio.Client([endpoint], timeout=0.5) as plain:
            with pytest.raises(Unavailable):
                await plain.put("/tls/a", b"3")
        problem = await asyncio.to_thread(tls_problem, endpoint)
        assert problem is not None and "serves TLS: use https://" in problem
        async with client(srv, certs) as c:
            assert (await c.get("/tls/a")).value == b"1"  # type: ignore[union-attr]


def test_certificates_rotate_without_a_restart(tmp_path: Path, certs: Path) -> None:
    asyncio.run(_rotation(tmp_path, certs))


async def _rotation(tmp_path: Path, certs: Path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    cert, key = live / "server.pem", live / "server-key.pem"
    ca = load_ca(certs)
    issue(ca, "first").write(cert, key)
    async with serving(tmp_path, cert, key, certs / "ca.pem") as srv:
        async with client(srv, certs) as c:
            await c.put("/rot/a", b"1")
            assert await asyncio.to_thread(presented_cn, srv.client_port, certs) == "first"
            issue(ca, "second").write(cert, key)
            assert await asyncio.to_thread(presented_cn, srv.client_port, certs) == "second"
            # A half-done rotation (a new certificate, the old key) is not taken: the member
            # keeps the last good pair.
            issue(ca, "third").write(cert, tmp_path / "third-key.pem")
            assert await asyncio.to_thread(presented_cn, srv.client_port, certs) == "second"
            await c.put("/rot/a", b"2")  # the connection made before goes on
        async with client(srv, certs) as fresh:
            assert (await fresh.get("/rot/a")).value == b"2"  # type: ignore[union-attr]


def test_peer_dial_credentials_follow_the_files(tmp_path: Path, certs: Path) -> None:
    cert, key = tmp_path / "peer.pem", tmp_path / "peer-key.pem"
    ca = load_ca(certs)
    issue(ca, "one").write(cert, key)
    creds = PeerChannelCredentials(TlsFiles(str(cert), str(key), str(certs / "ca.pem")))
    first = creds.get()
    assert creds.get() is first
    issue(ca, "two").write(cert, key)
    os.utime(cert, ns=(1, 1))  # a change even within the file system's time resolution
    assert creds.get() is not first
