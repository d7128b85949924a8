"""`confer auth|user|role` and `--user` / CONFER_USER, through the real entry point, against
a real node: bootstrapping auth, a reader on /app/, membership for root only, and the
watch of a user whose role is revoked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing import ProcessCluster

from .test_cli import confer, ok

ROOT = ("--user", "root:rootpw")
ALICE = ("--user", "alice:alicepw")


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with ProcessCluster(1, tmp_path_factory.mktemp("cli-auth"),
                        extra_args=["--bcrypt-cost", "4"]) as c:
        c.leader()
        eps = ",".join(c.endpoints)
        for args in (("user", "add", "root", "--password", "rootpw"),
                     ("user", "grant-role", "root", "root"), ("role", "add", "reader"),
                     ("role", "grant-permission", "reader", "read", "/app/", "--prefix"),
                     # the key /app itself: with the prefix, the whole tree at /app
                     ("role", "grant-permission", "reader", "read", "/app"),
                     ("user", "add", "alice", "--password", "alicepw"),
                     ("user", "grant-role", "alice", "reader"), ("auth", "enable")):
            ok(*args, endpoints=eps)
        ok("put", "/app/x", "1", *ROOT, endpoints=eps)
        ok("put", "/other", "2", *ROOT, endpoints=eps)
        yield eps


def refused(*args: str, endpoints: str, stdin: str | None = None, code: int = 1) -> str:
    r = confer(*args, endpoints=endpoints, stdin=stdin)
    assert r.returncode == code, (args, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r.stderr


def test_status_and_bootstrap(endpoints: str) -> None:
    st = json.loads(ok("auth", "status", "-o", "json", endpoints=endpoints))
    assert st["enabled"] and st["revision"] > 1
    assert [line.split() for line in ok("role", "get", "reader", *ROOT,
                                         endpoints=endpoints).splitlines()[2:]] == [
        ["read", "/app"], ["read", "/app/", "/app0"]]
    assert ok("user", "list", *ROOT, endpoints=endpoints).split()[2:] == ["alice", "root"]


def test_unauthenticated_requests_are_refused(endpoints: str) -> None:
    assert "user name is empty" in refused("get", "/app/x", endpoints=endpoints)
    # A wrong password is bad input (etcd's INVALID_ARGUMENT): the usage errors' exit status.
    assert "authentication failed" in refused("get", "/app/x", "--user", "alice:nope",
                                              endpoints=endpoints, code=2)


def test_health_and_status_need_no_user(endpoints: str) -> None:
    # As etcd answers Status and MemberList to anyone: a health check needs no credentials.
    assert "is healthy" in ok("endpoint", "health", endpoints=endpoints)
    assert "healthy" in ok("status", endpoints=endpoints)
    assert ok("member", "list", endpoints=endpoints).count("\n") >= 2


def test_a_reader_reads_its_prefix_only(endpoints: str) -> None:
    assert ok("get", "/app/x", *ALICE, endpoints=endpoints) == "1\n"
    env_user = subprocess.run([sys.executable, "-m", "confer", "get", "/app/x"],
                              capture_output=True, text=True, timeout=30,
                              env={**os.environ, "CONFER_ENDPOINTS": endpoints,
                                   "CONFER_USER": "alice:alicepw"})
    assert env_user.stdout == "1\n", env_user.stderr
    assert "permission denied" in refused("put", "/app/x", "2", *ALICE, endpoints=endpoints)
    assert "permission denied" in refused("get", "/other", *ALICE, endpoints=endpoints)
    assert "permission denied" in refused("del", "-r", "/app", *ALICE, endpoints=endpoints)


def test_the_password_is_prompted_for_and_never_echoed(endpoints: str) -> None:
    r = confer("get", "/app/x", "--user", "alice", endpoints=endpoints, stdin="alicepw\n")
    assert r.returncode == 0 and r.stdout == "1\n", r.stderr
    assert "alicepw" not in r.stdout + r.stderr


def test_only_root_changes_membership(endpoints: str) -> None:
    assert "permission denied" in refused("member", "add", "127.0.0.1:1", "--learner",
                                          *ALICE, endpoints=endpoints)
    assert "permission denied" in refused("compact", "2", *ALICE, endpoints=endpoints)
    added = json.loads(ok("member", "add", "127.0.0.1:1", "--learner", "-o", "json", *ROOT,
                          endpoints=endpoints))
    ok("member", "remove", str(added["member"]["id"]), *ROOT, endpoints=endpoints)
    assert "permission denied" in refused("user", "list", *ALICE, endpoints=endpoints)


def test_revoking_the_role_cancels_the_users_watch(endpoints: str, tmp_path: Path) -> None:
    put = json.loads(ok("put", "/app/w", "v", "-o", "json", *ROOT, endpoints=endpoints))
    out = tmp_path / "watch.err"
    with open(out, "w") as err:  # from the put's revision: its event comes once registered
        proc = subprocess.Popen([sys.executable, "-m", "confer", "watch", "-r", "/app",
                                 "--rev", str(put["revision"]), *ALICE],
                                env={**os.environ, "CONFER_ENDPOINTS": endpoints},
                                stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert proc.stdout is not None
        assert "/app/w" in proc.stdout.readline()
        ok("user", "revoke-role", "alice", "reader", *ROOT, endpoints=endpoints)
        assert proc.wait(timeout=30) == 1
        assert "permission denied" in out.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        ok("user", "grant-role", "alice", "reader", *ROOT, endpoints=endpoints)
