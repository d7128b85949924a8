"""Channel plumbing common to the two I/O layers (``grpc`` and ``grpc.aio`` channels have the
same multi-callable API): connections cached per endpoint, open streams, and gRPC errors as
:class:`~confer.client.policy.Failure` s."""

from __future__ import annotations

import datetime
import math
import os
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from confer.client.credentials import Credentials
from confer.client.endpoints import parse_endpoint, parse_endpoints
from confer.client.errors import InvalidArgument
from confer.client.plans import Cancellable, Offload, Open, Recv, Send, Sleep, Spawn, Stop, Unary
from confer.client.policy import NOT_CONNECTED, Failure
from confer.client.protocol import Rpc

__all__ = ["CHANNEL_OPTIONS", "Connection", "IOBase", "Runner", "StreamBase", "failure_of",
           "grpc_timeout", "tls_credentials", "tls_problem"]

CHANNEL_OPTIONS: tuple[tuple[str, int | str], ...] = (
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
    # Reconnect to a restarted member quickly: failover is our job, not gRPC's backoff.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


def tls_credentials(endpoints: str | Sequence[str], cacert: str | None, cert: str | None,
                    key: str | None) -> tuple[tuple[str, ...], grpc.ChannelCredentials | None]:
    """The endpoints as ``host:port`` and the channel credentials they need: TLS when the
    endpoints are ``https://`` URLs or a certificate file is given, else None (plaintext).

    ``cacert`` (the CA that signed the servers' certificates; default the system's), ``cert``
    and ``key`` (a client certificate, for servers that require one) default to the
    environment's ``CONFER_CACERT``, ``CONFER_CERT`` and ``CONFER_KEY``, as etcdctl's flags.
    Raises InvalidArgument for a file that cannot be read or a mix of schemes."""
    files = {"cacert": cacert or os.environ.get("CONFER_CACERT") or None,
             "cert": cert or os.environ.get("CONFER_CERT") or None,
             "key": key or os.environ.get("CONFER_KEY") or None}
    parsed = parse_endpoints(endpoints)
    targets = tuple(e.address for e in parsed)
    tls = parsed[0].tls or any(files.values())
    if tls and any(e.scheme == "http" for e in parsed):
        raise InvalidArgument("http:// endpoints are plaintext: use https:// with TLS "
                              "(--cacert, --cert, --key)")
    if bool(files["cert"]) != bool(files["key"]):
        raise InvalidArgument("a client certificate needs both cert and key")
    if not tls:
        return targets, None
    pems = {}
    for name, path in files.items():
        if path:
            try:
                with open(path, "rb") as f:
                    pems[name] = f.read()
            except OSError as e:
                raise InvalidArgument(f"{name} {path}: {e.strerror}") from None
    return targets, grpc.ssl_channel_credentials(pems.get("cacert"), pems.get("key"),
                                                        pems.get("cert"))


def tls_problem(endpoint: str, cacert: str | None = None, cert: str | None = None,
                key: str | None = None, timeout: float = 2.0) -> str | None:
    """Why a client with these TLS settings cannot connect to ``endpoint``, if TLS is the
    reason: gRPC says only that the connection failed, so this tries the handshake itself
    (Python's ``ssl``): the member's certificate not trusted, our certificate refused,
    expired or missing, TLS expected by a plaintext client. None: TLS is not the problem
    (or the endpoint does not answer at all)."""
    cacert = cacert or os.environ.get("CONFER_CACERT") or None
    cert = cert or os.environ.get("CONFER_CERT") or None
    key = key or os.environ.get("CONFER_KEY") or None
    try:
        parsed = parse_endpoint(endpoint)
    except InvalidArgument:
        return None  # not an address to try: tls_credentials names the problem
    use_tls = parsed.tls or bool(cacert or cert or key)
    host, _, port = parsed.address.rpartition(":")
    host = host.strip("[]")
    try:
        ctx = ssl.create_default_context(cafile=cacert)
        if cert and key:
            ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError):
        return None  # unreadable files: tls_credentials names them
    if not use_tls:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=host) as tls:
            if not use_tls:  # the handshake went through: the member speaks TLS
                return (f"{endpoint} serves TLS: use https:// endpoints, with --cacert (and "
                        "--cert, --key if it requires client certificates)")
            # TLS 1.3: the member judges our certificate after the handshake, and closes
            # the connection without a word if it refuses it.
            if tls.recv(1):
                return None
            return f"TLS: {endpoint} refused the connection: {_client_cert_problem(cert)}"
    except ssl.SSLCertVerificationError as e:
        return f"TLS: {endpoint}'s certificate is not trusted ({e.verify_message}; --cacert)"
    except ssl.SSLError as e:
        if not use_tls:
            return None  # a plaintext member: TLS is not the problem
        return f"TLS: {endpoint} refused this client's certificate ({e.reason or e})"
    except (OSError, ValueError):
        return None
    return None


def _client_cert_problem(cert: str | None) -> str:
    from cryptography import x509  # only to explain a refusal: not on every client's import

    if not cert:
        return "it requires a client certificate (--cert, --key)"
    try:
        with open(cert, "rb") as f:
            not_after = x509.load_pem_x509_certificate(f.read()).not_valid_after_utc
    except (OSError, ValueError):
        return f"it does not accept the client certificate {cert}"
    if not_after < datetime.datetime.now(datetime.UTC):
        return f"the client certificate {cert} expired on {not_after:%Y-%m-%d %H:%M} UTC"
    return f"the client certificate {cert} is not signed by a CA it trusts"


def failure_of(error: grpc.RpcError) -> Failure:
    """A gRPC error as a :class:`~confer.client.policy.Failure`."""
    code = error.code()
    details = error.details()
    return Failure(code.name if code is not None else "UNKNOWN", details or "")


