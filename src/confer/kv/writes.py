"""Writes: how the store applies a put, a delete and a transaction (etcd's compare-then-ops).

Each ``apply_*`` function checks its command against the state, changes nothing when the
check fails (it returns an :class:`~confer.kv.types.ErrorResult`), and otherwise makes every
change of the command under one new revision.
"""

from __future__ import annotations

from collections.abc import Iterator
from operator import attrgetter
from typing import cast

from confer.kv import keyrange, reads
from confer.kv.commands import (
    Compare,
    DeleteRange,
    Put,
    RangeOp,
    Txn,
    check_delete,
    hits,
    needs_space,
    validate_txn,
)
from confer.kv.errors import (
    DuplicateKey,
    ErrorCode,
    InvalidArgument,
    KeyNotFound,
    KVError,
    NoSpace,
    lease_not_found,
)
from confer.kv.state import PUT, VERSION_OVERHEAD, Change, StoreState, commit, notify
from confer.kv.types import (
    CompareResult,
    CompareTarget,
    DeleteResult,
    ErrorResult,
    KeyValue,
    OpResult,
    PutResult,
    TxnResult,
    new_event,
    new_kv,
    new_put_result,
)

_COMPARE_FIELDS = {
    CompareTarget.VERSION: attrgetter("version"),
    CompareTarget.CREATE: attrgetter("create_revision"),
    CompareTarget.MOD: attrgetter("mod_revision"),
    CompareTarget.VALUE: attrgetter("value"),
    CompareTarget.LEASE: attrgetter("lease"),
}
_ABSENT = KeyValue(b"", 0, 0, 0, b"", 0)
"""What a compare sees for a missing key: every field zero (etcd compares an empty KeyValue)."""


def apply_put(st: StoreState, key: bytes, value: bytes, lease: int, flags: int
               ) -> PutResult | ErrorResult:
    """Put ``key`` (the hot path: no :class:`Put` object)."""
    # flags: 1 prev_kv, 2 ignore_value, 4 ignore_lease (the wire encoding's). The types
    # are already checked, by the decoder or by execute().
    if not key:
        return ErrorResult(ErrorCode.INVALID_ARGUMENT, "put: key is not provided", st._rev)
    if st._nospace:
        return ErrorResult.of(no_space(), st._rev)
    if flags & 6:
        error = _check_ignore_flags(st, key, value, lease, flags)
        if error is not None:
            return ErrorResult.of(error, st._rev)
    if lease and lease not in st._leases:
        return ErrorResult.of(lease_not_found(lease, f"put {key!r}"), st._rev)
    rev = st._rev + 1
    prev, kv = _put(st, key, value, lease, flags, rev)
    # commit() for one put, inlined (hot path).
    st._rev = rev
    st._log.append(key)
    if st._listeners:
        notify(st, (new_event(PUT, kv, prev),), rev)
    return new_put_result(rev, prev if flags & 1 else None)


def no_space() -> NoSpace:
    """The refusal of a write that needs space while a NOSPACE alarm is active."""
    return NoSpace("database space exceeded: a NOSPACE alarm is active; free space (delete, "
                   "compact), then disarm it (docs/operations.md)")


def _check_ignore_flags(st: StoreState, key: bytes, value: bytes, lease: int, flags: int
                        ) -> KVError | None:
    if flags & 2 and value:
        return InvalidArgument(f"put {key!r}: value is provided with ignore_value")
    if flags & 4 and lease:
        return InvalidArgument(f"put {key!r}: lease is provided with ignore_lease")
    if key not in st._live:
        return KeyNotFound(f"put {key!r}: key not found (ignore_value/ignore_lease)")
    return None


