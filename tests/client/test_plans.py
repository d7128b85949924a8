"""The shared plans (unary calls with failover, scans, resumable watches) driven by the
blocking client's drivers over scripted I/O."""

from __future__ import annotations

from typing import Any

import pytest

from confer.client import calls, plans
from confer.client.errors import Compacted, InvalidArgument, OutcomeUnknown, Unavailable
from confer.client.models import ClusterEvent, ClusterEventType, EventType
from confer.client.plans import END, STARTED, ClusterFeed, KeyFeed, Unary
from confer.client.policy import Failure
from confer.client.txn import Compare, Op, txn_call
from confer.v1 import confer_pb2, kv_pb2

from .fakes import FakeIO, header

BROKEN = Failure("UNAVAILABLE", "Stream removed (Socket closed)")
REFUSED = Failure("UNAVAILABLE", "failed to connect to all addresses; Connection refused")
NO_LEADER = Failure("UNAVAILABLE", "no leader")
MEMBERS = kv_pb2.MemberListResponse(header=header(1, 2), members=[
    kv_pb2.Member(id=1, client_addr="a:1"), kv_pb2.Member(id=2, client_addr="b:2"),
    kv_pb2.Member(id=3, client_addr="c:3")])


def responder(script: dict[str, list[Any]]) -> Any:
    """Answer each RPC (by method name) with the next scripted result; MemberList answers
    MEMBERS unless scripted."""

    def respond(a: Unary) -> Any:
        queue = script.get(a.rpc.name)
        if queue:
            return queue.pop(0)
        if a.rpc.name == "MemberList":
            return MEMBERS
        raise AssertionError(f"unscripted {a.rpc.name} to {a.endpoint}")

    return respond


def test_put_goes_to_the_leader_and_fails_over_after_a_broken_connection() -> None:
    ok = kv_pb2.PutResponse(header=header(3, 3, revision=7))
    io = FakeIO(responder({"Put": [BROKEN, ok]}))
    result = io.run(plans.unary(io.core, calls.put("/k", "v")))
    assert result.revision == 7
    # One serializable MemberList to learn the leader (2 = b:2), the put there, then the
    # retry after the broken connection elsewhere.
    assert [(c.rpc.name, c.endpoint) for c in io.calls] == [
        ("MemberList", "a:1"), ("Put", "b:2"), ("Put", "a:1")]
    assert io.calls[1].request.value == b"v"
    assert len(io.sleeps) == 1
    # The second put's header named leader 3; no endpoint is known for it yet.
    assert io.core.router.leader_id == 3


def test_reads_fail_over_after_refused_connections_and_timeouts() -> None:
    found = kv_pb2.RangeResponse(header=header(3, 1, revision=4), kvs=[
        kv_pb2.KeyValue(path="/k", value=b"x", create_revision=2, mod_revision=4, version=2)])
    io = FakeIO(responder({"Range": [REFUSED, Failure("DEADLINE_EXCEEDED", "Deadline"),
                                      found]}))
    kv = io.run(plans.unary(io.core, calls.get("/k")))
    assert kv is not None and (kv.value, kv.version, kv.mod_revision) == (b"x", 2, 4)
    assert io.endpoints_called() == ["a:1", "b:2", "c:3"]
    assert io.calls[0].connect_timeout is None  # reads never wait to connect first


def test_a_txn_with_an_unknown_outcome_is_not_retried() -> None:
    io = FakeIO(responder({"Txn": [BROKEN]}), prefer_leader=False)
    call = txn_call([Compare.version("/a") == 0], [Op.put("/a", b"1")], [])
    with pytest.raises(OutcomeUnknown, match="Txn /a: outcome unknown"):
        io.run(plans.unary(io.core, call))
    assert [c.rpc.name for c in io.calls] == ["Txn"]
    assert io.calls[0].connect_timeout is not None  # it waits to be connected before sending


