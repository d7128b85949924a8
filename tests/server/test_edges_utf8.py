"""Keys that are not valid UTF-8 (issue 12, finding 9): the etcd API may write any bytes, the
native API's paths are UTF-8 text. Listings and watch streams of the native API leave such
keys out (pages stay full, watch streams keep running); where one key must be named (an
election's leader, a recursive delete's previous values) invalid bytes read as U+FFFD. No
native RPC fails with INTERNAL any more."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.v1 import confer_pb2, confer_pb2_grpc, coord_pb2, coord_pb2_grpc, kv_pb2, kv_pb2_grpc
from testing import ProcessCluster

BAD_KEYS = [b"/cfg/x\xff", b"/cfg/\xfe/z", b"/cfg/\xed\xa0\x80"]  # last: an encoded surrogate
GOOD = ["/cfg/a", "/cfg/y"]
TIMEOUT = 20.0


class Stream:
    """Reads a server stream in a thread into a queue, so a test can wait with a deadline."""

    def __init__(self, call: Iterator[object]) -> None:
        self.call = call
        self.items: queue.Queue[object] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for item in self.call:
                self.items.put(item)
        except grpc.RpcError as e:
            self.items.put(e)

    def next(self, timeout: float = TIMEOUT) -> object:
        item = self.items.get(timeout=timeout)
        if isinstance(item, grpc.RpcError):
            raise item
        return item

    def cancel(self) -> None:
        self.call.cancel()  # type: ignore[attr-defined]
        self.thread.join(TIMEOUT)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[grpc.Channel]:
    with ProcessCluster(1, tmp_path) as c:
        c.leader()
        with grpc.insecure_channel(c.nodes[1].client_addr) as ch:
            yield ch


def etcd_put(ch: grpc.Channel, key: bytes, lease: int = 0) -> None:
    rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=key, value=b"v", lease=lease),
                                timeout=10)


def test_listings_leave_out_keys_that_are_no_paths(node: grpc.Channel) -> None:
    lease = rpc_pb2_grpc.LeaseStub(node).LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=600),
                                                    timeout=10).ID
    for key in [*BAD_KEYS, *(p.encode() for p in GOOD)]:
        etcd_put(node, key, lease)
    kv = kv_pb2_grpc.KVStub(node)
    resp = kv.Range(kv_pb2.RangeRequest(path="/cfg", recursive=True), timeout=10)
    assert [x.path for x in resp.kvs] == GOOD
    assert resp.count == 5  # every key in the range, shown or not (docs/api.md)
    # Pages of one: hidden keys never leave a page empty while more is promised.
    pages, after = [], ""
    for _ in range(10):
        page = kv.Range(kv_pb2.RangeRequest(path="/cfg", recursive=True, limit=1,
                                            start_after=after), timeout=10)
        pages.append([x.path for x in page.kvs])
        if not page.more:
            break
        assert page.kvs, "an empty page with more=True"
        after = page.kvs[-1].path
    assert [p for p in pages if p] == [["/cfg/a"], ["/cfg/y"]]
    names = kv.Children(kv_pb2.ChildrenRequest(path="/cfg"), timeout=10).names
    assert list(names) == ["a", "y"]
    first = kv.Children(kv_pb2.ChildrenRequest(path="/cfg", limit=1, start_after="a"),
                        timeout=10)
    assert list(first.names) == ["y"]
    legacy = confer_pb2_grpc.ConferServiceStub(node)
    assert list(legacy.List(confer_pb2.ConfigPath(path="/cfg"), timeout=10).paths) == GOOD
    ttl = coord_pb2_grpc.LeaseStub(node).TimeToLive(
        coord_pb2.LeaseTimeToLiveRequest(id=lease, keys=True), timeout=10)
    assert sorted(ttl.keys) == GOOD
    # A recursive delete removes them too, and names them with U+FFFD.
    deleted = kv.Delete(kv_pb2.DeleteRequest(path="/cfg", recursive=True, prev_kv=True),
                        timeout=10)
    assert deleted.deleted == 5
    assert "/cfg/x\ufffd" in [x.path for x in deleted.prev_kvs]


def test_watch_streams_skip_such_keys_and_keep_running(node: grpc.Channel) -> None:
    kv = kv_pb2_grpc.KVStub(node)
    watch = Stream(kv.Watch(kv_pb2.WatchRequest(path="/cfg", recursive=True, prev_kv=True),
                            timeout=60))
    config = Stream(confer_pb2_grpc.ConferServiceStub(node).WatchConfig(
        confer_pb2.ConfigPath(path="/cfg"), timeout=60))
    try:
        assert watch.next().created  # type: ignore[attr-defined]
        # WatchConfig follows only changes after it registered, and says nothing before:
        # write /cfg/a until it reports one (bounded), then the keys under test.
        for _ in range(50):
            kv.Put(kv_pb2.PutRequest(path="/cfg/a", value=b"1"), timeout=10)
            try:
                assert config.next(timeout=0.5).path == "/cfg/a"  # type: ignore[attr-defined]
                break
            except queue.Empty:
                continue
        else:
            raise AssertionError("WatchConfig reported nothing")
        for key in BAD_KEYS:
            etcd_put(node, key)
            etcd_put(node, key)  # an update too, with prev_kv
        rpc_pb2_grpc.KVStub(node).DeleteRange(rpc_pb2.DeleteRangeRequest(key=BAD_KEYS[0]),
                                              timeout=10)
        kv.Put(kv_pb2.PutRequest(path="/cfg/y", value=b"2"), timeout=10)
        seen: list[str] = []
        while "/cfg/y" not in seen:
            seen.extend(e.kv.path for e in watch.next().events)  # type: ignore[attr-defined]
        assert set(seen) == set(GOOD)
        updates: list[str] = []
        while "/cfg/y" not in updates:
            updates.append(config.next().path)  # type: ignore[attr-defined]
        assert set(updates) <= set(GOOD)
    finally:
        watch.cancel()
        config.cancel()


def test_an_election_leader_that_is_no_path_is_named_with_replacement(
        node: grpc.Channel) -> None:
    election = coord_pb2_grpc.ElectionStub(node)
    observe = Stream(election.Observe(coord_pb2.LeaderRequest(name="/el"), timeout=60))
    try:
        etcd_put(node, b"/el/\xff")
        assert observe.next().kv.path == "/el/\ufffd"  # type: ignore[attr-defined]
        leader = election.Leader(coord_pb2.LeaderRequest(name="/el"), timeout=10)
        assert leader.kv.path == "/el/\ufffd"
        # Still running: a new value of the leader's key comes through.
        rpc_pb2_grpc.KVStub(node).Put(rpc_pb2.PutRequest(key=b"/el/\xff", value=b"2"),
                                      timeout=10)
        assert observe.next().kv.value == b"2"  # type: ignore[attr-defined]
    finally:
        observe.cancel()
