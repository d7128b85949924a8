"""Bad field values are INVALID_ARGUMENT naming the rule, never INTERNAL (issue 12,
finding 12): what was left after the etcd enum fixes."""

from __future__ import annotations

import math
from pathlib import Path

import grpc
import pytest

from confer.v1 import kv_pb2, kv_pb2_grpc
from testing import ProcessCluster


def test_watch_progress_interval_must_be_finite_and_not_negative(tmp_path: Path) -> None:
    with ProcessCluster(1, tmp_path) as c:
        c.leader()
        with grpc.insecure_channel(c.nodes[1].client_addr) as ch:
            kv = kv_pb2_grpc.KVStub(ch)
            for bad in (math.nan, math.inf, -math.inf, -1.0):
                with pytest.raises(grpc.RpcError) as info:
                    next(iter(kv.Watch(kv_pb2.WatchRequest(path="/a", progress_interval=bad),
                                       timeout=10)))
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
                assert "progress_interval" in (info.value.details() or "")
            # A finite interval still works: the stream is created.
            first = next(iter(kv.Watch(kv_pb2.WatchRequest(path="/a", progress_interval=0.5),
                                       timeout=10)))
            assert first.created
