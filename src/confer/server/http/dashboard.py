"""The web dashboard on the HTTP listener: ``/ui/`` (``/`` redirects there), plain HTML, CSS
and JavaScript modules shipped in the package (:data:`ASSETS`, no build step), and the JSON
API they read, ``/ui/api/...`` (docs/dashboard.md).

No second implementation of any request: every call goes through the member's request layer
by the handlers the client port registers (confer.v1's, and etcd's Authenticate), called with
the gateway's stand-in for a gRPC call (:func:`confer.server.http.gateway.bind_methods`,
:class:`~confer.server.http.gateway.HttpCall`). So authentication, permissions, limits, audit
logs and the RPC metrics apply exactly as over gRPC; the auth token is the ``Authorization``
header, as for the gateway. The other members' status comes from their own client ports
(confer.v1 ``Cluster/Status``, with the caller's token).

It writes keys only for a signed-in user (``POST /ui/api/put`` and ``/ui/api/delete``, through
confer.v1's ``KV/Put`` and ``KV/Delete``): a write needs a token, so while authentication is
disabled, when nobody can sign in, the dashboard only reads; anyone who reaches the listener
could write otherwise. A write must be sent as JSON (a cross-site form cannot, without a
preflight this listener does not answer) and from this listener's own origin, if the browser
names one (:meth:`Dashboard.write_body`).

As the gateway, the dashboard is not served while the client port serves TLS and this
listener does not (it would bypass the client port's TLS and certificate checks; over HTTPS
it has the same files and rule, and a certificate's common name is the user), nor with
``--enable-dashboard false``.

Answers are JSON in the gateway's encoding (protobuf's JSON mapping with the protos' field
names: 64-bit integers as strings, bytes in base64, default values left out); a failure is
the gateway's error object with the HTTP status of its gRPC code, and a bad parameter is
answered 400 with a message naming the rule. ``/ui/api/watch`` streams newline-delimited
``{"result": WatchResponse}`` objects, as the gateway's ``/v3/watch``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import grpc
from aiohttp import web
from google.protobuf.message import Message

from confer.etcdpb.etcdserverpb import rpc_pb2
from confer.server.etcd import ETCD_SERVICES
from confer.server.http.exposure import bypasses_client_tls
from confer.server.http.gateway import (
    BODY_SLACK,
    CONTENT_TYPE,
    HTTP_STATUS,
    Aborted,
    BodyTooLarge,
    HttpCall,
    Method,
    bind_methods,
    compact,
    error_response,
    read_body,
    to_dict,
)
from confer.server.http.member import Member
from confer.server.members import Member as MemberInfo
from confer.server.native import NATIVE_SERVICES
from confer.server.rpc import TOKEN_KEY
from confer.server.tls import TlsFiles, client_port_credentials
from confer.v1 import coord_pb2, kv_pb2, kv_pb2_grpc

log = logging.getLogger("confer.http")

ASSETS = Path(__file__).with_name("dashboard_ui")
"""The page and its scripts and styles (package data: pyproject's ``package-data``)."""

ASSET_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
               ".svg": "image/svg+xml"}
"""The files of :data:`ASSETS` that are served, by suffix, with their content type."""