def test_a_txn_that_surely_did_not_run_is_retried() -> None:
    done = kv_pb2.TxnResponse(header=header(2, 2, 9), succeeded=True, responses=[
        kv_pb2.ResponseOp(put=kv_pb2.PutResponse(header=header(revision=9)))])
    io = FakeIO(responder({"Txn": [NO_LEADER, REFUSED, done]}), prefer_leader=False)
    result = io.run(plans.unary(io.core, txn_call([], [Op.put("/a", b"1")], [])))
    assert result.succeeded and result.revision == 9
    assert result.responses[0].revision == 9  # type: ignore[union-attr]
    assert io.endpoints_called() == ["a:1", "b:2", "c:3"]


def test_a_call_gives_up_when_its_deadline_passes() -> None:
    io = FakeIO(lambda a: NO_LEADER, timeout=0.5)
    with pytest.raises(Unavailable, match="Get /k: gave up after"):
        io.run(plans.unary(io.core, calls.get("/k")))
    assert io.clock.now - 1000.0 <= 0.5
    assert len(io.calls) > 3


def test_status_pinned_to_an_endpoint_does_not_fail_over() -> None:
    io = FakeIO(lambda a: NO_LEADER if len(io.calls) < 3 else kv_pb2.StatusResponse(
        header=header(9, 9), member_id=9, leader_id=9, role="leader"))
    status = io.run(plans.unary(io.core, calls.status("z:9")))
    assert status.endpoint == "z:9" and status.member_id == 9 and status.role == "leader"
    assert set(io.endpoints_called()) == {"z:9"}


def test_answers_are_raised_without_retry() -> None:
    io = FakeIO(lambda a: Failure("INVALID_ARGUMENT", "invalid path 'k': must start with '/'"))
    with pytest.raises(InvalidArgument, match="Get k: invalid path"):
        io.run(plans.unary(io.core, calls.get("k")))
    assert len(io.calls) == 1


def test_scan_pages_through_one_snapshot() -> None:
    def page(*paths: str, more: bool, revision: int) -> kv_pb2.RangeResponse:
        return kv_pb2.RangeResponse(header=header(1, 1, revision), more=more, count=5, kvs=[
            kv_pb2.KeyValue(path=p, value=p.encode()) for p in paths])

    io = FakeIO(responder({"Range": [page("/a", "/a/1", more=True, revision=10),
                                      page("/a/2", "/a/3", more=True, revision=12),
                                      page("/a/4", more=False, revision=12)]}))
    maker = calls.list_page("/a", True, 2, 0, False, False, None)
    paths = [kv.path for kv in io.iterate(plans.scan(io.core, maker))]
    assert paths == ["/a", "/a/1", "/a/2", "/a/3", "/a/4"]
    requests = [c.request for c in io.calls]
    assert [(r.start_after, r.revision, r.limit) for r in requests] == [
        ("", 0, 2), ("/a/1", 10, 2), ("/a/3", 10, 2)]
    with pytest.raises(InvalidArgument):
        calls.list_page("/a", True, 0, 0, False, False, None)
    # A scan of a past revision stays at that revision.
    past = calls.list_page("/a", True, 2, 7, False, False, None)
    assert past("", 0).request.revision == past("/a/1", 10).request.revision == 7


# -- watches ------------------------------------------------------------------------------------
def created(revision: int, member: int = 1) -> kv_pb2.WatchResponse:
    return kv_pb2.WatchResponse(header=header(member, 1, revision), created=True)


def events(*revs: int, path: str = "/k") -> kv_pb2.WatchResponse:
    return kv_pb2.WatchResponse(header=header(revision=revs[-1]), events=[
        kv_pb2.Event(type=kv_pb2.Event.PUT, kv=kv_pb2.KeyValue(
            path=path, value=b"v%d" % r, mod_revision=r, version=1)) for r in revs])


