"""Calling a running app from another process: :class:`AppClient` (blocking) and
:class:`AsyncAppClient` (asyncio), with the stubs of the state machine's methods.

Both ride on the KV client (``confer.Client`` / ``confer.aio.Client``): its endpoints, TLS,
authentication, failover, retries and errors. A query is retried like a read; a command like
a transaction: retried only when the failure proves it was not applied, else it raises
:class:`~confer.client.OutcomeUnknown` (it may or may not have been applied).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from confer.client import Client
from confer.client.aio import Client as AioClient
from confer.client.plans import Call
from confer.client.policy import Retry
from confer.client.protocol import Rpc
from confer.replicated.machine import StateMachine, methods_of, stub
from confer.replicated.replica import Result
from confer.v1 import app_pb2

M = TypeVar("M", bound=StateMachine)
C = TypeVar("C", Client, AioClient)

COMMAND = Rpc("Command", "/confer.v1.App/Command", app_pb2.AppCall.SerializeToString,
              app_pb2.AppResult.FromString)
QUERY = Rpc("Query", "/confer.v1.App/Query", app_pb2.AppCall.SerializeToString,
            app_pb2.AppResult.FromString)


def _unwrap(response: app_pb2.AppResult, _endpoint: str) -> Any:
    return Result(response.value, response.error_type, response.error_message).unwrap()


class _AppClientBase(Generic[M, C]):
    _client_class: type[C]

    def __init__(self, cls: type[M], endpoints: list[str] | str | None = None,
                 **options: Any) -> None:
        self.cls = cls
        self.methods = methods_of(cls)
        self.client: C = self._client_class(endpoints, **options)
        """The underlying KV client (the same cluster: ``client.status()``...)."""

    def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any],
              serializable: bool | None, timeout: float | None) -> Call[Any]:
        spec = self.methods.get(method)
        if spec is None:
            raise AttributeError(f"{self.cls.__name__} has no command or query {method!r}")
        request = app_pb2.AppCall(app=self.cls.__name__, method=method,
                                  arguments=spec.encode_arguments(args, kwargs),
                                  serializable=bool(serializable))
        what = f"{self.cls.__name__}.{method}"
        if spec.is_command:
            return Call(what, COMMAND, request, Retry.ONCE, _unwrap, timeout)
        return Call(what, QUERY, request, Retry.READ, _unwrap, timeout)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or name in ("cls", "methods", "client"):
            raise AttributeError(name)
        return stub(self.cls, name, self.call)

    def call(self, method: str, /, *args: Any, serializable: bool | None = None,
             timeout: float | None = None, **kwargs: Any) -> Any:
        """Call command or query ``method`` with these arguments (checked here first: a
        TypeError names the rule they break). A command returns its result once committed
        and applied; a query is linearizable unless ``serializable``. What the method
        raised is raised as :class:`~confer.replicated.CommandError`."""
        return self.client._run(self._call(method, args, kwargs, serializable, timeout))


class AppClient(_AppClientBase[M, Client]):
    """A blocking client of ``cls``'s cluster: ``AppClient(Counter, endpoints).incr(5)``.

    ``endpoints`` and ``options`` are ``confer.Client``'s (timeout, TLS, user...).
    """

    _client_class = Client

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> AppClient[M]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncAppClient(_AppClientBase[M, AioClient]):
    """The asyncio client: ``await AsyncAppClient(Counter, endpoints).incr(5)``."""

    _client_class = AioClient

    def call(self, method: str, /, *args: Any, serializable: bool | None = None,
             timeout: float | None = None, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        """As :meth:`AppClient.call`, a coroutine."""
        return super().call(method, *args, serializable=serializable, timeout=timeout,
                            **kwargs)  # what the aio client's _run returns

    async def close(self) -> None:
        await self.client.close()

    async def __aenter__(self) -> AsyncAppClient[M]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
