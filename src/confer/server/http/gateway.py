"""etcd's JSON gateway on the HTTP listener: ``POST /v3/kv/put`` and the other paths of
etcd's grpc-gateway (``api/etcdserverpb/gw/rpc.pb.gw.go`` and the lock and election ones),
so that the ``curl`` examples of etcd's documentation and etcd's HTTP/JSON clients work
(docs/etcd-compatibility.md, "The JSON gateway").

No second implementation of any RPC: the gateway calls the very handlers the client port
registers (:data:`confer.server.etcd.ETCD_SERVICES` through :func:`confer.server.rpc.register`),
with :class:`HttpCall` standing in for the gRPC call, so every check (sizes, quotas, auth,
etcd's errors) and every metric applies as over gRPC. As in etcd, where the gateway calls the
gRPC server over a loopback connection, the calls count in the gRPC metrics.

The encoding is grpc-gateway's as etcd configures it: protobuf's JSON mapping with the
proto's field names (``create_revision``), 64-bit integers as strings, bytes in base64,
enums by name, default values left out; request fields not in the proto are ignored (etcd's
``DiscardUnknown``). A failure is answered with the HTTP status grpc-gateway maps its gRPC
code to, and ``{"error": message, "code": N, "message": message}``. Streamed responses
(``/v3/watch``, ``/v3/lease/keepalive``...) are newline-delimited JSON objects
``{"result": {...}}``; a failure after the first ends the stream with ``{"error": {"code":
N, "message": ...}}``.

The auth token is the ``Authorization`` header, as etcd's gateway passes it on. Over HTTPS
with client-certificate verification, a request without a token is the user its certificate's
common name names, as on the client port. The gateway is not served while the client port
serves TLS and this listener does not (:func:`gateway_routes`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.message import Message

from confer.server.etcd import ETCD_SERVICES
from confer.server.http.exposure import bypasses_client_tls
from confer.server.http.member import Member
from confer.server.rpc import TOKEN_KEY, Registration, register

log = logging.getLogger("confer.http")

PATHS: dict[str, str] = {
    "/v3/kv/range": "etcdserverpb.KV/Range",
    "/v3/kv/put": "etcdserverpb.KV/Put",
    "/v3/kv/deleterange": "etcdserverpb.KV/DeleteRange",
    "/v3/kv/txn": "etcdserverpb.KV/Txn",
    "/v3/kv/compaction": "etcdserverpb.KV/Compact",
    "/v3/watch": "etcdserverpb.Watch/Watch",
    "/v3/lease/grant": "etcdserverpb.Lease/LeaseGrant",
    "/v3/lease/revoke": "etcdserverpb.Lease/LeaseRevoke",
    "/v3/kv/lease/revoke": "etcdserverpb.Lease/LeaseRevoke",
    "/v3/lease/keepalive": "etcdserverpb.Lease/LeaseKeepAlive",
    "/v3/lease/timetolive": "etcdserverpb.Lease/LeaseTimeToLive",
    "/v3/kv/lease/timetolive": "etcdserverpb.Lease/LeaseTimeToLive",
    "/v3/lease/leases": "etcdserverpb.Lease/LeaseLeases",
    "/v3/kv/lease/leases": "etcdserverpb.Lease/LeaseLeases",
    "/v3/cluster/member/add": "etcdserverpb.Cluster/MemberAdd",
    "/v3/cluster/member/remove": "etcdserverpb.Cluster/MemberRemove",
    "/v3/cluster/member/update": "etcdserverpb.Cluster/MemberUpdate",
    "/v3/cluster/member/list": "etcdserverpb.Cluster/MemberList",
    "/v3/cluster/member/promote": "etcdserverpb.Cluster/MemberPromote",
    "/v3/maintenance/alarm": "etcdserverpb.Maintenance/Alarm",
    "/v3/maintenance/status": "etcdserverpb.Maintenance/Status",
    "/v3/maintenance/defragment": "etcdserverpb.Maintenance/Defragment",
    "/v3/maintenance/hash": "etcdserverpb.Maintenance/Hash",
    "/v3/maintenance/hashkv": "etcdserverpb.Maintenance/HashKV",
    "/v3/maintenance/snapshot": "etcdserverpb.Maintenance/Snapshot",
    "/v3/maintenance/transfer-leadership": "etcdserverpb.Maintenance/MoveLeader",
    "/v3/maintenance/downgrade": "etcdserverpb.Maintenance/Downgrade",
    "/v3/auth/enable": "etcdserverpb.Auth/AuthEnable",
    "/v3/auth/disable": "etcdserverpb.Auth/AuthDisable",
    "/v3/auth/status": "etcdserverpb.Auth/AuthStatus",
    "/v3/auth/authenticate": "etcdserverpb.Auth/Authenticate",
    "/v3/auth/user/add": "etcdserverpb.Auth/UserAdd",
    "/v3/auth/user/get": "etcdserverpb.Auth/UserGet",
    "/v3/auth/user/list": "etcdserverpb.Auth/UserList",
    "/v3/auth/user/delete": "etcdserverpb.Auth/UserDelete",
    "/v3/auth/user/changepw": "etcdserverpb.Auth/UserChangePassword",
    "/v3/auth/user/grant": "etcdserverpb.Auth/UserGrantRole",
    "/v3/auth/user/revoke": "etcdserverpb.Auth/UserRevokeRole",
    "/v3/auth/role/add": "etcdserverpb.Auth/RoleAdd",
    "/v3/auth/role/get": "etcdserverpb.Auth/RoleGet",
    "/v3/auth/role/list": "etcdserverpb.Auth/RoleList",
    "/v3/auth/role/delete": "etcdserverpb.Auth/RoleDelete",
    "/v3/auth/role/grant": "etcdserverpb.Auth/RoleGrantPermission",
    "/v3/auth/role/revoke": "etcdserverpb.Auth/RoleRevokePermission",
    "/v3/lock/lock": "v3lockpb.Lock/Lock",
    "/v3/lock/unlock": "v3lockpb.Lock/Unlock",
    "/v3/election/campaign": "v3electionpb.Election/Campaign",
    "/v3/election/proclaim": "v3electionpb.Election/Proclaim",
    "/v3/election/leader": "v3electionpb.Election/Leader",
    "/v3/election/observe": "v3electionpb.Election/Observe",
    "/v3/election/resign": "v3electionpb.Election/Resign",
}
"""etcd's gateway paths (v3.4 on) and the gRPC method each calls."""

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}
"""grpc-gateway's HTTP status for each gRPC code (its ``HTTPStatusFromCode``)."""

