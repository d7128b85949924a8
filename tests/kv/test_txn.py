"""Transactions: etcd's compare semantics, branch choice, atomicity and the duplicate-key rule."""

from __future__ import annotations

import pytest

from confer.kv import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRange,
    DeleteResult,
    DuplicateKey,
    ErrorCode,
    ErrorResult,
    KeyValue,
    KVStore,
    LeaseGrant,
    Put,
    PutResult,
    RangeOp,
    RangeResult,
    TooManyOps,
    Txn,
    TxnResult,
    validate_txn,
)

T, R = CompareTarget, CompareResult


@pytest.fixture
def store() -> KVStore:
    s = KVStore()
    s.execute(LeaseGrant(60, 3))  # no revision
    s.execute(Put(b"a", b"10", lease=3))  # 2
    s.execute(Put(b"b", b"20"))  # 3
    s.execute(Put(b"b", b"21"))  # 4: b version 2, create 3, mod 4
    return s


def holds(store: KVStore, *compares: Compare) -> bool:
    result = store.execute(Txn(list(compares), [], []))
    assert isinstance(result, TxnResult), result
    return result.succeeded


@pytest.mark.parametrize(("target", "value", "expect"), [
    # (target, value, [EQUAL, NOT_EQUAL, GREATER, LESS]) for key b: v2, create 3, mod 4
    (T.VERSION, 2, [True, False, False, False]),
    (T.VERSION, 1, [False, True, True, False]),
    (T.CREATE, 3, [True, False, False, False]),
    (T.CREATE, 5, [False, True, False, True]),
    (T.MOD, 4, [True, False, False, False]),
    (T.MOD, 3, [False, True, True, False]),
    (T.VALUE, b"21", [True, False, False, False]),
    (T.VALUE, b"2", [False, True, True, False]),
    (T.VALUE, b"3", [False, True, False, True]),
    (T.LEASE, 0, [True, False, False, False]),
])
def test_each_target_and_result(store: KVStore, target: T, value: object,
                                expect: list[bool]) -> None:
    got = [holds(store, Compare(b"b", target=target, result=r, value=value))  # type: ignore
           for r in (R.EQUAL, R.NOT_EQUAL, R.GREATER, R.LESS)]
    assert got == expect


def test_missing_key_compares_as_zero_but_value_compares_fail(store: KVStore) -> None:
    assert holds(store, Compare(b"zz", target=T.VERSION, result=R.EQUAL, value=0))
    assert holds(store, Compare(b"zz", target=T.CREATE, result=R.EQUAL, value=0))
    assert holds(store, Compare(b"zz", target=T.MOD, result=R.LESS, value=1))
    assert holds(store, Compare(b"zz", target=T.LEASE, result=R.EQUAL, value=0))
    for r in R:
        assert not holds(store, Compare(b"zz", target=T.VALUE, result=r, value=b""))
        assert not holds(store, Compare(b"zz", target=T.VALUE, result=r, value=b"x"))


def test_range_compares_need_every_key(store: KVStore) -> None:
    assert holds(store, Compare(b"a", b"c", target=T.VERSION, result=R.GREATER, value=0))
    assert not holds(store, Compare(b"a", b"c", target=T.VERSION, result=R.GREATER, value=1))
    assert holds(store, Compare(b"a", b"\0", target=T.MOD, result=R.LESS, value=5))
    assert holds(store, Compare(b"a", b"c", target=T.LEASE, result=R.NOT_EQUAL, value=9))
    # An empty range behaves like a missing key.
    assert holds(store, Compare(b"x", b"y", target=T.VERSION, result=R.EQUAL, value=0))
    assert not holds(store, Compare(b"x", b"y", target=T.VALUE, result=R.NOT_EQUAL, value=b""))
    assert holds(store, Compare(b"a", b"c", target=T.VALUE, result=R.GREATER, value=b"1"))
    # All compares must hold.
    assert not holds(store, Compare(b"a", target=T.VERSION, result=R.EQUAL, value=1),
                     Compare(b"b", target=T.VERSION, result=R.EQUAL, value=1))


