"""etcd's JSON gateway on the HTTP listener, against a real `confer serve` process: the
`curl` examples of etcd's gateway documentation (put, range, prefix range, delete, txn,
leases, a streamed watch, authentication), etcd's JSON mapping and error bodies, and the
request layer's checks and metrics applying as over gRPC.

The requests go through `curl` when it is installed (as the documentation's examples do),
else through urllib: the same requests, the same assertions.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.server.config import ServerConfig, load_config
from confer.server.http.gateway import gateway_routes
from testing import ProcessCluster, free_port

CURL = shutil.which("curl")
TIMEOUT = 20.0
"""Seconds any one HTTP exchange may take (generous: a shared 2-core machine)."""
MAX_REQUEST_BYTES = 64 << 10
"""The node's --max-request-bytes: small, so that a too-large request is cheap to send."""


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


class Gateway:
    """POSTs to one node's HTTP listener, by curl or urllib."""

    def __init__(self, port: int, client_addr: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.client_addr = client_addr
        """The node's gRPC client port."""

    def post(self, path: str, body: Any = None, token: str = "") -> tuple[int, Any]:
        """(HTTP status, the JSON body); ``body``: a dict (sent as JSON), a str (sent as
        it is) or None (no body)."""
        data = json.dumps(body) if isinstance(body, dict) else body
        headers = {"Authorization": token} if token else {}
        if CURL:
            args = [CURL, "-s", "-X", "POST", "--max-time", str(TIMEOUT),
                    "-w", "\n%{http_code}", self.base + path]
            if data is not None:
                args += ["--data-binary", "@-"]  # from stdin: no limit on an argument's size
            for name, value in headers.items():
                args += ["-H", f"{name}: {value}"]
            out = subprocess.run(args, input=(data or "").encode(), capture_output=True,
                                 timeout=TIMEOUT + 10, check=True).stdout
            text, _, status = out.rpartition(b"\n")
            return int(status), json.loads(text)
        req = urllib.request.Request(self.base + path, method="POST", headers=headers,
                                     data=None if data is None else data.encode())
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def ok(self, path: str, body: Any = None, token: str = "") -> Any:
        status, answer = self.post(path, body, token)
        assert status == 200, (path, status, answer)
        return answer

    @contextlib.contextmanager
    def stream(self, path: str, body: Any, token: str = "") -> Iterator[Iterator[Any]]:
        """The streamed response's objects, one per line, read as they arrive; leaving the
        block closes the connection. ``body`` as for :meth:`post`."""
        data = json.dumps(body) if isinstance(body, dict) else body
        headers = {"Authorization": token} if token else {}
        if CURL:
            args = [CURL, "-s", "-N", "-X", "POST", "--max-time", "60", "--data-binary",
                    data, self.base + path]
            for name, value in headers.items():
                args += ["-H", f"{name}: {value}"]
            proc = subprocess.Popen(args, stdout=subprocess.PIPE)
            assert proc.stdout is not None
            try:
                yield (json.loads(line) for line in iter(proc.stdout.readline, b""))
            finally:
                proc.kill()
                proc.wait(timeout=10)
                proc.stdout.close()
            return
        req = urllib.request.Request(self.base + path, method="POST", headers=headers,
                                     data=data.encode())
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            yield (json.loads(line) for line in iter(resp.readline, b""))

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        with urllib.request.urlopen(self.base + "/metrics", timeout=TIMEOUT) as resp:
            text = resp.read().decode()
        found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                key = (s.name, frozenset(s.labels.items()))
                assert key not in found, f"a series twice in /metrics: {key}"
                found[key] = s.value
        return found


@contextlib.contextmanager
def node(tmp: Path, *args: str) -> Iterator[Gateway]:
    port = free_port()
    with ProcessCluster(1, tmp, extra_args=["--listen-metrics", f"127.0.0.1:{port}",
                                            *args]) as cluster:
        cluster.leader()
        yield Gateway(port, cluster.endpoints[0])


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with node(tmp_path_factory.mktemp("gateway"),
              "--max-request-bytes", str(MAX_REQUEST_BYTES)) as gateway:
        yield gateway


# -- etcd's documented examples -----------------------------------------------------------------
def test_put_range_prefix_range_and_delete_as_in_etcds_docs(gw: Gateway) -> None:
    put = gw.ok("/v3/kv/put", '{"key": "Zm9v", "value": "YmFy"}')  # foo = bar
    header = put["header"]
    rev = int(header["revision"])
    # etcd's JSON: the proto's field names, 64-bit integers as strings.
    assert set(header) == {"cluster_id", "member_id", "revision", "raft_term"}
    assert all(isinstance(v, str) for v in header.values())

    got = gw.ok("/v3/kv/range", '{"key": "Zm9v"}')
    assert got["count"] == "1"
    assert got["kvs"] == [{"key": "Zm9v", "create_revision": str(rev),
                           "mod_revision": str(rev), "version": "1", "value": "YmFy"}]

    gw.ok("/v3/kv/put", {"key": b64("foo2"), "value": b64("baz")})
    prefix = gw.ok("/v3/kv/range", '{"key": "Zm9v", "range_end": "Zm9w"}')  # foo..fop
    assert [base64.b64decode(kv["key"]) for kv in prefix["kvs"]] == [b"foo", b"foo2"]
    assert prefix["count"] == "2"

    deleted = gw.ok("/v3/kv/deleterange", {"key": b64("foo2"), "prev_kv": True})
    assert deleted["deleted"] == "1"
    assert deleted["prev_kvs"][0]["value"] == b64("baz")
    assert "kvs" not in gw.ok("/v3/kv/range", {"key": b64("foo2")})  # defaults left out


def test_a_txn_as_in_etcds_docs(gw: Gateway) -> None:
    key = b64("txn-key")
    gw.ok("/v3/kv/put", {"key": key, "value": b64("v1")})
    version = gw.ok("/v3/kv/range", {"key": key})["kvs"][0]["version"]
    # The documentation's request: enums by name, a field by its JSON name (requestRange).
    txn = {"compare": [{"version": version, "result": "EQUAL", "target": "VERSION",
                        "key": key}],
           "success": [{"requestRange": {"key": key}}],
           "failure": [{"request_put": {"key": key, "value": b64("lost")}}]}
    answer = gw.ok("/v3/kv/txn", txn)
    assert answer["succeeded"] is True
    assert answer["responses"][0]["response_range"]["kvs"][0]["value"] == b64("v1")

    txn["compare"][0]["version"] = "99"
    answer = gw.ok("/v3/kv/txn", txn)
    assert "succeeded" not in answer  # false: a default, left out
    assert "response_put" in answer["responses"][0]
    assert gw.ok("/v3/kv/range", {"key": key})["kvs"][0]["value"] == b64("lost")


def test_a_lease_granted_attached_kept_alive_and_revoked(gw: Gateway) -> None:
    granted = gw.ok("/v3/lease/grant", {"TTL": 60})
    lease = granted["ID"]
    assert granted["TTL"] == "60"
    key = b64("leased")
    gw.ok("/v3/kv/put", {"key": key, "value": b64("v"), "lease": lease})
    assert gw.ok("/v3/kv/range", {"key": key})["kvs"][0]["lease"] == lease

    ttl = gw.ok("/v3/lease/timetolive", {"ID": lease, "keys": True})
    assert ttl["grantedTTL"] == "60" and ttl["keys"] == [key]
    assert {"ID": lease} in gw.ok("/v3/lease/leases", {})["leases"]
    with gw.stream("/v3/lease/keepalive", {"ID": lease}) as renewals:
        renewed = next(renewals)
    assert renewed["result"]["ID"] == lease and renewed["result"]["TTL"] == "60"

    gw.ok("/v3/kv/lease/revoke", {"ID": lease})  # etcd's older path, kept as an alias
    assert "kvs" not in gw.ok("/v3/kv/range", {"key": key})
    status, again = gw.post("/v3/lease/revoke", {"ID": lease})
    assert (status, again["code"]) == (404, 5)
    assert again["message"] == again["error"] == "etcdserver: requested lease not found"


def test_a_watch_streams_its_events_and_ends_with_its_client(gw: Gateway) -> None:
    key = b64("watched")

    def watch_streams() -> float:
        return gw.metrics()[("etcd_debugging_mvcc_watch_stream_total", frozenset())]

    with gw.stream("/v3/watch", {"create_request": {"key": key}}) as events:
        created = next(events)["result"]
        assert created["created"] is True and "header" in created
        gw.ok("/v3/kv/put", {"key": key, "value": b64("1")})
        put = next(events)["result"]["events"]
        assert put[0]["kv"]["value"] == b64("1") and "type" not in put[0]  # PUT: the default
        gw.ok("/v3/kv/deleterange", {"key": key})
        deleted = next(events)["result"]["events"]
        assert deleted[0]["type"] == "DELETE" and deleted[0]["kv"]["key"] == key
        assert watch_streams() == 1
    # The client gone, its watch ends (the key is quiet: no write would reveal it).
    deadline = time.monotonic() + TIMEOUT
    while watch_streams() != 0:
        assert time.monotonic() < deadline, "the watch outlived its client"
        time.sleep(0.05)


def test_one_watch_stream_carries_the_watches_its_body_creates(gw: Gateway) -> None:
    a, b = b64("multi-a"), b64("multi-b")
    body = (json.dumps({"create_request": {"key": a}}) + "\n"
            + json.dumps({"create_request": {"key": b, "watch_id": "7"}}))
    with gw.stream("/v3/watch", body) as events:
        created = [next(events)["result"] for _ in range(2)]
        assert [c.get("watch_id", "0") for c in created] == ["0", "7"]
        gw.ok("/v3/kv/put", {"key": b, "value": b64("1")})
        got = next(events)["result"]
        assert got["watch_id"] == "7" and got["events"][0]["kv"]["key"] == b


def test_members_and_status(gw: Gateway) -> None:
    members = gw.ok("/v3/cluster/member/list")["members"]  # no body: an empty request
    assert len(members) == 1 and members[0]["clientURLs"][0].startswith("http://127.0.0.1:")
    status = gw.ok("/v3/maintenance/status", {})
    assert status["leader"] == members[0]["ID"] and status["version"]


# -- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "says"), [
    ('{"key": "Zm9v"', "not valid JSON"),
    ('["Zm9v"]', "must be a JSON object (a RangeRequest), not list"),
    ('{"key": "Zm9v"} {"key": "Zm9v"}', "more than one JSON object"),
    ('{"key": "Zm9v", "limit": "many"}', "limit"),
    ('{"key": 5}', "key"),
])
def test_a_body_that_is_not_the_requests_json_is_answered_400(gw: Gateway, body: str,
                                                               says: str) -> None:
    status, answer = gw.post("/v3/kv/range", body)
    assert (status, answer["code"]) == (400, 3)
    assert says in answer["message"] and answer["error"] == answer["message"]


