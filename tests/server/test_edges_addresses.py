"""Member addresses and ids are validated (issue 12, finding 14): the flags and the
membership RPCs of both APIs refuse what no member could have, naming the rule, and change
nothing."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.server.addresses import MAX_MEMBER_ID, address_problem, member_id_problem
from confer.server.config import ConfigError, load_config
from confer.v1 import confer_pb2, confer_pb2_grpc, kv_pb2, kv_pb2_grpc
from testing import ProcessCluster

from .test_membership import members

GOOD = ["127.0.0.1:7380", "localhost:1", "node-1.example.com:65535", "[::1]:7380",
        "[2001:db8::1]:80", "my_host:9", "host.:9"]
BAD = {
    "a:b:c": "port 'c'",
    "a:b:80": "brackets",
    "::1:80": "brackets",
    "[::1:80": "[ADDRESS]",
    "[zz::1]:80": "not an IPv6 address",
    "300.1.1.1:80": "not an IPv4 address",
    "host:0": "port",
    "host:65536": "port",
    "host:-1": "port",
    "host:+80": "port",
    "host": "HOST:PORT",
    ":80": "HOST:PORT",
    "ho st:80": "printable ASCII",
    "host\n:80": "printable ASCII",
    "h\x00:80": "printable ASCII",
    "hóst:80": "printable ASCII",
    "-host:80": "not a host name",
    "a..b:80": "not a host name",
    "a" * 64 + ":80": "not a host name",
    ("a" * 60 + ".") * 5 + "b:80": "longer than",
}


@pytest.mark.parametrize("addr", GOOD)
def test_valid_addresses_pass(addr: str) -> None:
    assert address_problem(addr) is None


@pytest.mark.parametrize("addr,rule", list(BAD.items()))
def test_invalid_addresses_name_the_rule(addr: str, rule: str) -> None:
    problem = address_problem(addr)
    assert problem is not None and rule in problem


def test_port_zero_only_where_allowed() -> None:
    assert address_problem("127.0.0.1:0", allow_port_zero=True) is None
    assert address_problem("127.0.0.1:0") is not None


def test_member_ids() -> None:
    assert member_id_problem(1) is None
    assert member_id_problem(MAX_MEMBER_ID) is None
    for bad in (0, -1, MAX_MEMBER_ID + 1, 2**64 - 1):
        assert member_id_problem(bad)


@pytest.mark.parametrize("overrides,rule", [
    ({"initial_cluster": "1=a:b:c"}, "initial-cluster: 'a:b:c' is not a valid HOST:PORT"),
    ({"initial_cluster": "1=host\t:80"}, "printable ASCII"),
    ({"initial_cluster": f"{2**64 - 1}=127.0.0.1:7380"}, "ID 1..2**63-1"),
    ({"join": "a:b:c"}, "join: 'a:b:c' is not a valid HOST:PORT"),
    ({"advertise_peer": "host:0"}, "advertise-peer"),
    ({"listen_client": "host:70000"}, "listen-client"),
    ({"node_id": 2**63}, "id must be an integer 1..2**63-1"),
])
def test_bad_settings_are_refused(tmp_path: Path, overrides: dict[str, object],
                                  rule: str) -> None:
    with pytest.raises(ConfigError, match=rule.replace("*", r"\*").replace("(", r"\(")):
        load_config(None, {"data_dir": str(tmp_path), **overrides}, environ={})


def test_listen_on_port_zero_is_still_allowed(tmp_path: Path) -> None:
    cfg = load_config(None, {"data_dir": str(tmp_path), "listen_client": "127.0.0.1:0",
                             "listen_peer": "127.0.0.1:0"}, environ={})
    assert cfg.listen_client == "127.0.0.1:0"


def invalid(call, request) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
    return info.value.details() or ""


def test_membership_rpcs_refuse_bad_addresses_and_ids(tmp_path: Path) -> None:
    with ProcessCluster(1, tmp_path) as c:
        c.leader()
        addr = c.nodes[1].client_addr
        with grpc.insecure_channel(addr) as ch:
            native = kv_pb2_grpc.ClusterStub(ch)
            etcd = rpc_pb2_grpc.ClusterStub(ch)
            legacy = confer_pb2_grpc.ConferServiceStub(ch)
            for bad, rule in (("a:b:80", "brackets"), ("h\x01:80", "printable ASCII"),
                              ("h:0", "port"), ("x" * 300 + ":1", "longer than")):
                msg = invalid(native.MemberAdd, kv_pb2.MemberAddRequest(
                    peer_addr=bad, is_learner=True))
                assert "peer address" in msg and rule in msg
                msg = invalid(native.MemberAdd, kv_pb2.MemberAddRequest(
                    peer_addr="127.0.0.1:9", client_addr=bad, is_learner=True))
                assert "client address" in msg and rule in msg
                msg = invalid(legacy.AddLearner, confer_pb2.AddLearnerRequest(
                    node=confer_pb2.Node(node_id=5, addr=bad)))
                assert rule in msg
            for url in ("http://a:b:c", "http://h:99999", "http://h:1?x=1", "ftp://h:1"):
                msg = invalid(etcd.MemberAdd, rpc_pb2.MemberAddRequest(peerURLs=[url],
                                                                       isLearner=True))
                assert msg.startswith("etcdserver: peer URL"), msg
            msg = invalid(etcd.MemberAdd, rpc_pb2.MemberAddRequest(
                peerURLs=["http://h:0"], isLearner=True))
            assert msg.startswith("etcdserver: peer address 'h:0'"), msg
            msg = invalid(etcd.MemberUpdate, rpc_pb2.MemberUpdateRequest(
                ID=1, peerURLs=["http://-bad:80"]))
            assert "not a host name" in msg
            for bad_id in (2**63, 2**64 - 1):
                msg = invalid(native.MemberAdd, kv_pb2.MemberAddRequest(
                    id=bad_id, peer_addr="127.0.0.1:9", is_learner=True))
                assert f"member id {bad_id} is not 1..{2**63 - 1}" in msg
            # Nothing was added.
            assert members(addr) == {1: False}
