"""The HTTP listener over TLS (``--listen-metrics https://HOST:PORT``): it serves the client
port's certificate, with the client port's client-certificate rule, as etcd serves
``--listen-metrics-urls https://...``; a rotated certificate serves the next connection."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509

from confer.cli.tls import init_dir, issue, load_ca
from confer.server.app import ConferServer
from confer.server.config import ConfigError, ServerConfig


def settings(tmp_path: Path, certs: Path, listen_metrics: str) -> ServerConfig:
    return ServerConfig(data_dir=tmp_path / "node", listen_client="127.0.0.1:0",
                        listen_peer="127.0.0.1:0", listen_metrics=listen_metrics, tick_ms=20,
                        cert_file=str(certs / "server.pem"),
                        key_file=str(certs / "server-key.pem"),
                        trusted_ca_file=str(certs / "ca.pem"), client_cert_auth=True)


def client_context(certs: Path, *, with_certificate: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    if with_certificate:
        ctx.load_cert_chain(str(certs / "client.pem"), str(certs / "client-key.pem"))
    return ctx


def fetch(url: str, ctx: ssl.SSLContext | None) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10, context=ctx) as resp:
        return resp.status, resp.read().decode()


def served_serial(port: int, certs: Path) -> int:
    """The serial number of the certificate the listener presents to a new connection."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10,
                                       context=client_context(certs))
    try:
        conn.request("GET", "/livez")
        assert conn.getresponse().status == 200
        assert conn.sock is not None
        der = conn.sock.getpeercert(binary_form=True)
    finally:
        conn.close()
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_the_listener_serves_https_with_the_client_ports_certificate(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    init_dir(certs)
    asyncio.run(_https(tmp_path, certs))


async def _https(tmp_path: Path, certs: Path) -> None:
    cfg = settings(tmp_path, certs, "https://127.0.0.1:0")
    srv = ConferServer(cfg)
    await srv.start()
    try:
        assert srv.http is not None and srv.http.scheme == "https"
        base = f"https://127.0.0.1:{srv.http.port}"
        status, body = await asyncio.to_thread(fetch, f"{base}/metrics", client_context(certs))
        assert status == 200 and "etcd_server_has_leader" in body
        status, _ = await asyncio.to_thread(fetch, f"{base}/livez", client_context(certs))
        assert status == 200
        # The client port requires client certificates: so does the listener.
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            await asyncio.to_thread(fetch, f"{base}/metrics",
                                    client_context(certs, with_certificate=False))
        # Plaintext HTTP gets no answer from a TLS port.
        with pytest.raises((urllib.error.URLError, http.client.HTTPException,
                            ConnectionError)):
            await asyncio.to_thread(fetch, f"http://127.0.0.1:{srv.http.port}/metrics", None)
        # Rotation: new files in place serve the next connection, no restart.
        before = await asyncio.to_thread(served_serial, srv.http.port, certs)
        fresh = issue(load_ca(certs), "confer-server")
        (certs / "new-key.pem").write_bytes(fresh.key_pem)
        (certs / "new.pem").write_bytes(fresh.cert_pem)
        (certs / "new-key.pem").replace(certs / "server-key.pem")
        (certs / "new.pem").replace(certs / "server.pem")
        after = await asyncio.to_thread(served_serial, srv.http.port, certs)
        assert before != after == fresh.cert.serial_number
    finally:
        await srv.stop(grace=0)


def test_plain_http_urls_and_bad_schemes(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    init_dir(certs)
    plain = settings(tmp_path, certs, "http://127.0.0.1:9100")
    plain.validate()
    assert (plain.metrics_addr, plain.metrics_tls) == ("127.0.0.1:9100", None)
    secure = settings(tmp_path, certs, "https://127.0.0.1:9100")
    secure.validate()
    assert secure.metrics_addr == "127.0.0.1:9100" and secure.metrics_tls == secure.client_tls
    with pytest.raises(ConfigError, match="give cert-file and key-file"):
        ServerConfig(listen_metrics="https://127.0.0.1:9100").validate()
    with pytest.raises(ConfigError, match="expected HOST:PORT, http://HOST:PORT or https://"):
        settings(tmp_path, certs, "ftp://127.0.0.1:9100").validate()


def test_the_gateway_and_dashboard_over_https_take_the_certificates_user(
        tmp_path: Path) -> None:
    """With TLS on the client port, the gateway and the dashboard are served only by an HTTPS
    listener (same files, same client-certificate rule), and there, as on the client port, a
    request without a token is the user its certificate's common name names."""
    certs = tmp_path / "certs"
    init_dir(certs, client_cn="root")
    issue(load_ca(certs), "mallory").write(certs / "mallory.pem", certs / "mallory-key.pem")
    asyncio.run(_gateway_over_https(tmp_path, certs))


def post(url: str, body: dict[str, object], ctx: ssl.SSLContext) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


async def _gateway_over_https(tmp_path: Path, certs: Path) -> None:
    srv = ConferServer(settings(tmp_path, certs, "https://127.0.0.1:0"))
    await srv.start()
    try:
        assert srv.http is not None
        base = f"https://127.0.0.1:{srv.http.port}"
        root = client_context(certs)
        mallory = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        mallory.load_cert_chain(str(certs / "mallory.pem"), str(certs / "mallory-key.pem"))
        key = base64.b64encode(b"/app/x").decode()
        for path, body in (("/v3/auth/user/add", {"name": "root", "password": "pw"}),
                           ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
                           ("/v3/auth/enable", {}),
                           ("/v3/kv/put", {"key": key, "value": base64.b64encode(b"1").decode()})):
            status, answer = await asyncio.to_thread(post, base + path, body, root)
            assert status == 200, (path, answer)
        # No token, auth on: the certificate's common name (root) is the user.
        status, answer = await asyncio.to_thread(post, base + "/v3/kv/range", {"key": key}, root)
        assert status == 200 and base64.b64decode(answer["kvs"][0]["value"]) == b"1"
        # A valid certificate naming no user is refused, and changes nothing.
        status, answer = await asyncio.to_thread(
            post, base + "/v3/kv/put", {"key": key, "value": "Mg=="}, mallory)
        assert status == 403, answer
        status, page = await asyncio.to_thread(fetch, base + "/ui/api/cluster", root)
        assert status == 200 and json.loads(page)["members"][0]["healthy"] is True
        status, answer = await asyncio.to_thread(post, base + "/v3/kv/range", {"key": key}, root)
        assert base64.b64decode(answer["kvs"][0]["value"]) == b"1"
    finally:
        await srv.stop(grace=0)
