"""The web dashboard's page and JSON API (``/ui/``, ``server/http/dashboard.py``) on one
member, in process: the page and its assets (shipped as package data), the keys, history,
watch, leases, locks, elections and services endpoints, their 4xx answers naming the rule,
authentication through the request layer, writes for a signed-in user (and their refusals),
and the RPC metrics counting its calls.
The real-browser test against a 3-node cluster is tests/browser/test_dashboard_browser.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Awaitable, Callable
from fnmatch import fnmatch
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import grpc
import pytest

from confer.etcdpb.authpb import auth_pb2
from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.server.app import ConferServer
from confer.server.config import ServerConfig, load_config
from confer.server.http.dashboard import ASSETS, _remote_status, dashboard_routes
from confer.v1 import coord_pb2, coord_pb2_grpc, kv_pb2, kv_pb2_grpc
from testing import free_port
from tests.server.test_http_listener import samples, with_member
from tests.test_packaging import PYPROJECT, installed_packages

TIMEOUT = 20.0

Body = Callable[["Api", grpc.aio.Channel], Awaitable[None]]


class Api:
    """Requests to one member's dashboard."""

    def __init__(self, session: aiohttp.ClientSession, base: str, client_addr: str) -> None:
        self.session = session
        self.base = base
        self.client_addr = client_addr
        """The member's gRPC client port."""
        self.token = ""

    def _headers(self) -> dict[str, str]:
        return {"Authorization": self.token} if self.token else {}

    async def get(self, route: str, /, **params: object) -> tuple[int, Any]:
        query = {k: str(v) for k, v in params.items()}
        async with self.session.get(self.base + route, params=query,
                                    headers=self._headers()) as resp:
            return resp.status, await resp.json()

    async def ok(self, route: str, /, **params: object) -> Any:
        status, body = await self.get(route, **params)
        assert status == 200, (route, params, status, body)
        return body

    async def post(self, path: str, body: str, headers: dict[str, str] | None = None
                   ) -> tuple[int, Any]:
        async with self.session.post(self.base + path, data=body,
                                     headers={**self._headers(), **(headers or {})}) as resp:
            return resp.status, await resp.json()

    async def write(self, path: str, body: object, **headers: str) -> tuple[int, Any]:
        """A write as the page sends it: JSON, with the token (and any other headers)."""
        raw = body if isinstance(body, str) else json.dumps(body)
        return await self.post(path, raw, {"Content-Type": "application/json", **headers})


def run(tmp_path: Path, body: Body, **settings: object) -> None:
    async def with_api(srv: ConferServer, channel: grpc.aio.Channel, base: str) -> None:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await body(Api(session, base, f"127.0.0.1:{srv.client_port}"), channel)

    asyncio.run(with_member(tmp_path, with_api, **settings))


def value(kv: dict[str, Any]) -> bytes:
    return base64.b64decode(kv.get("value", ""))


async def put(channel: grpc.aio.Channel, path: str, data: bytes, lease: int = 0) -> int:
    resp = await kv_pb2_grpc.KVStub(channel).Put(
        kv_pb2.PutRequest(path=path, value=data, lease=lease), timeout=TIMEOUT)
    return int(resp.header.revision)


# -- the page -----------------------------------------------------------------------------------
def test_the_page_and_every_module_it_imports_are_served(tmp_path: Path) -> None:
    async def body(api: Api, _channel: grpc.aio.Channel) -> None:
        async with api.session.get(api.base + "/", allow_redirects=False) as resp:
            assert (resp.status, resp.headers["Location"]) == (302, "/ui/")
        async with api.session.get(api.base + "/ui/") as resp:
            page = await resp.text()
            assert resp.status == 200 and resp.content_type == "text/html"
            # Scripts and styles from the listener only: no inline script could run.
            assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        # Every module the page loads, and each of theirs, is served as JavaScript.
        pending = re.findall(r'src="/ui/static/([\w.]+)"', page)
        seen: set[str] = set()
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            seen.add(name)
            async with api.session.get(f"{api.base}/ui/static/{name}") as resp:
                assert (resp.status, resp.content_type) == (200, "text/javascript"), name
                pending += re.findall(r"from '\./([\w.]+)'", await resp.text())
        assert {"app.js", "api.js", "dom.js", "keys.js", "watch.js"} <= seen
        for missing in ("nope.js", "__init__.py", "..%2Fdashboard.py"):
            async with api.session.get(f"{api.base}/ui/static/{missing}") as resp:
                assert resp.status == 404, missing

    run(tmp_path, body)