def test_a_watch_resumes_after_the_last_delivered_event_without_loss_or_duplicates() -> None:
    def streams(endpoint: str, req: kv_pb2.WatchRequest) -> list[Any]:
        if endpoint == "a:1":  # first connection: from "now" (revision 5)
            assert req.start_revision == 0
            return [created(5), events(6, 7), events(8), BROKEN]
        if endpoint == "b:2":  # resumed at 9; the server also resends 8 (dropped)
            assert req.start_revision == 9
            return [created(9), events(8, 9), events(9, path="/k/other"), END]
        assert req.start_revision == 10  # after a clean end, at the next endpoint
        return [created(12), events(10, 11, 12)]

    io = FakeIO(streams=streams)
    feed = KeyFeed("/k", True, 0, False, 5.0)
    got = []
    items = io.iterate(plans.stream(io.core, feed, 11.0))
    assert next(items) is STARTED  # once, when the first stream is created
    for e in items:
        got.append((e.revision, e.kv.path))
        assert e.type is EventType.PUT
        if e.revision == 12:
            feed.cancel()
    assert got == [(6, "/k"), (7, "/k"), (8, "/k"), (9, "/k"), (9, "/k/other"), (10, "/k"),
                   (11, "/k"), (12, "/k")]
    assert feed.dropped == 1 and feed.revision == 12 and feed.last_revision == 12
    assert [s.endpoint for s in io.opened] == ["a:1", "b:2", "c:3"]
    assert all(s.cancelled for s in io.opened)
    assert io.opened[0].request.progress_interval == 5.0


def test_a_watch_that_cannot_resume_from_a_compacted_revision_raises_compacted() -> None:
    def streams(endpoint: str, req: kv_pb2.WatchRequest) -> list[Any]:
        if req.start_revision == 3:
            return [created(5), events(3, 4), BROKEN]
        return [kv_pb2.WatchResponse(created=True), kv_pb2.WatchResponse(
            canceled=True, compact_revision=20, cancel_reason="compacted")]

    io = FakeIO(streams=streams)
    feed = KeyFeed("/k", False, 3, False, 0)
    it = io.iterate(plans.stream(io.core, feed, None))
    assert next(it) is STARTED
    assert [e.revision for e in (next(it), next(it))] == [3, 4]
    with pytest.raises(Compacted) as info:
        next(it)
    assert info.value.compact_revision == 20
    assert "resume from revision 5" in str(info.value)


def test_a_watch_with_no_endpoint_left_raises_unavailable() -> None:
    io = FakeIO(streams=lambda endpoint, req: [REFUSED], timeout=1.0)
    feed = KeyFeed("/k", False, 0, False, 0)
    with pytest.raises(Unavailable, match="Watch /k: gave up"):
        list(io.iterate(plans.stream(io.core, feed, None)))


def cluster(kind: str, node_id: int, addr: str = "") -> confer_pb2.ClusterUpdate:
    if kind in ("member_removed", "member_promoted"):
        return confer_pb2.ClusterUpdate(**{kind: node_id})
    return confer_pb2.ClusterUpdate(**{kind: confer_pb2.Node(node_id=node_id, addr=addr)})


def test_a_cluster_watch_reports_each_fact_once_across_reconnects() -> None:
    def streams(endpoint: str, req: Any) -> list[Any]:
        if endpoint == "a:1":
            return [cluster("member_added", 1, "a:1"), cluster("member_added", 2, "b:2"),
                    cluster("learner_added", 4, "d:4"), cluster("leader_changed", 1, "a:1"),
                    BROKEN]
        # Replayed after reconnecting: 2 was removed and 4 promoted meanwhile.
        return [cluster("member_added", 1, "a:1"), cluster("member_added", 4, "d:4"),
                cluster("leader_changed", 1, "a:1"), cluster("leader_changed", 4, "d:4")]

    members = kv_pb2.MemberListResponse(header=header(2, 1), members=[
        kv_pb2.Member(id=1, client_addr="a:1"), kv_pb2.Member(id=4, client_addr="d:4")])
    io = FakeIO(responder({"MemberList": [members]}), streams=streams)
    feed = ClusterFeed()
    got: list[ClusterEvent] = []
    for e in io.iterate(plans.stream(io.core, feed, None)):
        got.append(e)
        if e.type is ClusterEventType.LEADER_CHANGED and e.node_id == 4:
            feed.cancel()
    T = ClusterEventType
    assert [(e.type, e.node_id) for e in got] == [
        (T.MEMBER_ADDED, 1), (T.MEMBER_ADDED, 2), (T.LEARNER_ADDED, 4), (T.LEADER_CHANGED, 1),
        (T.MEMBER_REMOVED, 2), (T.MEMBER_ADDED, 4), (T.LEADER_CHANGED, 4)]
    assert feed.members == {1: ("a:1", False), 4: ("d:4", False)}
