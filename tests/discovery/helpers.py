"""What the discovery tests share: an HTTP(S) server whose health endpoints the test sets, a
gRPC health server, the TLS settings of servers and clients made of the ``certs`` fixture's
files, and a port where nothing listens."""

from __future__ import annotations

import http.server
import socket
import ssl
import threading
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2_grpc


class StatusServer:
    """An HTTP server on 127.0.0.1 whose answer to each path is set by the test
    (``codes[path]``, 200 by default; or alternating, for the paths in ``flapping``), counting
    the requests to each (``hits``). With ``tls``, it serves HTTPS with that context."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.codes: dict[str, int] = {}
        self.flapping: set[str] = set()
        """Paths that answer 503 and 200 in turn, one each request."""
        self.hits: dict[str, int] = {}
        codes, flapping, hits = self.codes, self.flapping, self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits[self.path] = hits.get(self.path, 0) + 1
                code = codes.get(self.path, 200)
                if self.path in flapping:
                    code = 503 if hits[self.path] % 2 else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])




def grpc_health_server(credentials: grpc.ServerCredentials | None = None
                       ) -> tuple[grpc.Server, int, health.HealthServicer]:
    """A started ``grpc.health.v1`` server on 127.0.0.1 (over TLS with ``credentials``): the
    server (the test stops it), its port, and the servicer whose statuses the test sets."""
    servicer = health.HealthServicer()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    addr = "127.0.0.1:0"
    port = (server.add_insecure_port(addr) if credentials is None
            else server.add_secure_port(addr, credentials))
    server.start()
    return server, port, servicer


def server_tls(certs: Path, *, client_auth: bool) -> ssl.SSLContext:
    """An HTTPS server's context: the ``certs`` fixture's server certificate (valid for
    127.0.0.1), requiring a client certificate of its CA if ``client_auth``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs / "server.pem", certs / "server-key.pem")
    if client_auth:
        context.load_verify_locations(certs / "ca.pem")
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def grpc_mutual_tls(certs: Path) -> grpc.ServerCredentials:
    """A gRPC server's TLS: the ``certs`` fixture's server certificate, requiring a client
    certificate of its CA."""
    return grpc.ssl_server_credentials(
        [((certs / "server-key.pem").read_bytes(), (certs / "server.pem").read_bytes())],
        root_certificates=(certs / "ca.pem").read_bytes(), require_client_auth=True)


def client_files(certs: Path) -> dict[str, str]:
    """The client certificate and key of a ``certs`` directory, as a check's options."""
    return {"cert": str(certs / "client.pem"), "key": str(certs / "client-key.pem")}