def test_the_assets_ship_in_the_wheel_as_package_data() -> None:
    assert "confer.server.http.dashboard_ui" in installed_packages()
    globs = PYPROJECT["tool"]["setuptools"]["package-data"]["confer.server.http.dashboard_ui"]
    assets = [p.name for p in ASSETS.iterdir() if p.is_file() and p.suffix != ".py"]
    assert "index.html" in assets
    assert [a for a in assets if not any(fnmatch(a, g) for g in globs)] == []


def test_nothing_renders_data_as_markup() -> None:
    """Keys and values are user data: the scripts build text nodes, never markup."""
    for script in ASSETS.glob("*.js"):
        code = script.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in code, f"{script.name} uses {sink}"


# -- keys -----------------------------------------------------------------------------------------
def test_children_a_key_and_its_history_newest_first(tmp_path: Path) -> None:
    async def body(api: Api, channel: grpc.aio.Channel) -> None:
        revs = [await put(channel, "/app/config/timeout", v) for v in (b"30", b"45", b"60")]
        await put(channel, "/app/blob", b"\x00\xff")

        assert (await api.ok("/ui/api/children", path="/"))["names"] == ["app"]
        assert (await api.ok("/ui/api/children", path="/app"))["names"] == ["blob", "config"]
        page = await api.ok("/ui/api/children", path="/app", limit=1)
        assert (page["names"], page["more"]) == (["blob"], True)

        kv = (await api.ok("/ui/api/key", path="/app/config/timeout"))["kv"]
        assert (value(kv), kv["version"], kv["mod_revision"]) == (b"60", "3", str(revs[2]))
        old = (await api.ok("/ui/api/key", path="/app/config/timeout", rev=revs[0]))["kv"]
        assert value(old) == b"30"
        assert value((await api.ok("/ui/api/key", path="/app/blob"))["kv"]) == b"\x00\xff"
        assert "kv" not in await api.ok("/ui/api/key", path="/app")  # a parent, no key

        history = await api.ok("/ui/api/history", path="/app/config/timeout")
        assert [value(kv) for kv in history["versions"]] == [b"60", b"45", b"30"]
        assert [kv["mod_revision"] for kv in history["versions"]] == [str(r) for r in
                                                                       reversed(revs)]
        assert (history["more"], history["compacted"]) == (False, False)
        short = await api.ok("/ui/api/history", path="/app/config/timeout", limit=2)
        assert (len(short["versions"]), short["more"]) == (2, True)

        await kv_pb2_grpc.KVStub(channel).Compact(kv_pb2.CompactRequest(revision=revs[2]),
                                                  timeout=TIMEOUT)
        compacted = await api.ok("/ui/api/history", path="/app/config/timeout")
        assert [value(kv) for kv in compacted["versions"]] == [b"60"]
        assert (compacted["compacted"], compacted["more"]) == (True, False)
        assert (await api.ok("/ui/api/history", path="/missing"))["versions"] == []

    run(tmp_path, body)


@pytest.mark.parametrize(("path", "params", "status", "says"), [
    ("/ui/api/key", {}, 400, "path: required"),
    ("/ui/api/key", {"path": "no-slash"}, 400, "must start with '/'"),
    ("/ui/api/key", {"path": "/a", "rev": "x"}, 400, "rev: must be a whole number from 0 up"),
    ("/ui/api/key", {"path": "/a", "rev": "-1"}, 400, "rev: must be a whole number from 0 up"),
    ("/ui/api/key", {"path": "/a", "rev": "999"}, 400, "future revision"),
    ("/ui/api/history", {"path": "/a", "limit": "0"}, 400,
     "limit: must be a whole number from 1 to 100"),
    ("/ui/api/children", {"path": "/a", "limit": "5000"}, 400, "from 1 to 1000"),
    ("/ui/api/watch", {"path": "/a", "recursive": "maybe"}, 400,
     "recursive: must be true or false"),
    ("/ui/api/watch", {"path": "/a", "rev": "1.5"}, 400, "rev: must be a whole number"),
    ("/ui/api/nothing", {}, 404, "no dashboard API GET /ui/api/nothing (there are: GET "),
])
def test_a_bad_request_is_answered_4xx_naming_the_rule(tmp_path: Path, path: str,
                                                       params: dict[str, str], status: int,
                                                       says: str) -> None:
    async def body(api: Api, _channel: grpc.aio.Channel) -> None:
        got, answer = await api.get(path, **params)
        assert got == status and says in answer["message"], answer
        assert answer["error"] == answer["message"] and answer["code"] in (3, 5, 11)

    run(tmp_path, body)


