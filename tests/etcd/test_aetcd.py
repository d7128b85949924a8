"""aetcd (PyPI's maintained asyncio etcd v3 client) against a 3-node Confer cluster.

aetcd cannot be imported into this process (its generated etcd protos and confer.etcdpb
register the same message names in protobuf's default pool), so each scenario runs in its own
Python process (tests/etcd/aetcd_client.py), prints what the client saw as JSON, and the
assertions are here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from testing import ProcessCluster

from .conftest import kill

SCRIPT = Path(__file__).with_name("aetcd_client.py")


def run_scenario(name: str, endpoint: str, timeout: float = 60) -> dict[str, Any]:
    proc = subprocess.Popen([sys.executable, str(SCRIPT), name, endpoint],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        kill(proc)
    assert proc.returncode == 0, f"aetcd scenario {name} failed:\n{err.decode()[-3000:]}"
    result: dict[str, Any] = json.loads(out)
    return result


def follower_endpoint(cluster: ProcessCluster) -> str:
    leader = cluster.leader()
    return next(n.client_addr for i, n in cluster.nodes.items() if i != leader)


@pytest.mark.parametrize("member", ["leader", "follower"])
def test_put_get_range_delete(cluster: ProcessCluster, member: str) -> None:
    endpoint = (cluster.nodes[cluster.leader()].client_addr if member == "leader"
                else follower_endpoint(cluster))
    r = run_scenario("kv", endpoint)
    rev = r["put_revision"]
    assert r["get"] == ["/aetcd/kv/a", "1", 1, rev, rev]
    assert r["get_header_revision"] >= rev + 3
    assert r["missing"] is None
    assert r["prev_kv"] == "1"
    assert r["changed"] == ["one", 2, rev]
    assert r["prefix"] == [["/aetcd/kv/a", "one"], ["/aetcd/kv/b", "2"], ["/aetcd/kv/c", "3"]]
    assert r["prefix_count"] == 3
    assert r["range"] == ["/aetcd/kv/a", "/aetcd/kv/b"]  # [key, range_end)
    assert r["deleted"] == [1, "2"]
    assert r["after_delete"] == ["/aetcd/kv/a", "/aetcd/kv/c"]
    assert r["delete_prefix"] == 2
    assert r["left"] == ["/aetcd/kvx"]


def test_txn(cluster: ProcessCluster) -> None:
    r = run_scenario("txn", cluster.endpoints[0])
    assert r["succeeded"] is True and r["success_get"] == ["y"]
    assert r["failed"] is False and r["failure_deleted"] == 1
    assert r["replaced"] is True and r["not_replaced"] is False
    assert r["left"] == [["/aetcd/txn/other", "zz"]]


def test_watch(cluster: ProcessCluster) -> None:
    r = run_scenario("watch", follower_endpoint(cluster))
    first = r["first_revision"]
    # live: PUT a (prev 0), PUT b (new: no prev), the unwatched key is skipped, DELETE a
    assert r["live"] == [["PUT", "/aetcd/w/a", "1", "0", first + 1],
                         ["PUT", "/aetcd/w/b", "2", None, first + 2],
                         ["DELETE", "/aetcd/w/a", "", "1", first + 4]]
    assert r["replay"] == [["PUT", "/aetcd/w/a", "0", None, first],
                           ["PUT", "/aetcd/w/a", "1", None, first + 1],
                           ["DELETE", "/aetcd/w/a", "", None, first + 4]]
    assert r["once"] == ["PUT", "0"]


def test_lease_grant_put_revoke(cluster: ProcessCluster) -> None:
    r = run_scenario("lease", cluster.endpoints[1])
    assert r["id"] > 0 and r["ttl"] == 30 and r["granted_ttl"] == 30
    assert r["attached_lease"] == r["id"]
    assert r["keys"] == ["/aetcd/lease/a", "/aetcd/lease/b"]
    assert 0 < r["remaining"] <= 30
    assert r["refreshed_ttl"] == 30
    assert r["after_revoke"] == []  # revoking deleted the attached keys
    assert r["ttl_after_revoke"] == -1
    assert r["revoke_again"] == "ClientError: etcdserver: requested lease not found"


def test_status_and_members(cluster: ProcessCluster) -> None:
    r = run_scenario("status", cluster.endpoints[2])
    assert r["version"] == "3.5.0"
    assert r["leader"] == cluster.leader()
    assert r["raft_term"] >= 1
    assert sorted(m[2] for m in r["members"]) == sorted(
        [[f"http://{e}"] for e in cluster.endpoints])
