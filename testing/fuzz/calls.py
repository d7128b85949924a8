"""One fuzzed call on a raw gRPC channel: bytes in, a status out, within a bounded time.

Requests go as the bytes the fuzzer made (no serializer), so a structured request, random
bytes and a peer message all take the same path, and the bytes are the reproduction.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc

CLIENT_CANCELLED = "CLIENT_CANCELLED"
"""The fuzzer ended a stream itself after reading enough of it: not a server status."""
MAX_RESPONSES = 8
"""Responses read from a stream before the fuzzer cancels it."""


@dataclass(frozen=True)
class Shape:
    """Where and how to call: the method path and whether each side streams."""

    path: str
    client_streaming: bool = False
    server_streaming: bool = False


@dataclass(frozen=True)
class Outcome:
    code: str
    """``OK``, a ``grpc.StatusCode`` name, or :data:`CLIENT_CANCELLED`."""
    details: str
    responses: int


def call(channel: grpc.Channel, shape: Shape, payloads: list[bytes], timeout: float, *,
         half_close: bool = True) -> Outcome:
    """Send ``payloads`` (one for a unary request) and wait for the status, at most
    ``timeout`` seconds; a streamed answer is read up to :data:`MAX_RESPONSES` responses.

    With ``half_close`` False the request stream stays open (until the call ends), as a
    client that neither sends more nor says it is done."""
    done = threading.Event()

    def requests() -> Iterator[bytes]:
        yield from payloads
        if not half_close:
            done.wait(timeout)

    try:
        if not shape.client_streaming and not shape.server_streaming:
            unary: Any = channel.unary_unary(shape.path)  # bytes in and out: no serializers
            unary(payloads[0], timeout=timeout)
            return Outcome("OK", "", 1)
        if shape.client_streaming and not shape.server_streaming:
            upload: Any = channel.stream_unary(shape.path)
            upload(requests(), timeout=timeout)
            return Outcome("OK", "", 1)
        multi: Any
        if shape.client_streaming:
            multi = channel.stream_stream(shape.path)
            stream = multi(requests(), timeout=timeout)
        else:
            multi = channel.unary_stream(shape.path)
            stream = multi(payloads[0], timeout=timeout)
        return _read(stream)
    except grpc.RpcError as e:
        return _failed(e, 0)
    finally:
        done.set()


def _read(stream: Any) -> Outcome:
    n = 0
    try:
        for _ in stream:
            n += 1
            if n >= MAX_RESPONSES:
                stream.cancel()
                return Outcome(CLIENT_CANCELLED, "", n)
    except grpc.RpcError as e:
        return _failed(e, n)
    return Outcome("OK", "", n)


def _failed(e: grpc.RpcError, n: int) -> Outcome:
    code = e.code() if isinstance(e, grpc.Call) else None
    details = e.details() if isinstance(e, grpc.Call) else str(e)
    return Outcome(code.name if code is not None else "UNKNOWN_CLIENT_ERROR", details or "", n)
