"""Rough edges of the `confer` command line met by a new user, through the real entry point
against one real node (shared by the module's tests; each uses its own paths)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from testing import ProcessCluster
from testing.procs import free_port


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with ProcessCluster(1, tmp_path_factory.mktemp("rough")) as c:
        c.leader()
        yield c.endpoints[0]


def confer(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None,
           timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    """``confer ARGS`` with no CONFER_* variable of the test's environment (only ``env``)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONFER_")}
    return subprocess.run([sys.executable, "-m", "confer", *args], input=stdin,
                          capture_output=True, env={**base, **(env or {})}, timeout=timeout)


def ok(*args: str, **kw: object) -> bytes:
    r = confer(*args, **kw)  # type: ignore[arg-type]
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def one_line(r: subprocess.CompletedProcess[bytes]) -> str:
    """The error line of a failed command: exactly one, no traceback."""
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


def test_connection_options_may_come_before_or_after_the_command(endpoint: str) -> None:
    ok("--endpoints", endpoint, "put", "/opts/a", "1")
    got = json.loads(ok("-o", "json", "--endpoints", endpoint, "get", "/opts/a"))
    assert got["value"] == "MQ=="  # base64 of b"1"
    assert json.loads(ok("get", "/opts/a", "-o", "json", "--endpoints", endpoint))["version"] == 1
    # After the command wins over before it, which wins over the environment.
    assert ok("--endpoints", "127.0.0.1:1", "get", "/opts/a", "--endpoints", endpoint,
              env={"CONFER_ENDPOINTS": "127.0.0.1:2"}) == b"1\n"
    assert ok("-o", "json", "--timeout", "5", "get", "/opts/a",
              env={"CONFER_ENDPOINTS": endpoint, "CONFER_OUTPUT": "table"}).startswith(b"{")


def test_endpoints_may_be_http_urls(endpoint: str) -> None:
    ok("put", "/opts/url", "u", "--endpoints", f"http://{endpoint}/")
    assert ok("get", "/opts/url", env={"CONFER_ENDPOINTS": f"http://{endpoint}"}) == b"u\n"


def test_a_malformed_endpoint_is_a_usage_error() -> None:
    r = confer("get", "/x", "--endpoints", "ftp://127.0.0.1:7379")
    assert r.returncode == 2 and b"ftp://127.0.0.1:7379" in r.stderr and b"HOST:PORT" in r.stderr


def test_when_every_endpoint_refuses_the_command_fails_at_once_naming_them() -> None:
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    # A 600 s request timeout: only failing fast ends the command within the 60 s allowed.
    r = confer("get", "/x", "--timeout", "600", "--endpoints",
               f"http://{dead[0]},{dead[1]}", timeout=60)
    assert r.returncode == 3
    line = one_line(r)
    assert f"could not connect to {dead[0]}, {dead[1]} (connection refused)" in line
    r = confer("watch", "/x", "--timeout", "600", "--endpoints", ",".join(dead), timeout=60)
    assert r.returncode == 3
    assert f"could not connect to {dead[0]}, {dead[1]}" in one_line(r)


def test_a_long_value_is_cut_in_tables(endpoint: str) -> None:
    big = b"x" * (1 << 20)
    ok("put", "/wide/big", stdin=big, env={"CONFER_ENDPOINTS": endpoint})
    ok("put", "/wide/small", "s", env={"CONFER_ENDPOINTS": endpoint})
    out = ok("ls", "-r", "/wide", env={"CONFER_ENDPOINTS": endpoint}).decode()
    assert len(out) < 1000  # a 1 MiB value once padded every row to 1 MiB
    _header, _rule, first, second = out.splitlines()
    assert first.startswith("/wide/big") and "xxx..." in first
    assert len(first) < 150 and second.split()[:2] == ["/wide/small", "s"]
    assert len(ok("get", "/wide/big", "--print-value-only",
                  env={"CONFER_ENDPOINTS": endpoint})) == 1 << 20


def test_binary_values_round_trip(endpoint: str) -> None:
    env = {"CONFER_ENDPOINTS": endpoint}
    value = b"\x00\xff\n\x80ok"
    ok("put", "/bin/k", stdin=value, env=env)
    assert ok("get", "/bin/k", "--print-value-only", env=env) == value  # exact, no newline
    assert ok("get", "/bin/k", "--hex", env=env) == b"00ff0a806f6b\n"
    assert json.loads(ok("get", "/bin/k", "-o", "json", env=env))["value"] == "AP8KgG9r"
    # JSON has one encoding for every value, text or not: base64.
    ok("put", "/bin/text", "héllo", env=env)
    listing = json.loads(ok("ls", "-r", "/bin", "-o", "json", env=env))
    assert [kv["value"] for kv in listing["kvs"]] == ["AP8KgG9r", "aMOpbGxv"]
    table = ok("ls", "-r", "/bin", env=env).decode().splitlines()
    assert table[2].split()[:2] == ["/bin/k", "\\x00\\xff\\n\\x80ok"]  # one row per key
    assert ok("ls", "-r", "/bin", "--hex", env=env).decode().splitlines()[3].split()[1] == (
        "68c3a96c6c6f")
    r = confer("get", "/bin/k", "--hex", "--print-value-only", env=env)
    assert r.returncode == 2


def test_ls_of_a_missing_path_is_not_found_like_get(endpoint: str) -> None:
    env = {"CONFER_ENDPOINTS": endpoint}
    ok("put", "/there/leaf", "1", env=env)
    for args in (["ls", "/nowhere"], ["ls", "-r", "/nowhere"], ["get", "/nowhere"]):
        r = confer(*args, env=env)
        assert r.returncode == 4, args
        assert one_line(r) == "Error: /nowhere not found"
    assert ok("ls", "/there", env=env) == b"leaf\n"
    assert ok("ls", "/there/leaf", env=env) == b""  # a key without children
    ok("ls", "/", env=env)  # the root always exists


def test_an_invalid_path_is_a_usage_error(endpoint: str) -> None:
    for args in (["ls", "no-slash"], ["get", "/a//b"], ["put", "rel", "1"]):
        r = confer(*args, env={"CONFER_ENDPOINTS": endpoint})
        assert r.returncode == 2, (args, r.stderr)
        assert "invalid path" in one_line(r)


def test_error_messages_do_not_show_internals(endpoint: str) -> None:
    r = confer("put", "/x", "1", "--lease", "999", env={"CONFER_ENDPOINTS": endpoint})
    assert r.returncode == 4
    assert one_line(r) == "Error: Put /x: requested lease not found: lease 999"