def test_unknown_fields_are_ignored_as_etcds_gateway_does(gw: Gateway) -> None:
    gw.ok("/v3/kv/put", {"key": b64("k"), "value": b64("v")})
    got = gw.ok("/v3/kv/range", {"key": b64("k"), "not_a_field": 1})
    assert got["kvs"][0]["value"] == b64("v")


def test_an_unknown_path_is_404_and_another_method_than_post_405(gw: Gateway) -> None:
    status, answer = gw.post("/v3/kv/nothing", {})
    assert (status, answer) == (404, {"error": "Not Found", "code": 5, "message": "Not Found"})
    with pytest.raises(urllib.error.HTTPError) as got:
        urllib.request.urlopen(gw.base + "/v3/kv/range", timeout=TIMEOUT)
    assert got.value.code == 405 and got.value.headers["Allow"] == "POST"


def test_the_request_layers_checks_answer_with_etcds_errors(gw: Gateway) -> None:
    status, answer = gw.post("/v3/kv/put", {"value": b64("v")})
    assert (status, answer["message"]) == (400, "etcdserver: key is not provided")
    status, answer = gw.post("/v3/kv/compaction", {"revision": "100000"})
    assert (status, answer["code"]) == (400, 11)  # OUT_OF_RANGE, as etcd's own test expects
    assert answer["message"] == "etcdserver: mvcc: required revision is a future revision"
    big = {"key": b64("big"), "value": b64(b"x" * MAX_REQUEST_BYTES)}
    status, answer = gw.post("/v3/kv/put", big)
    assert (status, answer["message"]) == (400, "etcdserver: request is too large")
    huge = {"key": b64("big"), "value": b64(b"x" * 2 * MAX_REQUEST_BYTES)}
    status, answer = gw.post("/v3/kv/put", huge)  # refused before it is even parsed
    assert (status, answer["code"]) == (413, 8)
    assert "the request body is larger than" in answer["message"]