def test_a_txn_takes_one_revision_for_all_its_writes(store: KVStore) -> None:
    txn = Txn([Compare(b"a", target=T.VALUE, result=R.EQUAL, value=b"10")],
              [Put(b"c", b"1"), DeleteRange(b"a", prev_kv=True), Put(b"b", b"22", prev_kv=True),
               RangeOp(b"a", b"\0")],
              [Put(b"never", b"")])
    result = store.execute(txn)
    assert isinstance(result, TxnResult) and result.succeeded and result.revision == 5
    put_c, del_a, put_b, read = result.responses
    assert put_c == PutResult(5, None)
    assert del_a == DeleteResult(5, 1, [KeyValue(b"a", 2, 2, 1, b"10", 3)])
    assert put_b == PutResult(5, KeyValue(b"b", 3, 4, 2, b"21", 0))
    # Reads inside the txn see its earlier writes.
    assert isinstance(read, RangeResult)
    assert [(kv.key, kv.value) for kv in read.kvs] == [(b"b", b"22"), (b"c", b"1")]
    # One revision, events in operation order.
    assert store.revision == 5
    assert [(e.type.name, e.kv.key) for e in store.events_at(5)] == [
        ("PUT", b"c"), ("DELETE", b"a"), ("PUT", b"b")]


def test_failure_branch_and_read_only_txns_take_no_revision(store: KVStore) -> None:
    txn = Txn([Compare(b"a", target=T.VERSION, result=R.EQUAL, value=9)],
              [Put(b"x", b"")], [RangeOp(b"a"), DeleteRange(b"nothing")])
    result = store.execute(txn)
    assert isinstance(result, TxnResult) and not result.succeeded
    assert result.revision == 4 and store.revision == 4
    assert isinstance(result.responses[0], RangeResult)
    assert result.responses[1] == DeleteResult(4, 0, [])


def test_txn_range_at_an_explicit_revision_ignores_its_own_writes(store: KVStore) -> None:
    result = store.execute(Txn([], [Put(b"b", b"new"), RangeOp(b"b", revision=4)], []))
    assert isinstance(result, TxnResult)
    assert result.responses[1].kvs[0].value == b"21"  # type: ignore[union-attr]


def test_nested_txn_compares_see_the_state_before_the_txn(store: KVStore) -> None:
    # etcd evaluates every compare before running any operation: the nested compare sees
    # b's version 2 although the outer branch already wrote b.
    inner = Txn([Compare(b"b", target=T.VERSION, result=R.EQUAL, value=2)],
                [Put(b"inner-success", b"")], [Put(b"inner-failure", b"")])
    outer = Txn([], [Put(b"b", b"x"), inner], [])
    result = store.execute(outer)
    assert isinstance(result, TxnResult)
    nested = result.responses[1]
    assert isinstance(nested, TxnResult) and nested.succeeded and nested.revision == 5
    assert store.get(b"inner-success") is not None and store.get(b"inner-failure") is None


def test_a_failing_txn_changes_nothing(store: KVStore) -> None:
    before = store.snapshot()
    bad = [
        Txn([], [Put(b"new", b"1"), Put(b"missing", ignore_value=True)], []),
        Txn([], [Put(b"new", b"1"), RangeOp(b"a", revision=99)], []),
        Txn([], [Put(b"new", b"1"), Txn([], [Put(b"missing", ignore_lease=True)], [])], []),
    ]
    codes = []
    for txn in bad:
        result = store.execute(txn)
        assert isinstance(result, ErrorResult)
        codes.append(result.code)
    assert codes == [ErrorCode.KEY_NOT_FOUND, ErrorCode.FUTURE_REVISION, ErrorCode.KEY_NOT_FOUND]
    assert store.snapshot() == before


