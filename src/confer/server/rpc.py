"""What both APIs' gRPC adapters share: a request context from a gRPC call, and handler
decorators that turn exceptions into statuses through an API's own error table.

Bad requests cost the server one status and at most one log line a minute: a request body
that does not decode reaches the handler as :class:`Undecodable` (grpcio would log an
ERROR with a traceback for each one) and is answered INVALID_ARGUMENT, with a WARNING per
(method, client host) per minute that counts the ones held back. An unexpected exception (a
bug) is answered INTERNAL and logged with its traceback once a minute per method and type.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc._cython.cygrpc import (  # type: ignore[import-not-found]  # no stubs
    ExecuteBatchError,  # what a send on a call that has ended raises
)

from confer.kv import CompareTarget
from confer.server.api import RequestContext, RequestLayer
from confer.server.log_limit import LogLimiter, held_back
from confer.server.metrics import CallStats, MethodCalls
from confer.server.tls import RevocationList

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
    decoded by :func:`tolerant` deserialisers (the handlers answer what does not decode), and
    each call is counted and timed in ``layer.calls`` (the metrics of both APIs, measured
    once, here)."""
    for add, servicer in services:
        registry = _TolerantRegistry(grpc_server, calls=layer.calls, crl=layer.crl)
        add(servicer(layer), registry)
        registry.close()


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


def register_refusing(api: str, add: Callable[[Any, Any], None], servicer: Any,
                      grpc_server: Any, calls: CallStats | None = None,
                      crl: RevocationList | None = None) -> None:
    """Register a servicer that is not an adapter of the request layer (Raft, health): a
    request that does not decode is refused with INVALID_ARGUMENT before it reaches the
    servicer, and logged as the adapters log theirs (``api`` names the service in logs).
    With ``calls``, its calls are counted and timed there, as the adapters' are; with
    ``crl``, a revoked client certificate's calls are refused."""
    registry = _TolerantRegistry(grpc_server, refuse_as=api, calls=calls, crl=crl)
    add(servicer, registry)
    registry.close()


def register_measured(grpc_server: Any, service: str, handlers: dict[str, Any],
                      calls: CallStats) -> None:
    """Register ``service``'s method ``handlers`` (built by hand, not generated: the peer
    port's Leader service), each call counted and timed in ``calls``."""
    _TolerantRegistry(grpc_server, calls=calls).add_registered_method_handlers(service,
                                                                              handlers)


class _TolerantRegistry:
    """Stands in for the server while a generated ``add_*Servicer_to_server`` registers a
    service: it registers the service's method handlers (which the generated code passes as
    "registered methods") as one generic handler, with :func:`tolerant` deserialisers, and
    drops the generic handler the generated code built with the plain ones. (Generic
    handlers also cost less: for registered methods, grpcio's asyncio server (1.6x-1.85)
    keeps one pending task per method and waits on all of them for every call.) With
    ``refuse_as``, each handler refuses undecodable requests itself (see
    :func:`register_refusing`). With ``calls``, each handler's calls are counted and timed
    there (:func:`_measured`)."""

    def __init__(self, server: Any, refuse_as: str = "", calls: CallStats | None = None,
                 crl: RevocationList | None = None) -> None:
        self._server = server
        self._refuse_as = refuse_as
        self._calls = calls
        self._crl = crl
        self._generic: list[Any] = []
        self._registered = False

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """Kept back: :meth:`add_registered_method_handlers` registers the same methods."""
        self._generic.extend(handlers)

    def close(self) -> None:
        """Code generated by an older grpcio-tools registers no "registered methods": pass
        its generic handlers on as they are (undecodable requests are then grpcio's)."""
        if not self._registered and self._generic:
            log.warning("registering %d gRPC handlers without tolerant deserialisers",
                        len(self._generic))
            self._server.add_generic_rpc_handlers(self._generic)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self._registered = True
        tolerant_handlers = {}
        for name, h in handlers.items():
            make = _METHOD_HANDLER_KINDS[(h.request_streaming, h.response_streaming)]
            behavior = h.unary_unary or h.unary_stream or h.stream_unary or h.stream_stream
            if self._refuse_as:
                behavior = _refusing(behavior, self._refuse_as, name, h.request_streaming)
            if self._crl is not None:
                behavior = _unless_revoked(behavior, self._crl)
            if self._calls is not None:
                kind = _CALL_KINDS[(h.request_streaming, h.response_streaming)]
                behavior = _measured(behavior, self._calls.method(service, name, kind))
            deserializer = h.request_deserializer  # None: the raw bytes
            tolerant_handlers[name] = make(
                behavior, request_deserializer=deserializer and tolerant(deserializer),
                response_serializer=h.response_serializer)
        self._server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(service, tolerant_handlers)])


_CALL_KINDS = {(False, False): "unary", (False, True): "server_stream",
               (True, False): "client_stream", (True, True): "bidi_stream"}


