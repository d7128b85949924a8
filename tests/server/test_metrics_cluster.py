"""A 3-node cluster of real processes under a small bounded load, scraped as Prometheus would:
the metrics exist on every member and move with the load; /health turns 503 on a member cut
off from quorum; with --log-format json every line each member writes is JSON."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

import confer
from confer.client import WatchEvent
from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.nodeproc import NodeProcess
from testing import ProcessCluster

LOAD = 60
KEYS = 10
Scrape = dict[tuple[str, frozenset[tuple[str, str]]], float]


def http_get(port: int, path: str, timeout: float = 10.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(port: int) -> Scrape:
    status, text = http_get(port, "/metrics")
    assert status == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scraped: Scrape, name: str, **labels: str) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


def total(scraped: Scrape, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in scraped.items() if n == name and wanted <= ls)


def metrics_port(node: NodeProcess, timeout: float = 20.0) -> int:
    """The port of the node's HTTP listener, from its ready line (text or JSON)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"metrics http://\S+ \(port (\d+)\)", node.log_text())
        if found:
            return int(found.group(1))
        time.sleep(0.05)
    raise TimeoutError(f"no ready line from node {node.node_id}:\n{node.log_text()}")


def test_a_scrape_of_a_loaded_cluster_shows_the_metrics_moving(tmp_path: Path) -> None:
    with ProcessCluster(3, tmp_path, extra_args=["--listen-metrics", "127.0.0.1:0",
                                                 "--log-format", "json"]) as c:
        c.leader()
        ports = {i: metrics_port(n) for i, n in c.nodes.items()}
        before = {i: scrape(p) for i, p in ports.items()}
        seen: list[WatchEvent] = []
        all_seen = threading.Event()

        def on_event(e: WatchEvent) -> None:
            seen.append(e)
            if len(seen) >= LOAD:
                all_seen.set()

        with (confer.Client([c.nodes[1].client_addr], timeout=5) as watching,
              confer.Client(c.endpoints, timeout=5) as client,
              grpc.insecure_channel(c.nodes[2].client_addr) as ch):
            w = watching.watch("/load", recursive=True, callback=on_event)
            for i in range(LOAD):
                client.put(f"/load/{i % KEYS}", b"x" * 100)
            lease = rpc_pb2_grpc.LeaseStub(ch).LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=600),
                                                          timeout=5).ID
            # Health, reflection, and the Leader service on the peer port count too: a
            # follower asks the leader for a lease's time to live.
            follower = next(i for i in c.nodes if i != c.leader())
            with grpc.insecure_channel(c.nodes[follower].client_addr) as fch:
                rpc_pb2_grpc.LeaseStub(fch).LeaseTimeToLive(
                    rpc_pb2.LeaseTimeToLiveRequest(ID=lease), timeout=5)
                health_pb2_grpc.HealthStub(fch).Check(health_pb2.HealthCheckRequest(),
                                                      timeout=5)
                list(reflection_pb2_grpc.ServerReflectionStub(fch).ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                    timeout=5))
            assert all_seen.wait(20), f"{len(seen)} of {LOAD} events"
            after = {i: scrape(p) for i, p in ports.items()}
            w.cancel()
            assert w.wait(5)

        leaders = [i for i, s in after.items() if value(s, "etcd_server_is_leader") == 1]
        assert len(leaders) == 1
        put_calls = 0.0
        for i, s in after.items():
            b = before[i]
            assert value(s, "etcd_server_has_leader") == 1
            assert value(s, "etcd_server_leader_changes_seen_total") >= 1
            assert value(s, "confer_server_term") >= 1
            assert value(s, "etcd_server_proposals_applied_total") > value(
                b, "etcd_server_proposals_applied_total")
            assert value(s, "etcd_server_proposals_committed_total") >= value(
                s, "etcd_server_proposals_applied_total")
            assert value(s, "etcd_server_proposals_failed_total") == 0
            assert value(s, "etcd_server_proposals_pending") >= 0
            assert value(s, "etcd_debugging_mvcc_keys_total") == KEYS
            assert value(s, "etcd_mvcc_db_total_size_in_bytes") > value(
                b, "etcd_mvcc_db_total_size_in_bytes")
            assert value(s, "etcd_disk_wal_fsync_duration_seconds_count") > value(
                b, "etcd_disk_wal_fsync_duration_seconds_count")
            assert value(s, "confer_disk_wal_append_duration_seconds_count") > 0
            assert value(s, "process_cpu_seconds_total") > 0
            assert value(s, "process_resident_memory_bytes") > 0
            # A follower talks to the leader only; the leader to every follower.
            for peer in set(c.nodes) - {i} if i in leaders else leaders:
                to = f"{peer:x}"
                assert value(s, "etcd_network_peer_sent_bytes_total", To=to) > value(
                    b, "etcd_network_peer_sent_bytes_total", To=to)
                assert value(s, "etcd_network_peer_received_bytes_total", From=to) > 0
            put_calls += total(s, "grpc_server_handled_total", grpc_service="confer.v1.KV",
                               grpc_method="Put", grpc_code="OK")
        assert put_calls >= LOAD
        served = after[follower]
        assert value(served, "grpc_server_handled_total", grpc_type="unary",
                     grpc_service="grpc.health.v1.Health", grpc_method="Check",
                     grpc_code="OK") == 1
        assert value(served, "grpc_server_handled_total", grpc_type="bidi_stream",
                     grpc_service="grpc.reflection.v1alpha.ServerReflection",
                     grpc_method="ServerReflectionInfo", grpc_code="OK") == 1
        assert value(after[c.leader()], "confer_peer_grpc_server_handled_total",
                     grpc_type="unary", grpc_service="confer.internal.Leader",
                     grpc_method="Call", grpc_code="OK") >= 1
        # The leader applied the grant before it answered; the others may not have yet.
        assert max(value(s, "confer_leases") for s in after.values()) == 1
        # Each link has been probed (every 5 s; a probe that failed, say while a peer was
        # starting, records nothing, so allow for a few rounds).
        links = {(i, p) for i in c.nodes for p in (set(c.nodes) - {i} if i in leaders
                                                    else leaders)}
        deadline = time.monotonic() + 30
        while links and time.monotonic() < deadline:
            links = {(i, p) for i, p in links if value(
                scrape(ports[i]), "etcd_network_peer_round_trip_time_seconds_count",
                To=f"{p:x}") < 1}
            time.sleep(0.5)
        assert not links, f"links never probed: {links}"
        # The probes are health checks on the peer ports.
        assert all(total(scrape(port), "confer_peer_grpc_server_handled_total",
                         grpc_service="grpc.health.v1.Health") >= 1 for port in ports.values())
        watched = after[1]
        assert value(watched, "etcd_debugging_mvcc_events_total") >= LOAD
        assert value(watched, "etcd_debugging_mvcc_watcher_total") >= 1
        assert value(watched, "etcd_debugging_mvcc_watch_stream_total") >= 1

        for n in c.nodes.values():
            lines = [line for line in n.log_text().splitlines() if line.strip()]
            records = [json.loads(line) for line in lines]  # every line is JSON
            ready = [r for r in records if " ready: " in r["msg"]]
            assert len(ready) == 1 and ready[0]["node"] == n.node_id
            assert ready[0]["metrics_port"] == ports[n.node_id]
            assert any("term" in r for r in records)


def test_health_is_503_on_a_member_cut_off_from_quorum(tmp_path: Path) -> None:
    with ProcessCluster(3, tmp_path, extra_args=["--listen-metrics", "127.0.0.1:0"]) as c:
        c.leader()
        ports = {i: metrics_port(n) for i, n in c.nodes.items()}
        for port in ports.values():
            deadline = time.monotonic() + 20
            while http_get(port, "/health")[0] != 200 and time.monotonic() < deadline:
                time.sleep(0.1)
            status, body = http_get(port, "/health")
            assert (status, json.loads(body)) == (200, {"health": "true", "reason": ""})
            assert http_get(port, "/readyz") == (200, "ok")

        survivor = 1
        for i, n in c.nodes.items():
            if i != survivor:
                n.stop()
        port = ports[survivor]
        deadline = time.monotonic() + 30
        while http_get(port, "/health")[0] != 503 and time.monotonic() < deadline:
            time.sleep(0.1)
        status, body = http_get(port, "/health")
        health = json.loads(body)
        assert status == 503 and health["health"] == "false" and health["reason"]
        assert http_get(port, "/livez") == (200, "ok")  # alive: restarting it would not help
        status, body = http_get(port, "/readyz")
        assert status == 503 and "readyz check failed" in body
