"""The shared retry/failover policy, without I/O."""

from __future__ import annotations

import random

import grpc
import pytest

from confer.client.credentials import Credentials
from confer.client.errors import (
    AlreadyExists,
    Compacted,
    ConferError,
    DeadlineExceeded,
    FailedPrecondition,
    FutureRevision,
    InvalidArgument,
    NotFound,
    OutcomeUnknown,
    PermissionDenied,
    Unavailable,
    error_from_status,
    plain_message,
)
from confer.client.policy import Backoff, Core, Failure, Options, Outcome, Retry, Router, classify

from .fakes import FakeClock


@pytest.mark.parametrize(("code", "details", "outcome"), [
    ("UNAVAILABLE", "no leader", Outcome.NOT_APPLIED),
    ("UNAVAILABLE", "forwarded to a node that is no longer the leader", Outcome.NOT_APPLIED),
    ("UNAVAILABLE", "failed to connect to all addresses; last error: UNKNOWN: "
                    "ipv4:127.0.0.1:1: Failed to connect to remote host: Connection refused",
     Outcome.NOT_APPLIED),
    # A connect failure that mentions a reset is still a connect failure.
    ("UNAVAILABLE", "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1:"
                    " getsockopt(SO_ERROR): Connection reset by peer", Outcome.NOT_APPLIED),
    ("UNAVAILABLE", "could not connect to a:1 within 2s; nothing was sent", Outcome.NOT_APPLIED),
    # The server died with the request in flight (also relayed by a forwarding follower).
    ("UNAVAILABLE", "Stream removed (Socket closed)", Outcome.UNKNOWN),
    ("UNAVAILABLE", "recvmsg:Connection reset by peer", Outcome.UNKNOWN),
    ("UNAVAILABLE", "GOAWAY received", Outcome.UNKNOWN),
    ("UNKNOWN", "outcome unknown: leader lost", Outcome.UNKNOWN),
    ("DEADLINE_EXCEEDED", "Deadline Exceeded", Outcome.UNKNOWN),
    ("INVALID_ARGUMENT", "bad path", Outcome.ANSWER),
    ("OUT_OF_RANGE", "compacted", Outcome.ANSWER),
    ("FAILED_PRECONDITION", "x", Outcome.ANSWER),
    ("FAILED_PRECONDITION", "leadership transfer in progress (known leader: 2)",
     Outcome.NOT_APPLIED),
    ("INTERNAL", "boom", Outcome.ANSWER),
    # A saturated member refused the write before the log (etcd's wording, then ours).
    ("RESOURCE_EXHAUSTED", "etcdserver: too many requests", Outcome.NOT_APPLIED),
    ("RESOURCE_EXHAUSTED", "too many requests: node 2 has 5000 writes in flight already",
     Outcome.NOT_APPLIED),
    ("RESOURCE_EXHAUSTED", "database space exceeded", Outcome.ANSWER),
])
def test_classify(code: str, details: str, outcome: Outcome) -> None:
    assert classify(code, details) is outcome
    assert Failure(code, details).outcome is outcome


@pytest.mark.parametrize(("code", "details", "cls"), [
    ("INVALID_ARGUMENT", "invalid path 'x'", InvalidArgument),
    ("NOT_FOUND", "member 9 not found", NotFound),
    ("ALREADY_EXISTS", "member 2 already exists", AlreadyExists),
    ("FAILED_PRECONDITION", "learner not caught up", FailedPrecondition),
    ("OUT_OF_RANGE", "mvcc: required revision is a future revision (requested 9, current 3)",
     FutureRevision),
    ("UNAVAILABLE", "no leader", Unavailable),
    ("UNKNOWN", "outcome unknown", OutcomeUnknown),
    ("DEADLINE_EXCEEDED", "Deadline Exceeded", DeadlineExceeded),
    ("INTERNAL", "internal error: KeyError", ConferError),
])
def test_error_from_status(code: str, details: str, cls: type[ConferError]) -> None:
    err = error_from_status(code, details, "Get /a")
    assert type(err) is cls
    assert err.code == code
    assert err.details == details
    assert str(err) == f"Get /a: {plain_message(details)}"


