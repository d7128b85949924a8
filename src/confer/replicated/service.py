"""A member's side of an app: its replica in the server's state machine, the calls into it
(commands through the log, queries at a read point), and the gRPC ``App`` service that
serves them on the client port (``proto/confer/v1/app.proto``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

import grpc

from confer.kv import InvalidArgument
from confer.replicated.machine import Method, StateMachine
from confer.replicated.replica import Replica, Result, encode_entry
from confer.server.api import RequestContext, RequestLayer
from confer.server.api.context import Access, AccessKind
from confer.server.native.common import header_pb, rpc
from confer.server.rpc import Adapter, register
from confer.v1 import app_pb2, app_pb2_grpc

if TYPE_CHECKING:
    from confer.server.app import ConferServer

M = TypeVar("M", bound=StateMachine)

APP_KEY_PREFIX = "/apps/"
"""Under authentication, a call of method ``m`` of app ``A`` is an access to the key
``/apps/A/m`` (a write for a command, a read for a query): grant roles permissions there."""


class AppRuntime(Generic[M]):
    """Runs a state machine class in a member (:class:`~confer.server.app.App`)."""

    def __init__(self, cls: type[M]) -> None:
        self.replica: Replica[M] = Replica(cls)
        self._server: ConferServer | None = None

    @property
    def state(self) -> Replica[M]:
        return self.replica

    @property
    def name(self) -> str:
        return self.replica.name

    def add_services(self, server: ConferServer, grpc_server: grpc.aio.Server) -> None:
        self._server = server
        register(server.api, grpc_server, [
            (app_pb2_grpc.add_AppServicer_to_server, lambda layer: AppService(layer, self))])

    @property
    def server(self) -> ConferServer:
        if self._server is None:
            raise RuntimeError("the member is not started")
        return self._server

    def method(self, name: str, kind: str) -> Method:
        method = self.replica.methods.get(name)
        if method is None or method.kind != kind:
            known = sorted(n for n, m in self.replica.methods.items() if m.kind == kind)
            raise InvalidArgument(f"{self.name} has no {kind} {name!r} (its {kind}s: "
                                  f"{', '.join(known) or 'none'})")
        return method

    async def command(self, ctx: RequestContext, name: str, arguments: bytes) -> Result:
        """Replicate a call of command ``name`` (``arguments`` encoded by the caller) and
        return its result once applied on this member. Bad arguments: InvalidArgument,
        before anything is proposed."""
        method = self.method(name, "command")
        server = self.server
        server.api.core.check(ctx, Access(AccessKind.WRITE, self._key(name)))
        _checked(method, arguments)
        cls = self.replica.cls
        entry = encode_entry(cls.write_version or cls.version, name, arguments)
        if len(entry) > server.cfg.max_request_bytes:
            raise InvalidArgument(f"{self.name}.{name}(): a command of {len(entry)} bytes "
                                  f"exceeds --max-request-bytes ({server.cfg.max_request_bytes})")
        result = await server.consensus.replicate(entry, ctx.deadline)
        assert isinstance(result, Result)
        return result

    async def query(self, ctx: RequestContext, name: str, arguments: bytes,
                    serializable: bool | None = None) -> Result:
        """Run query ``name`` on this member once its state may answer it: linearizable
        unless ``serializable`` (None: the query's own default)."""
        method = self.method(name, "query")
        args, kwargs = _checked(method, arguments)
        if serializable is None:
            serializable = method.serializable
        await self.server.api.core.read(ctx, Access(AccessKind.READ, self._key(name)),
                                        serializable)
        return self.replica.query(method, args, kwargs)

    def _key(self, method: str) -> bytes:
        return f"{APP_KEY_PREFIX}{self.name}/{method}".encode()


def _checked(method: Method, arguments: bytes) -> tuple[list[Any], dict[str, Any]]:
    try:
        return method.decode_arguments(arguments)
    except (TypeError, ValueError) as e:
        raise InvalidArgument(str(e)) from None


class AppService(Adapter, app_pb2_grpc.AppServicer):
    """confer.v1 ``App``: commands, queries and the app's description."""

    def __init__(self, layer: RequestLayer, app: AppRuntime[Any]) -> None:
        super().__init__(layer)
        self.app = app

    def _result(self, result: Result) -> app_pb2.AppResult:
        return app_pb2.AppResult(header=header_pb(self.layer.header()), value=result.value,
                                 error_type=result.error_type,
                                 error_message=result.error_message)

    def _check_app(self, request: app_pb2.AppCall) -> None:
        if request.app != self.app.name:
            raise InvalidArgument(f"this member runs app {self.app.name!r}, not "
                                  f"{request.app!r}")

    @rpc
    async def Command(self, request: app_pb2.AppCall, ctx: RequestContext
                      ) -> app_pb2.AppResult:
        self._check_app(request)
        return self._result(await self.app.command(ctx, request.method, request.arguments))

    @rpc
    async def Query(self, request: app_pb2.AppCall, ctx: RequestContext) -> app_pb2.AppResult:
        self._check_app(request)
        return self._result(await self.app.query(ctx, request.method, request.arguments,
                                                 True if request.serializable else None))

    @rpc
    async def Describe(self, request: app_pb2.DescribeRequest, ctx: RequestContext
                       ) -> app_pb2.DescribeResponse:
        methods = self.app.replica.methods.values()
        return app_pb2.DescribeResponse(
            header=header_pb(self.layer.header()), app=self.app.name,
            version=self.app.replica.cls.version,
            commands=sorted(m.name for m in methods if m.is_command),
            queries=sorted(m.name for m in methods if not m.is_command))