def grpc_timeout(timeout: float) -> float | None:
    """A plan's timeout as gRPC takes it: ``inf`` (a call that may wait for ever) is None."""
    return None if math.isinf(timeout) else timeout


def not_connected(a: Unary) -> Failure:
    """The failure of a write whose endpoint did not connect in time (nothing was sent)."""
    return Failure("UNAVAILABLE", f"{NOT_CONNECTED} to {a.endpoint} within "
                                  f"{a.connect_timeout:.3g}s; nothing was sent")


class Connection:
    """One endpoint's channel (``grpc`` or ``grpc.aio``) and its cached multi-callables."""

    __slots__ = ("_callables", "channel", "endpoint")

    def __init__(self, endpoint: str, channel: Any) -> None:
        self.endpoint = endpoint
        self.channel = channel
        self._callables: dict[str, Any] = {}

    def callable(self, rpc: Rpc) -> Any:
        """The channel's multi-callable for ``rpc`` (made once)."""
        fn = self._callables.get(rpc.path)
        if fn is None:
            make = (self.channel.stream_stream if rpc.bidi else
                    self.channel.unary_stream if rpc.streaming else self.channel.unary_unary)
            fn = self._callables[rpc.path] = make(rpc.path, request_serializer=rpc.serialize,
                                                  response_deserializer=rpc.deserialize)
        return fn


class StreamBase:
    """An open server stream: the gRPC call, its idle deadline, and whether we ended it."""

    __slots__ = ("__weakref__", "call", "cancelled", "deadline", "expired", "idle")

    def __init__(self, call: Any, idle: float | None) -> None:
        self.call = call
        self.idle = idle
        self.deadline = float("inf")
        self.cancelled = False
        self.expired = False

    def cancel(self) -> None:
        """The caller is done with the stream."""
        self.cancelled = True
        self.call.cancel()

    def expire(self) -> None:
        """Nothing arrived for ``idle`` seconds: presume the connection dead."""
        self.expired = True
        self.call.cancel()

    def failure(self, error: grpc.RpcError | None) -> Failure:
        """Why the stream failed, as the plan should see it."""
        if self.expired:
            return Failure("UNAVAILABLE", f"no message for {self.idle:g}s; connection presumed"
                           " dead")
        if self.cancelled or error is None:
            return Failure("CANCELLED", "cancelled by the client")
        return failure_of(error)


@dataclass(slots=True)
class Runner:
    """A plan running in the background (:class:`~confer.client.plans.Spawn`): its feed, to
    cancel it, and the thread or task that runs it."""

    feed: Cancellable
    worker: Any


class IOBase:
    """What both I/O layers share: the connection cache and the action dispatch table.

    Subclasses give ``_new_channel`` and the performers ``_unary``, ``_sleep``, ``_open``,
    ``_send``, ``_recv``, ``_spawn``, ``_stop`` and ``_offload`` (blocking functions or
    coroutine functions), and for the coordination handles ``new_event``, ``wait`` and
    ``dispatch``.

    Attributes:
        asynchronous: whether the performers (and so ``run``) are coroutine functions.
    """

    connection_class: type[Connection] = Connection
    asynchronous = False

    def __init__(self, channel_options: tuple[tuple[str, int | str], ...],
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        self._options = channel_options
        self._tls = credentials
        """TLS credentials of every channel (None: plaintext)."""
        self.credentials: Credentials | None = None
        """The user's, when the client was given one: every channel sends its token."""
        self._connections: dict[str, Connection] = {}
        self._lock = threading.Lock()
        self._perform: dict[type, Callable[[Any], Any]] = {
            Unary: self._unary, Sleep: self._sleep, Open: self._open, Send: self._send,
            Recv: self._recv, Spawn: self._spawn, Stop: self._stop, Offload: self._offload}

    def _new_channel(self, endpoint: str) -> Any:
        raise NotImplementedError

    def _unary(self, a: Unary) -> Any:
        raise NotImplementedError

    def _sleep(self, a: Sleep) -> Any:
        raise NotImplementedError

    def _open(self, a: Open) -> Any:
        raise NotImplementedError

    def _send(self, a: Send) -> Any:
        raise NotImplementedError

    def _recv(self, a: Recv) -> Any:
        raise NotImplementedError

    def _spawn(self, a: Spawn) -> Any:
        raise NotImplementedError

    def _stop(self, a: Stop) -> Any:
        raise NotImplementedError

    def _offload(self, a: Offload) -> Any:
        raise NotImplementedError

    def run(self, plan: Any) -> Any:
        """Drive a plan to its value (blocking, or as a coroutine)."""
        raise NotImplementedError

    def new_event(self) -> Any:
        """A ``threading.Event``, or an ``asyncio.Event``."""
        raise NotImplementedError

    def wait(self, event: Any, timeout: float | None) -> Any:
        """Wait until ``event`` is set or ``timeout`` passed; whether it is set (blocking, or
        as a coroutine)."""
        raise NotImplementedError

    def dispatch(self, callback: Callable[[Any], Any], arg: Any) -> None:
        """Call an application callback, never letting its error escape (logged); with
        asyncio, a coroutine it returns runs as a task."""
        raise NotImplementedError

    def connection(self, endpoint: str) -> Connection:
        """The endpoint's connection, made on first use."""
        conn = self._connections.get(endpoint)
        if conn is None:
            with self._lock:
                conn = self._connections.get(endpoint)
                if conn is None:
                    conn = self.connection_class(endpoint, self._new_channel(endpoint))
                    self._connections[endpoint] = conn
        return conn

    def _take_connections(self) -> list[Connection]:
        """Forget every connection (to close them)."""
        with self._lock:
            connections, self._connections = list(self._connections.values()), {}
        return connections