PAGE_HEADERS = {
    # Scripts, styles and requests from this listener only, no inline script or style, no
    # framing: a value that slipped through as markup could still run nothing.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; "
                               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
API_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

MEMBER_TIMEOUT = 1.0
"""Seconds another member's Status may take before the cluster page calls it unhealthy (the
page asks once a second)."""
LEADER_CHANGES = 50
"""Leader changes the cluster page's timeline keeps (the latest)."""
MAX_HISTORY = 100
"""Past versions of a key one history request may read (one Range each)."""
MAX_CHILDREN = 1000
"""Children names one listing may return (``more`` says there are others)."""
MAX_LEASES = 200
"""Leases the leases, locks and elections pages look at (one TimeToLive each)."""
MAX_KEYS = 1000
"""Keys the services page reads."""
CONCURRENT_CALLS = 16
"""Calls one dashboard request makes at once (TimeToLive of each lease...)."""
WATCH_PROGRESS = 10.0
"""Seconds between a quiet watch's progress messages: the page shows the revision reached,
and a proxy sees a live connection."""

RANGE = "confer.v1.KV/Range"
PUT = "confer.v1.KV/Put"
DELETE = "confer.v1.KV/Delete"
CHILDREN = "confer.v1.KV/Children"
WATCH = "confer.v1.KV/Watch"
STATUS = "confer.v1.Cluster/Status"
MEMBER_LIST = "confer.v1.Cluster/MemberList"
LEASES = "confer.v1.Lease/Leases"
TIME_TO_LIVE = "confer.v1.Lease/TimeToLive"
AUTHENTICATE = "etcdserverpb.Auth/Authenticate"

M = TypeVar("M", bound=Message)


def dashboard_routes(member: Member) -> list[web.RouteDef]:
    """The dashboard's routes, unless ``--enable-dashboard false`` or the client port serves
    TLS while the listener does not (:func:`~confer.server.http.exposure.bypasses_client_tls`)."""
    if not member.cfg.enable_dashboard or bypasses_client_tls(member, "the dashboard"):
        return []
    return Dashboard(member).routes()


class BadParam(Exception):
    """A query parameter or body that breaks a rule of the dashboard's API (answered 400)."""


class Refused(Exception):
    """A request the dashboard refuses before calling anything (answered ``status``)."""

    def __init__(self, status: int, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class CallFailed(Exception):
    """A call through the request layer ended with a gRPC status other than OK."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class Calls:
    """The request layer's handlers the dashboard calls, each as the client port serves it."""

    def __init__(self, member: Member) -> None:
        self.methods: dict[str, Method] = {
            **bind_methods(member, NATIVE_SERVICES, [RANGE, PUT, DELETE, CHILDREN, WATCH,
                                                     STATUS, MEMBER_LIST, LEASES,
                                                     TIME_TO_LIVE]),
            **bind_methods(member, ETCD_SERVICES, [AUTHENTICATE]),
        }

    async def unary(self, request: web.Request, name: str, message: Message,
                    answer: type[M]) -> M:
        """Call unary method ``name`` for ``request`` (its token, its peer); CallFailed
        if it ends with a status."""
        call = HttpCall(request)
        try:
            result = await self.methods[name].behavior(message, call)
        except Aborted:
            code = call.code()
            assert code is not None
            raise CallFailed(code, call.details()) from None
        return cast(M, result)

    async def stream(self, request: web.Request, name: str, message: Message
                     ) -> web.StreamResponse:
        """Stream method ``name``'s responses as the gateway does (one JSON object a line)."""
        call = HttpCall(request)
        try:
            await self.methods[name].behavior(message, call)
        except Aborted:
            return await call.failed()
        return await call.end()


@dataclass(frozen=True)
class LeaderChange:
    at: float
    """Unix time this member learnt of it."""
    leader: int
    """0: no leader known."""
    term: int


class LeaderTimeline:
    """The last :data:`LEADER_CHANGES` leader changes this member saw (from when its HTTP
    listener started: before its Raft node, so the first election is in it)."""

    def __init__(self, member: Member) -> None:
        self.member = member
        self.changes: deque[LeaderChange] = deque(maxlen=LEADER_CHANGES)
        member.cluster_listeners.append(self._on_cluster_event)

    def _on_cluster_event(self, kind: str, _member: MemberInfo | None, leader: int) -> None:
        if kind != "leader" or (self.changes and self.changes[-1].leader == leader):
            return
        node = self.member.node
        self.changes.append(LeaderChange(time.time(), leader,
                                         node.status().term if node is not None else 0))

    def json(self) -> list[dict[str, Any]]:
        return [{"at": c.at, "leader": str(c.leader), "term": str(c.term)}
                for c in self.changes]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json_api(fn: Callable[[web.Request], Awaitable[dict[str, Any]]]) -> Handler:
    """A handler answering ``fn``'s dict as JSON, and its errors as the gateway's."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            body = await fn(request)
        except BadParam as e:
            return error_response(400, grpc.StatusCode.INVALID_ARGUMENT, str(e),
                                  headers=API_HEADERS)
        except Refused as e:
            return error_response(e.status, e.code, str(e), headers=API_HEADERS)
        except CallFailed as e:
            return error_response(HTTP_STATUS.get(e.code, 500), e.code, str(e),
                                  headers=API_HEADERS)
        return web.Response(text=compact(body), content_type=CONTENT_TYPE,
                            headers=API_HEADERS)

    return handle


class Dashboard:
    """One member's dashboard: its pages, and the API they read."""

    def __init__(self, member: Member) -> None:
        self.member = member
        self.calls = Calls(member)
        self.timeline = LeaderTimeline(member)
        self.assets = {p.name: (p.read_bytes(), ASSET_TYPES[p.suffix])
                       for p in sorted(ASSETS.iterdir()) if p.suffix in ASSET_TYPES}
        # value_hex takes two characters a byte; the request layer checks the request.
        self.max_write_body = 2 * member.cfg.max_request_bytes + BODY_SLACK

    def routes(self) -> list[web.RouteDef]:
        api: list[tuple[str, str, Callable[[web.Request], Awaitable[dict[str, Any]]]]] = [
            ("GET", "/ui/api/cluster", self.cluster),
            ("GET", "/ui/api/children", self.children),
            ("GET", "/ui/api/key", self.key),
            ("GET", "/ui/api/history", self.history),
            ("GET", "/ui/api/leases", self.leases),
            ("GET", "/ui/api/locks", self.locks),
            ("GET", "/ui/api/services", self.services),
            ("POST", "/ui/api/login", self.login),
            ("POST", "/ui/api/put", self.put),
            ("POST", "/ui/api/delete", self.delete),
        ]
        routes = [web.route(method, path, _json_api(fn)) for method, path, fn in api]
        listing = ", ".join([*(f"{m} {p}" for m, p, _ in api), "GET /ui/api/watch"])

        async def unknown(request: web.Request) -> web.Response:
            return error_response(404, grpc.StatusCode.NOT_FOUND,
                                  f"no dashboard API {request.method} {request.path[:200]}"
                                  f" (there are: {listing})", headers=API_HEADERS)

        return [web.get("/", _to_ui), web.get("/ui", _to_ui), web.get("/ui/", self.page),
                web.get("/ui/static/{name}", self.asset), *routes,
                web.get("/ui/api/watch", self.watch),
                web.route("*", "/ui/api/{rest:.*}", unknown)]

    # -- the page ------------------------------------------------------------------------------
    async def page(self, _request: web.Request) -> web.Response:
        body, kind = self.assets["index.html"]
        return web.Response(body=body, content_type=kind, charset="utf-8",
                            headers={**PAGE_HEADERS, "Cache-Control": "no-cache"})

    async def asset(self, request: web.Request) -> web.Response:
        found = self.assets.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound(text="no such file\n")
        body, kind = found
        return web.Response(body=body, content_type=kind, charset="utf-8",
                            headers={**PAGE_HEADERS, "Cache-Control": "no-cache"})

    # -- cluster -------------------------------------------------------------------------------
    async def cluster(self, request: web.Request) -> dict[str, Any]:
        """This member's status and every member's (from its own client port), with each
        one's health (it answers and knows a leader) and the leader timeline."""
        own = await self.calls.unary(request, STATUS, kv_pb2.StatusRequest(),
                                     kv_pb2.StatusResponse)
        members = (await self.calls.unary(request, MEMBER_LIST,
                                          kv_pb2.MemberListRequest(serializable=True),
                                          kv_pb2.MemberListResponse)).members
        token = request.headers.get("Authorization", "")
        rows = await _each(lambda m: self._member_row(m, own, token), members)
        return {"member_id": str(own.member_id), "leader_id": str(own.leader_id),
                "raft_term": str(own.raft_term), "members": rows,
                "leader_changes": self.timeline.json(), "now": time.time()}

    async def _member_row(self, member: kv_pb2.Member, own: kv_pb2.StatusResponse,
                          token: str) -> dict[str, Any]:
        row: dict[str, Any] = {"member": to_dict(member)}
        if member.id == own.member_id:
            status: kv_pb2.StatusResponse | None = own
            error = ""
        elif not member.client_addr:
            status, error = None, "not started"
        else:
            status, error = await _remote_status(member.client_addr, token,
                                                 self.member.cfg.client_tls)
        if status is not None:
            row["status"] = to_dict(status)
            if not status.leader_id:
                error = "no leader known"
        row["healthy"] = not error
        row["health"] = error or "healthy"
        return row

    # -- keys ----------------------------------------------------------------------------------
    async def children(self, request: web.Request) -> dict[str, Any]:
        limit = _int_param(request, "limit", MAX_CHILDREN, 1, MAX_CHILDREN)
        resp = await self.calls.unary(
            request, CHILDREN,
            kv_pb2.ChildrenRequest(path=_path_param(request), limit=limit,
                                   start_after=request.query.get("start_after", "")),
            kv_pb2.ChildrenResponse)
        return to_dict(resp)

    async def key(self, request: web.Request) -> dict[str, Any]:
        """One key (at ``rev``, 0 = latest): ``kv`` left out if there is none."""
        resp = await self._range(request, _path_param(request),
                                 _int_param(request, "rev", 0, 0, None))
        answer: dict[str, Any] = {"header": to_dict(resp.header)}
        if resp.kvs:
            answer["kv"] = to_dict(resp.kvs[0])
        return answer

    async def history(self, request: web.Request) -> dict[str, Any]:
        """The key's versions since it was last created, newest first: each read at the
        revision before the next one's change. ``compacted``: older versions were compacted
        away; ``more``: older versions are left out (``limit``)."""
        path = _path_param(request)
        limit = _int_param(request, "limit", 20, 1, MAX_HISTORY)
        first = await self._range(request, path, 0)
        versions = list(first.kvs[:1])
        compacted = False
        while versions and len(versions) < limit and versions[-1].version > 1:
            try:
                # At a past revision: what it holds is settled, no quorum round needed.
                older = await self._range(request, path, versions[-1].mod_revision - 1,
                                          serializable=True)
            except CallFailed as e:
                if e.code != grpc.StatusCode.OUT_OF_RANGE:
                    raise
                compacted = True
                break
            if not older.kvs:
                break
            versions.append(older.kvs[0])
        return {"header": to_dict(first.header), "versions": [to_dict(kv) for kv in versions],
                "compacted": compacted,
                "more": bool(versions) and not compacted and versions[-1].version > 1}

    async def _range(self, request: web.Request, path: str, revision: int, *,
                     recursive: bool = False, limit: int = 0, serializable: bool = False
                     ) -> kv_pb2.RangeResponse:
        return await self.calls.unary(
            request, RANGE,
            kv_pb2.RangeRequest(path=path, revision=revision, recursive=recursive,
                                limit=limit, serializable=serializable),
            kv_pb2.RangeResponse)

    async def watch(self, request: web.Request) -> web.StreamResponse:
        """The changes of a key (or, with ``recursive``, its subtree) from ``rev`` (0: from
        now), with each change's previous value."""
        try:
            message = kv_pb2.WatchRequest(
                path=_path_param(request), recursive=_bool_param(request, "recursive"),
                start_revision=_int_param(request, "rev", 0, 0, None), prev_kv=True,
                progress_interval=WATCH_PROGRESS)
        except BadParam as e:
            return error_response(400, grpc.StatusCode.INVALID_ARGUMENT, str(e),
                                  headers=API_HEADERS)
        return await self.calls.stream(request, WATCH, message)

    # -- leases, locks, elections, services ------------------------------------------------------
    async def leases(self, request: web.Request) -> dict[str, Any]:
        found, more = await self._leases(request)
        return {"leases": [to_dict(ttl) for ttl in found], "more": more}

    async def _leases(self, request: web.Request
                      ) -> tuple[list[coord_pb2.LeaseTimeToLiveResponse], bool]:
        """Every lease (the first :data:`MAX_LEASES`) with its remaining time and keys;
        whether there are more. A lease that ended meanwhile is left out."""
        every = (await self.calls.unary(request, LEASES, coord_pb2.LeaseLeasesRequest(),
                                        coord_pb2.LeaseLeasesResponse)).leases

        async def time_to_live(lease: coord_pb2.LeaseStatus
                               ) -> coord_pb2.LeaseTimeToLiveResponse:
            return await self.calls.unary(
                request, TIME_TO_LIVE, coord_pb2.LeaseTimeToLiveRequest(id=lease.id, keys=True),
                coord_pb2.LeaseTimeToLiveResponse)

        ttls = await _each(time_to_live, every[:MAX_LEASES])
        return [t for t in ttls if t.ttl >= 0], len(every) > MAX_LEASES

    async def locks(self, request: web.Request) -> dict[str, Any]:
        """Locks and elections: each name's queue of keys ``<name>/<lease hex>``, held by
        their leases, oldest (the holder, or leader) first (docs/coordination.md). Keys of
        locks hold nothing; a queue with a value in it is an election's."""
        found, more = await self._leases(request)
        entries = [key for ttl in found for key in ttl.keys
                   if key.rpartition("/")[2] == f"{ttl.id:x}"]
        ranges = await _each(lambda key: self._range(request, key, 0), entries[:MAX_KEYS])
        queues: dict[str, list[kv_pb2.KeyValue]] = {}
        for resp in ranges:
            for kv in resp.kvs[:1]:
                queues.setdefault(kv.path.rpartition("/")[0] or "/", []).append(kv)
        locks: list[dict[str, Any]] = []
        elections: list[dict[str, Any]] = []
        for name, kvs in sorted(queues.items()):
            kvs.sort(key=lambda kv: kv.create_revision)
            queue = {"name": name, "queue": [to_dict(kv) for kv in kvs]}
            (elections if any(kv.value for kv in kvs) else locks).append(queue)
        return {"locks": locks, "elections": elections,
                "more": more or len(entries) > MAX_KEYS}

    async def services(self, request: web.Request) -> dict[str, Any]:
        """Registered instances: the keys ``<prefix>/<service>/<instance>`` (the discovery
        layout, docs/coordination.md), by service."""
        prefix = _path_param(request, "prefix", "/services").rstrip("/") or "/"
        resp = await self._range(request, prefix, 0, recursive=True, limit=MAX_KEYS)
        services: dict[str, list[dict[str, Any]]] = {}
        start = len(prefix.rstrip("/")) + 1
        for kv in resp.kvs:
            service, _, instance = kv.path[start:].partition("/")
            if service and instance:
                services.setdefault(service, []).append({"instance": instance,
                                                         "kv": to_dict(kv)})
        return {"header": to_dict(resp.header), "prefix": prefix, "more": resp.more,
                "services": [{"name": name, "instances": instances}
                             for name, instances in sorted(services.items())]}

    # -- auth ----------------------------------------------------------------------------------
    async def login(self, request: web.Request) -> dict[str, Any]:
        """A token for ``{"name", "password"}`` (etcd's Authenticate): the page sends it back
        in the ``Authorization`` header."""
        try:
            body = await request.json()
        except ValueError as e:
            raise BadParam(f"the body must be a JSON object: {e}") from None
        if not (isinstance(body, dict) and isinstance(body.get("name"), str)
                and isinstance(body.get("password"), str)):
            raise BadParam('the body must be {"name": "...", "password": "..."} (strings)')
        resp = await self.calls.unary(
            request, AUTHENTICATE,
            rpc_pb2.AuthenticateRequest(name=body["name"], password=body["password"]),
            rpc_pb2.AuthenticateResponse)
        return {"token": resp.token, "name": body["name"]}

    # -- writes --------------------------------------------------------------------------------
    async def put(self, request: web.Request) -> dict[str, Any]:
        """``KV/Put`` of ``{"path", "value"}`` (text, stored as UTF-8) or ``{"path",
        "value_hex"}``, with ``"lease"`` (a lease id) to keep the key attached to its lease:
        a put without one detaches it, as etcd's."""
        body = await self.write_body(request, ("path", "value", "value_hex", "lease"))
        if ("value" in body) == ("value_hex" in body):
            raise BadParam('the body must have "value" (text) or "value_hex", not both')
        if "value" in body:
            try:
                data = _body_str(body, "value").encode()
            except UnicodeEncodeError:
                raise BadParam("value: not valid Unicode text: send value_hex") from None
        else:
            try:
                data = bytes.fromhex(_body_str(body, "value_hex"))
            except ValueError:
                raise BadParam("value_hex: must be hexadecimal digits, two a byte") from None
        resp = await self.calls.unary(
            request, PUT, kv_pb2.PutRequest(path=_body_str(body, "path"), value=data,
                                            lease=_body_lease(body)),
            kv_pb2.PutResponse)
        return to_dict(resp)

    async def delete(self, request: web.Request) -> dict[str, Any]:
        """``KV/Delete`` of ``{"path"}``, with ``"recursive": true`` its subtree too;
        answers how many keys were deleted."""
        body = await self.write_body(request, ("path", "recursive"))
        recursive = body.get("recursive", False)
        if not isinstance(recursive, bool):
            raise BadParam(f"recursive: must be true or false, not {recursive!r:.40}")
        resp = await self.calls.unary(
            request, DELETE, kv_pb2.DeleteRequest(path=_body_str(body, "path"),
                                                  recursive=recursive),
            kv_pb2.DeleteResponse)
        return {**to_dict(resp), "deleted": str(resp.deleted)}

    async def write_body(self, request: web.Request, fields: tuple[str, ...]
                         ) -> dict[str, Any]:
        """The JSON object of a write request with no fields but ``fields``, once the
        request passes the rules of writes: from this listener's origin if the browser names
        one, sent as JSON (a cross-site form cannot set that type without a CORS preflight,
        which is not answered), with a token while authentication is enabled. The request
        layer then checks the token and the user's permissions."""
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc.lower() != request.host.lower():
            raise Refused(403, grpc.StatusCode.PERMISSION_DENIED,
                          f"a write from another origin ({origin[:100]}) is refused: "
                          f"only the dashboard served by {request.host[:100]} may write here")
        if request.content_type != CONTENT_TYPE:
            raise Refused(415, grpc.StatusCode.INVALID_ARGUMENT,
                          f"a write must be sent as Content-Type: {CONTENT_TYPE}, "
                          f"not {request.content_type[:100]!r}")
        if not request.headers.get("Authorization"):
            raise Refused(401, grpc.StatusCode.UNAUTHENTICATED,
                          "writes need a signed-in user: sign in first (without one the "
                          "dashboard only reads)")
        if not self.member.api.core.kv.auth_enabled():
            # The request layer would ignore the token: anyone could write.
            raise Refused(401, grpc.StatusCode.UNAUTHENTICATED,
                          "writes need a signed-in user, and nobody can sign in while "
                          "authentication is disabled: the dashboard only reads")
        try:
            raw = await read_body(request, self.max_write_body)
        except BodyTooLarge:
            raise Refused(413, grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"the request body is larger than {self.max_write_body} bytes"
                          ) from None
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as e:
            raise BadParam(f"the body must be a JSON object: {e}") from None
        if not isinstance(body, dict):
            raise BadParam(f"the body must be a JSON object, not {type(body).__name__}")
        unknown = sorted(set(body) - set(fields))
        if unknown:
            raise BadParam(f"unknown field {unknown[0][:40]!r} (the fields are: "
                           f"{', '.join(fields)})")
        return body


async def _to_ui(_request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")


async def _remote_status(addr: str, token: str, tls: TlsFiles | None = None
                         ) -> tuple[kv_pb2.StatusResponse | None, str]:
    """Another member's Status from its client port (over TLS with this member's client-port
    files when the client ports serve TLS), and "" or why not."""
    metadata = ((TOKEN_KEY, token),) if token else None
    creds = client_port_credentials(tls)
    try:
        # A channel per call: the page asks once a second, and nothing is left to close
        # when the listener stops.
        async with (grpc.aio.secure_channel(addr, creds) if creds is not None
                    else grpc.aio.insecure_channel(addr)) as channel:
            status = await kv_pb2_grpc.ClusterStub(channel).Status(
                kv_pb2.StatusRequest(), timeout=MEMBER_TIMEOUT, metadata=metadata)
    except grpc.aio.AioRpcError as e:
        code = e.code()
        return None, ("no answer within 1 s" if code == grpc.StatusCode.DEADLINE_EXCEEDED
                      else f"{code.name}: {e.details()}")
    return status, ""


T = TypeVar("T")
R = TypeVar("R")


async def _each(fn: Callable[[T], Awaitable[R]], items: Iterable[T]) -> list[R]:
    """``fn`` of each item, in order, at most :data:`CONCURRENT_CALLS` at a time; the first
    failure cancels the others and is raised."""
    limit = asyncio.Semaphore(CONCURRENT_CALLS)

    async def one(item: T) -> R:
        async with limit:
            return await fn(item)

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(item)) for item in items]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [t.result() for t in tasks]


def _path_param(request: web.Request, name: str = "path", default: str | None = None) -> str:
    """A path parameter; the request layer checks it as a key (docs/api.md)."""
    value = request.query.get(name, default)
    if value is None:
        raise BadParam(f"{name}: required (a key path such as /app/config)")
    return value


def _body_str(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise BadParam(f"{name}: required, a string")
    return value


def _body_lease(body: dict[str, Any]) -> int:
    """``lease``: a lease id, as a number or (the JSON encoding of 64-bit integers) a
    decimal string; 0 (none) if absent."""
    raw = body.get("lease", 0)
    value = -1
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) < 20:
        value = int(raw)
    if not 0 <= value < 1 << 63:
        raise BadParam(f"lease: must be a lease id (a whole number from 0), not {raw!r:.40}")
    return value


def _int_param(request: web.Request, name: str, default: int, low: int,
               high: int | None) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    rule = f"a whole number from {low}" + (f" to {high}" if high is not None else " up")
    try:
        value = int(raw)
    except ValueError:
        raise BadParam(f"{name}: must be {rule}, not {raw[:40]!r}") from None
    if value < low or (high is not None and value > high):
        raise BadParam(f"{name}: must be {rule}, not {value}")
    return value


def _bool_param(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise BadParam(f"{name}: must be true or false, not {raw[:40]!r}")
    return raw in ("true", "1")


__all__ = ["ASSETS", "Dashboard", "dashboard_routes"]
