"""etcd MVCC semantics of the store: revisions, versions, tombstones, ranges, compaction."""

from __future__ import annotations

import pytest

from confer.kv import (
    Compact,
    CompactedError,
    CompactResult,
    DeleteRange,
    DeleteResult,
    ErrorCode,
    ErrorResult,
    FutureRevisionError,
    InvalidArgument,
    KeyValue,
    KVStore,
    LeaseGrant,
    Put,
    PutResult,
    SortOrder,
    SortTarget,
    prefix_end,
)


def put(store: KVStore, key: bytes, value: bytes = b"v", **kw: object) -> PutResult:
    result = store.execute(Put(key, value, **kw))  # type: ignore[arg-type]
    assert isinstance(result, PutResult), result
    return result


def keys(result: object) -> list[bytes]:
    return [kv.key for kv in result.kvs]  # type: ignore[attr-defined]


# -- revisions, versions, tombstones -----------------------------------------------------------
def test_empty_store_is_at_revision_1_and_the_first_write_makes_2() -> None:
    store = KVStore()
    assert store.revision == 1
    assert store.range(b"a").revision == 1
    assert put(store, b"a").revision == 2
    assert store.get(b"a") == KeyValue(b"a", 2, 2, 1, b"v", 0)


def test_versions_count_writes_and_create_revision_stays() -> None:
    store = KVStore()
    put(store, b"a", b"1")
    put(store, b"b", b"x")
    put(store, b"a", b"2")
    assert store.get(b"a") == KeyValue(b"a", 2, 4, 2, b"2", 0)
    assert store.revision == 4


def test_delete_leaves_a_tombstone_and_recreation_starts_over() -> None:
    store = KVStore()
    put(store, b"a", b"1")  # 2
    put(store, b"a", b"2")  # 3
    result = store.execute(DeleteRange(b"a", prev_kv=True))  # 4
    assert result == DeleteResult(4, 1, [KeyValue(b"a", 2, 3, 2, b"2", 0)])
    assert store.get(b"a") is None
    put(store, b"a", b"3")  # 5
    assert store.get(b"a") == KeyValue(b"a", 5, 5, 1, b"3", 0)
    # The past is still there, tombstone included.
    assert store.get(b"a", revision=3) == KeyValue(b"a", 2, 3, 2, b"2", 0)
    assert store.get(b"a", revision=4) is None
    events = store.events_at(4)
    assert events[0].kv == KeyValue(b"a", 0, 4, 0, b"", 0)  # etcd's delete event kv
    assert events[0].prev_kv == KeyValue(b"a", 2, 3, 2, b"2", 0)


def test_a_delete_that_deletes_nothing_takes_no_revision() -> None:
    store = KVStore()
    put(store, b"a")
    assert store.execute(DeleteRange(b"zz")) == DeleteResult(2, 0, [])
    assert store.execute(DeleteRange(b"b", b"c")) == DeleteResult(2, 0, [])
    assert store.revision == 2


def test_delete_range_takes_one_revision_for_all_keys() -> None:
    store = KVStore()
    for k in (b"a", b"b", b"c", b"d"):
        put(store, k)
    result = store.execute(DeleteRange(b"b", b"d"))
    assert result == DeleteResult(6, 2, [])
    assert [e.kv.key for e in store.events_at(6)] == [b"b", b"c"]
    assert keys(store.range(b"a", b"\0")) == [b"a", b"d"]


def grant(store: KVStore, *leases: int) -> None:
    for lease in leases:
        store.execute(LeaseGrant(60, lease))


def test_put_prev_kv_and_ignore_flags() -> None:
    store = KVStore()
    grant(store, 7, 9)
    assert put(store, b"a", b"1", lease=7).prev_kv is None
    first = store.get(b"a")
    assert put(store, b"a", b"2", prev_kv=True).prev_kv == first
    assert put(store, b"a", b"", lease=9, ignore_value=True).revision == 4
    assert store.get(b"a") == KeyValue(b"a", 2, 4, 3, b"2", 9)
    put(store, b"a", b"3", ignore_lease=True)
    assert store.get(b"a") == KeyValue(b"a", 2, 5, 4, b"3", 9)


def test_ignore_flags_on_a_missing_key_fail_without_a_change() -> None:
    store = KVStore()
    for cmd in (Put(b"a", ignore_value=True), Put(b"a", b"x", ignore_lease=True)):
        result = store.execute(cmd)
        assert isinstance(result, ErrorResult) and result.code == ErrorCode.KEY_NOT_FOUND
    assert store.revision == 1 and len(store) == 0


