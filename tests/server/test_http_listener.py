"""The HTTP listener of one member, in process: where it binds (--listen-metrics), what
/metrics counts of gRPC calls (by method and status code, both APIs), the health endpoints'
answers, gRPC reflection on the client port, and JSON log lines."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from prometheus_client.parser import text_string_to_metric_families

from confer.cli.serve import JsonFormatter
from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.server import rpc
from confer.server.app import ConferServer
from confer.server.config import ConfigError, ServerConfig, load_config
from confer.server.log_limit import LogLimiter
from confer.v1 import kv_pb2, kv_pb2_grpc
from testing import free_port

Body = Callable[[ConferServer, grpc.aio.Channel, str], Awaitable[None]]


async def with_member(tmp_path: Path, body: Body, **settings: object) -> None:
    """Run ``body(server, channel, http base URL)`` against a started single-node member
    (waiting for its leadership unless it waits for Init), then stop it."""
    cfg = ServerConfig(data_dir=tmp_path / "node", listen_client="127.0.0.1:0",
                       listen_peer="127.0.0.1:0", listen_metrics="127.0.0.1:0", tick_ms=20)
    for name, value in settings.items():
        setattr(cfg, name, value)
    srv = ConferServer(cfg)
    await srv.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not cfg.wait_init and not srv.consensus.is_leader():
            assert loop.time() < deadline, "no leader in 10 s"
            await asyncio.sleep(0.02)
        assert srv.http is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.client_port}") as ch:
            await asyncio.wait_for(body(srv, ch, f"http://127.0.0.1:{srv.http.port}"), 60)
    finally:
        await srv.stop(grace=0)


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.text()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """{(sample name, labels): value} of a scrape, parsed by prometheus-client."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


# -- where it listens ---------------------------------------------------------------------------
def test_the_metrics_address_defaults_to_the_client_port_plus_1000_and_none_turns_it_off(
        tmp_path: Path) -> None:
    assert ServerConfig().metrics_addr == "127.0.0.1:8379"
    assert ServerConfig(listen_client="0.0.0.0:2379").metrics_addr == "0.0.0.0:3379"
    assert ServerConfig(listen_client="127.0.0.1:0").metrics_addr == "127.0.0.1:0"
    assert ServerConfig(listen_client="127.0.0.1:65000").metrics_addr == "127.0.0.1:0"
    for off in ("none", "", "NONE"):
        assert ServerConfig(listen_metrics=off).metrics_addr == ""
    toml = tmp_path / "confer.toml"
    toml.write_text('listen-metrics = "127.0.0.1:9100"\n')
    assert load_config(toml, {}, environ={}).metrics_addr == "127.0.0.1:9100"
    assert load_config(toml, {}, environ={"CONFER_LISTEN_METRICS": "none"}).metrics_addr == ""
    assert load_config(None, {"listen_metrics": "127.0.0.1:0"}, environ={}).metrics_addr == \
        "127.0.0.1:0"
    with pytest.raises(ConfigError, match="listen-metrics: 'nowhere' is not a valid"):
        load_config(None, {"listen_metrics": "nowhere"}, environ={})


