"""Acknowledged writes survive crashes: kill -9 of the leader, and of every node at once."""

from __future__ import annotations

import time
from pathlib import Path

import grpc

from confer.v1 import kv_pb2, kv_pb2_grpc
from testing import ProcessCluster


def put_with_retry(endpoints: list[str], path: str, value: bytes, deadline: float) -> bool:
    """Try each endpoint until one acknowledges. Returns True only for an acknowledged put."""
    while time.monotonic() < deadline:
        for addr in endpoints:
            with grpc.insecure_channel(addr) as ch:
                try:
                    kv_pb2_grpc.KVStub(ch).Put(kv_pb2.PutRequest(path=path, value=value),
                                               timeout=2)
                    return True
                except grpc.RpcError:
                    continue
        time.sleep(0.05)
    return False


def read_all(addr: str, prefix: str) -> dict[str, bytes]:
    with grpc.insecure_channel(addr) as ch:
        resp = kv_pb2_grpc.KVStub(ch).Range(kv_pb2.RangeRequest(path=prefix, recursive=True),
                                            timeout=10)
    return {kv.path: kv.value for kv in resp.kvs}


def test_kill_9_of_every_node_loses_no_acknowledged_write(tmp_path: Path) -> None:
    with ProcessCluster(3, tmp_path) as c:
        c.leader()
        acked = {}
        deadline = time.monotonic() + 30
        for i in range(150):
            path, value = f"/durable/k{i:03d}", b"v%d" % i
            if put_with_retry(c.endpoints, path, value, deadline):
                acked[path] = value
        assert len(acked) == 150
        for n in c.nodes.values():
            n.kill()
        for n in c.nodes.values():
            n.start()
        for n in c.nodes.values():  # a leader needs only two: the third may still start
            n.wait_ready()
        c.leader()
        for n in c.nodes.values():
            assert read_all(n.client_addr, "/durable") == acked


def test_kill_9_of_the_leader_under_load_elects_a_new_one_and_keeps_every_ack(
        tmp_path: Path) -> None:
    with ProcessCluster(3, tmp_path) as c:
        old = c.leader()
        acked = {}
        deadline = time.monotonic() + 40
        killed_at = None
        for i in range(300):
            if i == 100:
                c.nodes[old].kill()
                killed_at = time.monotonic()
            path, value = f"/load/k{i:03d}", b"v%d" % i
            live = [n.client_addr for n in c.nodes.values() if n.alive()]
            if put_with_retry(live, path, value, deadline):
                acked[path] = value
        assert killed_at is not None
        new = c.leader(among=[i for i in c.nodes if i != old])
        assert new != old
        assert len(acked) == 300
        survivor = c.nodes[new].client_addr
        assert read_all(survivor, "/load") == acked
        c.nodes[old].start()
        c.leader()
        deadline = time.monotonic() + 20
        while True:
            try:
                if read_all(c.nodes[old].client_addr, "/load") == acked:
                    break
            except grpc.RpcError:
                pass  # still starting up
            assert time.monotonic() < deadline, "restarted node did not catch up"
            time.sleep(0.2)


def test_a_restart_after_snapshots_applies_nothing_twice(tmp_path: Path) -> None:
    """Snapshots keep catch-up entries before them; a restarted node must not re-apply those
    (it did, and its revisions diverged from the others': fault-injection soak, seed 101)."""
    args = ["--snapshot-every", "40", "--snapshot-catchup-entries", "15"]
    with ProcessCluster(3, tmp_path, extra_args=args) as c:
        c.leader()
        deadline = time.monotonic() + 30
        for i in range(120):
            assert put_with_retry(c.endpoints, f"/snap/k{i % 7}", b"v%d" % i, deadline)
        for n in c.nodes.values():
            n.kill()
        for n in c.nodes.values():
            n.start()
        c.leader()
        assert put_with_retry(c.endpoints, "/snap/after", b"x", time.monotonic() + 30)
        revisions = set()
        for n in c.nodes.values():
            deadline = time.monotonic() + 15
            while True:  # serializable: each node's own state, once it applied the last put
                with grpc.insecure_channel(n.client_addr) as ch:
                    try:
                        resp = kv_pb2_grpc.KVStub(ch).Range(
                            kv_pb2.RangeRequest(path="/snap/after", serializable=True), timeout=5)
                    except grpc.RpcError:
                        resp = None
                if resp is not None and resp.kvs:
                    break
                assert time.monotonic() < deadline, f"node {n.node_id} did not catch up"
                time.sleep(0.05)
            revisions.add(resp.kvs[0].mod_revision)
        assert len(revisions) == 1, revisions