def test_login_needs_a_json_object_with_a_name_and_a_password(tmp_path: Path) -> None:
    async def body(api: Api, _channel: grpc.aio.Channel) -> None:
        for bad in ("not json", '["root"]', '{"name": "root"}', '{"name": 1, "password": ""}'):
            status, answer = await api.post("/ui/api/login", bad)
            assert status == 400 and "the body must be" in answer["message"], (bad, answer)
        status, answer = await api.get("/ui/api/login")  # a read of a POST-only path
        assert status == 404 and "POST /ui/api/login" in answer["message"]
        status, answer = await api.post("/ui/api/login", '{"name": "root", "password": "x"}')
        assert status == 400 and answer["message"] == "etcdserver: authentication is not enabled"

    run(tmp_path, body)


# -- live watch -----------------------------------------------------------------------------------
def test_a_watch_streams_the_changes_of_a_subtree_with_previous_values(tmp_path: Path) -> None:
    async def body(api: Api, channel: grpc.aio.Channel) -> None:
        first = await put(channel, "/w/a", b"1")
        params = {"path": "/w", "recursive": "true", "rev": str(first)}
        async with api.session.get(api.base + "/ui/api/watch", params=params) as resp:
            assert resp.status == 200
            lines = resp.content

            async def next_result() -> dict[str, Any]:
                line = await asyncio.wait_for(lines.readline(), TIMEOUT)
                return json.loads(line)["result"]

            assert (await next_result())["created"] is True
            replayed = (await next_result())["events"]
            assert [(e["kv"]["path"], value(e["kv"])) for e in replayed] == [("/w/a", b"1")]
            await put(channel, "/w/a", b"2")
            await put(channel, "/elsewhere", b"x")
            await kv_pb2_grpc.KVStub(channel).Delete(kv_pb2.DeleteRequest(path="/w/a"),
                                                     timeout=TIMEOUT)
            changed = (await next_result())["events"][0]
            assert (value(changed["kv"]), value(changed["prev_kv"])) == (b"2", b"1")
            deleted = (await next_result())["events"][0]
            assert (deleted["type"], deleted["kv"]["path"]) == ("DELETE", "/w/a")

    run(tmp_path, body)


# -- coordination ---------------------------------------------------------------------------------
def test_leases_locks_elections_and_services(tmp_path: Path) -> None:
    async def body(api: Api, channel: grpc.aio.Channel) -> None:
        leases = coord_pb2_grpc.LeaseStub(channel)

        async def grant() -> int:
            resp = await leases.Grant(coord_pb2.LeaseGrantRequest(ttl=60), timeout=TIMEOUT)
            return int(resp.id)

        holder, waiter, candidate, instance = [await grant() for _ in range(4)]
        locks = coord_pb2_grpc.LockStub(channel)
        held = await locks.Lock(coord_pb2.LockRequest(name="/locks/db", lease=holder),
                                timeout=TIMEOUT)
        waiting = asyncio.ensure_future(locks.Lock(
            coord_pb2.LockRequest(name="/locks/db", lease=waiter), timeout=TIMEOUT))
        await coord_pb2_grpc.ElectionStub(channel).Campaign(
            coord_pb2.CampaignRequest(name="/elections/sched", lease=candidate, value=b"node-a"),
            timeout=TIMEOUT)
        address = json.dumps({"address": "10.0.0.1:80", "metadata": {"zone": "a"}}).encode()
        await put(channel, "/services/api/a1", address, lease=instance)
        await put(channel, "/services/api/a2", b"10.0.0.2:80")

        listed = (await api.ok("/ui/api/leases"))["leases"]
        by_id = {int(lease["id"]): lease for lease in listed}
        assert set(by_id) == {holder, waiter, candidate, instance}
        assert by_id[instance]["keys"] == ["/services/api/a1"]
        assert by_id[holder]["granted_ttl"] == "60" and int(by_id[holder]["remaining_ms"]) > 0

        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while True:  # the waiter's key appears once its Lock call reached the member
            found = await api.ok("/ui/api/locks")
            queue = found["locks"][0]["queue"] if found["locks"] else []
            if len(queue) == 2:
                break
            assert asyncio.get_running_loop().time() < deadline, found
            await asyncio.sleep(0.05)
        assert [lock["name"] for lock in found["locks"]] == ["/locks/db"]
        assert [kv["path"] for kv in queue] == [held.key, f"/locks/db/{waiter:x}"]
        assert queue[0]["create_revision"] == str(held.fencing_token)
        (election,) = found["elections"]
        assert election["name"] == "/elections/sched"
        assert [value(kv) for kv in election["queue"]] == [b"node-a"]
        waiting.cancel()

        services = await api.ok("/ui/api/services")
        assert [s["name"] for s in services["services"]] == ["api"]
        instances = services["services"][0]["instances"]
        assert [i["instance"] for i in instances] == ["a1", "a2"]
        assert json.loads(value(instances[0]["kv"]))["address"] == "10.0.0.1:80"
        assert (await api.ok("/ui/api/services", prefix="/none"))["services"] == []

    run(tmp_path, body)