def test_an_explicit_metrics_address_in_use_stops_the_start_with_one_line(
        tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = f"127.0.0.1:{taken.getsockname()[1]}"

        async def start() -> str:
            srv = ConferServer(ServerConfig(data_dir=tmp_path / "n", listen_client="127.0.0.1:0",
                                            listen_peer="127.0.0.1:0", listen_metrics=addr))
            try:
                with pytest.raises(SystemExit) as refused:
                    await srv.start()
            finally:
                await srv.stop(grace=0)
            return str(refused.value)

        message = asyncio.run(start())
    assert message.startswith(f"cannot listen for metrics and health checks on {addr}")
    assert "\n" not in message


def test_the_default_metrics_address_in_use_is_warned_about_and_the_member_runs(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    client = free_port()
    with socket.socket() as taken:
        try:
            taken.bind(("127.0.0.1", client + 1000))
            taken.listen()
        except OSError:
            pass  # taken already: as good

        async def start() -> tuple[bool, bool]:
            srv = ConferServer(ServerConfig(data_dir=tmp_path / "n",
                                            listen_client=f"127.0.0.1:{client}",
                                            listen_peer="127.0.0.1:0"))
            await srv.start()
            try:
                return srv.http is None, srv.grpc_server is not None
            finally:
                await srv.stop(grace=0)

        with caplog.at_level(logging.WARNING, "confer.http"):
            assert asyncio.run(start()) == (True, True)
    assert any(f"127.0.0.1:{client + 1000}" in r.getMessage() and "--listen-metrics" in
               r.getMessage() for r in caplog.records)


# -- /metrics -------------------------------------------------------------------------------------
def test_grpc_calls_of_both_apis_are_counted_by_method_and_status_code(tmp_path: Path) -> None:
    async def body(srv: ConferServer, ch: grpc.aio.Channel, base: str) -> None:
        etcd = rpc_pb2_grpc.KVStub(ch)
        for i in range(3):
            await etcd.Put(rpc_pb2.PutRequest(key=b"/m/%d" % i, value=b"v"), timeout=5)
        await kv_pb2_grpc.KVStub(ch).Range(kv_pb2.RangeRequest(path="/m/1"), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await rpc_pb2_grpc.LeaseStub(ch).LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=99),
                                                        timeout=5)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        garbage = ch.unary_unary("/etcdserverpb.KV/Range")
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await garbage(b"\xff\xff\xff", timeout=5)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        status, text = await get(f"{base}/metrics")
        assert status == 200
        got = samples(text)

        def value(name: str, **labels: str) -> float:
            return got.get((name, frozenset(labels.items())), 0.0)

        put = {"grpc_type": "unary", "grpc_service": "etcdserverpb.KV", "grpc_method": "Put"}
        assert value("grpc_server_started_total", **put) == 3
        assert value("grpc_server_handled_total", **put, grpc_code="OK") == 3
        assert value("grpc_server_handling_seconds_count", **put, grpc_code="OK") == 3
        assert value("grpc_server_handling_seconds_bucket", **put, grpc_code="OK",
                     le="+Inf") == 3
        assert value("grpc_server_handled_total", grpc_type="unary",
                     grpc_service="confer.v1.KV", grpc_method="Range", grpc_code="OK") == 1
        assert value("grpc_server_handled_total", grpc_type="unary",
                     grpc_service="etcdserverpb.Lease", grpc_method="LeaseRevoke",
                     grpc_code="NOT_FOUND") == 1
        assert value("grpc_server_handled_total", grpc_type="unary",
                     grpc_service="etcdserverpb.KV", grpc_method="Range",
                     grpc_code="INVALID_ARGUMENT") == 1
        assert value("etcd_debugging_mvcc_keys_total") == 3
        assert value("etcd_server_has_leader") == 1
        assert value("etcd_server_is_leader") == 1
        assert value("etcd_server_proposals_applied_total") >= 3
        assert value("etcd_disk_wal_fsync_duration_seconds_count") >= 3
        assert value("process_resident_memory_bytes") > 0

    asyncio.run(with_member(tmp_path, body))


def test_snapshots_taken_are_timed(tmp_path: Path) -> None:
    async def body(srv: ConferServer, ch: grpc.aio.Channel, base: str) -> None:
        kv = rpc_pb2_grpc.KVStub(ch)
        for i in range(12):
            await kv.Put(rpc_pb2.PutRequest(key=b"/s/%d" % i, value=b"v"), timeout=5)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while True:  # the snapshot is written in a worker thread, after the writes
            got = samples((await get(f"{base}/metrics"))[1])
            saved = got[("etcd_debugging_snap_save_total_duration_seconds_count", frozenset())]
            if saved >= 1 or loop.time() > deadline:
                break
            await asyncio.sleep(0.05)
        assert saved >= 1
        assert got[("etcd_debugging_snap_save_total_duration_seconds_sum", frozenset())] > 0

    asyncio.run(with_member(tmp_path, body, snapshot_every=5))


def test_a_slow_request_is_logged_with_its_method_peer_request_id_and_duration(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(rpc, "SLOW_REQUEST", 0.0)  # every request is slow
    monkeypatch.setattr(rpc, "_slow", LogLimiter())  # not held back by an earlier test's

    async def body(srv: ConferServer, ch: grpc.aio.Channel, base: str) -> None:
        await rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"/slow", value=b"v"),
                                          timeout=5, metadata=(("x-request-id", "req-42"),))

    with caplog.at_level(logging.WARNING, "confer.api"):
        asyncio.run(with_member(tmp_path, body))
    [slow] = [r for r in caplog.records if "etcdserverpb.KV/Put" in r.getMessage()]
    assert slow.getMessage().startswith("slow request: etcdserverpb.KV/Put from 127.0.0.1 took")
    fields = slow.__dict__
    assert fields["method"] == "etcdserverpb.KV/Put" and fields["request_id"] == "req-42"
    assert fields["peer"] == "127.0.0.1" and fields["duration"] >= 0


