"""What both APIs' gRPC adapters share: a request context from a gRPC call, and handler
decorators that turn exceptions into statuses through an API's own error table."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
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
    """Register each servicer, built on ``layer``, with ``grpc_server``."""
    for add, servicer in services:
        add(servicer(layer), grpc_server)

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
        status = (exc.code, str(exc)) if isinstance(exc, RpcError) else table(exc)
        if status is None:
            log.exception("%s %s failed", api, name, exc_info=exc)
            status = (grpc.StatusCode.INTERNAL, internal(exc))
        context.set_trailing_metadata(((ORIGIN, "server"),))
        await context.abort(*status)

    def unary(fn: Callable[..., Awaitable[Resp]]) -> Callable[..., Awaitable[Resp]]:
        name = fn.__name__

        @functools.wraps(fn)
        async def wrapper(self: Any, request: Any, context: GrpcContext) -> Resp:
            try:
                return await fn(self, request, request_context(api, name, context))
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
                async for item in fn(self, request, request_context(api, name, context)):
                    yield item
            except Exception as e:
                await abort(context, e, name)

        return wrapper

    return unary, stream