def _unless_revoked(behavior: Callable[..., Any], crl: RevocationList) -> Callable[..., Any]:
    """``behavior``, answering UNAUTHENTICATED to a call whose client certificate the
    revocation list names (:class:`~confer.server.tls.RevocationList`)."""

    async def check(context: GrpcContext) -> None:
        refusal = crl.refusal(context.auth_context() or {})
        if refusal is not None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, refusal)

    if inspect.isasyncgenfunction(behavior):
        async def stream(request: Any, context: GrpcContext) -> AsyncIterator[Any]:
            await check(context)
            async for response in behavior(request, context):
                yield response
        return stream

    async def call(request: Any, context: GrpcContext) -> Any:
        await check(context)
        return await behavior(request, context)
    return call


SLOW_REQUEST = 0.5
"""A unary call that takes longer (seconds) is logged (at most once a minute per method)."""
REQUEST_ID = "x-request-id"
"""Metadata a caller may send to find its request in the logs (``request_id``)."""
_slow = LogLimiter()


def _measured(behavior: Callable[..., Any], calls: MethodCalls) -> Callable[..., Any]:
    """``behavior``, counting its calls in ``calls`` and timing each by the status it ends
    with: two clock reads and a bisect per call (docs/operations.md, "Metrics")."""
    clock = time.perf_counter
    unary = calls.kind == "unary"

    def ended(context: GrpcContext, start: float, exc: BaseException | None) -> None:
        code = context.code()  # set by abort() (AbortError) or set_code()
        if code is not None:
            name = code.name
        elif exc is None:
            name = "OK"
        else:  # gRPC answers CANCELLED for a cancelled call, UNKNOWN for an exception
            name = "CANCELLED" if isinstance(exc, asyncio.CancelledError) else "UNKNOWN"
        seconds = clock() - start
        calls.ended(name, seconds)
        if seconds > SLOW_REQUEST and unary:
            _log_slow(calls, context, name, seconds)

    if inspect.isasyncgenfunction(behavior):
        async def stream(request: Any, context: GrpcContext) -> AsyncIterator[Any]:
            calls.started += 1
            start = clock()
            try:
                async for response in behavior(request, context):
                    yield response
            except BaseException as e:
                ended(context, start, e)
                raise
            ended(context, start, None)
        return stream

    async def call(request: Any, context: GrpcContext) -> Any:
        calls.started += 1
        start = clock()
        try:
            response = await behavior(request, context)
        except BaseException as e:
            ended(context, start, e)
            raise
        ended(context, start, None)
        return response
    return call


def _log_slow(calls: MethodCalls, context: GrpcContext, code: str, seconds: float) -> None:
    count = _slow.admit((calls.service, calls.method))
    if count is None:
        return
    request_id = next((str(v) for k, v in context.invocation_metadata() or ()
                       if k == REQUEST_ID), "")
    peer = client_host(context.peer())
    log.warning("slow request: %s/%s from %s took %.3f s (%s)%s", calls.service,
                calls.method, peer, seconds, code, held_back(count),
                extra={"peer": peer, "request_id": request_id, "duration": round(seconds, 6),
                       "method": f"{calls.service}/{calls.method}"})


def _refusing(behavior: Callable[..., Any], api: str, name: str, request_streaming: bool
              ) -> Callable[..., Any]:
    """``behavior``, answering INVALID_ARGUMENT for a request (or a streamed request's
    message) that does not decode instead of passing it on."""

    async def refuse(context: GrpcContext, request: Undecodable) -> None:
        bad = BadRequest(f"the request does not decode: {request.error}")
        await context.abort(*bad_request_status(api, name, context, bad))

    if request_streaming:
        async def checked(requests: AsyncIterator[Any], context: GrpcContext
                          ) -> AsyncIterator[Any]:
            async for request in requests:
                if type(request) is Undecodable:
                    await refuse(context, request)
                yield request

        if inspect.isasyncgenfunction(behavior):
            async def stream_stream(requests: AsyncIterator[Any], context: GrpcContext
                                    ) -> AsyncIterator[Any]:
                async for response in behavior(checked(requests, context), context):
                    yield response
            return stream_stream

        async def stream_request(requests: AsyncIterator[Any], context: GrpcContext) -> Any:
            return await behavior(checked(requests, context), context)
        return stream_request

    if inspect.isasyncgenfunction(behavior):
        async def unary_stream(request: Any, context: GrpcContext) -> AsyncIterator[Any]:
            if type(request) is Undecodable:
                await refuse(context, request)
            async for response in behavior(request, context):
                yield response
        return unary_stream

    async def unary_request(request: Any, context: GrpcContext) -> Any:
        if type(request) is Undecodable:
            await refuse(context, request)
        return await behavior(request, context)
    return unary_request


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


