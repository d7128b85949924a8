"""An old client of the original Confer service, speaking only its messages, still works."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from confer.v1 import confer_pb2, confer_pb2_grpc, kv_pb2, kv_pb2_grpc
from testing import ProcessCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    with ProcessCluster(3, tmp_path_factory.mktemp("legacy")) as c:
        c.leader()
        yield c


def stub_for(addr: str) -> tuple[grpc.Channel, confer_pb2_grpc.ConferServiceStub]:
    """A client with its own connection, as a separate client process would have."""
    ch = grpc.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)])
    return ch, confer_pb2_grpc.ConferServiceStub(ch)


def follower_addr(c: ProcessCluster) -> str:
    leader = c.leader()
    return next(n.client_addr for i, n in c.nodes.items() if i != leader)


def set_(stub: confer_pb2_grpc.ConferServiceStub, path: str, value: bytes) -> None:
    stub.Set(confer_pb2.SetConfigRequest(path=confer_pb2.ConfigPath(path=path),
                                         value=confer_pb2.ConfigValue(value=value)), timeout=10)


def test_set_get_list_remove_through_a_follower(cluster: ProcessCluster) -> None:
    ch, stub = stub_for(follower_addr(cluster))
    with ch:
        set_(stub, "/app/config/timeout", b"30")
        set_(stub, "/app/config/retries", b"5")
        set_(stub, "/application/name", b"other")
        got = stub.Get(confer_pb2.ConfigPath(path="/app/config/timeout"), timeout=10)
        assert got.value == b"30"
        listed = stub.List(confer_pb2.ConfigPath(path="/app"), timeout=10)
        assert list(listed.paths) == ["/app/config/retries", "/app/config/timeout"]
        stub.Remove(confer_pb2.ConfigPath(path="/app/config/retries"), timeout=10)
        with pytest.raises(grpc.RpcError) as exc:
            stub.Get(confer_pb2.ConfigPath(path="/app/config/retries"), timeout=10)
        assert exc.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("path, rule", [
    ("app", "start with '/'"),
    ("/a//b", "empty segment"),
    ("/a/", "must not end with"),
    ("", "start with '/'"),
])
def test_bad_paths_are_rejected_with_the_rule_and_change_nothing(
        cluster: ProcessCluster, path: str, rule: str) -> None:
    ch, stub = stub_for(cluster.endpoints[0])
    with ch:
        with pytest.raises(grpc.RpcError) as exc:
            set_(stub, path, b"x")
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert rule in (exc.value.details() or "")


def collect(stream: Iterator[object], out: queue.Queue[object]) -> None:
    try:
        for item in stream:
            out.put(item)
    except grpc.RpcError as e:
        out.put(e)


def test_watch_config_sees_a_key_created_later_and_unwatch_spares_other_watchers(
        cluster: ProcessCluster) -> None:
    ch1, watcher_a = stub_for(follower_addr(cluster))
    ch2, watcher_b = stub_for(follower_addr(cluster))  # same node, another client
    ch3, writer = stub_for(cluster.endpoints[1])
    with ch1, ch2, ch3:
        got_a: queue.Queue[object] = queue.Queue()
        got_b: queue.Queue[object] = queue.Queue()
        stream_a = watcher_a.WatchConfig(confer_pb2.ConfigPath(path="/svc/new"), timeout=30)
        stream_b = watcher_b.WatchConfig(confer_pb2.ConfigPath(path="/svc/new"), timeout=30)
        threads = [threading.Thread(target=collect, args=(s, q), daemon=True)
                   for s, q in ((stream_a, got_a), (stream_b, got_b))]
        for t in threads:
            t.start()
        import time

        time.sleep(0.5)  # both watches registered before the key exists
        set_(writer, "/svc/new", b"v1")
        upd = got_a.get(timeout=10)
        assert isinstance(upd, confer_pb2.ConfigUpdate)
        assert (upd.path, upd.updated_value) == ("/svc/new", b"v1")
        assert got_b.get(timeout=10).updated_value == b"v1"  # type: ignore[union-attr]
        # Client A unwatches: its own stream ends, B's keeps going.
        watcher_a.UnwatchConfig(confer_pb2.ConfigPath(path="/svc/new"), timeout=10)
        threads[0].join(timeout=10)
        assert not threads[0].is_alive()
        writer.Remove(confer_pb2.ConfigPath(path="/svc/new"), timeout=10)
        removed = got_b.get(timeout=10)
        assert isinstance(removed, confer_pb2.ConfigUpdate)
        assert removed.WhichOneof("update_type") == "removed"
        stream_b.cancel()


def test_watch_cluster_starts_with_the_membership_and_the_leader(
        cluster: ProcessCluster) -> None:
    ch, stub = stub_for(cluster.endpoints[2])
    with ch:
        stream = stub.WatchCluster(confer_pb2.Empty(), timeout=30)
        first = [next(stream) for _ in range(4)]
        stream.cancel()
    added = sorted(u.member_added.node_id for u in first[:3])
    assert added == [1, 2, 3]
    assert first[3].WhichOneof("update_type") == "leader_changed"
    assert first[3].leader_changed.node_id == cluster.leader()


def test_init_on_an_initialised_cluster_is_refused(cluster: ProcessCluster) -> None:
    ch, stub = stub_for(cluster.endpoints[0])
    with ch:
        with pytest.raises(grpc.RpcError) as exc:
            stub.Init(confer_pb2.InitRequest(nodes=[confer_pb2.Node(node_id=1, addr="x:1")]),
                      timeout=10)
        assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_init_bootstraps_nodes_started_empty(tmp_path: Path) -> None:
    """The original flow: start empty nodes, call Init once, then use the cluster."""
    c = ProcessCluster(3, tmp_path, extra_args=[])
    for n in c.nodes.values():
        n.args = ["--wait-init", "--tick-ms", "50"]
    with c:
        for n in c.nodes.values():
            n.wait_ready()
        ch, stub = stub_for(c.nodes[1].client_addr)
        with ch:
            nodes = [confer_pb2.Node(node_id=i, addr=n.peer_addr) for i, n in c.nodes.items()]
            stub.Init(confer_pb2.InitRequest(nodes=nodes), timeout=20)
            c.leader()
            set_(stub, "/inited", b"yes")
        ch, stub = stub_for(c.nodes[3].client_addr)
        with ch:
            assert stub.Get(confer_pb2.ConfigPath(path="/inited"), timeout=10).value == b"yes"
            # Init replaced node 1's Raft node: it still publishes its client address.
            cluster = kv_pb2_grpc.ClusterStub(ch)
            deadline = time.monotonic() + 20
            while True:
                members = cluster.MemberList(kv_pb2.MemberListRequest(), timeout=10).members
                addrs = {m.id: m.client_addr for m in members}
                if addrs == {i: n.client_addr for i, n in c.nodes.items()}:
                    break
                assert time.monotonic() < deadline, f"client addresses never published: {addrs}"
                time.sleep(0.2)