def _put(st: StoreState, key: bytes, value: bytes, lease: int, flags: int, rev: int
         ) -> tuple[KeyValue | None, KeyValue]:
    live = st._live
    prev = live.get(key)
    if prev is None:
        kv = new_kv(key, rev, rev, 1, value, lease)
        st._size += len(key) + len(value) + VERSION_OVERHEAD
        live[key] = kv
        hist = st._history.get(key)
        if hist is None:
            st._history[key] = [kv]
        else:  # re-created while its tombstone is still retained
            hist.append(kv)
            st._dead.remove(key)
            st._dirty.add(key)
    else:
        if flags & 6:  # the key exists: checked before
            if flags & 2:
                value = prev.value
            if flags & 4:
                lease = prev.lease
        kv = new_kv(key, prev.create_revision, rev, prev.version + 1, value, lease)
        st._size += len(key) + len(value) + VERSION_OVERHEAD
        # The key is already in the sorted index: set the dict entry directly and skip
        # SortedDict's own membership test (hot path).
        dict.__setitem__(live, key, kv)  # type: ignore[index]  # mypy misreads an unbound dict.__setitem__
        st._history[key].append(kv)
        st._dirty.add(key)
        if prev.lease and prev.lease != lease:
            _detach_lease(st, prev.lease, key)
    if lease and (prev is None or prev.lease != lease):
        st._lease_keys.setdefault(lease, set()).add(key)
    return prev, kv


def apply_delete(st: StoreState, op: DeleteRange) -> DeleteResult | ErrorResult:
    """Delete the live keys of a range, all in one revision."""
    try:
        check_delete(op)
    except KVError as e:
        return ErrorResult.of(e, st._rev)
    keys = _live_keys_in(st, op.key, op.range_end)
    if not keys:  # deleting nothing is not a change: no new revision (etcd)
        return DeleteResult(st._rev, 0, [])
    rev = st._rev + 1
    changes: list[Change] = []
    prevs = [delete(st, k, rev, changes) for k in keys]
    commit(st, rev, changes)
    return DeleteResult(rev, len(prevs), prevs if op.prev_kv else [])


def delete(st: StoreState, key: bytes, rev: int, changes: list[Change]) -> KeyValue:
    """Delete the live ``key`` at ``rev`` (appending the change); return its last version."""
    prev: KeyValue = st._live.pop(key)
    tomb = new_kv(key, 0, rev, 0, b"", 0)
    st._size += len(key) + VERSION_OVERHEAD
    st._history[key].append(tomb)
    st._dead.add(key)
    st._dirty.add(key)
    if prev.lease:
        _detach_lease(st, prev.lease, key)
    changes.append((tomb, prev))
    return prev


def _detach_lease(st: StoreState, lease: int, key: bytes) -> None:
    keys = st._lease_keys.get(lease)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del st._lease_keys[lease]


def _live_keys_in(st: StoreState, key: bytes, range_end: bytes) -> list[bytes]:
    if not range_end:
        return [key] if key in st._live else []
    lo, hi = keyrange.bounds(key, range_end)
    if hi is not None and hi <= lo:
        return []
    return list(st._live.irange(lo, hi, inclusive=(True, False)))


def _live_count(st: StoreState, key: bytes, range_end: bytes) -> int:
    if not range_end:
        return int(key in st._live)
    live = st._live
    lo = live.bisect_left(key)
    hi = len(live) if range_end == keyrange.FROM_KEY else live.bisect_left(range_end)
    return max(0, hi - lo)


def apply_txn(st: StoreState, txn: Txn) -> TxnResult | ErrorResult:
    """Run a transaction: its compares, then the operations of the branch taken."""
    # As etcd: evaluate every compare (nested ones too) against the state before the txn,
    # check the chosen operations, and only then execute them, so a failing txn changes
    # nothing.
    try:
        validate_txn(txn, max_ops=None)
        if st._nospace and needs_space(txn):
            raise no_space()
        path: list[bool] = []
        _choose(st, txn, path)
        mutates = _check_path(st, txn, iter(path))
    except KVError as e:
        return ErrorResult.of(e, st._rev)
    rev = st._rev + 1 if mutates else st._rev
    changes: list[Change] = []
    result = _exec_txn(st, txn, iter(path), rev, changes)
    assert bool(changes) == mutates, "txn mutation forecast was wrong"
    if changes:
        commit(st, rev, changes)
    return result


def _choose(st: StoreState, txn: Txn, path: list[bool]) -> None:
    """etcd's ``compareToPath``: the branch taken by this txn and, depth first, by each
    nested txn in the taken branch."""
    ok = all(_compare(st, c) for c in txn.compare)
    path.append(ok)
    for op in txn.success if ok else txn.failure:
        if type(op) is Txn:
            _choose(st, op, path)


