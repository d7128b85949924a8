"""The MVCC key-value store: Confer's replicated state machine, modelled on etcd's ``mvcc``.

Pure and deterministic: no asyncio, I/O, clock or randomness, and nothing that depends on hash
order, so every replica that applies the same entries holds the same state and snapshots to the
same bytes.

Data structures (n live keys, h retained versions of a key, r retained revisions):

- ``_live``: SortedDict key -> latest KeyValue of every live key. Current reads use only this:
  a single key is a dict lookup, a range is two bisections plus the keys returned,
  O(log n + k).
- ``_history``: dict key -> list of retained versions (tombstones included, in revision order)
  of every key with retained history: the live keys and ``_dead``, the sorted deleted keys
  whose tombstone is still retained. Past reads walk both sorted key sets in step and bisect
  each history, O(log h) per key. (A new key thus costs one sorted insertion, not two.)
- ``_log``: the keys each revision changed, in order, from ``compact_revision + 1`` to
  ``revision`` (one ``bytes`` for a one-key revision, else a tuple; the empty store's revision 1
  has ``()``). Revisions are dense, so revision ``r`` is at index ``r - compact_revision - 1``.
  Events are not stored: the event of key k at revision r is k's version at r (a put, or a
  tombstone for a delete) and its ``prev_kv`` the version before, both in the history. This
  keeps one long-lived object per write instead of three, which matters to Python's cyclic
  garbage collector as much as to memory.
- ``_dirty``: keys whose history a compaction may shrink (more than one version, or a
  tombstone), so compacting costs O(keys changed since), not O(n).
- ``_leases``: lease id -> TTL of every granted lease, and ``_lease_keys``: lease id -> its live
  keys, so revoking a lease deletes its keys without a scan. Only TTLs are state: deadlines
  are kept by the leader, on its own clock, outside the state machine.
"""

from __future__ import annotations

import heapq
import logging
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from operator import attrgetter

import msgpack
from sortedcontainers import SortedDict, SortedList

from confer.kv import keyrange
from confer.kv.commands import (
    Command,
    Compact,
    Compare,
    DeleteRange,
    LeaseGrant,
    LeaseRevoke,
    Put,
    RangeOp,
    Txn,
    check_delete,
    check_lease_grant,
    check_lease_revoke,
    check_put,
    check_range,
    command_from_raw,
    hits,
    put_fields,
    unpack_command,
    validate_txn,
)
from confer.kv.errors import (
    CompactedError,
    DuplicateKey,
    ErrorCode,
    FutureRevisionError,
    InvalidArgument,
    KeyNotFound,
    KVError,
    LeaseExists,
    lease_not_found,
)
from confer.kv.types import (
    CompactResult,
    CompareResult,
    CompareTarget,
    DeleteResult,
    ErrorResult,
    Event,
    EventType,
    KeyValue,
    LeaseGrantResult,
    LeaseInfo,
    LeaseRevokeResult,
    OpResult,
    PutResult,
    RangeResult,
    Result,
    SortOrder,
    SortTarget,
    TxnResult,
    new_event,
    new_kv,
    new_put_result,
    new_range_result,
)
from confer.raft.types import Entry

log = logging.getLogger("confer.kv")

SNAPSHOT_VERSION = 2
"""2 added the lease table; version 1 snapshots (no leases) are still read."""
_MOD = attrgetter("mod_revision")
_PUT, _DELETE = EventType.PUT, EventType.DELETE
_SORT_KEYS = {
    SortTarget.KEY: attrgetter("key"),
    SortTarget.VERSION: attrgetter("version"),
    SortTarget.CREATE: attrgetter("create_revision"),
    SortTarget.MOD: attrgetter("mod_revision"),
    SortTarget.VALUE: attrgetter("value"),
}
_COMPARE_FIELDS = {
    CompareTarget.VERSION: attrgetter("version"),
    CompareTarget.CREATE: attrgetter("create_revision"),
    CompareTarget.MOD: attrgetter("mod_revision"),
    CompareTarget.VALUE: attrgetter("value"),
    CompareTarget.LEASE: attrgetter("lease"),
}
_ABSENT = KeyValue(b"", 0, 0, 0, b"", 0)
"""What a compare sees for a missing key: every field zero (etcd compares an empty KeyValue)."""

class SnapshotAborted(Exception):
    """An incremental snapshot (:meth:`KVStore.snapshot_steps`) was overtaken by a compaction
    or a restore, which rewrite the history it was reading."""


SNAPSHOT_STEP_KEYS = 2000
"""Keys serialised per step of :meth:`KVStore.snapshot_steps` (a few milliseconds' work)."""

EventListener = Callable[[tuple[Event, ...]], None]
LeaseListener = Callable[[int, int], None]
"""Called with ``(lease id, ttl)`` after a grant and ``(lease id, 0)`` after a revocation."""
_Change = tuple[KeyValue, KeyValue | None]  # (new version or tombstone, previous version)


def _event(kv: KeyValue, prev: KeyValue | None) -> Event:
    return new_event(_PUT if kv.version else _DELETE, kv, prev)


