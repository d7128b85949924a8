"""Many watches on one etcd Watch stream, as etcd's clients make them.

Go's clientv3 (and aetcd, and ``etcdctl watch -i``) send every watch of a client over one
Watch stream with ``watch_id`` 0, "server chooses". Each must get its own id and its own
events; explicit ids are refused only when already in use on the stream (etcd's
``mvcc/watcher.go``: auto ids skip the ids in use).
"""

from __future__ import annotations

import contextlib
import queue
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from testing import ProcessCluster

from .conftest import Etcdctl, kill, wait_until
from .test_aetcd import follower_endpoint, run_scenario

WAIT = 20.0
Create = rpc_pb2.WatchCreateRequest


class Stream:
    """One Watch stream: requests in, responses read by a thread into a queue."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.requests: queue.Queue[rpc_pb2.WatchRequest | None] = queue.Queue()
        self.responses = rpc_pb2_grpc.WatchStub(channel).Watch(iter(self.requests.get, None),
                                                               timeout=120)
        self.got: queue.Queue[rpc_pb2.WatchResponse] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        with contextlib.suppress(grpc.RpcError):  # cancelled at close
            for r in self.responses:
                self.got.put(r)

    def close(self) -> None:
        self.requests.put(None)
        self.responses.cancel()
        self.reader.join(timeout=WAIT)

    def next(self) -> rpc_pb2.WatchResponse:
        return self.got.get(timeout=WAIT)

    def create(self, **fields: Any) -> rpc_pb2.WatchResponse:
        """Create a watch and return the answer to it (the next response: the caller has no
        other watch with events in flight)."""
        self.requests.put(rpc_pb2.WatchRequest(create_request=Create(**fields)))
        r = self.next()
        assert r.created, r
        return r

    def cancel(self, watch_id: int) -> rpc_pb2.WatchResponse:
        self.requests.put(rpc_pb2.WatchRequest(
            cancel_request=rpc_pb2.WatchCancelRequest(watch_id=watch_id)))
        r = self.next()
        assert r.canceled and r.watch_id == watch_id and not r.events, r
        return r

    def events(self, expected: dict[int, int]) -> dict[int, list[Any]]:
        """Collect events until each watch id has its ``expected`` count; then make sure
        nothing more arrives for a moment (nothing duplicated, nothing misrouted)."""
        seen: dict[int, list[Any]] = defaultdict(list)

        def done() -> bool:
            return all(len(seen[w]) >= n for w, n in expected.items())

        deadline = time.monotonic() + WAIT
        while not done():
            r = self.got.get(timeout=max(0.1, deadline - time.monotonic()))
            assert not r.canceled, r
            seen[r.watch_id] += [(e.type, e.kv.key, e.kv.value,
                                  e.prev_kv.value if e.HasField("prev_kv") else None)
                                 for e in r.events]
        with contextlib.suppress(queue.Empty):
            extra = self.got.get(timeout=0.5)
            raise AssertionError(f"unexpected response: {extra}")
        return dict(seen)


@pytest.fixture
def channel(cluster: ProcessCluster) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(follower_endpoint(cluster)) as ch:
        yield ch  # a follower: watches are served from its applied state


@pytest.fixture
def stream(channel: grpc.Channel) -> Iterator[Stream]:
    s = Stream(channel)
    try:
        yield s
    finally:
        s.close()


def put(channel: grpc.Channel, key: bytes, value: bytes) -> int:
    return int(rpc_pb2_grpc.KVStub(channel).Put(rpc_pb2.PutRequest(key=key, value=value),
                                                timeout=WAIT).header.revision)


def delete(channel: grpc.Channel, key: bytes) -> None:
    rpc_pb2_grpc.KVStub(channel).DeleteRange(rpc_pb2.DeleteRangeRequest(key=key),
                                             timeout=WAIT)


PUT, DELETE = 0, 1


def test_a_hundred_auto_id_watches_on_one_stream_each_get_their_own_events(
        channel: grpc.Channel, stream: Stream) -> None:
    ids = []
    for i in range(100):
        r = stream.create(key=b"/mux/hundred/%03d" % i)
        assert not r.canceled, r.cancel_reason
        ids.append(r.watch_id)
    assert ids == list(range(100))  # etcd's order: the lowest id not yet handed out
    for i in range(100):
        put(channel, b"/mux/hundred/%03d" % i, b"v%d" % i)
    seen = stream.events({i: 1 for i in ids})
    assert seen == {i: [(PUT, b"/mux/hundred/%03d" % i, b"v%d" % i, None)] for i in ids}


def test_auto_ids_skip_explicit_ids_in_use_and_only_explicit_ids_are_duplicates(
        channel: grpc.Channel, stream: Stream) -> None:
    def created(**fields: Any) -> int:
        r = stream.create(**fields)
        assert not r.canceled, r.cancel_reason
        return int(r.watch_id)

    assert created(key=b"/mux/ids/a", watch_id=1) == 1
    assert created(key=b"/mux/ids/b") == 0
    assert created(key=b"/mux/ids/c") == 2  # 1 is taken: skipped
    assert created(key=b"/mux/ids/d", watch_id=5) == 5
    assert created(key=b"/mux/ids/e") == 3
    dup = stream.create(key=b"/mux/ids/x", watch_id=2)
    assert dup.canceled and dup.watch_id == -1
    assert dup.cancel_reason == "mvcc: duplicate watch ID provided on the WatchStream"
    assert created(key=b"/mux/ids/f") == 4
    assert created(key=b"/mux/ids/g") == 6  # 5 is taken: skipped
    # Cancel and re-create: an explicit id is free again once cancelled; auto ids go on
    # upwards (as etcd's, they are not reused).
    stream.cancel(3)
    assert created(key=b"/mux/ids/e2", watch_id=3) == 3
    assert created(key=b"/mux/ids/h") == 7
    stream.cancel(0)
    for key in (b"a", b"b", b"c", b"d", b"e", b"e2", b"f", b"g", b"h", b"x"):
        put(channel, b"/mux/ids/" + key, key)
    seen = stream.events({1: 1, 2: 1, 5: 1, 3: 1, 4: 1, 6: 1, 7: 1})
    assert {w: [e[1] for e in evs] for w, evs in seen.items()} == {
        1: [b"/mux/ids/a"], 2: [b"/mux/ids/c"], 5: [b"/mux/ids/d"], 3: [b"/mux/ids/e2"],
        4: [b"/mux/ids/f"], 6: [b"/mux/ids/g"], 7: [b"/mux/ids/h"]}


def test_ranges_start_revisions_filters_and_prev_kv_side_by_side(
        channel: grpc.Channel, stream: Stream) -> None:
    base = put(channel, b"/mux/r/a", b"0")  # before every watch: replayed from ``base``
    watches = {
        "prefix": dict(key=b"/mux/r/", range_end=b"/mux/r0", prev_kv=True),
        "range": dict(key=b"/mux/r/a", range_end=b"/mux/r/c"),
        "from_key": dict(key=b"/mux/r/b", range_end=b"\0"),
        "no_put": dict(key=b"/mux/r/a", filters=[Create.NOPUT]),
        "no_delete": dict(key=b"/mux/r/", range_end=b"/mux/r0", filters=[Create.NODELETE]),
        "other": dict(key=b"/mux/other/", range_end=b"/mux/other0"),
        "replay": dict(key=b"/mux/r/a", start_revision=base),  # last: it has events at once
    }
    ids = {}
    for name, fields in watches.items():
        r = stream.create(**fields)
        assert not r.canceled, (name, r.cancel_reason)
        ids[name] = r.watch_id
    # The replay watch starts with the event at ``base``.
    first = stream.next()
    assert first.watch_id == ids["replay"]
    assert [(e.kv.key, e.kv.value) for e in first.events] == [(b"/mux/r/a", b"0")]
    put(channel, b"/mux/r/a", b"1")
    put(channel, b"/mux/r/b", b"2")
    put(channel, b"/mux/r/c", b"3")
    delete(channel, b"/mux/r/a")
    put(channel, b"/mux/rx", b"outside")  # beyond "/mux/r/..." but inside from_key's range
    seen = stream.events({ids["prefix"]: 4, ids["range"]: 3, ids["from_key"]: 3,
                          ids["no_put"]: 1, ids["no_delete"]: 3, ids["replay"]: 2})
    names = {i: n for n, i in ids.items()}
    got = {names[w]: evs for w, evs in seen.items()}
    a1, b2, c3 = (PUT, b"/mux/r/a", b"1"), (PUT, b"/mux/r/b", b"2"), (PUT, b"/mux/r/c", b"3")
    del_a = (DELETE, b"/mux/r/a", b"")
    assert got == {
        "prefix": [(*a1, b"0"), (*b2, None), (*c3, None), (*del_a, b"1")],
        "range": [(*a1, None), (*b2, None), (*del_a, None)],
        "from_key": [(*b2, None), (*c3, None), (PUT, b"/mux/rx", b"outside", None)],
        "no_put": [(*del_a, None)],
        "no_delete": [(*a1, None), (*b2, None), (*c3, None)],
        "replay": [(*a1, None), (*del_a, None)],
    }


def test_progress_requests_with_many_watches(channel: grpc.Channel, stream: Stream) -> None:
    ids = [stream.create(key=b"/mux/p/%d" % i).watch_id for i in range(10)]
    assert len(set(ids)) == 10
    rev = put(channel, b"/mux/p/3", b"x")
    assert stream.events({ids[3]: 1})[ids[3]] == [(PUT, b"/mux/p/3", b"x", None)]
    stream.requests.put(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
    progress = stream.next()
    assert progress.watch_id == -1 and not progress.events and not progress.canceled
    assert progress.header.revision >= rev
    # Watches go on after it.
    put(channel, b"/mux/p/7", b"y")
    assert stream.events({ids[7]: 1})[ids[7]] == [(PUT, b"/mux/p/7", b"y", None)]


def test_refusals_follow_etcd(stream: Stream) -> None:
    """What etcd refuses at create: a start revision below 0 (as compacted), a range whose
    end is not after its key; the stream goes on."""
    neg = stream.create(key=b"/mux/bad", start_revision=-1)
    assert (neg.canceled, neg.watch_id, neg.cancel_reason) == (
        True, -1, "etcdserver: mvcc: required revision has been compacted")
    empty = stream.create(key=b"/mux/b", range_end=b"/mux/a")
    assert (empty.canceled, empty.watch_id, empty.cancel_reason) == (
        True, -1, "mvcc: watcher range is empty")
    ok = stream.create(key=b"/mux/fine")
    assert not ok.canceled and ok.watch_id == 0


def test_aetcd_multiplexes_its_watches_on_one_stream(cluster: ProcessCluster) -> None:
    r = run_scenario("watch_many", follower_endpoint(cluster))
    assert r["streams"] == 1  # aetcd's one Watch stream per client
    assert r["watch_ids"] == list(range(20))
    assert r["events"] == {str(i): [f"/aetcd/many/{i:02d}", f"v{i}"] for i in range(20)}


def test_etcdctl_interactive_watch_prints_every_watch(etcdctl: Etcdctl, cluster: ProcessCluster,
                                                      tmp_path: Any) -> None:
    out = tmp_path / "watch.out"
    with open(out, "wb") as f:
        proc = subprocess.Popen(etcdctl.argv("watch", "-i"), env=etcdctl.env(),
                                stdin=subprocess.PIPE, stdout=f, stderr=subprocess.STDOUT)
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"watch /mux/ctl/a\nwatch /mux/ctl/b\n")
        proc.stdin.flush()
        with grpc.insecure_channel(cluster.endpoints[0]) as ch:
            # etcdctl gives no sign that its watches are created: write until both print.
            def both_printed() -> bool:
                put(ch, b"/mux/ctl/a", b"1")
                put(ch, b"/mux/ctl/b", b"2")
                text = out.read_text()
                return "/mux/ctl/a" in text and "/mux/ctl/b" in text

            wait_until(both_printed, WAIT, "both interactive watches to print events")
        assert "canceled" not in out.read_text()
    finally:
        kill(proc)


def test_progress_notifications_go_to_each_watch_that_asked(tmp_path: Any) -> None:
    cluster = ProcessCluster(1, tmp_path)
    try:
        for n in cluster.nodes.values():
            n.start(env={"CONFER_ETCD_WATCH_PROGRESS_INTERVAL": "0.3"})
            n.wait_ready(30)
        with grpc.insecure_channel(cluster.endpoints[0]) as ch:
            s = Stream(ch)
            try:
                a = s.create(key=b"/p/a", progress_notify=True).watch_id
                b = s.create(key=b"/p/b").watch_id
                c = s.create(key=b"/p/c", progress_notify=True).watch_id
                seen: set[int] = set()
                for _ in range(50):  # a tick every 0.3 s: a few suffice
                    r = s.next()
                    assert not r.events and not r.canceled and r.header.revision > 0, r
                    seen.add(r.watch_id)
                    if seen >= {a, c}:
                        break
                assert seen == {a, c} and b not in seen
            finally:
                s.close()
    finally:
        cluster.stop()
