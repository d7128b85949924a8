"""Operational behaviour of one node: health, graceful shutdown, automatic compaction."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from confer.v1 import kv_pb2, kv_pb2_grpc
from testing import ProcessCluster


def test_health_service_and_graceful_sigterm(tmp_path: Path) -> None:
    with ProcessCluster(1, tmp_path) as c:
        c.leader()
        node = c.nodes[1]
        with grpc.insecure_channel(node.client_addr) as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                        timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
            kv_pb2_grpc.KVStub(ch).Put(kv_pb2.PutRequest(path="/kept", value=b"1"), timeout=5)
        node.signal(signal.SIGTERM)
        assert node.proc is not None
        assert node.proc.wait(timeout=15) == 0
        assert "shutting down" in node.log_text()
        node.start()
        node.wait_ready()
        c.leader()
        with grpc.insecure_channel(node.client_addr) as ch:
            got = kv_pb2_grpc.KVStub(ch).Range(kv_pb2.RangeRequest(path="/kept"), timeout=5)
        assert [kv.value for kv in got.kvs] == [b"1"]


def test_automatic_compaction_keeps_the_configured_history(tmp_path: Path) -> None:
    with ProcessCluster(1, tmp_path, extra_args=["--auto-compaction-retention", "5"]) as c:
        c.leader()
        with grpc.insecure_channel(c.endpoints[0]) as ch:
            stub = kv_pb2_grpc.KVStub(ch)
            for i in range(20):
                stub.Put(kv_pb2.PutRequest(path="/k", value=b"%d" % i), timeout=5)
            deadline = time.monotonic() + 15
            while True:
                st = kv_pb2_grpc.ClusterStub(ch).Status(kv_pb2.StatusRequest(), timeout=5)
                if st.compact_revision >= st.revision - 5 > 0:
                    break
                assert time.monotonic() < deadline, f"no automatic compaction: {st}"
                time.sleep(0.2)
            try:
                stub.Range(kv_pb2.RangeRequest(path="/k", revision=2), timeout=5)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.OUT_OF_RANGE
                assert "oldest revision still available" in (e.details() or "")
            else:
                raise AssertionError("a compacted revision was readable")
            latest = stub.Range(kv_pb2.RangeRequest(path="/k", revision=st.revision), timeout=5)
            assert latest.kvs[0].value == b"19"