def test_compacted_carries_the_compact_revision() -> None:
    err = error_from_status("OUT_OF_RANGE", "mvcc: required revision has been compacted "
                            "(compact revision 42)")
    assert isinstance(err, Compacted)
    assert err.compact_revision == 42


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    b = Backoff(0.1, 1.0, random.Random(1))
    for attempt, full in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (40, 1.0)]:
        delays = [b.delay(attempt) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1  # jittered


def test_router_sticks_then_rotates_and_prefers_the_leader_for_writes() -> None:
    r = Router(("a", "b", "c"))
    assert r.pick(write=False) == r.pick(write=True) == "a"
    r.failed("a")
    assert r.current == "b"
    r.failed("c")  # not the current one: no change
    assert r.current == "b"
    # A read served locally by "c" names c's member id; a header names the leader.
    r.learn("c", member_id=3, leader_id=3, served_locally=True)
    assert r.pick(write=True) == "c"
    assert r.pick(write=False) == "b"
    # A forwarded write's header names the leader, not the endpoint that answered.
    r.learn("b", member_id=3, leader_id=3, served_locally=False)
    assert r.pick(write=True) == "c"
    r.failed("c")
    assert r.leader_id == 0
    assert r.pick(write=True) == "b"


def test_router_learns_the_leader_endpoint_from_a_member_list() -> None:
    r = Router(("a", "b", "c"))
    assert r.wants_topology(now=0.0)
    r.learn_members([(1, "a"), (2, "b"), (3, "elsewhere")], leader_id=2, now=0.0)
    assert r.pick(write=True) == "b"
    assert not r.wants_topology(now=100.0)
    r.learn("a", 1, 3, True)  # the leader moved to a member not among our endpoints
    assert r.pick(write=True) == "a"
    assert not r.wants_topology(now=1.0)  # asked recently
    assert r.wants_topology(now=10.0)
    assert not Router(("a",)).wants_topology(now=0.0)
    assert not Router(("a", "b"), prefer_leader=False).wants_topology(now=0.0)


def _core(**options: object) -> tuple[Core, FakeClock]:
    clock = FakeClock()
    return Core(Options(("a", "b", "c"), seed=3, **options), clock), clock  # type: ignore[arg-type]


def test_attempts_rotate_back_off_and_give_up_at_the_deadline() -> None:
    core, clock = _core(timeout=1.0)
    att = core.attempts(Retry.READ, None, "Get /x")
    seen, delays = [att.endpoint], []
    with pytest.raises(Unavailable) as info:
        while True:
            delay = att.failed(Failure("UNAVAILABLE", "no leader"))
            delays.append(delay)
            clock.now += delay
            seen.append(att.endpoint)
    assert seen[:4] == ["a", "b", "c", "a"]
    assert delays == sorted(delays) or max(delays) <= core.options.backoff_max
    assert sum(delays) < 1.0
    assert "Get /x: gave up after" in str(info.value)
    assert "no leader" in str(info.value)


def test_attempt_timeouts_leave_room_for_failover() -> None:
    core, clock = _core(timeout=10.0, min_attempt_timeout=1.0)
    read = core.attempts(Retry.READ, None, "Get /x")
    assert read.attempt_timeout() == pytest.approx(5.0)
    clock.now += 9.5
    assert read.attempt_timeout() == pytest.approx(0.5)  # never beyond the deadline
    txn = core.attempts(Retry.ONCE, 3.0, "Txn")
    assert txn.attempt_timeout() == pytest.approx(3.0)  # no retry after a timeout: all of it
    pinned = core.attempts(Retry.READ, 4.0, "Status", endpoint="z:9")
    assert pinned.endpoint == "z:9"
    assert pinned.attempt_timeout() == pytest.approx(4.0)


def test_unknown_outcomes_per_retry_class() -> None:
    core, _ = _core()
    broken = Failure("UNAVAILABLE", "Stream removed (Socket closed)")
    assert core.attempts(Retry.READ, None, "Get").failed(broken) > 0
    assert core.attempts(Retry.CONVERGENT, None, "Put").failed(broken) > 0
    with pytest.raises(OutcomeUnknown, match="Txn: outcome unknown"):
        core.attempts(Retry.ONCE, None, "Txn").failed(broken)
    with pytest.raises(OutcomeUnknown):
        core.attempts(Retry.ONCE, None, "Txn").failed(Failure("DEADLINE_EXCEEDED", "Deadline"))
    # ... but a Txn whose request surely never ran is retried.
    assert core.attempts(Retry.ONCE, None, "Txn").failed(Failure("UNAVAILABLE", "no leader")) > 0


def test_a_convergent_write_that_runs_out_of_time_after_an_unknown_outcome() -> None:
    core, clock = _core(timeout=0.2)
    att = core.attempts(Retry.CONVERGENT, None, "Put /x")
    att.failed(Failure("UNAVAILABLE", "Stream removed (Socket closed)"))
    with pytest.raises(OutcomeUnknown, match="earlier attempt's outcome is unknown"):
        while True:
            clock.now += att.failed(Failure("UNAVAILABLE", "no leader"))


def test_a_read_that_keeps_timing_out_raises_deadline_exceeded() -> None:
    core, clock = _core(timeout=2.0)
    att = core.attempts(Retry.READ, None, "Get /x")
    with pytest.raises(DeadlineExceeded):
        while True:
            clock.now += att.attempt_timeout()
            clock.now += att.failed(Failure("DEADLINE_EXCEEDED", "Deadline Exceeded"))


def test_answers_are_raised_at_once() -> None:
    core, _ = _core()
    with pytest.raises(InvalidArgument, match="Put x: invalid path"):
        core.attempts(Retry.CONVERGENT, None, "Put x").failed(
            Failure("INVALID_ARGUMENT", "invalid path"))


def test_options_validation() -> None:
    assert Options("a:1, b:2").endpoints == ("a:1", "b:2")
    with pytest.raises(InvalidArgument):
        Options(())
    with pytest.raises(InvalidArgument):
        Options(("a",), timeout=0)


def test_error_messages_are_plain_and_details_are_the_servers() -> None:
    raw = "etcdserver: requested lease not found: lease 999 (0x3e7) (put b'/x')"
    err = error_from_status("NOT_FOUND", raw, "Put /x")
    assert type(err) is NotFound and err.code == "NOT_FOUND"
    assert str(err) == "Put /x: requested lease not found: lease 999"
    assert err.details == raw  # the server's message, as it came
    denied = error_from_status("PERMISSION_DENIED", "etcdserver: permission denied")
    assert type(denied) is PermissionDenied and str(denied) == "permission denied"


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT,  # etcd's API
                                  grpc.StatusCode.UNAUTHENTICATED])  # the native API
def test_a_client_authenticates_once_auth_is_enabled_after_it_started(
        code: grpc.StatusCode) -> None:
    creds = Credentials("alice", "pw")
    creds.disabled = True  # it asked before authentication was enabled
    assert creds.stale(None, code, "etcdserver: user name is empty")
    assert not creds.disabled