def test_gateway_and_grpc_calls_count_in_the_same_grpc_metrics(gw: Gateway) -> None:
    def puts() -> float:
        labels = frozenset({"grpc_type": "unary", "grpc_service": "etcdserverpb.KV",
                            "grpc_method": "Put", "grpc_code": "OK"}.items())
        return gw.metrics().get(("grpc_server_handled_total", labels), 0)

    before = puts()
    with grpc.insecure_channel(gw.client_addr) as channel:
        rpc_pb2_grpc.KVStub(channel).Put(rpc_pb2.PutRequest(key=b"counted", value=b"v"),
                                         timeout=TIMEOUT)
    for i in range(3):
        gw.ok("/v3/kv/put", {"key": b64(f"counted{i}"), "value": b64("v")})
    assert puts() == before + 4  # metrics() also checks that no series appears twice


# -- authentication -------------------------------------------------------------------------
def test_with_auth_on_a_request_needs_the_token_from_authenticate(tmp_path: Path) -> None:
    with node(tmp_path) as gw:
        # etcd's documented sequence: a root user with the root role, then auth on.
        gw.ok("/v3/auth/user/add", {"name": "root", "password": "pass"})
        gw.ok("/v3/auth/role/add", {"name": "root"})
        gw.ok("/v3/auth/user/grant", {"user": "root", "role": "root"})
        gw.ok("/v3/auth/enable", {})
        put = {"key": b64("foo"), "value": b64("bar")}

        status, refused = gw.post("/v3/kv/put", put)
        assert (status, refused["message"]) == (400, "etcdserver: user name is empty")
        status, refused = gw.post("/v3/kv/put", put, token="not-a-token")
        assert (status, refused["code"]) == (401, 16)
        status, refused = gw.post("/v3/auth/authenticate", {"name": "root", "password": "x"})
        assert status == 400 and "authentication failed" in refused["message"]

        token = gw.ok("/v3/auth/authenticate", {"name": "root", "password": "pass"})["token"]
        gw.ok("/v3/kv/put", put, token=token)
        assert gw.ok("/v3/kv/range", {"key": b64("foo")}, token=token)["kvs"][0]["value"] == \
            b64("bar")
        with gw.stream("/v3/watch", {"create_request": {"key": b64("foo")}},
                       token=token) as events:
            assert next(events)["result"]["created"] is True
        # A streamed call refused before its first message: an error response, as unary.
        status, refused = gw.post("/v3/maintenance/snapshot", {})
        assert (status, refused["message"]) == (400, "etcdserver: user name is empty")


# -- when it is served ----------------------------------------------------------------------
def test_the_gateway_is_off_when_disabled_or_when_the_client_port_serves_tls() -> None:
    assert load_config(None, {}, environ={}).enable_grpc_gateway is True
    off = load_config(None, {}, environ={"CONFER_ENABLE_GRPC_GATEWAY": "false"})
    assert gateway_routes(SimpleNamespace(cfg=off)) == []
    # A plaintext listener would be a way around the client port's TLS and certificates.
    tls = ServerConfig(cert_file="server.pem", key_file="server-key.pem",
                       trusted_ca_file="ca.pem")
    assert gateway_routes(SimpleNamespace(cfg=tls)) == []
