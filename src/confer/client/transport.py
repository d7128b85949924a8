"""Channel plumbing common to the two I/O layers (``grpc`` and ``grpc.aio`` channels have the
same multi-callable API): connections cached per endpoint, open streams, and gRPC errors as
:class:`~confer.client.policy.Failure` s."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc

from confer.client.plans import Open, Recv, Sleep, Unary
from confer.client.policy import NOT_CONNECTED, Failure
from confer.client.protocol import Rpc

__all__ = ["CHANNEL_OPTIONS", "Connection", "IOBase", "StreamBase", "failure_of"]

CHANNEL_OPTIONS: tuple[tuple[str, int | str], ...] = (
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
    # Reconnect to a restarted member quickly: failover is our job, not gRPC's backoff.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


def failure_of(error: grpc.RpcError) -> Failure:
    """A gRPC error as a :class:`~confer.client.policy.Failure`."""
    code = error.code()
    details = error.details()
    return Failure(code.name if code is not None else "UNKNOWN", details or "")


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
            make = self.channel.unary_stream if rpc.streaming else self.channel.unary_unary
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


class IOBase:
    """What both I/O layers share: the connection cache and the action dispatch table.

    Subclasses give ``_new_channel`` and the four performers ``_unary``, ``_sleep``,
    ``_open`` and ``_recv`` (blocking functions or coroutine functions).
    """

    connection_class: type[Connection] = Connection

    def __init__(self, channel_options: tuple[tuple[str, int | str], ...]) -> None:
        self._options = channel_options
        self._connections: dict[str, Connection] = {}
        self._lock = threading.Lock()
        self._perform: dict[type, Callable[[Any], Any]] = {
            Unary: self._unary, Sleep: self._sleep, Open: self._open, Recv: self._recv}

    def _new_channel(self, endpoint: str) -> Any:
        raise NotImplementedError

    def _unary(self, a: Unary) -> Any:
        raise NotImplementedError

    def _sleep(self, a: Sleep) -> Any:
        raise NotImplementedError

    def _open(self, a: Open) -> Any:
        raise NotImplementedError

    def _recv(self, a: Recv) -> Any:
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
