"""What both APIs' gRPC adapters share: a request context from a gRPC call, and handler
decorators that turn exceptions into statuses through an API's own error table.

Bad requests cost the server one status and at most one log line a minute: a request body
that does not decode reaches the handler as :class:`Undecodable` (grpcio would log an
ERROR with a traceback for each one) and is answered INVALID_ARGUMENT, with a WARNING per
(method, client host) per minute that counts the ones held back. An unexpected exception (a
bug) is answered INTERNAL and logged with its traceback once a minute per method and type.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Any, TypeVar

import grpc

from confer.kv import CompareTarget
from confer.server.api import RequestContext, RequestLayer

COMPARE_VALUE_FIELDS: dict[int, str] = {
    CompareTarget.VERSION: "version",
    CompareTarget.CREATE: "create_revision",
    CompareTarget.MOD: "mod_revision",
    CompareTarget.VALUE: "value",
    CompareTarget.LEASE: "lease",
}
"""For each compare target (numbered alike in both APIs' protos and in confer.kv), the field
of the Compare message that holds the value to compare against."""

Registration = tuple[Callable[[Any, Any], None], Callable[[RequestLayer], Any]]
"""A generated ``add_*Servicer_to_server`` function and the servicer class it takes."""


def register(layer: RequestLayer, grpc_server: Any, services: list[Registration]) -> None:
    """Register each servicer, built on ``layer``, with ``grpc_server``; their requests are
    decoded by :func:`tolerant` deserialisers (the handlers answer what does not decode)."""
    registry = _TolerantRegistry(grpc_server)
    for add, servicer in services:
        add(servicer(layer), registry)


class Undecodable:
    """A request body that failed to decode, handed to the handler instead of an exception
    (which grpcio would log with a traceback, for every such request)."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


def tolerant(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """``deserialize``, returning :class:`Undecodable` instead of raising."""
    def decode(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as e:  # DecodeError, or whatever a malformed body makes it raise
            return Undecodable(e)

    return decode


_METHOD_HANDLER_KINDS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


class _TolerantRegistry:
    """Stands in for the server while a generated ``add_*Servicer_to_server`` registers a
    service: it registers the service's method handlers (which the generated code passes as
    "registered methods") as one generic handler, with :func:`tolerant` deserialisers, and
    drops the generic handler the generated code built with the plain ones."""

    def __init__(self, server: Any) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """Dropped: :meth:`add_registered_method_handlers` registers the same methods."""

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        tolerant_handlers = {}
        for name, h in handlers.items():
            make = _METHOD_HANDLER_KINDS[(h.request_streaming, h.response_streaming)]
            behavior = h.unary_unary or h.unary_stream or h.stream_unary or h.stream_stream
            tolerant_handlers[name] = make(
                behavior, request_deserializer=tolerant(h.request_deserializer),
                response_serializer=h.response_serializer)
        self._server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(service, tolerant_handlers)])


class LogLimiter:
    """At most one log line per key per ``interval`` seconds; the lines held back meanwhile
    are counted, and the next line admitted for that key reports them. Bounded: at most
    ``max_keys`` keys are tracked (beyond that, new keys share one)."""

    OVERFLOW = ("(other)",)

    def __init__(self, interval: float = 60.0, max_keys: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self.clock = clock
        self._keys: dict[Hashable, list[float]] = {}  # key -> [time admitted, held back]

    def admit(self, key: Hashable) -> int | None:
        """None: hold this line back. Else log it, with the count of lines held back
        since the last one for ``key``."""
        now = self.clock()
        entry = self._keys.get(key)
        if entry is None and len(self._keys) >= self.max_keys:
            self._keys = {k: e for k, e in self._keys.items() if now - e[0] < self.interval}
            if len(self._keys) >= self.max_keys:
                key = self.OVERFLOW
                entry = self._keys.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return None
        self._keys[key] = [now, 0]
        return int(entry[1]) if entry is not None else 0


def held_back(count: int) -> str:
    return f" ({count} more held back since the last such line)" if count else ""


def client_host(peer: str) -> str:
    """gRPC's ``ipv4:1.2.3.4:5678`` or ``ipv6:[::1]:5678`` without the port: a client's
    connections share its log lines."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return rest.rpartition(":")[0] or rest
    return peer


class BadRequest(Exception):
    """A request that does not decode (answered INVALID_ARGUMENT)."""


_bad_requests = LogLimiter()
_failures = LogLimiter()


def _checked(request: Any) -> Any:
    if type(request) is Undecodable:
        raise BadRequest(f"the request does not decode: {request.error}")
    return request


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield _checked(request)

log = logging.getLogger("confer.api")

Resp = TypeVar("Resp")
Status = tuple[grpc.StatusCode, str]
StatusTable = Callable[[BaseException], Status | None]
"""An API's error table: the status for an exception, None for an unexpected one."""

ORIGIN = "x-confer-origin"
"""Trailing metadata on statuses a Confer server chose, as opposed to transport failures."""


class RpcError(Exception):
    """A status an adapter chose itself, by a rule of its API (answered as it is)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


GrpcContext = grpc.aio.ServicerContext[Any, Any]
"""A gRPC call's context, as the handlers of every API receive it."""


class Adapter:
    """Base of a servicer (of either API) over the request layer."""

    def __init__(self, layer: RequestLayer) -> None:
        self.layer = layer


def request_context(api: str, method: str, context: GrpcContext
                    ) -> RequestContext:
    return RequestContext.with_timeout(api, method, context.time_remaining(),
                                       peer=context.peer())


def handlers(api: str, table: StatusTable, internal: Callable[[BaseException], str]
             ) -> tuple[Callable[[Callable[..., Awaitable[Resp]]], Callable[..., Awaitable[Resp]]],
                        Callable[[Callable[..., AsyncIterator[Resp]]],
                                 Callable[..., AsyncIterator[Resp]]]]:
    """Decorators for an API's unary and streaming handlers.

    A decorated handler is called as ``handler(self, request, ctx)`` with a
    :class:`RequestContext` for the call; its exceptions become statuses through ``table``
    (an unexpected one is logged and answered INTERNAL with ``internal(exc)``).
    """

    async def abort(context: GrpcContext, exc: BaseException, name: str) -> None:
        if isinstance(exc, RpcError):
            status: Status | None = (exc.code, str(exc))
        elif isinstance(exc, BadRequest):
            host = client_host(context.peer())
            count = _bad_requests.admit((api, name, host))
            if count is not None:
                log.warning("%s %s from %s: %s%s", api, name, host, exc, held_back(count))
            status = (grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        else:
            status = table(exc)
        if status is None:
            count = _failures.admit((api, name, type(exc)))
            if count is not None:
                log.error("%s %s failed%s", api, name, held_back(count), exc_info=exc)
            status = (grpc.StatusCode.INTERNAL, internal(exc))
        context.set_trailing_metadata(((ORIGIN, "server"),))
        await context.abort(*status)

    def unary(fn: Callable[..., Awaitable[Resp]]) -> Callable[..., Awaitable[Resp]]:
        name = fn.__name__

        @functools.wraps(fn)
        async def wrapper(self: Any, request: Any, context: GrpcContext) -> Resp:
            try:
                return await fn(self, _checked(request), request_context(api, name, context))
            except Exception as e:
                await abort(context, e, name)
            raise AssertionError("unreachable")

        return wrapper

    def stream(fn: Callable[..., AsyncIterator[Resp]]) -> Callable[..., AsyncIterator[Resp]]:
        name = fn.__name__

        @functools.wraps(fn)
        async def wrapper(self: Any, request: Any,
                          context: GrpcContext) -> AsyncIterator[Resp]:
            try:
                # A streamed request is checked as each message arrives.
                request = (_checked_stream(request) if hasattr(request, "__aiter__")
                           else _checked(request))
                async for item in fn(self, request, request_context(api, name, context)):
                    yield item
            except Exception as e:
                await abort(context, e, name)

        return wrapper

    return unary, stream