def _version_at(hist: list[KeyValue] | None, rev: int) -> KeyValue | None:
    """The key's live version at ``rev`` from its history, or None (absent or deleted)."""
    if not hist:
        return None
    kv = hist[-1]
    if kv.mod_revision > rev:
        i = bisect_right(hist, rev, key=_MOD)
        if i == 0:
            return None
        kv = hist[i - 1]
    return None if kv.version == 0 else kv


class KVStore:
    """An etcd-style MVCC store and Confer's :class:`~confer.raft.fsm.StateMachine`.

    Writes come only through :meth:`apply` (a Raft entry) or :meth:`execute` (a decoded
    command); both return a result and never raise for bad input. Reads (:meth:`range`,
    :meth:`get`, :meth:`children`, :meth:`events_since`) raise :class:`KVError` subclasses.
    """

    def __init__(self) -> None:
        self._listeners: list[EventListener] = []
        self._restore_listeners: list[Callable[[int], None]] = []
        self._lease_listeners: list[LeaseListener] = []
        self._generation = 0  # bumped when retained history is rewritten (compaction, restore)
        self._reset()

    def _reset(self) -> None:
        self._generation += 1
        self._live: SortedDict = SortedDict()
        self._live_keys = self._live.keys()
        self._live_values = self._live.values()
        self._history: dict[bytes, list[KeyValue]] = {}
        self._dead: SortedList = SortedList()
        self._dirty: set[bytes] = set()
        self._log: list[bytes | tuple[bytes, ...]] = [()]
        self._rev = 1  # etcd: an empty store is at revision 1; the first write makes it 2
        self._compact = 0
        self._lease_keys: dict[int, set[bytes]] = {}
        self._leases: dict[int, int] = {}  # lease id -> TTL in seconds
        self._last_lease_id = 0  # the last id the store picked for a grant of id 0
        self.applied_index = 0
        """Index of the last Raft entry given to :meth:`apply` (kept in snapshots)."""

    # -- state ------------------------------------------------------------------------------------
    @property
    def revision(self) -> int:
        """The current revision: that of the last change (1 for an empty store)."""
        return self._rev

    @property
    def compact_revision(self) -> int:
        """The revision of the last compaction (0 if none). Range reads at this revision or
        later are served; events are kept only for the revisions after it."""
        return self._compact

    @property
    def oldest_revision(self) -> int:
        """The oldest revision whose events are retained: ``compact_revision + 1``."""
        return self._compact + 1

    def __len__(self) -> int:
        """The number of live keys."""
        return len(self._live)

    def retention_target(self, keep_revisions: int) -> int | None:
        """The revision to compact to so that the last ``keep_revisions`` revisions stay
        readable, or None when that is already the case. The server proposes the
        ``Compact``; the store only does the arithmetic."""
        if keep_revisions < 0:
            raise ValueError("keep_revisions must be >= 0")
        target = self._rev - keep_revisions
        return target if target > self._compact else None

    def lease_keys(self, lease: int) -> list[bytes]:
        """The live keys attached to ``lease``, sorted."""
        return sorted(self._lease_keys.get(lease, ()))

    def lease_ttl(self, lease: int) -> int | None:
        """The TTL in seconds of a granted lease, or None if there is no such lease."""
        return self._leases.get(lease)

    def leases(self) -> list[LeaseInfo]:
        """Every granted lease, by id."""
        return [LeaseInfo(i, self._leases[i]) for i in sorted(self._leases)]

    # -- the StateMachine seam --------------------------------------------------------------------
    def apply(self, entry: Entry) -> Result:
        """Decode and execute one committed entry. Never raises for bad input: an
        undecodable or invalid command yields an :class:`ErrorResult` and changes nothing."""
        self.applied_index = entry.index
        try:
            raw = unpack_command(entry.data)
            fields = put_fields(raw)
            if fields is not None:  # the hot path: no Put object
                key, value, lease, flags = fields
                return self._apply_put(key, value, lease, flags)
            cmd = command_from_raw(raw)
        except Exception as e:  # whatever the payload, the replica must go on applying
            return ErrorResult(ErrorCode.BAD_COMMAND, str(e), self._rev)
        return self.execute(cmd)

    def execute(self, cmd: Command) -> Result:
        """Execute a decoded command (what :meth:`apply` does after decoding)."""
        t = type(cmd)
        if t is Put:
            try:
                check_put(cmd)
            except KVError as e:
                return ErrorResult.of(e, self._rev)
            flags = cmd.prev_kv | (cmd.ignore_value << 1) | (cmd.ignore_lease << 2)
            return self._apply_put(cmd.key, cmd.value, cmd.lease, flags)
        if t is DeleteRange:
            return self._apply_delete(cmd)
        if t is Txn:
            return self._apply_txn(cmd)
        if t is Compact:
            return self._apply_compact(cmd)
        if t is LeaseGrant:
            return self._apply_lease_grant(cmd)
        if t is LeaseRevoke:
            return self._apply_lease_revoke(cmd)
        return ErrorResult(ErrorCode.BAD_COMMAND, f"not a command: {t.__name__}", self._rev)

    # -- listeners --------------------------------------------------------------------------------
    def add_listener(self, callback: EventListener) -> None:
        """Call ``callback(events)`` after each new revision with that revision's events, in
        order. It runs inside :meth:`apply`: it must be quick and must not write to the store.
        An exception it raises is logged, not propagated (the state is already updated)."""
        self._listeners.append(callback)

    def remove_listener(self, callback: EventListener) -> None:
        self._listeners.remove(callback)

    def add_restore_listener(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(revision)`` after :meth:`restore` replaced the state: pushed events
        stopped at the old state, so watchers should catch up with :meth:`events_since`."""
        self._restore_listeners.append(callback)

    def add_lease_listener(self, callback: LeaseListener) -> None:
        """Call ``callback(lease, ttl)`` after a lease is granted, and ``callback(lease, 0)``
        after it is revoked (its keys' DELETE events have been pushed by then). Same rules as
        :meth:`add_listener`: quick, no writes, exceptions are logged. After :meth:`restore`
        only the restore listeners are called: compare :meth:`leases` with what you knew."""
        self._lease_listeners.append(callback)

    def _notify_lease(self, lease: int, ttl: int) -> None:
        for callback in self._lease_listeners:
            try:
                callback(lease, ttl)
            except Exception:
                log.exception("lease listener %r failed for lease %d", callback, lease)

    def _commit(self, rev: int, changes: list[_Change]) -> None:
        self._rev = rev
        if len(changes) == 1:
            self._log.append(changes[0][0].key)
        else:
            self._log.append(tuple(kv.key for kv, _ in changes))
        if self._listeners:
            self._notify(tuple(_event(kv, prev) for kv, prev in changes), rev)

    def _notify(self, events: tuple[Event, ...], rev: int) -> None:
        for callback in self._listeners:
            try:
                callback(events)
            except Exception:
                log.exception("kv listener %r failed at revision %d", callback, rev)

    # -- writes -----------------------------------------------------------------------------------
    def _apply_put(self, key: bytes, value: bytes, lease: int, flags: int
                   ) -> PutResult | ErrorResult:
        # flags: 1 prev_kv, 2 ignore_value, 4 ignore_lease (the wire encoding's). The types
        # are already checked, by the decoder or by execute().
        if not key:
            return ErrorResult(ErrorCode.INVALID_ARGUMENT, "put: key is not provided", self._rev)
        if flags & 6:
            error = self._check_ignore_flags(key, value, lease, flags)
            if error is not None:
                return ErrorResult.of(error, self._rev)
        if lease and lease not in self._leases:
            return ErrorResult.of(lease_not_found(lease, f"put {key!r}"), self._rev)
        rev = self._rev + 1
        prev, kv = self._put(key, value, lease, flags, rev)
        # _commit() for one put, inlined (hot path).
        self._rev = rev
        self._log.append(key)
        if self._listeners:
            self._notify((new_event(_PUT, kv, prev),), rev)
        return new_put_result(rev, prev if flags & 1 else None)

    def _check_ignore_flags(self, key: bytes, value: bytes, lease: int, flags: int
                            ) -> KVError | None:
        if flags & 2 and value:
            return InvalidArgument(f"put {key!r}: value is provided with ignore_value")
        if flags & 4 and lease:
            return InvalidArgument(f"put {key!r}: lease is provided with ignore_lease")
        if key not in self._live:
            return KeyNotFound(f"put {key!r}: key not found (ignore_value/ignore_lease)")
        return None

    def _put(self, key: bytes, value: bytes, lease: int, flags: int, rev: int
             ) -> tuple[KeyValue | None, KeyValue]:
        live = self._live
        prev = live.get(key)
        if prev is None:
            kv = new_kv(key, rev, rev, 1, value, lease)
            live[key] = kv
            hist = self._history.get(key)
            if hist is None:
                self._history[key] = [kv]
            else:  # re-created while its tombstone is still retained
                hist.append(kv)
                self._dead.remove(key)
                self._dirty.add(key)
        else:
            if flags & 6:  # the key exists: checked before
                if flags & 2:
                    value = prev.value
                if flags & 4:
                    lease = prev.lease
            kv = new_kv(key, prev.create_revision, rev, prev.version + 1, value, lease)
            # The key is already in the sorted index: set the dict entry directly and skip
            # SortedDict's own membership test (hot path).
            dict.__setitem__(live, key, kv)
            self._history[key].append(kv)
            self._dirty.add(key)
            if prev.lease and prev.lease != lease:
                self._detach_lease(prev.lease, key)
        if lease and (prev is None or prev.lease != lease):
            self._lease_keys.setdefault(lease, set()).add(key)
        return prev, kv

    def _apply_delete(self, op: DeleteRange) -> DeleteResult | ErrorResult:
        try:
            check_delete(op)
        except KVError as e:
            return ErrorResult.of(e, self._rev)
        keys = self._live_keys_in(op.key, op.range_end)
        if not keys:  # deleting nothing is not a change: no new revision (etcd)
            return DeleteResult(self._rev, 0, [])
        rev = self._rev + 1
        changes: list[_Change] = []
        prevs = [self._delete(k, rev, changes) for k in keys]
        self._commit(rev, changes)
        return DeleteResult(rev, len(prevs), prevs if op.prev_kv else [])

    def _delete(self, key: bytes, rev: int, changes: list[_Change]) -> KeyValue:
        prev: KeyValue = self._live.pop(key)
        tomb = new_kv(key, 0, rev, 0, b"", 0)
        self._history[key].append(tomb)
        self._dead.add(key)
        self._dirty.add(key)
        if prev.lease:
            self._detach_lease(prev.lease, key)
        changes.append((tomb, prev))
        return prev

    def _detach_lease(self, lease: int, key: bytes) -> None:
        keys = self._lease_keys.get(lease)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._lease_keys[lease]

    def _live_keys_in(self, key: bytes, range_end: bytes) -> list[bytes]:
        if not range_end:
            return [key] if key in self._live else []
        lo, hi = keyrange.bounds(key, range_end)
        if hi is not None and hi <= lo:
            return []
        return list(self._live.irange(lo, hi, inclusive=(True, False)))

    def _live_count(self, key: bytes, range_end: bytes) -> int:
        if not range_end:
            return int(key in self._live)
        live = self._live
        lo = live.bisect_left(key)
        hi = len(live) if range_end == keyrange.FROM_KEY else live.bisect_left(range_end)
        return max(0, hi - lo)

    # -- transactions -----------------------------------------------------------------------------
    def _apply_txn(self, txn: Txn) -> TxnResult | ErrorResult:
        # As etcd: evaluate every compare (nested ones too) against the state before the txn,
        # check the chosen operations, and only then execute them, so a failing txn changes
        # nothing.
        try:
            validate_txn(txn, max_ops=None)
            path: list[bool] = []
            self._choose(txn, path)
            mutates = self._check_path(txn, iter(path))
        except KVError as e:
            return ErrorResult.of(e, self._rev)
        rev = self._rev + 1 if mutates else self._rev
        changes: list[_Change] = []
        result = self._exec_txn(txn, iter(path), rev, changes)
        assert bool(changes) == mutates, "txn mutation forecast was wrong"
        if changes:
            self._commit(rev, changes)
        return result

    def _choose(self, txn: Txn, path: list[bool]) -> None:
        """etcd's ``compareToPath``: the branch taken by this txn and, depth first, by each
        nested txn in the taken branch."""
        ok = all(self._compare(c) for c in txn.compare)
        path.append(ok)
        for op in txn.success if ok else txn.failure:
            if type(op) is Txn:
                self._choose(op, path)

    def _compare(self, c: Compare) -> bool:
        """etcd's ``applyCompare``: true if every key in the range satisfies the compare. A
        missing key compares as all zeros, except that a VALUE compare on no key fails."""
        if not c.range_end:
            kv = self._live.get(c.key)
            kvs = [kv] if kv is not None else []
        else:
            lo, hi = keyrange.bounds(c.key, c.range_end)
            kvs = [] if hi is not None and hi <= lo else [
                self._live[k] for k in self._live.irange(lo, hi, inclusive=(True, False))]
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

    def _check_path(self, txn: Txn, path: Iterator[bool]) -> bool:
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
                kind = type(op)
                if kind is Put:
                    if op.key in puts or hits(dels, op.key):
                        raise DuplicateKey(f"duplicate key given in txn request: {op.key!r}")
                    puts.add(op.key)
                    if (op.ignore_value or op.ignore_lease) and op.key not in self._live:
                        raise KeyNotFound(f"put {op.key!r}: key not found "
                                          "(ignore_value/ignore_lease)")
                    if op.lease and op.lease not in self._leases:
                        raise lease_not_found(op.lease, f"put {op.key!r} in a txn")
                    mutates = True
                elif kind is DeleteRange:
                    lo, hi = keyrange.bounds(op.key, op.range_end)
                    if any(lo <= k and (hi is None or k < hi) for k in puts):
                        raise DuplicateKey(f"duplicate key given in txn request: delete "
                                           f"{op.key!r} covers a key put in the same txn")
                    dels.append((lo, hi))
                    # No put of this txn lands in the range, so it deletes something iff a
                    # key is live in it now.
                    if not mutates and self._live_count(op.key, op.range_end):
                        mutates = True
                elif kind is RangeOp:
                    self._check_revision(op.revision)
                else:
                    walk(op)

        walk(txn)
        return mutates

    def _exec_txn(self, txn: Txn, path: Iterator[bool], rev: int, changes: list[_Change]
                  ) -> TxnResult:
        ok = next(path)
        responses: list[OpResult] = []
        for op in txn.success if ok else txn.failure:
            kind = type(op)
            if kind is Put:
                flags = op.prev_kv | (op.ignore_value << 1) | (op.ignore_lease << 2)
                prev, kv = self._put(op.key, op.value, op.lease, flags, rev)
                changes.append((kv, prev))
                responses.append(PutResult(rev, prev if op.prev_kv else None))
            elif kind is DeleteRange:
                prevs = [self._delete(k, rev, changes)
                         for k in self._live_keys_in(op.key, op.range_end)]
                responses.append(DeleteResult(rev, len(prevs), prevs if op.prev_kv else []))
            elif kind is RangeOp:
                # Reads see the txn's earlier writes (etcd), and report the txn's revision.
                responses.append(self._range(op, pending=bool(changes), header=rev))
            else:
                responses.append(self._exec_txn(op, path, rev, changes))
        return TxnResult(rev, ok, responses)

    # -- leases -----------------------------------------------------------------------------------
    def _apply_lease_grant(self, cmd: LeaseGrant) -> LeaseGrantResult | ErrorResult:
        try:
            check_lease_grant(cmd)
        except KVError as e:
            return ErrorResult.of(e, self._rev)
        lease = cmd.id
        if lease == 0:
            lease = self._last_lease_id + 1
            while lease in self._leases:
                lease += 1
            self._last_lease_id = lease
        elif lease in self._leases:
            return ErrorResult.of(LeaseExists(f"etcdserver: lease already exists: lease {lease} "
                                              f"({lease:#x})"), self._rev)
        self._leases[lease] = cmd.ttl
        self._notify_lease(lease, cmd.ttl)
        return LeaseGrantResult(self._rev, lease, cmd.ttl)

    def _apply_lease_revoke(self, cmd: LeaseRevoke) -> LeaseRevokeResult | ErrorResult:
        try:
            check_lease_revoke(cmd)
        except KVError as e:
            return ErrorResult.of(e, self._rev)
        lease = cmd.id
        if lease not in self._leases:
            return ErrorResult.of(lease_not_found(lease, "revoke"), self._rev)
        keys = sorted(self._lease_keys.get(lease, ()))
        rev = self._rev
        if keys:  # every attached key goes in one revision, in key order
            rev += 1
            changes: list[_Change] = []
            for k in keys:
                self._delete(k, rev, changes)
            self._commit(rev, changes)
        del self._leases[lease]
        self._lease_keys.pop(lease, None)
        self._notify_lease(lease, 0)
        return LeaseRevokeResult(rev, keys)

    # -- compaction -------------------------------------------------------------------------------
    def _apply_compact(self, cmd: Compact) -> CompactResult | ErrorResult:
        rev = cmd.revision
        if type(rev) is not int:
            return ErrorResult(ErrorCode.INVALID_ARGUMENT, "compact revision must be an integer",
                               self._rev)
        if rev <= self._compact:
            return ErrorResult.of(CompactedError(self._compact), self._rev)
        if rev > self._rev:
            return ErrorResult.of(FutureRevisionError(rev, self._rev), self._rev)
        self._compact_to(rev)
        return CompactResult(self._rev)

    def _compact_to(self, rev: int) -> None:
        """Keep, of each key, its versions after ``rev`` and its latest version at or before
        ``rev`` unless that is a tombstone; drop the events of revisions up to ``rev``."""
        history = self._history
        settled = []
        for key in self._dirty:  # order is irrelevant: each key is trimmed on its own
            hist = history[key]
            if hist[0].mod_revision > rev:
                continue
            keep = bisect_right(hist, rev, key=_MOD) - 1
            if hist[keep].version == 0:
                keep += 1
            if keep:
                del hist[:keep]
            if not hist:  # only a dead key's history can empty: a live key keeps its latest
                del history[key]
                self._dead.remove(key)
                settled.append(key)
            elif len(hist) == 1 and hist[0].version:
                settled.append(key)  # one live version: nothing left to compact
        self._dirty.difference_update(settled)
        del self._log[: rev - self._compact]
        self._compact = rev
        self._generation += 1

    # -- reads ------------------------------------------------------------------------------------
    def _check_revision(self, rev: int) -> None:
        if rev > self._rev:
            raise FutureRevisionError(rev, self._rev)
        if 0 < rev < self._compact:
            raise CompactedError(self._compact)

    def get(self, key: bytes, revision: int = 0) -> KeyValue | None:
        """The key's version at ``revision`` (0: now), or None if it did not exist then."""
        if revision <= 0 or revision == self._rev:
            return self._live.get(key)
        self._check_revision(revision)
        return _version_at(self._history.get(key), revision)

    def range(self, key: bytes, range_end: bytes = b"", revision: int = 0, limit: int = 0,
              keys_only: bool = False, count_only: bool = False,
              sort_order: SortOrder = SortOrder.NONE, sort_target: SortTarget = SortTarget.KEY,
              min_mod_revision: int = 0, max_mod_revision: int = 0,
              min_create_revision: int = 0, max_create_revision: int = 0) -> RangeResult:
        """etcd's Range. ``(key, range_end)`` names the keys (see :mod:`confer.kv.keyrange`);
        ``revision`` > 0 reads the past. ``count`` counts every key in the range; ``more`` says
        ``limit`` dropped some. Sorting is stable: ties stay in key order.

        Raises:
            InvalidArgument: empty key or malformed arguments.
            CompactedError: ``revision < compact_revision``.
            FutureRevisionError: ``revision > revision``.
        """
        if (not range_end and type(key) is bytes and key and type(revision) is int
                and not (keys_only or count_only or min_mod_revision or max_mod_revision
                         or min_create_revision or max_create_revision)):
            # One key, nothing to filter: a dict lookup (or one bisection in the past).
            # Sorting one key and a limit on it change nothing.
            kv = self.get(key, revision)
            return new_range_result([] if kv is None else [kv], kv is not None, False,
                                    self._rev)
        op = RangeOp(key, range_end, revision, limit, keys_only, count_only, sort_order,
                     sort_target, min_mod_revision, max_mod_revision, min_create_revision,
                     max_create_revision)
        check_range(op)
        self._check_revision(revision)
        return self._range(op)

    def _range(self, op: RangeOp, pending: bool = False, header: int = 0) -> RangeResult:
        rev = op.revision
        # Inside a txn that already wrote (``pending``), ``_live`` holds uncommitted writes, so
        # an explicit read at the current revision must go through the history.
        now = rev <= 0 or (rev >= self._rev and not pending)
        order, target = op.sort_order, op.sort_target
        if target != SortTarget.KEY and order == SortOrder.NONE:
            order = SortOrder.ASCEND  # etcd: a sort target alone means ascending
        elif target == SortTarget.KEY and order == SortOrder.ASCEND:
            order = SortOrder.NONE  # already in key order
        filtered = bool(op.min_mod_revision or op.max_mod_revision or op.min_create_revision
                        or op.max_create_revision)
        limit = op.limit if op.limit > 0 else 0
        # Fetch one extra to learn ``more``, unless filters or sorting need every key.
        fetch = 0 if (filtered or order != SortOrder.NONE or not limit) else limit + 1
        if now:
            kvs, count = self._fetch_live(op.key, op.range_end, fetch, op.count_only)
        else:
            kvs, count = self._fetch_past(op.key, op.range_end, rev, fetch, op.count_only)
        if filtered:
            kvs = [kv for kv in kvs
                   if (not op.max_mod_revision or kv.mod_revision <= op.max_mod_revision)
                   and (not op.min_mod_revision or kv.mod_revision >= op.min_mod_revision)
                   and (not op.max_create_revision
                        or kv.create_revision <= op.max_create_revision)
                   and (not op.min_create_revision
                        or kv.create_revision >= op.min_create_revision)]
        if order != SortOrder.NONE:
            kvs = sorted(kvs, key=_SORT_KEYS[target], reverse=order == SortOrder.DESCEND)
        more = False
        if limit and len(kvs) > limit:
            kvs = kvs[:limit]
            more = True
        if op.keys_only:
            kvs = [KeyValue(kv.key, kv.create_revision, kv.mod_revision, kv.version, b"",
                            kv.lease) for kv in kvs]
        return new_range_result(kvs, count, more, header or self._rev)

    def _fetch_live(self, key: bytes, range_end: bytes, limit: int, count_only: bool
                    ) -> tuple[list[KeyValue], int]:
        live = self._live
        if not range_end:
            kv = live.get(key)
            if kv is None:
                return [], 0
            return ([] if count_only else [kv]), 1
        lo = live.bisect_left(key)
        hi = len(live) if range_end == keyrange.FROM_KEY else live.bisect_left(range_end)
        if hi <= lo:
            return [], 0
        if count_only:
            return [], hi - lo
        stop = min(hi, lo + limit) if limit else hi
        return self._live_values[lo:stop], hi - lo

    def _fetch_past(self, key: bytes, range_end: bytes, rev: int, limit: int, count_only: bool
                    ) -> tuple[list[KeyValue], int]:
        history = self._history
        if not range_end:
            kv = _version_at(history.get(key), rev)
            if kv is None:
                return [], 0
            return ([] if count_only else [kv]), 1
        lo, hi = keyrange.bounds(key, range_end)
        if hi is not None and hi <= lo:
            return [], 0
        kvs: list[KeyValue] = []
        count = 0
        # Every key with history is either live or dead: walk both in key order.
        for k in heapq.merge(self._live.irange(lo, hi, inclusive=(True, False)),
                             self._dead.irange(lo, hi, inclusive=(True, False))):
            kv = _version_at(history[k], rev)
            if kv is not None:
                count += 1
                if not count_only and (not limit or len(kvs) < limit):
                    kvs.append(kv)
        return kvs, count

    def children(self, path: bytes | str, start_after: bytes = b"", limit: int = 0
                 ) -> tuple[list[bytes], bool]:
        """The names of the immediate children of ``path`` now, in byte order, like
        ZooKeeper's getChildren: with keys ``/a/b`` and ``/a/c/d``, ``/a`` has ``b`` and ``c``.
        A name is a child if any key lies at or under ``path/name``. Returns ``(names, more)``;
        pass the last name as ``start_after`` for the next page.

        Cost: O(log n) per child returned, independent of the size of each child's subtree:
        at most two bisections find the next child (the second skips the previous child's
        subtree in one jump). Names containing bytes below ``/`` (such as ``-`` or ``.``) can
        sort differently from their keys (``/a/x-1`` sorts before ``/a/x/y``); each such byte
        costs one more bisection.
        """
        raw = path.encode("utf-8") if isinstance(path, str) else path
        base = raw if raw.endswith(b"/") else raw + b"/"
        names: list[bytes] = []
        after = start_after + b"\0"  # the smallest name greater than start_after
        while True:
            name = self._next_child(base, after)
            if name is None:
                return names, False
            if limit and len(names) == limit:
                return names, True
            names.append(name)
            after = name + b"\0"

    def _next_child(self, base: bytes, lo_name: bytes) -> bytes | None:
        """The smallest child name ``>= lo_name`` under ``base`` (which ends with ``/``)."""
        live, keys, n = self._live, self._live_keys, len(base)
        stop = base[:-1] + b"0"  # the end of base's subtree
        lo = base + lo_name
        while True:
            i = live.bisect_left(lo)
            if i == len(live) or (k := keys[i]) >= stop:
                return None
            slash = k.find(b"/", n)
            name = k[n:] if slash < 0 else k[n:slash]
            if name >= lo_name:
                break
            # ``name`` is a proper prefix of lo_name followed by a byte below "/": skip its
            # whole subtree, every key of which has that same name.
            lo = base + name + b"0"
        # Keys are in byte order, names are wanted in byte order, and the two differ only
        # when a shorter name's subtree ("x/...") sorts after a longer name ("x-1"). So a
        # smaller name than ``name`` can only be a prefix of it followed by a byte below "/";
        # probe those prefixes, shortest (smallest) first.
        if name.startswith(lo_name):
            first = len(lo_name)
        else:
            first = next(j for j, (a, b) in enumerate(zip(name, lo_name, strict=False))
                         if a != b) + 1
        for j in range(max(first, 1), len(name)):
            if name[j] < 0x2F:
                sub = base + name[:j] + b"/"
                i = live.bisect_left(sub)
                if i < len(live) and keys[i] < sub[:-1] + b"0":
                    return name[:j]
        return name

    # -- watch history ----------------------------------------------------------------------------
    def events_since(self, start_revision: int, key: bytes = b"", range_end: bytes = b"",
                     limit: int = 0) -> tuple[list[Event], int]:
        """The events of revisions ``>= start_revision`` on keys named by ``(key, range_end)``
        in revision order, and the revision to resume from. An empty ``key`` (which etcd never
        allows) means every key.

        A revision's events are never split: with ``limit``, the answer stops before a
        revision that would exceed it, but always holds at least one revision's events when
        any match. Resuming from the returned revision yields no gap and no duplicate.
        ``start_revision <= 0`` means "from now on": ``([], revision + 1)``.

        Raises:
            CompactedError: ``start_revision <= compact_revision`` (those events are gone).
        """
        if start_revision <= 0:
            return [], self._rev + 1
        if start_revision <= self._compact:
            raise CompactedError(self._compact)
        if start_revision > self._rev:
            return [], start_revision
        match = keyrange.matcher(key, range_end) if key else None
        out: list[Event] = []
        entries = self._log
        i = start_revision - self._compact - 1
        n = len(entries)
        while i < n:
            entry = entries[i]
            keys = (entry,) if type(entry) is bytes else entry
            if match is not None:
                keys = [k for k in keys if match(k)]
            if keys:
                if limit and out and len(out) + len(keys) > limit:
                    break
                rev = self._compact + 1 + i
                out.extend(self._event_of(k, rev) for k in keys)
            i += 1
            if limit and len(out) >= limit:
                break
        return out, self._compact + 1 + i

    def events_at(self, revision: int) -> list[Event]:
        """The events of one retained revision, in order."""
        if revision <= self._compact:
            raise CompactedError(self._compact)
        if revision > self._rev:
            raise FutureRevisionError(revision, self._rev)
        entry = self._log[revision - self._compact - 1]
        keys = (entry,) if type(entry) is bytes else entry
        return [self._event_of(k, revision) for k in keys]

    def _event_of(self, key: bytes, rev: int) -> Event:
        """Rebuild the event of ``key`` at ``rev`` from its history. Its previous version is
        retained too: compaction keeps each key's latest version at or below the compact
        revision, and drops it only when it is a tombstone (then there is no prev_kv)."""
        hist = self._history[key]
        i = len(hist) - 1
        if hist[i].mod_revision != rev:
            i = bisect_left(hist, rev, key=_MOD)
        prev = hist[i - 1] if i > 0 and hist[i - 1].version else None
        return _event(hist[i], prev)

    # -- snapshots --------------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """Serialise the whole state: one version byte (2), then a msgpack array
        ``[revision, compact_revision, applied_index, keys, histories, events, leases,
        last_lease_id]``.

        ``keys`` is the sorted list of keys with retained history; ``histories[i]`` flattens
        the versions of ``keys[i]`` as ``create, mod, version, value, lease`` quintuples
        (a tombstone has version 0); ``events[j]`` lists, for revision
        ``compact_revision + 1 + j``, the indexes into ``keys`` of the keys it changed, in
        order. An event's kv is the key's version at that revision and its prev_kv the version
        before, so events cost no copy of any value. ``leases`` flattens the lease table as
        ``id, ttl`` pairs by id; ``last_lease_id`` is the last id the store picked. Equal
        states give equal bytes. Version 1 (:meth:`restore` still reads it) had no leases.
        """
        for parts in self.snapshot_steps(step=1 << 62):
            if parts is not None:
                return b"".join(parts)
        raise AssertionError("unreachable")

    def snapshot_steps(self, step: int = SNAPSHOT_STEP_KEYS) -> Iterator[list[bytes] | None]:
        """:meth:`snapshot`, a slice at a time, while the store goes on applying writes.

        The state is captured when the generator is created: the first ``next()`` returns at
        once. Each later ``next()`` serialises ``step`` more keys and yields None; the last
        yields the snapshot as a list of parts whose concatenation is byte for byte what
        :meth:`snapshot` would have returned at creation. (Joining tens of megabytes takes
        a while; ``bytes.join`` does it without holding the GIL, so a caller can join in a
        worker thread.) It reads the retained history up to the captured revision (MVCC), so
        writes applied meanwhile do not show; a compaction or restore meanwhile rewrites that
        history, and the next step raises :class:`SnapshotAborted`.
        """
        return self._snapshot_steps(step)

    def _snapshot_steps(self, step: int) -> Iterator[list[bytes] | None]:
        generation = self._generation
        rev, compact, applied = self._rev, self._compact, self.applied_index
        keys = sorted([*self._live_keys, *self._dead])  # two sorted runs: a linear merge
        events = self._log[:]  # revisions compact+1 .. rev
        leases: list[int] = []
        for lease in sorted(self._leases):
            leases += (lease, self._leases[lease])
        last_lease_id = self._last_lease_id
        yield None  # captured: the state as of now

        def check() -> None:
            if self._generation != generation:
                raise SnapshotAborted(f"the store was compacted or restored while a snapshot "
                                      f"at revision {rev} was being written")

        # msgpack.packb(body) with body built lazily: the same bytes, packed element-wise,
        # one part per step (no buffer the size of the snapshot is grown or copied here).
        packer = msgpack.Packer(autoreset=False)
        parts = [bytes((SNAPSHOT_VERSION,))]

        def cut() -> None:
            parts.append(packer.bytes())
            packer.reset()

        packer.pack_array_header(8)
        for x in (rev, compact, applied, keys):
            packer.pack(x)
        packer.pack_array_header(len(keys))
        history = self._history
        for lo in range(0, len(keys), step):
            check()
            for k in keys[lo : lo + step]:
                hist = history[k]
                if hist[-1].mod_revision > rev:  # changed since: only what was there at rev
                    hist = hist[: bisect_right(hist, rev, key=_MOD)]
                flat: list[object] = []
                for kv in hist:
                    flat += (kv.create_revision, kv.mod_revision, kv.version, kv.value,
                             kv.lease)
                packer.pack(flat)
            cut()
            yield None
        position = {k: i for i, k in enumerate(keys)}
        packer.pack_array_header(len(events))
        for lo in range(0, len(events), step * 4):
            for entry in events[lo : lo + step * 4]:
                packer.pack([position[entry]] if type(entry) is bytes
                            else [position[k] for k in entry])
            cut()
            yield None
        packer.pack(leases)
        packer.pack(last_lease_id)
        cut()
        check()
        yield parts

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot's (``b""``: the empty store). Listeners stay
        registered; restore listeners are told the new revision."""
        if not data:
            self._reset()
        else:
            if data[0] not in (1, SNAPSHOT_VERSION):
                raise ValueError(f"unknown kv snapshot version {data[0]}")
            self._load(msgpack.unpackb(memoryview(data)[1:]), data[0])
        for callback in self._restore_listeners:
            callback(self._rev)

    def _load(self, body: list[object], version: int) -> None:
        if version == 1:  # before leases: keys may name leases that were never granted
            rev, compact, applied, keys, histories, events = body
            leases: list[int] = []
            last_lease_id = 0
        else:
            rev, compact, applied, keys, histories, events, leases, last_lease_id = body
        self._reset()
        live: dict[bytes, KeyValue] = {}
        history: dict[bytes, list[KeyValue]] = {}
        dead: list[bytes] = []
        for k, flat in zip(keys, histories, strict=True):
            hist = [new_kv(k, flat[i], flat[i + 1], flat[i + 2], flat[i + 3], flat[i + 4])
                    for i in range(0, len(flat), 5)]
            history[k] = hist
            last = hist[-1]
            if last.version:
                live[k] = last
                if last.lease:
                    self._lease_keys.setdefault(last.lease, set()).add(k)
            else:
                dead.append(k)
            if len(hist) > 1 or not last.version:
                self._dirty.add(k)
        self._live.update(live)
        self._history = history
        self._dead.update(dead)
        self._log = [keys[p[0]] if len(p) == 1 else tuple(keys[i] for i in p) for p in events]
        self._rev, self._compact, self.applied_index = rev, compact, applied
        self._leases = dict(zip(leases[::2], leases[1::2], strict=True))
        self._last_lease_id = last_lease_id
        if len(self._log) != rev - compact:
            raise ValueError("kv snapshot is inconsistent: event log does not match revisions")

