"""The fuzz suite's own rules, without a node: what it sends must stay inside what it may
change, or its store check would report the fuzzer's own writes as findings."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from confer.etcdpb.etcdserverpb import rpc_pb2
from testing.fuzz.calls import Outcome, Shape
from testing.fuzz.catalogue import CLIENT_METHODS
from testing.fuzz.report import Report
from testing.fuzz.run import refused
from testing.fuzz.strategies import INVALID_PEER_ADDR, Scope, confine_raw, requests

SCOPE = Scope("/fz5", frozenset({1}))
WRITTEN = {
    # Written key fields per message, listed here again (not read from the fuzzer's table) so
    # that a rule missing there fails here.
    "etcdserverpb.PutRequest": ("key",), "etcdserverpb.DeleteRangeRequest": ("key",),
    "v3lockpb.LockRequest": ("name",), "v3lockpb.UnlockRequest": ("key",),
    "v3electionpb.CampaignRequest": ("name",), "v3electionpb.LeaderKey": ("name", "key"),
    "confer.v1.PutRequest": ("path",), "confer.v1.DeleteRequest": ("path",),
    "confer.v1.LockRequest": ("name",), "confer.v1.UnlockRequest": ("key",),
    "confer.v1.CampaignRequest": ("name",), "confer.v1.LeaderKey": ("name", "key"),
}
WRITES = [m for m in CLIENT_METHODS if m.name in (
    "Put", "DeleteRange", "Delete", "Txn", "Set", "Remove", "Lock", "Unlock", "Campaign",
    "Proclaim", "Resign", "MemberAdd", "MemberUpdate", "AddLearner")]


def _owned_everywhere(msg: Any) -> None:
    """Every written key of ``msg`` (and of the messages inside it) is under the prefix."""
    name = msg.DESCRIPTOR.full_name
    for field in WRITTEN.get(name, ()):
        key = getattr(msg, field)
        assert SCOPE.owns(key.encode() if isinstance(key, str) else key), (name, field, key)
    if name == "etcdserverpb.DeleteRangeRequest":
        end = msg.range_end
        assert end == b"" or (end != b"\x00" and end <= SCOPE.own_end), end
    if name == "confer.v1.SetConfigRequest":
        assert SCOPE.owns(msg.path.path.encode())
    for field, value in msg.ListFields():
        if field.message_type is not None and not field.message_type.GetOptions().map_entry:
            for sub in (value if field.is_repeated else [value]):
                _owned_everywhere(sub)


def _check(method_path: str, payload: bytes) -> None:
    method = next(m for m in CLIENT_METHODS if m.path == method_path)
    try:
        msg: Any = method.request.FromString(payload)
    except DecodeError:
        return  # the server cannot parse it either: it writes nothing
    _owned_everywhere(msg)
    if method_path == "/confer.v1.ConferService/Remove":
        assert SCOPE.owns(msg.path.encode())
    if method_path == "/confer.v1.Cluster/MemberAdd" and msg.is_learner:
        assert msg.peer_addr.startswith(INVALID_PEER_ADDR)
    if method_path == "/etcdserverpb.Cluster/MemberAdd" and msg.isLearner:
        assert INVALID_PEER_ADDR in msg.peerURLs


@settings(max_examples=150, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_structured_writes_stay_under_the_owned_prefix(data: st.DataObject) -> None:
    method = data.draw(st.sampled_from(WRITES))
    _check(method.path, data.draw(requests(method, SCOPE)))


@settings(max_examples=150, derandomize=True, database=None, deadline=None)
@given(st.sampled_from(WRITES), st.binary(max_size=64))
def test_random_bytes_that_parse_as_writes_are_confined(method: Any, payload: bytes) -> None:
    _check(method.path, confine_raw(method, payload, SCOPE))


def test_confine_range_end_never_reaches_past_the_prefix() -> None:
    assert SCOPE.confine_range_end(b"\x00") == b"/fz50"  # "\0": every key from key on
    assert SCOPE.confine_range_end(b"\xff") == b"/fz50"
    assert SCOPE.confine_range_end(b"/fz5/b") == b"/fz5/b"
    assert SCOPE.confine_range_end(b"") == b""
    assert SCOPE.confine_key(b"/sentinel/a") == b"/fz5/sentinel/a"
    assert SCOPE.confine_key(b"x") == b"/fz5/x"
    assert not SCOPE.owns(b"/fz5x") and not SCOPE.owns(b"/fz50")


def test_one_cause_in_many_methods_is_one_failure_class() -> None:
    report = Report(seed=1)
    for path, kind in (("/etcdserverpb.KV/Range", "RangeRequest"),
                       ("/confer.v1.KV/Put", "PutRequest")):
        report.record_call("raw", path, [b"\xff"], Outcome(
            "UNKNOWN", f"Unexpected <class 'DecodeError'>: Error parsing message with type "
                       f"'{kind}': Wire format was corrupt", 0), may_block=False)
    report.record_call("raw", "/confer.v1.KV/Watch", [b""], Outcome(
        "DEADLINE_EXCEEDED", "", 0), may_block=True)  # a watch may wait: not a failure
    report.record_call("raw", "/confer.v1.KV/Put", [b""], Outcome(
        "DEADLINE_EXCEEDED", "", 0), may_block=False)  # a put must answer: a hang
    assert report.failures == 3
    assert sorted(k[0] for k in report.classes) == ["hang", "status"]
    rendered = report.render()
    assert "request_hex=ff" in rendered and "in 2: /confer.v1.KV/Put, /etcdserverpb.KV/Range" \
        in rendered


def test_a_refused_identity_may_only_be_answered_for_requests_that_name_no_key() -> None:
    native_txn = Shape("/confer.v1.KV/Txn")
    etcd_range = Shape("/etcdserverpb.KV/Range")
    ok = Outcome("OK", "", 1)
    # Transactions of nothing but empty transactions, nested (as the fuzzer found them).
    nested = bytes.fromhex("121e221c121a22181216221412122210120e220c120a22081206220412022200")
    assert refused(native_txn, [nested], ok, "no-roles")
    assert refused(etcd_range, [rpc_pb2.RangeRequest(key=b"b", range_end=b"a")
                               .SerializeToString()], ok, "anonymous")
    assert not refused(etcd_range, [rpc_pb2.RangeRequest(key=b"a").SerializeToString()], ok,
                       "anonymous")
    put = rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(
        request_put=rpc_pb2.PutRequest(key=b"/x", value=b"1"))])
    assert not refused(Shape("/etcdserverpb.KV/Txn"), [put.SerializeToString()], ok, "no-roles")
    # What any user may do, but not anyone; and never a status past the check.
    grant = Shape("/etcdserverpb.Lease/LeaseGrant")
    ttl = rpc_pb2.LeaseGrantRequest(TTL=10).SerializeToString()
    assert refused(grant, [ttl], ok, "no-roles") and not refused(grant, [ttl], ok, "anonymous")
    assert not refused(etcd_range, [b""], Outcome("NOT_FOUND", "", 0), "anonymous")
    assert refused(etcd_range, [b""], Outcome("UNAVAILABLE", "", 0), "anonymous")
