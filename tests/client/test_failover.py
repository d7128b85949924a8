"""Failover against real processes: a killed leader, a killed watch endpoint, a paused
leader. Every test has its own 3-node cluster (tick 50 ms) and bounded loops."""

from __future__ import annotations

import asyncio
import signal
import threading
import time

import pytest

import confer
import confer.aio
from confer import Op, WatchEvent
from testing.procs import ProcessCluster

from .conftest import wait_for


def _endpoints(c: ProcessCluster, *ids: int) -> list[str]:
    return [c.nodes[i].client_addr for i in ids]


def _wait_caught_up(c: ProcessCluster, node_id: int, index: int) -> None:
    def caught_up() -> bool:
        st = c.nodes[node_id].status()
        return st is not None and st.leader_id != 0 and st.applied_index >= index

    wait_for(caught_up, 15, f"member {node_id} to catch up to index {index}")


def test_acknowledged_writes_survive_a_leader_kill(fresh_cluster: ProcessCluster) -> None:
    """kill -9 the leader while a sync writer and four asyncio writers write in a loop: no
    caller sees an exception, and every acknowledged write is readable afterwards."""
    c = fresh_cluster
    leader = c.leader()
    acked: dict[str, str] = {}
    killed_at: list[float] = []
    aio_errors: list[BaseException] = []
    stop = threading.Event()

    async def aio_writers() -> None:
        async def writer(w: int, client: confer.aio.Client) -> None:
            i = 0
            while not stop.is_set() and i < 300:
                key = f"/fo/aio{w}/{i:04d}"
                await client.put(key, key)
                acked[key] = key
                i += 1

        async with confer.aio.Client(c.endpoints, timeout=10) as client:
            try:
                await asyncio.gather(*(writer(w, client) for w in range(4)))
            except BaseException as e:
                aio_errors.append(e)

    aio = threading.Thread(target=asyncio.run, args=(aio_writers(),))
    with confer.Client(c.endpoints, timeout=10) as client:
        client.put("/fo/warm", b"")  # learns the leader: writes now go straight to it
        aio.start()
        deadline = time.monotonic() + 15
        i = 0
        try:
            while time.monotonic() < deadline and i < 2000:
                if i == 30:  # mid-stream: kill the leader (writes are in flight on the aio side)
                    c.nodes[leader].kill()
                    killed_at.append(time.monotonic())
                key = f"/fo/sync/{i:04d}"
                client.put(key, key)
                acked[key] = key
                i += 1
                if killed_at and time.monotonic() - killed_at[0] > 1.5 and i > 60:
                    break
        finally:
            stop.set()
            aio.join(30)
        assert not aio_errors, aio_errors
        assert killed_at and i > 60
        assert client.status().leader_id not in (0, leader)
        stored = {kv.path: kv.text for kv in client.scan("/fo", page_size=250)}
    missing = {k for k in acked if stored.get(k) != acked[k]}
    assert not missing, sorted(missing)[:10]
    assert sum(k.startswith("/fo/aio") for k in acked) > 4