# -- the request layer's rules and metrics --------------------------------------------------------
async def enable_auth(channel: grpc.aio.Channel) -> None:
    """Users ``root`` (password ``rootpw``, the root role), ``reader`` (``pw``: reads
    ``/team/...``) and ``writer`` (``pw``: reads and writes ``/team/...``), then auth on."""
    auth = rpc_pb2_grpc.AuthStub(channel)
    await auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="root", password="rootpw"))
    await auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name="root"))
    await auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"))
    for user, role, perm in (("reader", "team", auth_pb2.Permission.READ),
                             ("writer", "team-rw", auth_pb2.Permission.READWRITE)):
        await auth.UserAdd(rpc_pb2.AuthUserAddRequest(name=user, password="pw"))
        await auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name=role))
        await auth.RoleGrantPermission(rpc_pb2.AuthRoleGrantPermissionRequest(
            name=role, perm=auth_pb2.Permission(permType=perm, key=b"/team/",
                                                range_end=b"/team0")))
        await auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user=user, role=role))
    await auth.AuthEnable(rpc_pb2.AuthEnableRequest())


async def sign_in(api: Api, user: str, password: str = "pw") -> None:
    status, answer = await api.post("/ui/api/login",
                                    json.dumps({"name": user, "password": password}))
    assert status == 200 and answer["name"] == user, answer
    api.token = answer["token"]


def test_with_auth_on_the_dashboard_reads_with_the_token_and_the_users_permissions(
        tmp_path: Path) -> None:
    async def body(api: Api, channel: grpc.aio.Channel) -> None:
        await put(channel, "/team/a", b"mine")
        await put(channel, "/other/b", b"theirs")
        await enable_auth(channel)

        status, answer = await api.get("/ui/api/key", path="/team/a")
        assert (status, answer["code"]) == (401, 16) and "user name is empty" in answer["message"]
        status, answer = await api.post("/ui/api/login", '{"name": "reader", "password": "no"}')
        assert status == 400 and "authentication failed" in answer["message"]
        await sign_in(api, "reader")

        assert value((await api.ok("/ui/api/key", path="/team/a"))["kv"]) == b"mine"
        status, answer = await api.get("/ui/api/key", path="/other/b")
        assert (status, answer["code"]) == (403, 7)
        status, answer = await api.get("/ui/api/cluster")  # no admin: Status is a read
        assert status == 200
        # Other members' status is asked with the caller's token (simple tokens are
        # replicated: every member knows them), from their client ports.
        status, why = await _remote_status(api.client_addr, api.token)
        assert status is not None and why == ""
        # Status needs no user (as etcd's): the members' health shows before signing in.
        status, why = await _remote_status(api.client_addr, "")
        assert status is not None and why == ""
        api.token = "forged"
        status, answer = await api.get("/ui/api/key", path="/team/a")
        assert (status, answer["message"]) == (401, "etcdserver: invalid auth token")

    run(tmp_path, body)


# -- writes ---------------------------------------------------------------------------------------
async def key_value(api: Api, path: str) -> bytes | None:
    """The value at ``path`` read through the dashboard as root, None if there is none."""
    token, api.token = api.token, ""
    await sign_in(api, "root", "rootpw")
    kv = (await api.ok("/ui/api/key", path=path)).get("kv")
    api.token = token
    return None if kv is None else value(kv)