def test_stateless_put_errors_are_results() -> None:
    store = KVStore()
    for cmd in (Put(b""), Put(b"a", b"v", ignore_value=True), Put(b"a", lease=1,
                                                                   ignore_lease=True)):
        result = store.execute(cmd)
        assert isinstance(result, ErrorResult) and result.code == ErrorCode.INVALID_ARGUMENT
        with pytest.raises(InvalidArgument):
            raise result.to_exception()
    assert store.revision == 1


def test_lease_index_follows_puts_and_deletes() -> None:
    store = KVStore()
    grant(store, 5, 6)
    put(store, b"a", lease=5)
    put(store, b"b", lease=5)
    put(store, b"c", lease=6)
    assert store.lease_keys(5) == [b"a", b"b"]
    put(store, b"a", lease=6)
    store.execute(DeleteRange(b"c"))
    assert store.lease_keys(5) == [b"b"]
    assert store.lease_keys(6) == [b"a"]
    put(store, b"b", ignore_lease=True)
    assert store.lease_keys(5) == [b"b"]


# -- ranges -------------------------------------------------------------------------------------
@pytest.fixture
def abc() -> KVStore:
    store = KVStore()
    for k in (b"a", b"a/1", b"a/2", b"b", b"c"):
        put(store, k, k.upper())
    return store


def test_range_end_forms(abc: KVStore) -> None:
    assert keys(abc.range(b"a")) == [b"a"]
    assert keys(abc.range(b"a/")) == []
    assert keys(abc.range(b"a/", prefix_end(b"a/"))) == [b"a/1", b"a/2"]
    assert keys(abc.range(b"a/2", b"\0")) == [b"a/2", b"b", b"c"]
    assert keys(abc.range(b"\0", b"\0")) == [b"a", b"a/1", b"a/2", b"b", b"c"]
    assert keys(abc.range(b"b", b"a")) == []  # end before start: nothing
    with pytest.raises(InvalidArgument, match="key is not provided"):
        abc.range(b"")


def test_limit_count_and_more(abc: KVStore) -> None:
    r = abc.range(b"a", b"\0", limit=2)
    assert (keys(r), r.count, r.more) == ([b"a", b"a/1"], 5, True)
    r = abc.range(b"a", b"\0", limit=5)
    assert (r.count, r.more) == (5, False)
    r = abc.range(b"a", b"\0", count_only=True)
    assert (r.kvs, r.count, r.more) == ([], 5, False)
    r = abc.range(b"a", b"\0", keys_only=True, limit=1)
    assert r.kvs == [KeyValue(b"a", 2, 2, 1, b"", 0)]


def test_sort_orders_and_targets(abc: KVStore) -> None:
    put(abc, b"b", b"B2")  # b: version 2, mod 7
    desc = abc.range(b"a", b"\0", sort_order=SortOrder.DESCEND)
    assert keys(desc) == [b"c", b"b", b"a/2", b"a/1", b"a"]
    by_mod = abc.range(b"a", b"\0", sort_target=SortTarget.MOD)  # target alone: ascending
    assert keys(by_mod) == [b"a", b"a/1", b"a/2", b"c", b"b"]
    by_version = abc.range(b"a", b"\0", sort_target=SortTarget.VERSION,
                           sort_order=SortOrder.DESCEND, limit=2)
    assert keys(by_version) == [b"b", b"a"] and by_version.more  # ties stay in key order
    by_value = abc.range(b"a", b"\0", sort_target=SortTarget.VALUE, sort_order=SortOrder.ASCEND)
    assert [kv.value for kv in by_value.kvs] == [b"A", b"A/1", b"A/2", b"B2", b"C"]
    by_create = abc.range(b"a", b"\0", sort_target=SortTarget.CREATE,
                          sort_order=SortOrder.DESCEND)
    assert keys(by_create) == [b"c", b"b", b"a/2", b"a/1", b"a"]


def test_min_max_filters_apply_after_count(abc: KVStore) -> None:
    put(abc, b"a", b"again")  # a: create 2, mod 7
    r = abc.range(b"a", b"\0", min_mod_revision=5)
    assert keys(r) == [b"a", b"b", b"c"] and r.count == 5  # etcd: count ignores filters
    assert keys(abc.range(b"a", b"\0", max_mod_revision=4)) == [b"a/1", b"a/2"]
    assert keys(abc.range(b"a", b"\0", min_create_revision=4, max_create_revision=5)) == [
        b"a/2", b"b"]
    r = abc.range(b"a", b"\0", min_mod_revision=5, limit=2)
    assert keys(r) == [b"a", b"b"] and r.more


