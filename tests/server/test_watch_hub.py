"""The watch hub, in process: history catch-up, live events, slow watchers, compaction."""

from __future__ import annotations

import asyncio

import pytest

from confer.kv import Compact, DeleteRange, KVStore, Put, encode_command
from confer.raft.types import Entry
from confer.server import watch as watch_mod
from confer.server.watch import WatchHub


class Store:
    def __init__(self) -> None:
        self.kv = KVStore()
        self.index = 0

    def do(self, cmd: object) -> None:
        self.index += 1
        self.kv.apply(Entry(self.index, 1, encode_command(cmd)))  # type: ignore[arg-type]


async def take(hub: WatchHub, w: watch_mod.Watcher, n: int) -> list[tuple[str, bytes, int]]:
    out: list[tuple[str, bytes, int]] = []
    async for batch in hub.events(w):
        out += [(e.type.name, e.kv.key, e.kv.mod_revision) for e in batch]
        if len(out) >= n:
            break
    return out


def test_a_watcher_replays_history_then_follows_live_changes() -> None:
    async def main() -> None:
        s = Store()
        hub = WatchHub(s.kv)
        s.do(Put(b"/a/x", b"1"))
        s.do(Put(b"/other", b"1"))
        s.do(DeleteRange(b"/a/x"))
        w = hub.watcher(b"/a/", b"/a0", 1)
        task = asyncio.create_task(take(hub, w, 3))
        await asyncio.sleep(0)
        s.do(Put(b"/a/y", b"2"))
        got = await asyncio.wait_for(task, 5)
        assert got == [("PUT", b"/a/x", 2), ("DELETE", b"/a/x", 4), ("PUT", b"/a/y", 5)]

    asyncio.run(main())


def test_a_slow_watcher_is_not_dropped_and_misses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch_mod, "MAX_BUFFERED_EVENTS", 10)

    async def main() -> None:
        s = Store()
        hub = WatchHub(s.kv)
        w = hub.watcher(b"/k", b"", 0)
        consumer = hub.events(w)
        first = asyncio.create_task(anext(consumer))
        await asyncio.sleep(0)  # the watcher is live now
        for i in range(100):  # far more than it may buffer, while it does not read
            s.do(Put(b"/k", b"%d" % i))
        seen = [e.kv.value for e in await first]
        while len(seen) < 100:
            seen += [e.kv.value for e in await asyncio.wait_for(anext(consumer), 5)]
        assert seen == [b"%d" % i for i in range(100)]
        await consumer.aclose()

    asyncio.run(main())


def test_a_watcher_behind_compaction_gets_a_compacted_error() -> None:
    async def main() -> None:
        s = Store()
        hub = WatchHub(s.kv)
        for i in range(5):
            s.do(Put(b"/k", b"%d" % i))
        s.do(Compact(4))
        w = hub.watcher(b"/k", b"", 2)
        from confer.kv import CompactedError

        with pytest.raises(CompactedError) as exc:
            await take(hub, w, 1)
        assert exc.value.compact_revision == 4

    asyncio.run(main())