BODY_SLACK = 64 << 10
"""Bytes a request body may have beyond the base64 of the largest request (--max-request-
bytes): room for the JSON around it. The request layer checks the request itself."""

CONTENT_TYPE = "application/json"


def gateway_routes(member: Member) -> list[web.RouteDef]:
    """The gateway's route, unless ``--enable-grpc-gateway false`` or the client port serves
    TLS while the listener does not (:func:`~confer.server.http.exposure.bypasses_client_tls`)."""
    if not member.cfg.enable_grpc_gateway or bypasses_client_tls(member, "etcd's JSON gateway"):
        return []
    gateway = Gateway(member)
    # One route for every /v3 path: an unknown one gets grpc-gateway's JSON 404.
    return [web.route("*", "/v3/{path:.*}", gateway.handle)]


class _Capture:
    """Stands in for the gRPC server while the etcd services register: keeps the generic
    handlers :func:`confer.server.rpc.register` builds."""

    def __init__(self) -> None:
        self.handlers: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.handlers.extend(handlers)


class _CallDetails(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


@dataclass(frozen=True)
class Method:
    """One gRPC method as the gateway calls it."""

    behavior: Callable[..., Any]
    """The registered handler: ``behavior(request or request iterator, call)``."""
    request_type: type[Message]
    request_streaming: bool
    response_streaming: bool


def bind_methods(member: Member, services: list[Registration], names: Iterable[str]
                 ) -> dict[str, Method]:
    """The handlers of ``services`` that the client port registers, built on the member's
    request layer: each method named in ``names`` (``package.Service/Method``), by name."""
    capture = _Capture()
    register(member.api, capture, services)
    methods = {}
    for name in names:
        details = _CallDetails(f"/{name}")
        handler = next(h for h in (g.service(details) for g in capture.handlers) if h)
        behavior = (handler.unary_unary or handler.unary_stream or handler.stream_unary
                    or handler.stream_stream)
        assert behavior is not None
        desc = descriptor_pool.Default().FindMethodByName(name.replace("/", "."))
        methods[name] = Method(behavior, message_factory.GetMessageClass(desc.input_type),
                               handler.request_streaming, handler.response_streaming)
    return methods


class BadBody(Exception):
    """A request body that is not the JSON of the method's request (answered 400)."""


class BodyTooLarge(Exception):
    """A request body over its limit (answered 413 before it is parsed)."""


class Gateway:
    """Serves etcd's gateway paths for one member."""

    def __init__(self, member: Member) -> None:
        methods = bind_methods(member, ETCD_SERVICES, set(PATHS.values()))
        self.methods = {path: methods[name] for path, name in PATHS.items()}
        self.max_body = member.cfg.max_request_bytes * 4 // 3 + BODY_SLACK

    async def handle(self, request: web.Request) -> web.StreamResponse:
        method = self.methods.get(request.path)
        if method is None:
            return error_response(404, grpc.StatusCode.NOT_FOUND, "Not Found")
        if request.method != "POST":
            return error_response(405, grpc.StatusCode.UNIMPLEMENTED, "Method Not Allowed",
                                  headers={"Allow": "POST"})
        try:
            body = await read_body(request, self.max_body)
            messages = parse(body, method.request_type, method.request_streaming)
        except BadBody as e:
            return error_response(400, grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except BodyTooLarge:
            return error_response(413, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  f"the request body is larger than {self.max_body} bytes")
        call = HttpCall(request)
        arg: Any = _iterate(messages) if method.request_streaming else messages[0]
        try:
            result = await method.behavior(arg, call)
        except Aborted:
            return await call.failed()
        if method.response_streaming:
            return await call.end()
        return web.Response(text=compact(to_dict(result)), content_type=CONTENT_TYPE)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request's body, or BodyTooLarge once it passes ``limit`` bytes."""
    # Read here rather than by request.read(): its limit (client_max_size) is the
    # listener's, for every route, and smaller than an etcd request may be.
    if (request.content_length or 0) > limit:
        raise BodyTooLarge
    chunks = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def parse(body: bytes, kind: type[Message], streaming: bool) -> list[Message]:
    """The request messages of ``body``: JSON objects one after another (whitespace
    between them), each the JSON of a ``kind``. A unary method takes exactly one (an
    empty body: an empty request, as grpc-gateway reads it); a streaming one, any number.
    BadBody says what is wrong."""
    try:
        text = body.decode()
    except UnicodeDecodeError as e:
        raise BadBody(f"the request body is not UTF-8: {e}") from None
    values = list(_json_values(text))
    if not streaming:
        if len(values) > 1:
            raise BadBody("the request body holds more than one JSON object")
        values = values or [{}]
    messages = []
    for value in values:
        if not isinstance(value, dict):
            raise BadBody(f"the request body must be a JSON object (a {kind.DESCRIPTOR.name}),"
                          f" not {type(value).__name__}")
        try:
            messages.append(json_format.ParseDict(value, kind(), ignore_unknown_fields=True))
        except (json_format.ParseError, RecursionError) as e:
            raise BadBody(f"not a valid {kind.DESCRIPTOR.name}: {e}") from None
    return messages


def _json_values(text: str) -> Iterator[Any]:
    decoder = json.JSONDecoder()
    pos = 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":  # JSON's whitespace
            pos += 1
        if pos == len(text):
            return
        try:
            value, pos = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError) as e:
            raise BadBody(f"the request body is not valid JSON: {e}") from None
        yield value


async def _iterate(messages: list[Message]) -> AsyncIterator[Message]:
    """A streamed request: its messages, then the end of the client's side (the body
    is read whole first, as one HTTP/1.1 request carries it)."""
    for m in messages:
        yield m


def to_dict(message: Message) -> dict[str, Any]:
    """``message`` in etcd's JSON mapping (see the module docstring)."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def compact(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


def error_body(code: grpc.StatusCode, message: str) -> dict[str, Any]:
    """grpc-gateway's error object (``error``: the message, as its version 1 had it)."""
    return {"error": message, "code": code.value[0], "message": message}


def error_response(status: int, code: grpc.StatusCode, message: str,
                   headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=compact(error_body(code, message)),
                        content_type=CONTENT_TYPE, headers=headers)


class Aborted(Exception):
    """What :meth:`HttpCall.abort` raises, as gRPC's ``abort`` does (the status is kept on
    the call)."""


class HttpCall:
    """One HTTP request, as much of a gRPC call (``grpc.aio.ServicerContext``) as the
    handlers registered through ``confer.server.rpc`` use: its metadata (the auth token),
    peer and deadline (none: the request layer's default applies), and its end, with a
    status (:meth:`abort`) or, for a streamed response, its messages (:meth:`write`)."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        auth = request.headers.get("Authorization", "")
        self._metadata = ((TOKEN_KEY, auth),) if auth else ()
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self.stream: web.StreamResponse | None = None
        """The streamed response, once its first message is written."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None

    def peer(self) -> str:
        """The client's address as gRPC names peers (``ipv4:host:port``, ``ipv6:[h]:p``)."""
        transport = self.request.transport
        name = transport.get_extra_info("peername") if transport is not None else None
        if not isinstance(name, tuple) or len(name) < 2:
            return ""
        host, port = name[0], name[1]
        return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"

    def auth_context(self) -> dict[str, list[bytes]]:
        """The client certificate's common name, as gRPC reports it: over HTTPS with
        client-certificate verification (the client port's rule), it is the user of a
        request without a token, as on the client port."""
        transport = self.request.transport
        tls = transport.get_extra_info("ssl_object") if transport is not None else None
        cert = tls.getpeercert() if tls is not None else None  # {} unless verified
        names = [value.encode() for rdn in (cert or {}).get("subject", ())
                 for key, value in rdn if key == "commonName"]
        return {"x509_common_name": names} if names else {}

    def cancelled(self) -> bool:
        transport = self.request.transport
        return transport is None or transport.is_closing()

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        """The message of the status the call ended with (:meth:`abort`)."""
        return self._details

    def set_trailing_metadata(self, metadata: object) -> None:
        """HTTP/1.1 responses carry no trailers: nothing to do."""

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self._code = code
        self._details = details
        raise Aborted(details)

    async def write(self, message: Message) -> None:
        """Send one message of a streamed response (the first sends the headers)."""
        await self._send({"result": to_dict(message)})

    async def failed(self) -> web.StreamResponse:
        """The answer to a call that ended with a status (:meth:`abort`): an error
        response, or, after streamed messages, the error as the stream's last object."""
        assert self._code is not None
        if self.stream is None:
            return error_response(HTTP_STATUS.get(self._code, 500), self._code,
                                  self._details)
        await self._send({"error": {"code": self._code.value[0], "message": self._details}})
        return await self.end()

    async def end(self) -> web.StreamResponse:
        """End a streamed response (an empty one if nothing was written)."""
        stream = await self._stream()
        await stream.write_eof()
        return stream

    async def _stream(self) -> web.StreamResponse:
        if self.stream is None:
            stream = web.StreamResponse()
            stream.content_type = CONTENT_TYPE
            await stream.prepare(self.request)
            self.stream = stream
        return self.stream

    async def _send(self, obj: dict[str, Any]) -> None:
        try:
            await (await self._stream()).write(compact(obj).encode() + b"\n")
        except ConnectionError:
            # The client went away: nothing more to send. As at a gRPC call's end, this
            # stops the handler without counting as its failure.
            raise asyncio.CancelledError from None


__all__ = ["PATHS", "Aborted", "BodyTooLarge", "Gateway", "HttpCall", "Method", "bind_methods",
           "gateway_routes", "read_body"]
