"""Both clients against a real 3-node cluster: CRUD, listing, transactions, watches, status
and errors. The tests share one cluster and use distinct paths."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import confer
import confer.aio
from confer import Compare, Op
from confer.client.models import ClusterEventType, EventType, WatchEvent
from testing.procs import ProcessCluster, free_port

from .conftest import wait_for


def test_crud_and_metadata(cluster: ProcessCluster) -> None:
    with confer.Client(cluster.endpoints, timeout=5) as c:
        assert c.get("/crud/a") is None
        first = c.put("/crud/a", b"one")
        second = c.put("/crud/a", "two", prev_kv=True)
        assert second.revision > first.revision
        assert second.prev_kv is not None and second.prev_kv.value == b"one"
        kv = c.get("/crud/a")
        assert kv is not None
        assert (kv.path, kv.value, kv.text, kv.version) == ("/crud/a", b"two", "two", 2)
        assert (kv.create_revision, kv.mod_revision) == (first.revision, second.revision)
        old = c.get("/crud/a", revision=first.revision)
        assert old is not None and old.value == b"one"
        assert c.get("/crud/a", serializable=True) is not None
        gone = c.delete("/crud/a", prev_kv=True)
        assert gone.deleted == 1 and gone.prev_kvs[0].value == b"two"
        assert c.delete("/crud/a").deleted == 0
        assert c.get("/crud/a") is None


def test_list_children_scan_and_recursive_delete(cluster: ProcessCluster) -> None:
    with confer.Client(cluster.endpoints, timeout=5) as c:
        for p in ["/ls", "/ls/a", "/ls/b/x", "/ls/b/y", "/ls/c", "/lsx"]:
            c.put(p, p)
        everything = c.list("/ls")
        assert [kv.path for kv in everything.kvs] == ["/ls", "/ls/a", "/ls/b/x", "/ls/b/y",
                                                      "/ls/c"]
        assert not everything.more and everything.revision >= everything.kvs[-1].mod_revision
        assert [kv.path for kv in c.list("/ls", recursive=False).kvs] == ["/ls"]
        page = c.list("/ls", limit=2, keys_only=True)
        assert [kv.path for kv in page.kvs] == ["/ls", "/ls/a"] and page.more
        assert page.kvs[0].value == b""
        rest = c.list("/ls", start_after="/ls/a", revision=page.revision)
        assert [kv.path for kv in rest.kvs] == ["/ls/b/x", "/ls/b/y", "/ls/c"]
        assert [kv.path for kv in c.scan("/ls", page_size=2)] == [
            kv.path for kv in everything.kvs]
        assert c.children("/ls").names == ("a", "b", "c")
        limited = c.children("/ls", limit=1, start_after="a")
        assert limited.names == ("b",) and limited.more
        assert "ls" in c.children("/").names
        deleted = c.delete("/ls", recursive=True)
        assert deleted.deleted == 5
        assert c.list("/ls").kvs == () and c.get("/lsx") is not None


def test_txn_builder(cluster: ProcessCluster) -> None:
    with confer.Client(cluster.endpoints, timeout=5) as c:
        c.put("/tx/a", b"x")
        c.put("/tx/b", b"1")
        ok = (c.txn().if_(Compare.value("/tx/a") == b"x", Compare.version("/tx/b") > 0,
                          Compare.exists("/tx/b"), Compare.missing("/tx/none"))
              .then(Op.put("/tx/a", b"y"), Op.delete("/tx/b"), Op.get("/tx/a"))
              .else_(Op.get("/tx/a")).commit())
        assert ok.succeeded
        put, removed, got = ok.responses
        assert isinstance(put, confer.PutResult) and put.revision == ok.revision
        assert isinstance(removed, confer.DeleteResult) and removed.deleted == 1
        assert got is not None and got.value == b"y"  # type: ignore[union-attr]
        failed = (c.txn().if_(Compare.value("/tx/a") == b"x").then(Op.put("/tx/a", b"z"))
                  .else_(Op.get("/tx/a"), Op.get("/tx/b")).commit())
        assert not failed.succeeded
        assert failed.responses[0].value == b"y" and failed.responses[1] is None  # type: ignore[union-attr]
        c.put("/tx/tree/x", b"1")
        c.put("/tx/tree/y/z", b"2")
        tree = c.txn().then(Op.delete("/tx/tree", recursive=True, prev_kv=True)).commit()
        deleted = tree.responses[0]
        assert isinstance(deleted, confer.DeleteResult)
        assert (deleted.revision, deleted.deleted) == (tree.revision, 2)
        assert [kv.path for kv in deleted.prev_kvs] == ["/tx/tree/x", "/tx/tree/y/z"]
        with pytest.raises(confer.InvalidArgument):  # one key written twice
            c.txn().then(Op.put("/tx/a", b"1"), Op.put("/tx/a", b"2")).commit()


@pytest.mark.parametrize("call", [
    lambda c: c.get("no-slash"),
    lambda c: c.get("/a//b"),
    pytest.param(lambda c: c.put("/", b"x"), id="root"),
    lambda c: c.put("/a/", b"x"),
    lambda c: c.list("/a", limit=-1),
    lambda c: c.children("/a/../b"),
    lambda c: c.compact(0),
    lambda c: c.get(3),
    lambda c: c.put("/a", 3),
], ids=["relative", "empty-segment", "root", "trailing-slash", "negative-limit", "dotdot",
        "compact-0", "path-type", "value-type"])
def test_bad_input_raises_invalid_argument(cluster: ProcessCluster, call: object) -> None:
    with confer.Client(cluster.endpoints, timeout=5) as c, pytest.raises(confer.InvalidArgument):
        call(c)  # type: ignore[operator]


def test_status_members_and_errors(cluster: ProcessCluster) -> None:
    leader = cluster.leader()
    with confer.Client(cluster.endpoints, timeout=5) as c:
        st = c.status(cluster.nodes[leader].client_addr)
        assert st.member_id == leader == st.leader_id and st.role == "leader"
        assert st.endpoint == cluster.nodes[leader].client_addr
        assert c.status().leader_id == leader
        members = c.member_list()
        assert sorted(m.id for m in members) == [1, 2, 3]
        # Right after an election, members' client addresses may still be empty for a moment
        # (reported as a server quirk); they must all be known soon.
        wait_for(lambda: {m.client_addr for m in c.member_list()} == set(cluster.endpoints),
                 5, "every member's client address")
        with pytest.raises(confer.NotFound):
            c.member_remove(99)
        with pytest.raises(confer.AlreadyExists):
            c.member_add(cluster.nodes[1].peer_addr)
        with pytest.raises(confer.FutureRevision):
            c.get("/x", revision=10**9)
    with pytest.raises(confer.ClientClosed):
        c.get("/x")


def test_writes_continue_through_a_leadership_transfer(cluster: ProcessCluster) -> None:
    leader = cluster.leader()
    target = next(i for i in sorted(cluster.nodes) if i != leader)
    stop = threading.Event()
    errors: list[BaseException] = []
    written: list[int] = []

    def write(client: confer.Client) -> None:
        try:
            while not stop.is_set() and len(written) < 5000:
                written.append(client.put("/transfer/k", str(len(written))).revision)
        except BaseException as e:
            errors.append(e)

    with confer.Client(cluster.endpoints, timeout=5) as c:
        writer = threading.Thread(target=write, args=(c,))
        writer.start()
        try:
            time.sleep(0.2)
            status = c.transfer_leadership(target)
            time.sleep(0.3)
        finally:
            stop.set()
            writer.join(10)
        assert status.leader_id == target and cluster.leader() == target
        assert not errors, errors
        assert written == sorted(written) and len(written) > 10


def test_unreachable_endpoints_raise_unavailable() -> None:
    with confer.Client([f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"],
                       timeout=0.5) as c:
        start = time.monotonic()
        with pytest.raises(confer.Unavailable, match="gave up"):
            c.get("/x")
        with pytest.raises(confer.Unavailable):  # refused: surely not applied
            c.txn().then(Op.put("/x", b"1")).commit()
        assert time.monotonic() - start < 3


def test_watch_iterates_replays_and_cancels(cluster: ProcessCluster) -> None:
    with confer.Client(cluster.endpoints, timeout=5) as c:
        start = c.put("/wa/k", b"0").revision
        c.put("/wa/k/child", b"c")
        c.delete("/wa/k")
        with c.watch("/wa/k", recursive=True, start_revision=start, prev_kv=True) as w:
            got = [next(w) for _ in range(3)]
            assert [(e.type, e.kv.path) for e in got] == [
                (EventType.PUT, "/wa/k"), (EventType.PUT, "/wa/k/child"),
                (EventType.DELETE, "/wa/k")]
            assert got[2].prev_kv is not None and got[2].prev_kv.value == b"0"
            assert [e.revision for e in got] == sorted(e.revision for e in got)
            c.put("/wa/k", b"1")
            live = next(w)
            assert live.kv.value == b"1" and w.revision >= live.revision
            w.cancel()
            assert list(w) == []
        # A callback watch on one key (not its subtree).
        seen: list[WatchEvent] = []
        done = threading.Event()

        def on_event(e: WatchEvent) -> None:
            seen.append(e)
            if e.kv.value == b"last":
                done.set()

        w = c.watch("/wa/cb", callback=on_event)  # returns once the watch is established
        for v in [b"1", b"2", b"last"]:
            c.put("/wa/cb", v)
        c.put("/wa/cb/below", b"ignored")
        assert done.wait(5)
        w.cancel()
        assert w.wait(5)
        assert [e.kv.value for e in seen] == [b"1", b"2", b"last"]
        assert w.error is None


def test_compaction(cluster: ProcessCluster) -> None:
    with confer.Client(cluster.endpoints, timeout=5) as c:
        first = c.put("/cp/k", b"1").revision
        c.put("/cp/k", b"2")
        now = c.put("/cp/k", b"3").revision
        c.compact(now)
        with pytest.raises(confer.Compacted) as info:
            c.get("/cp/k", revision=first)
        assert info.value.compact_revision >= now - 1
        with pytest.raises(confer.Compacted):
            next(iter(c.watch("/cp/k", start_revision=first)))
        errors: list[BaseException] = []
        w = c.watch("/cp/k", start_revision=first, callback=lambda e: None,
                    on_error=errors.append)
        assert w.wait(5)
        assert isinstance(w.error, confer.Compacted) and errors == [w.error]
        kv = c.get("/cp/k")
        assert kv is not None and kv.value == b"3"


def test_watch_cluster_reports_members_and_leader(cluster: ProcessCluster) -> None:
    leader = cluster.leader()
    with confer.Client(cluster.endpoints, timeout=5) as c, c.watch_cluster() as w:
        got = [next(w) for _ in range(4)]
    added = {e.node_id: e.addr for e in got if e.type is ClusterEventType.MEMBER_ADDED}
    assert added == {i: n.client_addr for i, n in cluster.nodes.items()}
    assert got[3].type is ClusterEventType.LEADER_CHANGED and got[3].node_id == leader


def test_the_asyncio_client(cluster: ProcessCluster) -> None:
    async def main() -> None:
        async with confer.aio.Client(cluster.endpoints, timeout=5) as c:
            w = await c.watch("/aio", recursive=True, prev_kv=True)
            put = await c.put("/aio/a", b"1")
            assert put.revision > 0
            kv = await c.get("/aio/a")
            assert kv is not None and kv.value == b"1"
            await asyncio.gather(*(c.put(f"/aio/n/{i}", str(i)) for i in range(20)))
            assert (await c.list("/aio/n")).count == 20
            assert len([kv async for kv in c.scan("/aio/n", page_size=7)]) == 20
            assert (await c.children("/aio")).names == ("a", "n")
            res = await (c.txn().if_(Compare.version("/aio/a") == 1)
                         .then(Op.put("/aio/a", b"2"), Op.get("/aio/a")).commit())
            assert res.succeeded and res.responses[1].value == b"2"  # type: ignore[union-attr]
            deleted = await c.delete("/aio/n", recursive=True)
            assert deleted.deleted == 20
            with pytest.raises(confer.aio.InvalidArgument):
                await c.put("bad", b"x")
            events = []
            async for e in w:
                events.append(e)
                if len(events) == 42:  # /aio/a, 20 keys, /aio/a again, 20 deletions
                    break
            await w.close()
            assert [e.revision for e in events] == sorted(e.revision for e in events)
            assert events[0].kv.path == "/aio/a" and events[0].type is EventType.PUT
            assert sum(e.type is EventType.DELETE for e in events) == 20
            got: list[WatchEvent] = []
            cb = await c.watch("/aio/cb", callback=got.append)
            await c.put("/aio/cb", b"v")
            for _ in range(100):
                if got:
                    break
                await asyncio.sleep(0.05)
            await cb.close()
            assert [e.kv.value for e in got] == [b"v"]
            assert (await c.status()).leader_id > 0
            # Iterating a watch without awaiting it first starts it at the first iteration.
            rev = (await c.put("/aio/lazy", b"l")).revision
            lazy = c.watch("/aio/lazy", start_revision=rev)
            async for e in lazy:
                assert e.kv.value == b"l"
                break
            await lazy.close()
            assert len(await c.member_list()) == 3
        with pytest.raises(confer.ClientClosed):
            await c.get("/aio/a")

    asyncio.run(asyncio.wait_for(main(), 30))


def test_the_guide_examples_run(cluster: ProcessCluster, capsys: pytest.CaptureFixture[str]
                                ) -> None:
    """Every Python block of docs/client.md, in order, against this cluster."""
    import re
    from pathlib import Path

    guide = Path(__file__).parents[2] / "docs" / "client.md"
    blocks = re.findall(r"```python\n(.*?)```", guide.read_text(), re.DOTALL)
    assert len(blocks) >= 8
    namespace: dict[str, object] = {"__name__": "guide"}
    for block in blocks:
        code = (block.replace('["127.0.0.1:7379"]', repr(cluster.endpoints))
                .replace('"127.0.0.1:7379"', repr(",".join(cluster.endpoints))))
        exec(compile(code, str(guide), "exec"), namespace)
    assert "async world" in capsys.readouterr().out


def test_cancel_ends_a_blocked_iteration_and_close_ends_watches(cluster: ProcessCluster
                                                                 ) -> None:
    with confer.Client(cluster.endpoints, timeout=5) as c:
        w = c.watch("/cancel/sync")
        threading.Timer(0.3, w.cancel).start()
        assert list(w) == [] and w.cancelled and w.error is None
        background = c.watch("/cancel/cb", callback=lambda e: None)
    assert background.wait(5) and background.error is None  # closing the client ended it

    async def main() -> None:
        async with confer.aio.Client(cluster.endpoints, timeout=5) as ac:
            w = await ac.watch("/cancel/aio")
            asyncio.get_running_loop().call_later(0.3, w.cancel)
            assert [e async for e in w] == [] and w.error is None
            background = await ac.watch("/cancel/aio-cb", callback=lambda e: None)
        assert await background.wait(5) and background.error is None

    asyncio.run(asyncio.wait_for(main(), 20))
