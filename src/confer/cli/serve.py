"""`confer serve`: run one Confer node until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confer.server.config import ServerConfig
from confer.server.tls import GRPC_CIPHER_ENV

if TYPE_CHECKING:
    from confer.server.app import App

LOG_FIELDS = ("peer", "request_id", "duration", "method", "client_port", "peer_port",
              "metrics_port")
"""Fields a log call may pass (``extra=``) that a JSON line carries as its own."""


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``; the member's
    ``node`` id and Raft ``term`` once it runs (:attr:`context`); ``peer``, ``request_id``,
    ``duration`` (seconds) and ``method`` where the line is about one; ``exc``, a
    traceback."""

    context: Callable[[], dict[str, object]] | None = None
    """Fields every line carries (set once the member exists: node id, term)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {"ts": round(record.created, 3),
                                  "level": record.levelname.lower(),
                                  "logger": record.name, "msg": record.getMessage()}
        if self.context is not None:
            out.update(self.context())
        fields = record.__dict__
        for name in LOG_FIELDS:
            if name in fields:
                out[name] = fields[name]
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


_json_formatter: JsonFormatter | None = None


def setup_logging(level: str, fmt: str) -> None:
    global _json_formatter
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_json_formatter := JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.Formatter.converter = time.gmtime
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("grpc").setLevel(logging.WARNING)


EXIT_FAILED = 1
"""`confer serve`'s exit status when it could not start (one line on stderr says why) or
stopped on a failure (the Raft loop, the disk: logged at ERROR)."""


async def serve(cfg: ServerConfig) -> int:
    from confer.server.app import ConferServer

    server = ConferServer(cfg, app=load_app(cfg.app) if cfg.app else None)
    if _json_formatter is not None:
        _json_formatter.context = lambda: {
            "node": server.node_id, **({"term": server.node.term} if server.node else {})}
    loop = asyncio.get_running_loop()
    starting = asyncio.ensure_future(server.start())
    stopping: list[asyncio.Future[None]] = []  # a reference, so the task is not collected

    def on_signal() -> None:
        # While starting (joining may retry for a minute), give up the start at once.
        if not starting.done():
            starting.cancel()
        else:
            stopping.append(asyncio.ensure_future(server.stop()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        await starting
    except asyncio.CancelledError:
        await server.stop(grace=0)
        print("confer: stopped before it started", file=sys.stderr, flush=True)
        return 0
    except BaseException:
        await server.stop(grace=0)
        raise
    tune_gc()
    http = server.http
    metrics = f"{http.scheme}://{cfg.metrics_addr} (port {http.port})" if http else "off"
    dns = server.dns
    ready = (f"confer: node {server.node_id} ready: clients {cfg.client_url} "
             f"(port {server.client_port}), peers {cfg.peer_url} (port {server.peer_port}), "
             f"data {Path(cfg.data_dir).resolve()}, metrics {metrics}, dns "
             + (f"{cfg.dns_addr} (port {dns.port})" if dns else "off"))
    if _json_formatter is None:
        print(ready, file=sys.stderr, flush=True)
    else:  # the one line not logged (it shows whatever the log level): JSON too
        record = logging.LogRecord("confer.serve", logging.INFO, __file__, 0, ready, None,
                                   None)
        record.__dict__.update(client_port=server.client_port, peer_port=server.peer_port,
                               metrics_port=http.port if http else 0,
                               dns_port=dns.port if dns else 0)
        print(_json_formatter.format(record), file=sys.stderr, flush=True)
    await server.stopped.wait()
    # Stopped by a signal or by removal from the cluster: 0. On a failure (the cause is
    # logged): 1, as etcd exits, so that a supervisor restarts the member.
    return 0 if server.fatal is None else EXIT_FAILED


def load_app(spec: str) -> App:
    """The user's state machine ``--app`` names, ready to run; SystemExit (one line) if it
    cannot be loaded."""
    from confer.replicated.member import load_app as load_class
    from confer.replicated.service import AppRuntime

    try:
        return AppRuntime(load_class(spec))
    except ValueError as e:
        raise SystemExit(str(e)) from None


def use_cipher_suites(cfg: ServerConfig) -> None:
    """With ``--cipher-suites``, restart this process (the same pid: ``exec``) with gRPC's
    GRPC_SSL_CIPHER_SUITES set to them, unless it is already: grpc reads it only when it is
    first imported, and grpcio's Python API has no other way to set it. Before anything is
    opened, bound or locked."""
    wanted = cfg.grpc_cipher_list()
    if wanted and os.environ.get(GRPC_CIPHER_ENV) != wanted:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, sys.orig_argv, {**os.environ, GRPC_CIPHER_ENV: wanted})


GC_THRESHOLDS = (50_000, 20, 100)
"""The server's garbage-collector thresholds. With CPython's defaults (700, 10, 10) a node
under write load ran a young collection every few hundred allocations; the store's data
has no reference cycles to find, so collecting far less often costs nothing but a few
megabytes of cyclic garbage waiting a little longer."""


def tune_gc() -> None:
    """Set :data:`GC_THRESHOLDS`, and move everything alive once the server has started
    (modules, classes, functions, the state recovered from disk) out of the collector's
    sight for good: full collections then scan only what the server allocated since.
    (Frozen objects are still freed when their last reference goes; only a reference cycle
    among them would never be.)"""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run(cfg: ServerConfig) -> int:
    use_cipher_suites(cfg)
    setup_logging(cfg.log_level, cfg.log_format)
    try:
        import uvloop

        return uvloop.run(serve(cfg))
    except ImportError:
        return asyncio.run(serve(cfg))


SERVE_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("--name", {"help": "Human-readable member name."}),
    ("--id", {"type": int, "help": "Node id (positive). Default: from initial-cluster or 1."}),
    ("--data-dir", {"help": "Where the log, snapshots and identity live [./confer-data]."}),
    ("--listen-client", {"help": "HOST:PORT for clients [127.0.0.1:7379]."}),
    ("--advertise-client", {"help": "Client address other members and clients use."}),
    ("--listen-peer", {"help": "HOST:PORT for other members [127.0.0.1:7380]."}),
    ("--advertise-peer", {"help": "Peer address other members use."}),
    ("--initial-cluster", {"help": "Founding members: ID=HOST:PORT,... (peer addresses)."}),
    ("--cluster-token", {"help": "Distinguishes clusters founded with the same members."}),
    ("--join", {"help": "Client address of a running member: join its cluster."}),
    ("--wait-init", {"is_flag": True, "default": None,
                     "help": "Start empty and wait for the Init RPC."}),
    ("--init-token", {"help": "Secret the Init RPC must carry (prefer CONFER_INIT_TOKEN: "
                              "flags are visible to other users). Without it, Init is taken "
                              "from this host only."}),
    ("--peer-routes", {"help": "Dial peers here instead: ID=HOST:PORT,... (e.g. via proxies)."}),
    ("--tick-ms", {"type": int, "help": "Raft tick in milliseconds [100]."}),
    ("--election-ticks", {"type": int, "help": "Election timeout in ticks [10]."}),
    ("--snapshot-every", {"type": int, "help": "Snapshot after this many entries "
                                               "[100000, as etcd's --snapshot-count]."}),
    ("--snapshot-catchup-entries", {"type": int,
                                    "help": "Log entries kept after a snapshot [5000]."}),
    ("--auto-compaction-retention", {"type": int,
                                     "help": "Keep this many revisions of history "
                                             "[10000; 0 = compact only by hand]."}),
    ("--batch-window-ms", {"type": int,
                           "help": "Under load, batch writes over this many ms [20; 0 = off]."}),
    ("--max-key-bytes", {"type": int, "help": "Longest key path in bytes [4096]."}),
    ("--max-value-bytes", {"type": int, "help": "Largest value in bytes [1048576]."}),
    ("--max-request-bytes", {"type": int, "help": "Largest write request in bytes "
                                                  "[1572864, as etcd]."}),
    ("--quota-backend-bytes", {"type": int,
                               "help": "Store size that raises the NOSPACE alarm "
                                       "[0 = 2 GiB; negative = no quota]."}),
    ("--listen-metrics", {"help": "HOST:PORT for /metrics and /health over HTTP [the client "
                                  "host, client port + 1000: 127.0.0.1:8379]; none: off; "
                                  "https://HOST:PORT: over TLS with the client port's "
                                  "certificate (as etcd's --listen-metrics-urls)."}),
    ("--enable-grpc-gateway", {"type": bool, "help": "Serve etcd's JSON gateway (/v3/...) on "
                                                     "the HTTP listener [true]."}),
    ("--enable-dashboard", {"type": bool, "help": "Serve the web dashboard (/ui/) on the HTTP "
                                                  "listener [true]."}),
    ("--listen-dns", {"help": "HOST:PORT (UDP and TCP) for DNS queries of the service catalog "
                              "[127.0.0.1, client port + 1221: 127.0.0.1:8600]; none: off."}),
    ("--dns-user", {"help": "With authentication on, DNS reads the catalog with this user's "
                            "permissions [none: DNS queries are REFUSED]."}),
    ("--cert-file", {"help": "TLS on the client port: its certificate (PEM)."}),
    ("--key-file", {"help": "The client port's private key (PEM)."}),
    ("--trusted-ca-file", {"help": "Clients must present a certificate this CA signed "
                                   "(implies --client-cert-auth)."}),
    ("--client-cert-auth", {"is_flag": True, "default": None,
                            "help": "Require client certificates (needs --trusted-ca-file)."}),
    ("--peer-cert-file", {"help": "TLS on the peer port, and this member's certificate when "
                                  "it dials its peers."}),
    ("--peer-key-file", {"help": "The peer certificate's private key (PEM)."}),
    ("--peer-trusted-ca-file", {"help": "Peers must present a certificate this CA signed "
                                        "(implies --peer-client-cert-auth)."}),
    ("--peer-client-cert-auth", {"is_flag": True, "default": None,
                                 "help": "Require peer certificates (needs "
                                         "--peer-trusted-ca-file)."}),
    ("--peer-cert-allowed-cn", {"help": "Accept only peers whose certificate has this common "
                                        "name (comma-separated list)."}),
    ("--peer-cert-match-address", {"is_flag": True, "default": None,
                                    "help": "A peer's certificate must be valid for the peer "
                                            "address of the member it speaks as."}),
    ("--client-crl-file", {"help": "Refuse the calls of client certificates this "
                                   "revocation list (PEM or DER, of the trusted CA) names."}),
    ("--cipher-suites", {"help": "TLS 1.2 cipher suites of both ports, comma-separated "
                                 "(etcd's names, e.g. TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256) "
                                 "[gRPC's]."}),
    ("--tls-min-version", {"help": "TLS1.2 only: Confer's ports always accept TLS 1.2 and "
                                   "1.3 (grpcio sets no version) [TLS1.2]."}),
    ("--tls-max-version", {"help": "TLS1.3 only, as --tls-min-version [TLS1.3]."}),
    ("--auth-token", {"help": "Auth tokens: simple, or jwt,pub-key=PATH,priv-key=PATH,"
                              "sign-method=RS256 (as etcd) [simple]."}),
    ("--auth-token-ttl", {"type": int, "help": "Seconds a simple token lives after its "
                                               "last use [300]."}),
    ("--bcrypt-cost", {"type": int, "help": "bcrypt cost of password hashes, 4..31 [10]."}),
    ("--app", {"help": "Also replicate and serve this state machine: module:Class or "
                       "path/file.py:Class (docs/platform.md)."}),
    ("--log-level", {"help": "debug, info, warning or error [info]."}),
    ("--log-format", {"help": "text or json [text]."}),
]
