"""The space quota and etcd's NOSPACE alarm, driven by the real etcdctl: past
``--quota-backend-bytes`` the alarm is raised on every member, writes that need space are
refused with etcd's own error, deletes and compaction still work, and ``etcdctl alarm
disarm`` lets writes in again once space was freed (docs/operations.md)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.v1 import kv_pb2, kv_pb2_grpc
from testing import ProcessCluster

from .conftest import Etcdctl, wait_until

QUOTA = 300_000
VALUE = b"q" * 20_000
NOSPACE = "etcdserver: mvcc: database space exceeded"


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    with ProcessCluster(3, tmp_path_factory.mktemp("quota"),
                        extra_args=["--quota-backend-bytes", str(QUOTA)]) as c:
        for n in c.nodes.values():
            n.wait_ready()
        c.leader()
        yield c


def fill(endpoint: str) -> int:
    """Put 20 kB values through ``endpoint`` until the quota refuses one; how many fit."""
    with grpc.insecure_channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        for i in range(100):
            try:
                kv.Put(rpc_pb2.PutRequest(key=b"/fill/%03d" % i, value=VALUE), timeout=10)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
                assert e.details() == NOSPACE
                return i
    raise AssertionError(f"100 values of {len(VALUE)} bytes fit in a quota of {QUOTA}")


def test_the_nospace_alarm_from_raise_to_disarm(small: ProcessCluster) -> None:
    leader = small.leader()
    follower = next(i for i in small.nodes if i != leader)
    # Raised through a follower: the alarm is replicated like any write.
    fitted = fill(small.nodes[follower].client_addr)
    assert 5 < fitted < 16, fitted
    ctl = Etcdctl(small.endpoints)
    for endpoint in small.endpoints:  # every member agrees
        wait_until(lambda e=endpoint: "alarm:NOSPACE" in ctl.run(  # type: ignore[misc]
            "alarm", "list", endpoints=[e]), 10, f"the alarm on {endpoint}")
    assert f"memberID:{follower} alarm:NOSPACE" in ctl.run("alarm", "list")

    # Writes that need space are refused with etcd's error, on both APIs...
    out = ctl.run("put", "/more", "x", check=False)
    assert NOSPACE in out, out
    assert NOSPACE in ctl.run("lease", "grant", "30", check=False)
    with grpc.insecure_channel(small.endpoints[0]) as ch:
        with pytest.raises(grpc.RpcError) as caught:
            kv_pb2_grpc.KVStub(ch).Put(kv_pb2.PutRequest(path="/more", value=b"x"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "NOSPACE alarm" in (caught.value.details() or "")
    # ... even though a disarm without freeing space would let the next write re-raise it.
    # Deletes and compaction still work: free the space.
    assert ctl.run("del", "--prefix", "/fill/").strip() == str(fitted)
    revision = ctl.run("get", "/nothing", "-w", "fields").split('"Revision" : ')[1].split()[0]
    assert "compacted revision" in ctl.run("compact", revision)
    assert NOSPACE in ctl.run("put", "/more", "x", check=False)  # still armed

    disarmed = ctl.run("alarm", "disarm")
    assert f"memberID:{follower} alarm:NOSPACE" in disarmed, disarmed
    for endpoint in small.endpoints:
        wait_until(lambda e=endpoint: ctl.run(  # type: ignore[misc]
            "alarm", "list", endpoints=[e]).strip() == "", 10, f"no alarm on {endpoint}")
    assert ctl.run("put", "/more", "x").strip() == "OK"
    assert ctl.run("get", "/more", "--print-value-only").strip() == "x"


def test_an_unknown_alarm_action_or_type_is_invalid(small: ProcessCluster) -> None:
    with grpc.insecure_channel(small.endpoints[0]) as ch:
        maintenance = rpc_pb2_grpc.MaintenanceStub(ch)
        for req in (rpc_pb2.AlarmRequest(action=7), rpc_pb2.AlarmRequest(alarm=9),
                    rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.ACTIVATE,
                                         alarm=rpc_pb2.CORRUPT)):
            with pytest.raises(grpc.RpcError) as caught:
                maintenance.Alarm(req, timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, req
        assert not maintenance.Alarm(rpc_pb2.AlarmRequest(), timeout=10).alarms
