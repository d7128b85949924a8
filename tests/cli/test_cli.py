"""The `confer` command line, end to end through the real entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing import ProcessCluster


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with ProcessCluster(1, tmp_path_factory.mktemp("cli")) as c:
        c.leader()
        yield ",".join(c.endpoints)


def confer(*args: str, endpoints: str | None = None, stdin: str | None = None,
           timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if endpoints is not None:
        env["CONFER_ENDPOINTS"] = endpoints
    return subprocess.run([sys.executable, "-m", "confer", *args], input=stdin,
                          capture_output=True, text=True, env=env, timeout=timeout)


def ok(*args: str, **kw: object) -> str:
    r = confer(*args, **kw)  # type: ignore[arg-type]
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def test_put_get_ls_del(endpoints: str) -> None:
    assert "revision" in ok("put", "/app/config/timeout", "30", endpoints=endpoints)
    ok("put", "/app/config/retries", endpoints=endpoints, stdin="5")
    ok("put", "/application/name", "other", endpoints=endpoints)
    assert ok("get", "/app/config/timeout", endpoints=endpoints) == "30\n"
    kv = json.loads(ok("get", "/app/config/timeout", "-o", "json", endpoints=endpoints))
    assert kv["value"] == "MzA=" and kv["version"] == 1  # base64 of b"30"
    assert ok("ls", "/app", endpoints=endpoints).split() == ["config"]
    assert ok("ls", "/app/config", endpoints=endpoints).split() == ["retries", "timeout"]
    listing = json.loads(ok("ls", "-r", "/app", "-o", "json", endpoints=endpoints))
    assert [kv["path"] for kv in listing["kvs"]] == ["/app/config/retries", "/app/config/timeout"]
    assert "deleted 2" in ok("del", "-r", "/app", endpoints=endpoints)  # /application survives
    assert ok("get", "/application/name", endpoints=endpoints) == "other\n"


def test_txn_from_stdin_takes_the_right_branch(endpoints: str) -> None:
    ok("put", "/txn/a", "x", endpoints=endpoints)
    script = 'value("/txn/a") = "x"\nmissing("/txn/b")\n\nput /txn/b "made"\nget /txn/a\n\n' \
             'get /txn/a\n'
    out = ok("txn", endpoints=endpoints, stdin=script)
    assert out.splitlines()[0].startswith("SUCCESS")
    assert "/txn/a = x" in out
    out = ok("txn", endpoints=endpoints, stdin=script)  # /txn/b exists now
    assert out.splitlines()[0].startswith("FAILURE")


def test_watch_prints_events_and_status_shows_the_member(endpoints: str) -> None:
    rev = int(json.loads(ok("put", "/w/k", "1", "-o", "json", endpoints=endpoints))["revision"])
    ok("put", "/w/k", "2", endpoints=endpoints)
    out = ok("watch", "/w", "-r", "--rev", str(rev), "--count", "2", endpoints=endpoints)
    assert [line.split()[:2] for line in out.splitlines()] == [["PUT", "/w/k"], ["PUT", "/w/k"]]
    assert "value=1" in out.splitlines()[0] and "value=2" in out.splitlines()[1]
    status = ok("status", endpoints=endpoints)
    assert "leader" in status and "healthy" in status
    members = json.loads(ok("member", "list", "-o", "json", endpoints=endpoints))
    assert [m["id"] for m in members] == [1]


@pytest.mark.parametrize("args, code, message", [
    (["put", "bad//path", "x"], 2, "must start with '/'"),  # invalid input: usage
    (["put", "/a/", "x"], 2, "must not end with '/'"),
    (["get", "/does/not/exist"], 4, "not found"),
    (["ls", "/x", "--rev", "3"], 2, "--rev needs --recursive"),
    (["compact", "0"], 2, "0"),
    (["member", "remove", "42"], 4, "not found"),
    (["txn"], 2, "txn line 1"),
])
def test_bad_input_is_one_line_and_a_non_zero_exit(endpoints: str, args: list[str], code: int,
                                                   message: str) -> None:
    stdin = "nonsense here\n" if args == ["txn"] else None
    r = confer(*args, endpoints=endpoints, stdin=stdin)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_an_unreachable_cluster_is_a_clear_error() -> None:
    r = confer("get", "/x", "--timeout", "1", endpoints="127.0.0.1:1")
    assert r.returncode == 3
    assert "Unavailable" in r.stderr and "Traceback" not in r.stderr


def test_serve_rejects_bad_settings_without_a_traceback(tmp_path: Path) -> None:
    r = confer("serve", "--data-dir", str(tmp_path), "--listen-client", "nope")
    assert r.returncode == 2
    assert "listen-client" in r.stderr and "Traceback" not in r.stderr
    r = confer("serve", "--data-dir", str(tmp_path), "--initial-cluster", "x=1")
    assert r.returncode == 2 and "initial-cluster" in r.stderr
    config = tmp_path / "bad.toml"
    config.write_text('tick-ms = "soon"\n')
    r = confer("serve", "--config", str(config))
    assert r.returncode == 2 and "tick-ms" in r.stderr and "Traceback" not in r.stderr
    r = confer("serve", "--data-dir", str(tmp_path), "--peer-routes", "2=nowhere")
    assert r.returncode == 2 and "peer-routes" in r.stderr and "Traceback" not in r.stderr
    r = confer("serve", "--data-dir", str(tmp_path), "--peer-routes", f"@{tmp_path}/missing")
    assert r.returncode == 2 and "cannot read" in r.stderr


def test_peer_routes_come_from_flags_or_a_file(tmp_path: Path) -> None:
    from confer.server.config import ServerConfig

    assert ServerConfig(peer_routes="2=127.0.0.1:2001, 3=127.0.0.1:2002").routes() == {
        2: "127.0.0.1:2001", 3: "127.0.0.1:2002"}
    routes = tmp_path / "routes"
    routes.write_text("2=127.0.0.1:2001\n3=127.0.0.1:2002\n")
    assert ServerConfig(peer_routes=f"@{routes}").routes() == {
        2: "127.0.0.1:2001", 3: "127.0.0.1:2002"}
