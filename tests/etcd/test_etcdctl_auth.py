"""Users, roles and permissions through the real ``etcdctl`` against a 3-node Confer: etcd's
bootstrap (``user add root``, ``grant-role root root``, ``auth enable``), then every kind of
request allowed or refused by the roles, on every member."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest

from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from testing import ProcessCluster

from .conftest import Etcdctl, kill, wait_until

ROOT = "--user=root:rootpw"
ALICE = "--user=alice:alicepw"


def refused(ctl: Etcdctl, *args: str, **kw: object) -> str:
    """What a failing etcdctl printed."""
    out = ctl.run(*args, check=False, **kw)  # type: ignore[arg-type]
    assert "Error" in out, out
    return out


@pytest.fixture(scope="module")
def secured(etcdctl: Etcdctl) -> Etcdctl:
    """Auth enabled: root, and alice with read on the prefix ``/app/``."""
    for args in (("user", "add", "root:rootpw"), ("user", "grant-role", "root", "root"),
                 ("role", "add", "reader"),
                 ("role", "grant-permission", "reader", "--prefix", "read", "/app/"),
                 ("user", "add", "alice:alicepw"), ("user", "grant-role", "alice", "reader")):
        etcdctl.run(*args)
    assert "Authentication Enabled" in etcdctl.run("auth", "enable")
    etcdctl.run(ROOT, "put", "/app/x", "1")
    etcdctl.run(ROOT, "put", "/other", "2")
    return etcdctl


def test_unauthenticated_and_wrong_password_are_refused(secured: Etcdctl) -> None:
    assert "etcdserver: user name is empty" in refused(secured, "get", "/app/x")
    assert "etcdserver: user name is empty" in refused(secured, "put", "/app/x", "9")
    assert "authentication failed" in refused(secured, "--user=alice:nope", "get", "/app/x")
    assert secured.run(ROOT, "get", "/app/x", "--print-value-only").strip() == "1"


def test_a_reader_reads_its_prefix_only_and_writes_nothing(secured: Etcdctl,
                                                           cluster: ProcessCluster) -> None:
    for endpoint in cluster.endpoints:  # every member decides alike
        assert secured.run(ALICE, "get", "/app/x", "--print-value-only",
                           endpoints=[endpoint]).strip() == "1"
        assert "permission denied" in refused(secured, ALICE, "get", "/other",
                                              endpoints=[endpoint])
    assert "permission denied" in refused(secured, ALICE, "put", "/app/x", "2")
    assert "permission denied" in refused(secured, ALICE, "del", "/app/x")
    # A txn is checked on its compares and both branches.
    txn = 'value("/app/x") = "1"\n\nget /app/x\n\nput /app/x 3\n\n'
    assert "permission denied" in refused(secured, ALICE, "txn", stdin=txn)
    assert secured.run(ROOT, "get", "/app/x", "--print-value-only").strip() == "1"


def test_membership_and_maintenance_are_root_only(secured: Etcdctl) -> None:
    assert "permission denied" in refused(secured, ALICE, "member", "add", "x",
                                          "--peer-urls=http://127.0.0.1:1", "--learner")
    assert "permission denied" in refused(secured, ALICE, "compaction", "2")
    out = secured.run(ROOT, "member", "add", "x", "--peer-urls=http://127.0.0.1:1",
                      "--learner")
    member_id = out.split("Member ")[1].split()[0]
    secured.run(ROOT, "member", "remove", member_id)
    assert "permission denied" in refused(secured, ALICE, "user", "list")
    assert "alice" in secured.run(ROOT, "user", "list")
    assert "reader" in secured.run(ALICE, "user", "get", "alice")  # a user reads its own


def test_a_lease_is_revoked_only_by_a_writer_of_its_keys(secured: Etcdctl) -> None:
    lease = secured.run(ALICE, "lease", "grant", "100").split()[1]  # any user may grant
    secured.run(ROOT, "put", "/other/held", "v", f"--lease={lease}")
    assert "permission denied" in refused(secured, ALICE, "lease", "revoke", lease)
    assert "permission denied" in refused(secured, ALICE, "lease", "keep-alive", "--once",
                                          lease)
    assert "revoked" in secured.run(ROOT, "lease", "revoke", lease)


def test_revoking_the_role_cancels_the_users_watch(secured: Etcdctl, tmp_path: Path) -> None:
    out = tmp_path / "watch.out"
    proc = secured.start(ALICE, "watch", "--prefix", "/app/", out=out)
    try:
        def sees(text: str) -> bool:
            secured.run(ROOT, "put", "/app/w", text)
            return text in out.read_text()

        wait_until(lambda: sees("before"), 20, "alice's watch to see a put")
        secured.run(ROOT, "user", "revoke-role", "alice", "reader")
        proc.wait(timeout=20)  # etcdctl ends when the server cancels its only watch
        # (etcd's client drops the reason of a cancel after creation: see test_auth_api)
        assert "watch is canceled by the server" in out.read_text()
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the watch was not cancelled: {out.read_text()}") from None
    finally:
        kill(proc)
        secured.run(ROOT, "user", "grant-role", "alice", "reader")
    # A new watch outside alice's permissions is refused at creation.
    assert "permission denied" in secured.run(ALICE, "watch", "/other", check=False)


def test_a_token_from_one_member_works_on_the_others(secured: Etcdctl,
                                                     cluster: ProcessCluster) -> None:
    first, *others = cluster.endpoints
    with grpc.insecure_channel(first) as ch:
        token = rpc_pb2_grpc.AuthStub(ch).Authenticate(
            rpc_pb2.AuthenticateRequest(name="alice", password="alicepw"), timeout=10).token
    for endpoint in others:
        with grpc.insecure_channel(endpoint) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            got = kv.Range(rpc_pb2.RangeRequest(key=b"/app/x"), metadata=[("token", token)],
                           timeout=10)
            assert got.kvs[0].value == b"1"
            with pytest.raises(grpc.RpcError) as e:
                kv.Range(rpc_pb2.RangeRequest(key=b"/app/x"),
                         metadata=[("token", token + "x")], timeout=10)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert e.value.details() == "etcdserver: invalid auth token"
            status = rpc_pb2_grpc.AuthStub(ch).AuthStatus(rpc_pb2.AuthStatusRequest(),
                                                           timeout=10)
            assert status.enabled and status.authRevision > 1


def test_the_audit_log_names_user_rpc_and_key_never_values(secured: Etcdctl,
                                                           cluster: ProcessCluster) -> None:
    secured.run(ROOT, "user", "add", "bob:bobpw")  # a user of its own: lines are rate-limited
    refused(secured, "--user=bob:bobpw", "put", "/app/secret-key", "secret-value",
            endpoints=[cluster.endpoints[0]])
    log = cluster.nodes[1].log_text()
    line = next(x for x in log.splitlines() if "confer.audit" in x and "secret-key" in x)
    assert "user=bob" in line and "rpc=Put" in line and "access=write" in line
    assert "secret-value" not in log and "bobpw" not in log and "rootpw" not in log


def test_auth_disable_is_root_only(secured: Etcdctl) -> None:
    assert "permission denied" in refused(secured, ALICE, "auth", "disable")
    assert "Authentication Disabled" in secured.run(ROOT, "auth", "disable")
    assert secured.run("get", "/other", "--print-value-only").strip() == "2"
    assert "Authentication Enabled" in secured.run("auth", "enable")


def test_locks_need_write_on_their_key_and_read_on_their_prefix(secured: Etcdctl) -> None:
    assert "held" in secured.run(ROOT, "lock", "/locks/a", "echo", "held")
    assert "permission denied" in refused(secured, ALICE, "lock", "/locks/a", "echo", "held")
    # alice reads /app/ but may not write there: no lock under it either
    assert "permission denied" in refused(secured, ALICE, "lock", "/app/lock", "echo", "held")
    assert "permission denied" in refused(secured, ALICE, "elect", "/app/e", "alice")