def test_watchers_see_every_event_once_across_leader_and_endpoint_kills(
        fresh_cluster: ProcessCluster) -> None:
    """Watchers (sync with a callback, asyncio iterating) connected to a follower see every
    event in order, with no gap and no duplicate, while the leader is killed, restarted, and
    then the follower they are connected to is killed."""
    c = fresh_cluster
    leader = c.leader()
    f1, f2 = (i for i in sorted(c.nodes) if i != leader)
    watch_eps = _endpoints(c, f1, f2, leader)  # connected to f1 first
    total = 60
    sync_seen: list[WatchEvent] = []
    aio_seen: list[WatchEvent] = []
    aio_ready = threading.Event()
    aio_errors: list[BaseException] = []

    async def aio_watch() -> None:
        try:
            async with confer.aio.Client(watch_eps, timeout=10) as client:
                watch = await client.watch("/wt", recursive=True)
                aio_ready.set()
                async with watch:
                    async for event in watch:
                        aio_seen.append(event)
                        if event.kv.path == "/wt/end":
                            return
        except BaseException as e:
            aio_errors.append(e)
            aio_ready.set()

    aio = threading.Thread(target=asyncio.run, args=(asyncio.wait_for(aio_watch(), 40),))
    aio.start()
    with confer.Client(watch_eps, timeout=10) as watcher, \
            confer.Client(_endpoints(c, f2, leader, f1), timeout=10) as writer:
        sync_watch = watcher.watch("/wt", recursive=True, callback=sync_seen.append)
        assert aio_ready.wait(10) and not aio_errors
        for i in range(total):
            if i == total // 3:
                c.nodes[leader].kill()
            if i == 2 * total // 3:
                # Bring the old leader back (a quorum needs it), then kill the watchers' node.
                c.nodes[leader].start()
                _wait_caught_up(c, leader, writer.status(c.nodes[f2].client_addr).commit_index)
                c.nodes[f1].kill()
            writer.put(f"/wt/{i:03d}", str(i))
        writer.put("/wt/end", b"")
        wait_for(lambda: len(sync_seen) >= total + 1, 20, "the sync watcher")
        sync_watch.cancel()
        assert sync_watch.wait(5) and sync_watch.error is None
        assert watcher._core.router.current != c.nodes[f1].client_addr  # it did fail over
    aio.join(30)
    assert not aio_errors, aio_errors
    expected = [f"/wt/{i:03d}" for i in range(total)] + ["/wt/end"]
    for seen in (sync_seen, aio_seen):
        assert [e.kv.path for e in seen] == expected
        revisions = [e.revision for e in seen]
        assert revisions == sorted(set(revisions))  # in order, no duplicate


def test_a_txn_with_an_unknown_outcome_raises_outcome_unknown(
        fresh_cluster: ProcessCluster) -> None:
    """With the leader paused (SIGSTOP) after the client connected to it, a Txn times out with
    its outcome unknown: OutcomeUnknown, no retry. A put in the same situation converges by
    retrying at the other members once they elected a new leader."""
    c = fresh_cluster
    leader = c.leader()
    others = [i for i in sorted(c.nodes) if i != leader]
    node = c.nodes[leader]
    with confer.Client(_endpoints(c, leader, *others), timeout=10) as client:
        client.put("/pause/warm", b"")  # connected to the leader, and routes writes to it
        node.signal(signal.SIGSTOP)
        try:
            start = time.monotonic()
            with pytest.raises(confer.OutcomeUnknown, match="outcome unknown"):
                client.txn(timeout=0.5).then(Op.put("/pause/txn", b"1")).commit()
            assert time.monotonic() - start < 2
            assert client.put("/pause/put", b"2", timeout=4).revision > 0
        finally:
            node.signal(signal.SIGCONT)
        kv = client.get("/pause/put")
        assert kv is not None and kv.value == b"2"


def test_a_paused_member_asyncio_txn_and_idle_watch(fresh_cluster: ProcessCluster) -> None:
    """With the member they are connected to paused (SIGSTOP): an asyncio Txn raises
    OutcomeUnknown and a read DeadlineExceeded, while a watch notices the silent connection
    (watch_keepalive) and resumes at another member without losing an event."""
    c = fresh_cluster
    leader = c.leader()
    others = [i for i in sorted(c.nodes) if i != leader]
    node = c.nodes[leader]
    seen: list[str] = []

    async def main() -> None:
        async with confer.aio.Client([node.client_addr], timeout=5) as client:
            await client.put("/pause/warm", b"")
            node.signal(signal.SIGSTOP)
            with pytest.raises(confer.aio.OutcomeUnknown):
                await client.txn(timeout=0.3).then(Op.delete("/pause/warm")).commit()
            with pytest.raises(confer.aio.DeadlineExceeded):  # a read just times out
                await client.get("/pause/warm", timeout=0.3)

    with confer.Client(_endpoints(c, leader, *others), watch_keepalive=0.5) as watcher, \
            confer.Client(_endpoints(c, *others), timeout=10) as writer:
        watch = watcher.watch("/idle", recursive=True, callback=lambda e: seen.append(e.kv.path))
        writer.put("/idle/0", b"")
        wait_for(lambda: seen == ["/idle/0"], 5, "the first event")
        try:
            asyncio.run(asyncio.wait_for(main(), 20))
            for i in range(1, 4):
                writer.put(f"/idle/{i}", b"")
            wait_for(lambda: len(seen) >= 4, 10, "the watch to resume elsewhere")
        finally:
            node.signal(signal.SIGCONT)
        watch.cancel()
    assert seen == [f"/idle/{i}" for i in range(4)]