def bad_request_status(api: str, name: str, context: GrpcContext, exc: BadRequest) -> Status:
    """INVALID_ARGUMENT for ``exc``, logged at most once a minute per method and client."""
    host = client_host(context.peer())
    count = _bad_requests.admit((api, name, host))
    if count is not None:
        log.warning("%s %s from %s: %s%s", api, name, host, exc, held_back(count))
    return grpc.StatusCode.INVALID_ARGUMENT, str(exc)


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

DEADLINE_SLACK = 0.01
"""Seconds before a caller's deadline within which a failure is no longer answered (the
clocks of gRPC's deadline and of the request layer's waits differ by less)."""

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


def stop_if_caller_gone(context: GrpcContext) -> None:
    """Raise CancelledError if the caller cancelled the call or its deadline has come (the
    request layer's waits end at it too): gRPC ends the call itself, and a message or status
    sent now would fail in its core and be logged as an error with a traceback."""
    remaining = context.time_remaining()
    if (remaining is not None and remaining <= DEADLINE_SLACK) or context.cancelled():
        raise asyncio.CancelledError


TOKEN_KEY = "token"
"""The gRPC metadata key of an auth token (etcd's clients send it so, on both APIs)."""


def request_context(api: str, method: str, context: GrpcContext
                    ) -> RequestContext:
    token = ""
    for key, value in context.invocation_metadata() or ():
        if key == TOKEN_KEY:
            token = value if isinstance(value, str) else value.decode(errors="replace")
    return RequestContext.with_timeout(api, method, context.time_remaining(),
                                       peer=context.peer(), token=token,
                                       certificate_user=functools.partial(
                                           certificate_user, context))


def certificate_user(context: GrpcContext) -> str:
    """The common name of the call's client certificate ("" if none). gRPC only has one
    when the port requires client certificates (``--client-cert-auth``): then it was
    verified against the trusted CA during the handshake."""
    for name in (context.auth_context() or {}).get("x509_common_name") or ():
        return name.decode(errors="replace")
    return ""


def handlers(api: str, table: StatusTable, internal: Callable[[BaseException], str]
             ) -> tuple[Callable[[Callable[..., Awaitable[Resp]]], Callable[..., Awaitable[Resp]]],
                        Callable[[Callable[..., AsyncIterator[Resp]]],
                                 Callable[..., Awaitable[None]]]]:
    """Decorators for an API's unary and streaming handlers.

    A decorated handler is called as ``handler(self, request, ctx)`` with a
    :class:`RequestContext` for the call; its exceptions become statuses through ``table``
    (an unexpected one is logged and answered INTERNAL with ``internal(exc)``).
    """

    async def abort(context: GrpcContext, exc: BaseException, name: str) -> None:
        if isinstance(exc, RpcError):
            status: Status | None = (exc.code, str(exc))
        elif isinstance(exc, BadRequest):
            status = bad_request_status(api, name, context, exc)
        else:
            status = table(exc)
        if status is None:
            count = _failures.admit((api, name, type(exc)))
            if count is not None:
                log.error("%s %s failed%s", api, name, held_back(count), exc_info=exc)
            status = (grpc.StatusCode.INTERNAL, internal(exc))
        stop_if_caller_gone(context)
        context.set_trailing_metadata(((ORIGIN, "server"),))
        await context.abort(*status)

    def unary(fn: Callable[..., Awaitable[Resp]]) -> Callable[..., Awaitable[Resp]]:
        name = fn.__name__

        @functools.wraps(fn)
        async def wrapper(self: Any, request: Any, context: GrpcContext) -> Resp:
            try:
                if type(request) is Undecodable:
                    _checked(request)  # raises BadRequest
                return await fn(self, request, request_context(api, name, context))
            except Exception as e:
                await abort(context, e, name)
            raise AssertionError("unreachable")

        return wrapper

    def stream(fn: Callable[..., AsyncIterator[Resp]]) -> Callable[..., Awaitable[None]]:
        name = fn.__name__

        @functools.wraps(fn)
        async def wrapper(self: Any, request: Any, context: GrpcContext) -> None:
            # Written here rather than yielded to gRPC: a send that fails because the caller
            # went away under it then fails here, where it is expected, instead of in gRPC's
            # loop, which logs it as an error with a traceback.
            try:
                # A streamed request is checked as each message arrives.
                request = (_checked_stream(request) if hasattr(request, "__aiter__")
                           else _checked(request))
                async for item in fn(self, request, request_context(api, name, context)):
                    stop_if_caller_gone(context)
                    await context.write(item)
                stop_if_caller_gone(context)  # else gRPC sends the final status
            except ExecuteBatchError:
                raise asyncio.CancelledError from None  # the call is gone: nothing to send
            except Exception as e:
                await abort(context, e, name)

        return wrapper

    return unary, stream
