"""Request bounds, the same through both APIs (the request layer checks every write once):
``--max-request-bytes`` on the whole write (a txn counts whole), the key and value sizes,
the bound on writes waiting for the log, and the settings that configure them; gRPC's
receive limit on the client port (``--max-request-bytes`` + 512 KiB) before all that."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.kv import KVStore, Put
from confer.server.api import errors as api
from confer.server.api.limits import MAX_PENDING_WRITES, WriteLimits
from confer.server.config import ConfigError, ServerConfig, load_config
from confer.server.etcd.common import etcd_status
from confer.server.native.common import native_status
from confer.v1 import kv_pb2, kv_pb2_grpc
from testing import ProcessCluster

MiB = 1 << 20


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    """One node with the default limits; a channel that may send up to 80 MiB."""
    with ProcessCluster(1, tmp_path_factory.mktemp("limits")) as c:
        c.leader()
        with grpc.insecure_channel(c.endpoints[0], options=[
                ("grpc.max_send_message_length", 80 * MiB)]) as ch:
            yield ch


def refused(call: object, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT) -> str:
    """The details of the status ``call`` (a thunk) failed with; fails if it succeeded."""
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as e:
        assert e.code() == code, (e.code(), e.details())
        return e.details() or ""
    raise AssertionError("the request was accepted")


def txn_of(count: int, size: int) -> rpc_pb2.TxnRequest:
    return rpc_pb2.TxnRequest(success=[
        rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"/big/%d" % i, value=b"v" * size))
        for i in range(count)])


def test_an_etcd_txn_of_sixty_values_of_one_mib_is_refused_whole(node: grpc.Channel) -> None:
    kv = rpc_pb2_grpc.KVStub(node)
    # Each value within --max-value-bytes; together far past the client port's gRPC limit.
    details = refused(lambda: kv.Txn(txn_of(60, MiB - 100), timeout=30),
                      grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "larger than max" in details and str(1536 * 1024 + 512 * 1024) in details
    # Under gRPC's limit but over --max-request-bytes: the request layer refuses it.
    assert refused(lambda: kv.Txn(txn_of(2, 900_000), timeout=30)) == (
        "etcdserver: request is too large")
    got = kv.Range(rpc_pb2.RangeRequest(key=b"/big/", range_end=b"/big0", count_only=True),
                   timeout=10)
    assert got.count == 0


def test_a_native_txn_over_the_request_limit_is_refused(node: grpc.Channel) -> None:
    kv = kv_pb2_grpc.KVStub(node)
    value = b"v" * 900_000  # two: over --max-request-bytes, under gRPC's limit
    txn = kv_pb2.TxnRequest(success=[
        kv_pb2.RequestOp(put=kv_pb2.PutRequest(path=f"/big/{i}", value=value))
        for i in range(2)])
    details = refused(lambda: kv.Txn(txn, timeout=30))
    assert "request is too large" in details and "--max-request-bytes" in details
    one = kv_pb2.TxnRequest(success=txn.success[:1])
    assert kv.Txn(one, timeout=30).succeeded  # one value fits


def test_the_etcd_api_has_the_native_key_size_limit(node: grpc.Channel) -> None:
    kv = rpc_pb2_grpc.KVStub(node)
    details = refused(lambda: kv.Put(rpc_pb2.PutRequest(key=b"k" * 4097, value=b"1"),
                                     timeout=10))
    assert details.startswith("etcdserver: key is too large: 4097 bytes, at most 4096")
    huge = rpc_pb2.PutRequest(key=b"k" * (10 * MiB), value=b"1")  # past gRPC's limit
    refused(lambda: kv.Put(huge, timeout=30), grpc.StatusCode.RESOURCE_EXHAUSTED)
    txn = rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(
        request_put=rpc_pb2.PutRequest(key=b"k" * MiB, value=b"1"))])
    assert refused(lambda: kv.Txn(txn, timeout=30)).startswith("etcdserver: key is too large")
    kv.Put(rpc_pb2.PutRequest(key=b"k" * 4096, value=b"1"), timeout=10)  # at the limit: fine
    assert refused(lambda: kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"k" * 4097),
                                          timeout=10)).startswith("etcdserver: key is too large")
    native = kv_pb2_grpc.KVStub(node)
    refused(lambda: native.Put(kv_pb2.PutRequest(path="/" + "k" * 4096, value=b"1"),
                               timeout=10))


def test_values_are_limited_the_same_on_both_apis(node: grpc.Channel) -> None:
    too_big = b"v" * (MiB + 1)
    details = refused(lambda: rpc_pb2_grpc.KVStub(node).Put(
        rpc_pb2.PutRequest(key=b"/v", value=too_big), timeout=10))
    assert details == f"etcdserver: value is too large: {MiB + 1} bytes, at most {MiB} " \
                      "(--max-value-bytes)"
    native = refused(lambda: kv_pb2_grpc.KVStub(node).Put(
        kv_pb2.PutRequest(path="/v", value=too_big), timeout=10))
    assert native == details.removeprefix("etcdserver: ")


def test_max_request_bytes_is_a_setting_like_the_others(tmp_path: Path) -> None:
    assert ServerConfig().max_request_bytes == 1536 * 1024  # etcd's default
    toml = tmp_path / "confer.toml"
    toml.write_text("max-request-bytes = 4096\nquota-backend-bytes = -1\n")
    cfg = load_config(toml, {}, {})
    assert (cfg.max_request_bytes, cfg.quota_bytes) == (4096, 0)
    env = load_config(toml, {}, {"CONFER_MAX_REQUEST_BYTES": "8192",
                                 "CONFER_QUOTA_BACKEND_BYTES": "0"})
    assert (env.max_request_bytes, env.quota_bytes) == (8192, 2 << 30)
    flag = load_config(toml, {"max_request_bytes": 100, "quota_backend_bytes": 5000}, {})
    assert (flag.max_request_bytes, flag.quota_bytes) == (100, 5000)
    with pytest.raises(ConfigError, match="max-request-bytes must be positive"):
        load_config(None, {"max_request_bytes": 0}, {})


def test_history_is_kept_for_a_documented_number_of_revisions_by_default() -> None:
    assert load_config(None, {}, {}).auto_compaction_retention == 10_000


def test_writes_waiting_for_the_log_are_bounded() -> None:
    limits = WriteLimits(ServerConfig(), KVStore())
    limits.check(Put(b"/a", b"1"), 10)
    limits.pending = MAX_PENDING_WRITES
    with pytest.raises(api.TooManyRequests) as caught:
        limits.check(Put(b"/a", b"1"), 10)
    assert etcd_status(caught.value) == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                         "etcdserver: too many requests")
    assert native_status(caught.value)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[index]
