"""What the discovery tests share: an HTTP server whose health endpoints the test sets, and
a port where nothing listens."""

from __future__ import annotations

import http.server
import socket
import threading


class StatusServer:
    """An HTTP server on 127.0.0.1 whose answer to each path is set by the test
    (``codes[path]``, 200 by default; or alternating, for the paths in ``flapping``), counting
    the requests to each (``hits``)."""

    def __init__(self) -> None:
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
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


