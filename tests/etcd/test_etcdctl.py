"""The real etcdctl against a 3-node Confer cluster: KV, txn, watch, compaction, leases,
locks, elections, members, endpoint status/health and snapshots."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from base64 import b64decode
from pathlib import Path

import grpc

from confer.v1 import confer_pb2, confer_pb2_grpc
from testing import ProcessCluster
from testing.procs import free_port

from .conftest import Etcdctl, kill, wait_until


def test_put_get_delete(etcdctl: Etcdctl) -> None:
    assert etcdctl.run("put", "/t/kv/a", "1").strip() == "OK"
    etcdctl.run("put", "/t/kv/b", "2")
    etcdctl.run("put", "plain-key", "not a path")  # etcd keys need not be paths
    assert etcdctl.run("get", "/t/kv/", "--prefix").split() == ["/t/kv/a", "1", "/t/kv/b", "2"]
    assert etcdctl.run("get", "/t/kv/", "--prefix", "--limit", "1").split() == ["/t/kv/a", "1"]
    assert etcdctl.run("get", "plain-key").splitlines() == ["plain-key", "not a path"]
    out = json.loads(etcdctl.run("get", "/t/kv/a", "-w", "json"))
    kv = out["kvs"][0]
    assert b64decode(kv["key"]) == b"/t/kv/a" and b64decode(kv["value"]) == b"1"
    assert out["header"]["cluster_id"] and out["header"]["member_id"]
    assert out["header"]["revision"] >= kv["mod_revision"]
    rev = kv["mod_revision"]
    etcdctl.run("put", "/t/kv/a", "changed")
    assert etcdctl.run("get", "/t/kv/a", "--rev", str(rev)).split() == ["/t/kv/a", "1"]
    assert json.loads(etcdctl.run("get", "/t/kv/", "--prefix", "--keys-only", "-w",
                                  "json"))["count"] == 2
    assert etcdctl.run("del", "/t/kv/", "--prefix").strip() == "2"
    assert etcdctl.run("get", "/t/kv/", "--prefix") == ""
    assert etcdctl.run("del", "plain-key", "--prev-kv").splitlines() == [
        "1", "plain-key", "not a path"]


def test_txn_from_stdin_and_file(etcdctl: Etcdctl, tmp_path: Path) -> None:
    etcdctl.run("put", "/t/txn/k", "x")
    script = 'value("/t/txn/k") = "x"\n\nput /t/txn/k y\nget /t/txn/k\n\nput /t/txn/k z\n\n'
    out = etcdctl.run("txn", "-i", stdin=script)
    assert "SUCCESS" in out and out.strip().endswith("/t/txn/k\ny")
    f = tmp_path / "txn.txt"
    f.write_text(script)
    with open(f) as stdin:
        proc = subprocess.run(etcdctl.argv("txn", "-i"), stdin=stdin, capture_output=True,
                              env=etcdctl.env(), timeout=20, check=True)
    assert "FAILURE" in proc.stdout.decode()
    assert etcdctl.run("get", "/t/txn/k", "--print-value-only").strip() == "z"
    dup = etcdctl.run("txn", "-i", stdin="\nput a 1\nput a 2\n\n\n", check=False)
    assert "duplicate key given in txn request" in dup


def test_watch_prefix_prev_kv_and_rev(etcdctl: Etcdctl, tmp_path: Path) -> None:
    first = json.loads(etcdctl.run("put", "/t/w/a", "0", "-w", "json"))["header"]["revision"]
    live_out = tmp_path / "live.txt"
    live = etcdctl.start("watch", "/t/w/", "--prefix", "--prev-kv", out=live_out)
    try:
        time.sleep(1.0)  # let the watch be created
        etcdctl.run("put", "/t/w/a", "1")
        etcdctl.run("put", "/t/w/b", "2")
        etcdctl.run("del", "/t/w/a")
        etcdctl.run("put", "/t/other", "x")
        wait_until(lambda: live_out.read_text().count("DELETE") == 1, 10, "watch events")
        lines = live_out.read_text().split()
        assert lines == ["PUT", "/t/w/a", "0", "/t/w/a", "1", "PUT", "/t/w/b", "2",
                         "DELETE", "/t/w/a", "1", "/t/w/a"]
    finally:
        kill(live)
    replay = subprocess.Popen(etcdctl.argv("watch", "/t/w/a", "--rev", str(first)),
                              env=etcdctl.env(), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL)
    try:
        out, _ = replay.communicate(timeout=3)
    except subprocess.TimeoutExpired:
        kill(replay)
        out, _ = replay.communicate(timeout=5)
    assert out.decode().split()[:6] == ["PUT", "/t/w/a", "0", "PUT", "/t/w/a", "1"]


def test_compaction(etcdctl: Etcdctl) -> None:
    old = json.loads(etcdctl.run("put", "/t/c/k", "old", "-w", "json"))["header"]["revision"]
    new = json.loads(etcdctl.run("put", "/t/c/k", "new", "-w", "json"))["header"]["revision"]
    assert etcdctl.run("compaction", str(new)).strip() == f"compacted revision {new}"
    out = etcdctl.run("get", "/t/c/k", "--rev", str(old), check=False)
    assert "required revision has been compacted" in out
    out = etcdctl.run("watch", "/t/c/k", "--rev", str(old), check=False)
    assert "required revision has been compacted" in out
    assert etcdctl.run("get", "/t/c/k", "--print-value-only").strip() == "new"


def test_leases(etcdctl: Etcdctl) -> None:
    granted = etcdctl.run("lease", "grant", "30")
    lease = re.match(r"lease ([0-9a-f]+) granted with TTL\((\d+)s\)", granted)
    assert lease, granted
    lid = lease.group(1)
    etcdctl.run("put", "/t/l/k", "v", f"--lease={lid}")
    assert f"lease {lid} keepalived with TTL(" in etcdctl.run("lease", "keep-alive", "--once",
                                                                lid)
    ttl = etcdctl.run("lease", "timetolive", "--keys", lid)
    assert "granted with TTL(30s)" in ttl and "attached keys([/t/l/k])" in ttl
    assert lid in etcdctl.run("lease", "list")
    assert etcdctl.run("lease", "revoke", lid).strip() == f"lease {lid} revoked"
    assert etcdctl.run("get", "/t/l/k") == ""
    assert "already expired" in etcdctl.run("lease", "timetolive", lid)
    assert "requested lease not found" in etcdctl.run("lease", "revoke", lid, check=False)


def test_lock_with_two_etcdctl(etcdctl: Etcdctl, tmp_path: Path) -> None:
    a_out, b_out = tmp_path / "a.txt", tmp_path / "b.txt"
    a = etcdctl.start("lock", "t-lock", "--", sys.executable, "-c",
                      "import time; print('A got', flush=True); time.sleep(2);"
                      "print('A done', flush=True)", out=a_out)
    try:
        wait_until(lambda: "A got" in a_out.read_text(), 10, "A holds the lock")
        b = etcdctl.start("lock", "t-lock", "--", sys.executable, "-c",
                          "import time; print('B got', time.time(), flush=True)", out=b_out)
        try:
            time.sleep(1.0)
            assert "B got" not in b_out.read_text()  # A still holds it
            wait_until(lambda: "B got" in b_out.read_text(), 15, "B gets the lock")
            assert "A done" in a_out.read_text()
        finally:
            kill(b)
    finally:
        kill(a)


def test_elect_with_two_etcdctl(etcdctl: Etcdctl, tmp_path: Path) -> None:
    a_out, b_out = tmp_path / "a.txt", tmp_path / "b.txt"
    a = etcdctl.start("elect", "t-elect", "alpha", out=a_out)
    b = None
    try:
        wait_until(lambda: "alpha" in a_out.read_text(), 10, "alpha elected")
        b = etcdctl.start("elect", "t-elect", "beta", out=b_out)
        time.sleep(1.0)
        assert "beta" not in b_out.read_text()
        observer = etcdctl.start("elect", "-l", "t-elect", out=tmp_path / "observe.txt")
        try:
            wait_until(lambda: "alpha" in (tmp_path / "observe.txt").read_text(), 10,
                       "the observer sees alpha")
        finally:
            kill(observer)
        a.send_signal(signal.SIGINT)  # alpha resigns (etcdctl closes its session)
        a.wait(timeout=10)
        wait_until(lambda: "beta" in b_out.read_text(), 30, "beta elected")
    finally:
        kill(a)
        if b is not None:
            kill(b)


def test_endpoint_status_and_health(etcdctl: Etcdctl, cluster: ProcessCluster) -> None:
    status = json.loads(etcdctl.run("endpoint", "status", "--cluster", "-w", "json"))
    assert len(status) == 3
    leaders = {s["Status"]["leader"] for s in status}
    assert len(leaders) == 1 and leaders.pop() in cluster.nodes
    assert all(s["Status"]["version"].startswith("3.5") for s in status)
    health = etcdctl.run("endpoint", "health", "--cluster", check=False)
    assert health.count("is healthy") == 3, health
    hashes = etcdctl.run("endpoint", "hashkv", "--cluster")
    assert len(hashes.splitlines()) == 3


def test_snapshot_save(etcdctl: Etcdctl, tmp_path: Path) -> None:
    path = tmp_path / "snap.db"
    out = etcdctl.run("snapshot", "save", str(path), endpoints=etcdctl.endpoints[:1],
                      check=False)
    assert f"Snapshot saved at {path}" in out
    data = path.read_bytes()
    assert data.startswith(b"CONFER-KV-SNAPSHOT\n") and len(data) % 512 == 32


def test_member_list_add_promote_remove(etcdctl: Etcdctl, cluster: ProcessCluster,
                                        tmp_path: Path) -> None:
    members = etcdctl.run("member", "list").splitlines()
    assert len(members) == 3 and all(", started, " in m for m in members)
    peer, client = free_port(), free_port()
    added = etcdctl.run("member", "add", "newbie", f"--peer-urls=http://127.0.0.1:{peer}",
                        "--learner")
    found = re.search(r"Member\s+([0-9a-f]+) added", added)
    assert found, added
    mid = found.group(1)
    assert "true" in next(line for line in etcdctl.run("member", "list").splitlines()
                      if line.startswith(mid))
    assert "in sync with leader" in etcdctl.run("member", "promote", mid, check=False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "confer", "serve", "--id", str(int(mid, 16)), "--wait-init",
         "--data-dir", str(tmp_path / "newbie"), "--listen-client", f"127.0.0.1:{client}",
         "--listen-peer", f"127.0.0.1:{peer}", "--tick-ms", "50"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        def promoted() -> bool:
            out = etcdctl.run("member", "promote", mid, check=False)
            return "promoted" in out
        wait_until(promoted, 30, "learner promoted")
        assert "false" in next(line for line in etcdctl.run("member", "list").splitlines()
                           if line.startswith(mid))
        assert re.search(rf"Member\s+{mid} removed", etcdctl.run("member", "remove", mid))
        assert len(etcdctl.run("member", "list").splitlines()) == 3
        assert "member not found" in etcdctl.run("member", "remove", mid, check=False)
    finally:
        kill(proc)


def test_etcd_and_native_share_one_store(etcdctl: Etcdctl, cluster: ProcessCluster) -> None:
    with grpc.insecure_channel(cluster.endpoints[1]) as ch:
        native = confer_pb2_grpc.ConferServiceStub(ch)
        etcdctl.run("put", "/app/config/timeout", "30")
        assert native.Get(confer_pb2.ConfigPath(path="/app/config/timeout"),
                          timeout=10).value == b"30"
        updates = native.WatchConfig(confer_pb2.ConfigPath(path="/app/config"), timeout=10)
        time.sleep(0.5)
        etcdctl.run("put", "/app/config/timeout", "45")
        first = next(updates)
        assert (first.path, first.updated_value) == ("/app/config/timeout", b"45")
        updates.cancel()
        native.Set(confer_pb2.SetConfigRequest(path=confer_pb2.ConfigPath(path="/app/config/x"),
                                               value=confer_pb2.ConfigValue(value=b"native")),
                   timeout=10)
        assert etcdctl.run("get", "/app/config/x", "--print-value-only").strip() == "native"
        etcdctl.run("put", "not/a/path", "1")
        etcdctl.run("put", "/a//b", "2")
        listed = native.List(confer_pb2.ConfigPath(path="/"), timeout=10).paths
        assert "/app/config/timeout" in listed and "not/a/path" not in listed


def test_move_leader_and_member_update(etcdctl: Etcdctl, cluster: ProcessCluster) -> None:
    leader = cluster.leader()
    target = next(i for i in cluster.nodes if i != leader)
    out = etcdctl.run("move-leader", f"{target:x}")
    assert "Leadership transferred" in out, out
    assert cluster.leader() == target
    peer = f"http://{cluster.nodes[leader].peer_addr}"
    assert "updated in cluster" in etcdctl.run("member", "update", f"{leader:x}",
                                               f"--peer-urls={peer}")
    assert "Peer URLs already exists" in etcdctl.run(
        "member", "update", f"{leader:x}", f"--peer-urls=http://{cluster.nodes[target].peer_addr}",
        check=False)