def _compare(st: StoreState, c: Compare) -> bool:
    """etcd's ``applyCompare``: true if every key in the range satisfies the compare. A
    missing key compares as all zeros, except that a VALUE compare on no key fails."""
    if not c.range_end:
        kv = st._live.get(c.key)
        kvs = [kv] if kv is not None else []
    else:
        lo, hi = keyrange.bounds(c.key, c.range_end)
        kvs = [] if hi is not None and hi <= lo else [
            st._live[k] for k in st._live.irange(lo, hi, inclusive=(True, False))]
    if not kvs:
        if c.target == CompareTarget.VALUE:
            return False
        kvs = [_ABSENT]
    get = _COMPARE_FIELDS[c.target]
    want = c.value
    r = c.result
    for kv in kvs:
        have = get(kv)
        if r == CompareResult.EQUAL:
            ok = have == want
        elif r == CompareResult.NOT_EQUAL:
            ok = have != want
        elif r == CompareResult.GREATER:
            ok = have > want
        else:
            ok = have < want
        if not ok:
            return False
    return True


def _check_path(st: StoreState, txn: Txn, path: Iterator[bool]) -> bool:
    """Check the operations that will run; return whether any will change the store.

    Beyond etcd's static duplicate check, this refuses any key written twice on the path
    actually taken (etcd's check misses a put in one nested txn and a delete of the same
    key in a later one): one key changes at most once per revision, which the history,
    the event log and snapshots rely on.
    """
    puts: set[bytes] = set()
    dels: list[tuple[bytes, bytes | None]] = []
    mutates = False

    def walk(t: Txn) -> None:
        nonlocal mutates
        for op in t.success if next(path) else t.failure:
            if type(op) is Put:
                if op.key in puts or hits(dels, op.key):
                    raise DuplicateKey(f"duplicate key given in txn request: {op.key!r}")
                puts.add(op.key)
                if (op.ignore_value or op.ignore_lease) and op.key not in st._live:
                    raise KeyNotFound(f"put {op.key!r}: key not found "
                                      "(ignore_value/ignore_lease)")
                if op.lease and op.lease not in st._leases:
                    raise lease_not_found(op.lease, f"put {op.key!r} in a txn")
                mutates = True
            elif type(op) is DeleteRange:
                lo, hi = keyrange.bounds(op.key, op.range_end)
                if any(lo <= k and (hi is None or k < hi) for k in puts):
                    raise DuplicateKey(f"duplicate key given in txn request: delete "
                                       f"{op.key!r} covers a key put in the same txn")
                dels.append((lo, hi))
                # No put of this txn lands in the range, so it deletes something iff a
                # key is live in it now.
                if not mutates and _live_count(st, op.key, op.range_end):
                    mutates = True
            elif type(op) is RangeOp:
                reads.check_revision(st, op.revision)
            else:
                walk(cast(Txn, op))

    walk(txn)
    return mutates


def _exec_txn(st: StoreState, txn: Txn, path: Iterator[bool], rev: int, changes: list[Change]
              ) -> TxnResult:
    ok = next(path)
    responses: list[OpResult] = []
    for op in txn.success if ok else txn.failure:
        if type(op) is Put:
            flags = op.prev_kv | (op.ignore_value << 1) | (op.ignore_lease << 2)
            prev, kv = _put(st, op.key, op.value, op.lease, flags, rev)
            changes.append((kv, prev))
            responses.append(PutResult(rev, prev if op.prev_kv else None))
        elif type(op) is DeleteRange:
            prevs = [delete(st, k, rev, changes)
                     for k in _live_keys_in(st, op.key, op.range_end)]
            responses.append(DeleteResult(rev, len(prevs), prevs if op.prev_kv else []))
        elif type(op) is RangeOp:
            # Reads see the txn's earlier writes (etcd), and report the txn's revision.
            responses.append(reads.range_op(st, op, pending=bool(changes), header=rev))
        else:
            responses.append(_exec_txn(st, cast(Txn, op), path, rev, changes))
    return TxnResult(rev, ok, responses)