def test_single_key_read_is_a_dict_lookup_not_a_scan(abc: KVStore) -> None:
    for i in range(2000):
        put(abc, b"k%05d" % i)
    calls = 0
    live = abc._live
    original = live.bisect_left

    def counting(key: bytes) -> int:
        nonlocal calls
        calls += 1
        return original(key)

    live.bisect_left = counting  # type: ignore[method-assign]
    assert keys(abc.range(b"k01000")) == [b"k01000"]
    assert calls == 0


# -- the past and compaction --------------------------------------------------------------------
def test_reads_at_past_revisions(abc: KVStore) -> None:
    put(abc, b"a", b"new")  # 7
    abc.execute(DeleteRange(b"a/", prefix_end(b"a/")))  # 8
    assert keys(abc.range(b"a", b"\0", revision=3)) == [b"a", b"a/1"]
    assert keys(abc.range(b"a", b"\0", revision=7)) == [b"a", b"a/1", b"a/2", b"b", b"c"]
    assert keys(abc.range(b"a", b"\0")) == [b"a", b"b", b"c"]
    assert abc.range(b"a", revision=6).kvs[0].value == b"A"
    r = abc.range(b"a", b"\0", revision=7, limit=2)
    assert (r.count, r.more, r.revision) == (5, True, 8)  # the header is the current revision
    assert abc.range(b"a", b"\0", revision=1).count == 0
    with pytest.raises(FutureRevisionError):
        abc.range(b"a", revision=9)
    with pytest.raises(FutureRevisionError):
        abc.get(b"a", revision=9)


def test_compaction_keeps_the_latest_version_and_drops_the_rest(abc: KVStore) -> None:
    put(abc, b"a", b"new")  # 7
    abc.execute(DeleteRange(b"b"))  # 8
    put(abc, b"c", b"C2")  # 9
    assert abc.execute(Compact(8)) == CompactResult(9)
    assert (abc.compact_revision, abc.oldest_revision) == (8, 9)
    # Reading at the compact revision itself still works (etcd), below it does not.
    assert keys(abc.range(b"a", b"\0", revision=8)) == [b"a", b"a/1", b"a/2", b"c"]
    assert abc.get(b"c", revision=8) == KeyValue(b"c", 6, 6, 1, b"C", 0)
    with pytest.raises(CompactedError) as info:
        abc.range(b"a", revision=7)
    assert info.value.compact_revision == 8
    # Only what is needed remains: b's tombstone and a's and c's old versions are gone.
    assert b"b" not in abc._history
    assert [kv.mod_revision for kv in abc._history[b"a"]] == [7]
    assert [kv.mod_revision for kv in abc._history[b"c"]] == [6, 9]


def test_compaction_errors_are_results() -> None:
    store = KVStore()
    put(store, b"a")
    put(store, b"a")
    future = store.execute(Compact(4))
    assert isinstance(future, ErrorResult) and future.code == ErrorCode.FUTURE_REVISION
    assert "future revision" in future.message
    assert store.execute(Compact(2)) == CompactResult(3)
    again = store.execute(Compact(2))
    assert isinstance(again, ErrorResult) and again.code == ErrorCode.COMPACTED
    assert "has been compacted" in again.message
    exc = again.to_exception()
    assert isinstance(exc, CompactedError) and exc.compact_revision == 2
    assert store.execute(Compact(3)) == CompactResult(3)


def test_compaction_forgets_deleted_keys_entirely() -> None:
    store = KVStore()
    put(store, b"gone")
    store.execute(DeleteRange(b"gone"))
    put(store, b"kept")
    store.execute(Compact(store.revision))
    assert store._history.keys() == {b"kept"}
    assert list(store._dead) == []
    assert not store._dirty
    put(store, b"gone")  # re-created from scratch
    assert store.get(b"gone") == KeyValue(b"gone", 5, 5, 1, b"v", 0)


def test_retention_target() -> None:
    store = KVStore()
    for _ in range(10):
        put(store, b"a")
    assert store.revision == 11
    assert store.retention_target(20) is None
    assert store.retention_target(4) == 7
    store.execute(Compact(7))
    assert store.retention_target(4) is None
    assert store.retention_target(0) == 11
    with pytest.raises(ValueError):
        store.retention_target(-1)