# -- health ---------------------------------------------------------------------------------------
def test_health_livez_and_readyz_of_a_member_with_a_leader(tmp_path: Path) -> None:
    async def body(srv: ConferServer, ch: grpc.aio.Channel, base: str) -> None:
        status, text = await get(f"{base}/health")
        assert (status, json.loads(text)) == (200, {"health": "true", "reason": ""})
        assert await get(f"{base}/health?serializable=true") == (200, text)
        assert await get(f"{base}/livez") == (200, "ok")
        assert await get(f"{base}/readyz") == (200, "ok")
        status, verbose = await get(f"{base}/readyz?verbose")
        assert status == 200
        assert "[+]linearizable_read ok" in verbose and "readyz check passed" in verbose

    asyncio.run(with_member(tmp_path, body))


def test_a_member_waiting_for_init_is_alive_but_neither_healthy_nor_ready(
        tmp_path: Path) -> None:
    async def body(srv: ConferServer, ch: grpc.aio.Channel, base: str) -> None:
        status, text = await get(f"{base}/health")
        assert (status, json.loads(text)) == (503, {"health": "false",
                                                    "reason": "RAFT NO LEADER"})
        assert await get(f"{base}/livez") == (200, "ok")
        status, text = await get(f"{base}/readyz")
        assert status == 503
        assert "[-]leader failed: RAFT NO LEADER" in text and "readyz check failed" in text

    asyncio.run(with_member(tmp_path, body, wait_init=True))


# -- reflection -----------------------------------------------------------------------------------
def _reflected_services(addr: str) -> tuple[list[str], list[str]]:
    """The services the server names through reflection, and the methods of etcd's KV as
    its descriptors describe them (no proto file on this side)."""
    with grpc.insecure_channel(addr) as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        services = list(db.get_services())
        kv = db.FindFileContainingSymbol("etcdserverpb.KV")
        methods = [m.name for s in kv.service if s.name == "KV" for m in s.method]
        return services, methods


def test_reflection_lists_the_services_of_the_client_port(tmp_path: Path) -> None:
    async def body(srv: ConferServer, ch: grpc.aio.Channel, base: str) -> None:
        services, methods = await asyncio.to_thread(_reflected_services,
                                                    f"127.0.0.1:{srv.client_port}")
        for name in ("etcdserverpb.KV", "etcdserverpb.Watch", "etcdserverpb.Lease",
                     "v3lockpb.Lock", "confer.v1.KV", "confer.v1.Cluster",
                     "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"):
            assert name in services
        assert "confer.v1.Peer" not in services  # the peer service is on the peer port only
        assert {"Range", "Put", "DeleteRange", "Txn", "Compact"} <= set(methods)

    asyncio.run(with_member(tmp_path, body))


# -- JSON logs ------------------------------------------------------------------------------------
def test_a_json_log_line_carries_the_members_fields_and_the_lines_own() -> None:
    formatter = JsonFormatter()
    formatter.context = lambda: {"node": 3, "term": 7}
    record = logging.LogRecord("confer.api", logging.WARNING, __file__, 1, "slow %s", ("Put",),
                               None)
    record.__dict__.update(peer="127.0.0.1", request_id="r-1", duration=0.75, other="x")
    line = json.loads(formatter.format(record))
    assert line == {"ts": line["ts"], "level": "warning", "logger": "confer.api",
                    "msg": "slow Put", "node": 3, "term": 7, "peer": "127.0.0.1",
                    "request_id": "r-1", "duration": 0.75}