def test_a_signed_in_user_puts_and_deletes_keys_as_its_permissions_allow(
        tmp_path: Path) -> None:
    async def body(api: Api, channel: grpc.aio.Channel) -> None:
        await put(channel, "/team/a", b"old")
        lease = await coord_pb2_grpc.LeaseStub(channel).Grant(
            coord_pb2.LeaseGrantRequest(ttl=600), timeout=TIMEOUT)
        await put(channel, "/team/leased", b"x", lease=lease.id)

        # Auth disabled: nobody can sign in, so nobody writes, token or not.
        status, answer = await api.write("/ui/api/put", {"path": "/team/a", "value": "new"})
        assert (status, answer["code"]) == (401, 16)
        assert "writes need a signed-in user" in answer["message"]
        api.token = "anything"
        status, answer = await api.write("/ui/api/delete", {"path": "/team/a"})
        assert status == 401 and "authentication is disabled" in answer["message"], answer

        await enable_auth(channel)
        api.token = ""
        status, answer = await api.write("/ui/api/put", {"path": "/team/a", "value": "new"})
        assert status == 401 and "writes need a signed-in user" in answer["message"]

        # A user who may only read is refused by the request layer: nothing changes.
        await sign_in(api, "reader")
        status, answer = await api.write("/ui/api/put", {"path": "/team/a", "value": "new"})
        assert (status, answer["message"]) == (403, "etcdserver: permission denied")
        status, answer = await api.write("/ui/api/delete", {"path": "/team", "recursive": True})
        assert (status, answer["code"]) == (403, 7)
        assert await key_value(api, "/team/a") == b"old"
        assert await key_value(api, "/team/leased") == b"x"

        await sign_in(api, "writer")
        status, answer = await api.write("/ui/api/put", {"path": "/team/a", "value": "new é"})
        assert status == 200 and int(answer["header"]["revision"]) > 0, answer
        assert await key_value(api, "/team/a") == "new é".encode()
        assert (await api.write("/ui/api/put", {"path": "/team/bin", "value_hex": "00ff"}))[0] \
            == 200
        assert await key_value(api, "/team/bin") == b"\x00\xff"
        # With its lease, an edited key stays attached to it.
        status, _ = await api.write("/ui/api/put", {"path": "/team/leased", "value": "y",
                                                    "lease": str(lease.id)})
        kv = (await api.ok("/ui/api/key", path="/team/leased"))["kv"]
        assert (status, value(kv), int(kv["lease"])) == (200, b"y", lease.id)
        # Outside its permissions: refused.
        status, _ = await api.write("/ui/api/put", {"path": "/other", "value": "x"})
        assert status == 403 and await key_value(api, "/other") is None

        status, answer = await api.write("/ui/api/delete", {"path": "/team/a"})
        assert (status, answer["deleted"]) == (200, "1")
        assert await key_value(api, "/team/a") is None
        status, answer = await api.write("/ui/api/delete", {"path": "/team/a"})
        assert (status, answer["deleted"]) == (200, "0")
        for name in ("a", "b"):
            await api.write("/ui/api/put", {"path": f"/team/sub/{name}", "value": name})
        status, answer = await api.write("/ui/api/delete", {"path": "/team/sub",
                                                             "recursive": True})
        assert (status, answer["deleted"]) == (200, "2")
        assert (await api.ok("/ui/api/children", path="/team"))["names"] == ["bin", "leased"]

    run(tmp_path, body)


def test_a_write_from_another_origin_or_not_as_json_is_refused(tmp_path: Path) -> None:
    async def body(api: Api, channel: grpc.aio.Channel) -> None:
        await put(channel, "/team/a", b"old")
        await enable_auth(channel)
        await sign_in(api, "writer")
        new = {"path": "/team/a", "value": "new"}
        status, answer = await api.write("/ui/api/put", new, Origin="http://evil.example")
        assert status == 403 and "from another origin (http://evil.example)" in answer["message"]
        status, answer = await api.write("/ui/api/delete", {"path": "/team/a"}, Origin="null")
        assert status == 403 and "another origin" in answer["message"]
        # What a cross-site form can send: no JSON type, no token.
        status, answer = await api.post("/ui/api/put", json.dumps(new),
                                        {"Content-Type": "text/plain"})
        assert status == 415 and "Content-Type: application/json" in answer["message"]
        assert await key_value(api, "/team/a") == b"old"
        # The dashboard's own page (same origin) writes.
        status, _ = await api.write("/ui/api/put", new, Origin=api.base)
        assert status == 200 and await key_value(api, "/team/a") == b"new"

    run(tmp_path, body)