def test_txn_range_below_compaction_fails(store: KVStore) -> None:
    from confer.kv import Compact
    store.execute(Compact(3))
    result = store.execute(Txn([], [RangeOp(b"a", revision=2)], []))
    assert isinstance(result, ErrorResult) and result.code == ErrorCode.COMPACTED
    assert result.compact_revision == 3


# -- the duplicate-key rule ---------------------------------------------------------------------
DUPLICATES = [
    [Put(b"k"), Put(b"k")],
    [Put(b"k"), DeleteRange(b"k")],
    [DeleteRange(b"a", b"z"), Put(b"k")],
    [DeleteRange(b"a", b"\0"), Put(b"k")],
    [Put(b"k"), Txn([], [Put(b"k")], [])],
    [Txn([], [Put(b"k")], []), Txn([], [], [Put(b"k")])],
    [DeleteRange(b"k"), Txn([], [Put(b"k")], [])],
]
ALLOWED = [
    [Put(b"k"), Put(b"l")],
    [DeleteRange(b"a", b"z"), DeleteRange(b"k")],  # overlapping deletes are fine
    [Txn([], [Put(b"k")], [Put(b"k")])],  # then/else of one txn are exclusive
    [DeleteRange(b"a", b"k"), Put(b"k")],  # the range end is exclusive
    [Put(b"k"), RangeOp(b"k")],
]


@pytest.mark.parametrize("ops", DUPLICATES)
def test_duplicate_keys_are_rejected_at_proposal_and_at_apply(ops: list) -> None:
    with pytest.raises(DuplicateKey, match="duplicate key"):
        validate_txn(Txn([], ops, []))
    with pytest.raises(DuplicateKey):
        validate_txn(Txn([], [], ops))
    store = KVStore()
    store.execute(Put(b"k"))
    result = store.execute(Txn([], ops, []))
    assert isinstance(result, ErrorResult) and result.code == ErrorCode.DUPLICATE_KEY
    assert store.revision == 2


@pytest.mark.parametrize("ops", ALLOWED)
def test_distinct_writes_are_allowed(ops: list) -> None:
    validate_txn(Txn([], ops, ops))
    store = KVStore()
    store.execute(Put(b"k"))
    assert isinstance(store.execute(Txn([], ops, [])), TxnResult)


def test_apply_refuses_a_key_written_twice_on_the_path_taken() -> None:
    # etcd's static check misses a put in one nested txn and a delete of the same key in a
    # later one; the store refuses it when that path is taken, so a key changes at most once
    # per revision.
    txn = Txn([], [Txn([], [Put(b"k", b"1")], []), Txn([], [DeleteRange(b"k")], [])], [])
    validate_txn(txn)
    store = KVStore()
    result = store.execute(txn)
    assert isinstance(result, ErrorResult) and result.code == ErrorCode.DUPLICATE_KEY
    assert store.revision == 1


def test_too_many_ops_and_bad_compares_are_caught_at_proposal() -> None:
    with pytest.raises(TooManyOps):
        validate_txn(Txn([], [Put(b"k%d" % i) for i in range(129)], []))
    validate_txn(Txn([], [Put(b"k%d" % i) for i in range(129)], []), max_ops=None)
    with pytest.raises(TooManyOps):  # the budget shrinks with nesting, as in etcd
        validate_txn(Txn([], [Put(b"x"), Txn([], [Put(b"k%d" % i) for i in range(128)])], []))
    with pytest.raises(Exception, match="key is not provided"):
        validate_txn(Txn([Compare(b"", target=T.VERSION, value=0)], [], []))
    with pytest.raises(Exception, match="compares against int"):
        validate_txn(Txn([Compare(b"k", target=T.VERSION, value=b"1")], [], []))
    with pytest.raises(Exception, match="compares against bytes"):
        validate_txn(Txn([Compare(b"k", target=T.VALUE, value=1)], [], []))
