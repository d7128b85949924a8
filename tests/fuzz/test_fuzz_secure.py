"""The fuzz suite against a node with mTLS on both ports and auth enabled (docs/fuzzing.md,
"With TLS and auth on"): traffic of no user, or of a user with no roles, is refused whole and
changes nothing, not even the revision; root's traffic behaves as on a plaintext node."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from testing.fuzz import FuzzConfig, Report, fuzz
from testing.fuzz.target import FuzzTarget
from tests.fuzz.conftest import SEED, assert_clean


def run_as(identity: str, phases: tuple[str, ...], requests: int) -> Report:
    report = fuzz(FuzzConfig(seed=SEED, requests=requests, phases=phases, check_every=100,
                             auth_as=identity))
    assert report.total >= requests or report.classes, report.render()
    assert_clean(report)
    return report


def test_traffic_of_no_user_is_refused_and_changes_nothing() -> None:
    report = run_as("anonymous", ("structured", "raw", "peer"), 200)
    # All three ways in were tried: no TLS or no client certificate (the handshake fails),
    # and a certificate of the CA whose common name is no user.
    assert report.codes["UNAVAILABLE"] > 0 and report.codes["PERMISSION_DENIED"] > 0, \
        report.render()


def test_traffic_of_a_user_without_roles_is_refused_and_changes_nothing() -> None:
    report = run_as("no-roles", ("structured", "raw"), 200)
    assert report.codes["PERMISSION_DENIED"] > 0, report.render()


def test_roots_traffic_behaves_as_on_a_plaintext_node() -> None:
    report = run_as("root", ("structured", "raw", "peer"), 200)
    assert report.codes["OK"] > 0, report.render()


@pytest.fixture(scope="module")
def no_roles_target() -> Iterator[FuzzTarget]:
    with FuzzTarget(SEED, auth_as="no-roles") as target:
        yield target


def test_the_store_check_sees_any_write_when_nothing_may_change(
        no_roles_target: FuzzTarget) -> None:
    """Not vacuous: even a write under the fuzzer's own prefix (by root) is reported."""
    t = no_roles_target
    assert t.check() == []
    with t.open_channel() as ch:
        rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=f"{t.own}/x".encode(), value=b"1"),
                                    timeout=10)
    problems = [p.details for p in t.state()]
    t.rebaseline()
    assert any("revision moved" in p for p in problems), problems
    assert any(f"{t.own}/x" in p for p in problems), problems


def test_a_leader_transfer_checks_who_asks_before_whom_to(no_roles_target: FuzzTarget) -> None:
    """Found by the fuzzer: MoveLeader to a non-member answered "bad leader transferee" to
    callers who may not transfer at all, telling them who is not a member."""
    [channel] = no_roles_target.fuzz_channels(no_roles_target.client_addr)
    with channel, pytest.raises(grpc.RpcError) as refused:
        rpc_pb2_grpc.MaintenanceStub(channel).MoveLeader(
            rpc_pb2.MoveLeaderRequest(targetID=77), timeout=10)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, refused.value