def test_a_bad_write_body_is_answered_400_naming_the_rule(tmp_path: Path) -> None:
    bad = [
        ("put", "not json", "the body must be a JSON object"),
        ("put", '["/a"]', "the body must be a JSON object, not list"),
        ("put", {"value": "x"}, "path: required, a string"),
        ("put", {"path": "/team/a"}, 'must have "value" (text) or "value_hex"'),
        ("put", {"path": "/team/a", "value": "x", "value_hex": "00"}, "not both"),
        ("put", {"path": "/team/a", "value": 1}, "value: required, a string"),
        ("put", {"path": "/team/a", "value_hex": "zz"}, "value_hex: must be hexadecimal"),
        ("put", '{"path": "/team/a", "value": "\\ud800"}', "value: not valid Unicode text"),
        ("put", {"path": "/team/a", "value": "x", "lease": "-1"}, "lease: must be a lease id"),
        ("put", {"path": "/team/a", "value": "x", "ttl": 5}, "unknown field 'ttl'"),
        ("put", {"path": "team/a", "value": "x"}, "must start with '/'"),
        ("delete", {"path": "/team/a", "recursive": "yes"}, "recursive: must be true or false"),
        ("delete", {}, "path: required"),
    ]

    async def body(api: Api, channel: grpc.aio.Channel) -> None:
        await put(channel, "/team/a", b"old")
        await enable_auth(channel)
        await sign_in(api, "root", "rootpw")
        for route, request, says in bad:
            status, answer = await api.write(f"/ui/api/{route}", request)
            assert status == 400 and says in answer["message"], (request, answer)
        # Past the request layer's limit: refused there; past the body's, before parsing.
        status, answer = await api.write("/ui/api/put", {"path": "/team/a", "value": "x" * 5000})
        assert (status, answer["code"]) == (400, 3) and "too large" in answer["message"], answer
        status, answer = await api.write("/ui/api/put", {"path": "/team/a",
                                                         "value_hex": "00" * 50_000})
        assert status == 413 and "larger than 73728 bytes" in answer["message"], answer
        assert await key_value(api, "/team/a") == b"old"

    run(tmp_path, body, max_request_bytes=4096)


def test_its_calls_count_in_the_rpc_metrics_as_the_client_ports(tmp_path: Path) -> None:
    async def body(api: Api, _channel: grpc.aio.Channel) -> None:
        def ranges(text: str, code: str) -> float:
            return samples(text).get(("grpc_server_handled_total", frozenset({
                ("grpc_type", "unary"), ("grpc_service", "confer.v1.KV"),
                ("grpc_method", "Range"), ("grpc_code", code)})), 0.0)

        async def scrape() -> str:
            async with api.session.get(api.base + "/metrics") as resp:
                return await resp.text()

        before = await scrape()
        await api.ok("/ui/api/key", path="/x")
        await api.get("/ui/api/key", path="/x", rev="999")
        after = await scrape()
        assert ranges(after, "OK") == ranges(before, "OK") + 1
        assert ranges(after, "OUT_OF_RANGE") == ranges(before, "OUT_OF_RANGE") + 1

    run(tmp_path, body)


def test_the_cluster_shows_this_member_and_its_leader_changes(tmp_path: Path) -> None:
    async def body(api: Api, _channel: grpc.aio.Channel) -> None:
        cluster = await api.ok("/ui/api/cluster")
        (row,) = cluster["members"]
        assert cluster["leader_id"] == cluster["member_id"] == row["member"]["id"]
        assert (row["healthy"], row["status"]["role"]) == (True, "leader")
        (change,) = cluster["leader_changes"]
        assert change["leader"] == cluster["member_id"] and int(change["term"]) >= 1

    run(tmp_path, body)


def test_another_members_status_it_cannot_reach_is_its_health() -> None:
    async def body() -> None:
        status, why = await _remote_status(f"127.0.0.1:{free_port()}", "")
        assert status is None and why.startswith("UNAVAILABLE")

    asyncio.run(body())


def test_the_dashboard_is_off_when_disabled_or_when_the_client_port_serves_tls(
        tmp_path: Path) -> None:
    off = load_config(None, {}, environ={"CONFER_ENABLE_DASHBOARD": "false"})
    assert dashboard_routes(SimpleNamespace(cfg=off)) == []  # type: ignore[arg-type]
    tls = ServerConfig(cert_file="server.pem", key_file="server-key.pem",
                       trusted_ca_file="ca.pem")
    assert dashboard_routes(SimpleNamespace(cfg=tls)) == []  # type: ignore[arg-type]

    async def body(api: Api, _channel: grpc.aio.Channel) -> None:
        async with api.session.get(api.base + "/ui/") as resp:
            assert resp.status == 404
        assert (await api.get("/health"))[0] == 200  # the rest of the listener serves

    run(tmp_path, body, enable_dashboard=False)
