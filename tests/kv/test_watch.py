"""The event history (events_since), the push side (listeners) and the WatchIndex matcher."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confer.kv import (
    Compact,
    CompactedError,
    DeleteRange,
    Event,
    EventType,
    KVStore,
    Put,
    Txn,
    WatchIndex,
    prefix_end,
    subtree_range,
)
from confer.kv.keyrange import contains


def history_store() -> KVStore:
    store = KVStore()
    store.execute(Put(b"/a", b"1"))  # 2
    store.execute(Put(b"/b", b"1"))  # 3
    store.execute(Txn([], [Put(b"/a", b"2"), Put(b"/c", b"1"), Put(b"/d", b"1")], []))  # 4
    store.execute(DeleteRange(b"/b"))  # 5
    store.execute(Put(b"/b", b"2"))  # 6
    return store


def revs(events: list[Event]) -> list[tuple[int, bytes]]:
    return [(e.kv.mod_revision, e.kv.key) for e in events]


def test_events_since_returns_everything_in_order() -> None:
    store = history_store()
    events, nxt = store.events_since(1)
    assert revs(events) == [(2, b"/a"), (3, b"/b"), (4, b"/a"), (4, b"/c"), (4, b"/d"),
                            (5, b"/b"), (6, b"/b")]
    assert nxt == 7
    assert [e.type for e in events] == [EventType.PUT] * 5 + [EventType.DELETE, EventType.PUT]
    assert events[2].prev_kv == events[0].kv  # /a's previous version
    assert events[5].prev_kv == events[1].kv and events[5].kv.value == b""
    assert events[6].prev_kv is None  # re-created after a delete
    assert store.events_since(7) == ([], 7)
    assert store.events_since(100) == ([], 100)
    assert store.events_since(0) == ([], 7)  # "from now on"


def test_events_since_filters_by_key_range() -> None:
    store = history_store()
    assert revs(store.events_since(1, b"/b")[0]) == [(3, b"/b"), (5, b"/b"), (6, b"/b")]
    assert revs(store.events_since(3, b"/b", b"/d")[0]) == [
        (3, b"/b"), (4, b"/c"), (5, b"/b"), (6, b"/b")]
    assert revs(store.events_since(4, b"/c", b"\0")[0]) == [(4, b"/c"), (4, b"/d")]
    assert store.events_since(2, b"/zz") == ([], 7)


def test_limit_never_splits_a_revision_and_resuming_has_no_gap_or_duplicate() -> None:
    store = history_store()
    events, nxt = store.events_since(1, limit=3)
    assert revs(events) == [(2, b"/a"), (3, b"/b")] and nxt == 4  # rev 4 has 3 events
    events, nxt = store.events_since(4, limit=1)
    assert len(events) == 3 and nxt == 5  # one whole revision even if over the limit
    collected: list[Event] = []
    start = 1
    while True:
        events, start = store.events_since(start, limit=2)
        if not events:
            break
        collected += events
    assert collected == store.events_since(1)[0]


def test_events_across_the_compaction_boundary() -> None:
    store = history_store()
    everything = store.events_since(1)[0]
    store.execute(Compact(4))
    with pytest.raises(CompactedError) as info:
        store.events_since(4)
    assert info.value.compact_revision == 4
    assert store.oldest_revision == 5
    events, nxt = store.events_since(5)
    assert events == everything[5:] and nxt == 7
    # The delete's prev_kv (written before the compaction) is still there.
    assert events[0].prev_kv is not None and events[0].prev_kv.mod_revision == 3
    store.execute(Put(b"/e", b""))
    assert revs(store.events_since(5)[0])[-1] == (7, b"/e")
    with pytest.raises(CompactedError):
        store.events_at(4)


def test_listeners_get_each_revision_once_in_order() -> None:
    store = KVStore()
    pushed: list[tuple[Event, ...]] = []
    store.add_listener(pushed.append)
    failing_calls = []

    def failing(events: tuple[Event, ...]) -> None:
        failing_calls.append(events)
        raise RuntimeError("a broken watch hub must not break apply")

    store.add_listener(failing)
    store.execute(Put(b"/a", b"1"))
    store.execute(DeleteRange(b"/nothing"))  # no revision, no push
    store.execute(Txn([], [Put(b"/b", b""), DeleteRange(b"/a")], []))
    store.execute(Compact(2))  # no events
    assert [revs(list(batch)) for batch in pushed] == [[(2, b"/a")], [(3, b"/b"), (3, b"/a")]]
    assert len(failing_calls) == 2
    store.remove_listener(failing)
    store.execute(Put(b"/c", b""))
    assert len(pushed) == 3 and len(failing_calls) == 2


def test_pushed_events_equal_the_history() -> None:
    store = KVStore()
    pushed: list[Event] = []
    store.add_listener(pushed.extend)
    for i in range(20):
        store.execute(Put(b"/k%d" % (i % 3), b"%d" % i))
        if i % 7 == 0:
            store.execute(DeleteRange(b"/k", b"/l"))
    assert pushed == store.events_since(1)[0]


def test_restore_listener_is_told_the_new_revision() -> None:
    source = history_store()
    store = KVStore()
    told: list[int] = []
    store.add_restore_listener(told.append)
    store.restore(source.snapshot())
    store.restore(b"")
    assert told == [6, 1]


# -- WatchIndex -----------------------------------------------------------------------------------
def test_watch_index_shapes() -> None:
    index = WatchIndex()
    index.add(1, b"/app/x")  # one key
    start, end = subtree_range("/app")
    index.add(2, start, end)  # a path's subtree
    index.add(3, b"/app", prefix_end(b"/app"))  # an etcd prefix: matches /application too
    index.add(4, b"/b", b"/d")  # a plain range
    index.add(5, b"\0", b"\0")  # every key from \0 on
    index.add(6, b"", b"\0")  # every key (the empty prefix)
    assert sorted(index.match(b"/app/x")) == [1, 2, 3, 5, 6]
    assert sorted(index.match(b"/application")) == [3, 5, 6]
    assert sorted(index.match(b"/app")) == [3, 5, 6]
    assert sorted(index.match(b"/c")) == [4, 5, 6]
    assert len(index) == 6 and 4 in index
    assert index.remove(3) and not index.remove(3)
    assert sorted(index.match(b"/application")) == [5, 6]
    with pytest.raises(ValueError):
        index.add(1, b"/again")


def test_match_events_groups_by_watch_in_event_order() -> None:
    index = WatchIndex()
    index.add(1, b"/a/", prefix_end(b"/a/"))
    index.add(2, b"/a/2")
    store = KVStore()
    pushed: list[tuple[Event, ...]] = []
    store.add_listener(pushed.append)
    store.execute(Txn([], [Put(b"/a/1", b""), Put(b"/b", b""), Put(b"/a/2", b"")], []))
    grouped = index.match_events(pushed[0])
    assert {w: [e.kv.key for e in evs] for w, evs in grouped.items()} == {
        1: [b"/a/1", b"/a/2"], 2: [b"/a/2"]}


KEYS = st.binary(max_size=5).map(lambda b: b.replace(b"\x00", b"/")[:5]) | st.sampled_from(
    [b"/", b"/a", b"/a/", b"/a/b", b"/ab", b"\xff", b"\xff\xff", b"a/b/c"])


@settings(max_examples=200, deadline=None)
@given(watches=st.lists(st.tuples(KEYS, st.sampled_from(["single", "prefix", "range", "from"]),
                                  KEYS), max_size=12),
       probes=st.lists(KEYS, max_size=12), removed=st.sets(st.integers(0, 11), max_size=4))
def test_watch_index_agrees_with_brute_force(watches: list[tuple[bytes, str, bytes]],
                                             probes: list[bytes], removed: set[int]) -> None:
    index = WatchIndex()
    ranges: dict[int, tuple[bytes, bytes]] = {}
    for wid, (key, shape, other) in enumerate(watches):
        end = {"single": b"", "prefix": prefix_end(key), "range": other,
               "from": b"\0"}[shape]
        if shape == "range" and not end:
            end = b"\0"
        index.add(wid, key, end)
        ranges[wid] = (key, end)
    for wid in removed:
        assert index.remove(wid) == (wid in ranges)
        ranges.pop(wid, None)
    for k in probes + [key for key, _, _ in watches]:
        got = index.match(k)
        assert len(got) == len(set(got))
        assert set(got) == {w for w, (key, end) in ranges.items() if contains(key, end, k)}
