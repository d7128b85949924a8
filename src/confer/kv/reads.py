"""Reads: ranges (now and in the past), the children of a path, and the watch history.

Current reads use only the live keys; past reads and events are rebuilt from the retained
histories (see :mod:`confer.kv.state`). They raise :class:`~confer.kv.errors.KVError`
subclasses for bad arguments and revisions out of reach.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Sequence
from operator import attrgetter

from confer.kv import keyrange
from confer.kv.commands import RangeOp, check_range
from confer.kv.errors import CompactedError, FutureRevisionError
from confer.kv.state import MOD, StoreState, event, version_at
from confer.kv.types import (
    Event,
    KeyValue,
    RangeResult,
    SortOrder,
    SortTarget,
    new_range_result,
)

_SORT_KEYS = {
    SortTarget.KEY: attrgetter("key"),
    SortTarget.VERSION: attrgetter("version"),
    SortTarget.CREATE: attrgetter("create_revision"),
    SortTarget.MOD: attrgetter("mod_revision"),
    SortTarget.VALUE: attrgetter("value"),
}


def check_revision(st: StoreState, rev: int) -> None:
    """Refuse to read at a revision in the future or compacted away."""
    if rev > st._rev:
        raise FutureRevisionError(rev, st._rev)
    if 0 < rev < st._compact:
        raise CompactedError(st._compact)


def get(st: StoreState, key: bytes, revision: int = 0) -> KeyValue | None:
    """The key's version at ``revision`` (0: now), or None if it did not exist then."""
    if revision <= 0 or revision == st._rev:
        return st._live.get(key)
    check_revision(st, revision)
    return version_at(st._history.get(key), revision)


def read_range(st: StoreState, key: bytes, range_end: bytes = b"", revision: int = 0,
               limit: int = 0, keys_only: bool = False, count_only: bool = False,
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
        kv = get(st, key, revision)
        return new_range_result([] if kv is None else [kv], kv is not None, False,
                                st._rev)
    op = RangeOp(key, range_end, revision, limit, keys_only, count_only, sort_order,
                 sort_target, min_mod_revision, max_mod_revision, min_create_revision,
                 max_create_revision)
    check_range(op)
    check_revision(st, revision)
    return range_op(st, op)


def range_op(st: StoreState, op: RangeOp, pending: bool = False, header: int = 0
             ) -> RangeResult:
    """Run a checked :class:`RangeOp` (also a txn's read: ``pending`` says the txn wrote
    already, ``header`` is the revision to report)."""
    rev = op.revision
    # Inside a txn that already wrote (``pending``), ``_live`` holds uncommitted writes, so
    # an explicit read at the current revision must go through the history.
    now = rev <= 0 or (rev >= st._rev and not pending)
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
        kvs, count = _fetch_live(st, op.key, op.range_end, fetch, op.count_only)
    else:
        kvs, count = _fetch_past(st, op.key, op.range_end, rev, fetch, op.count_only)
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
    return new_range_result(kvs, count, more, header or st._rev)


def _fetch_live(st: StoreState, key: bytes, range_end: bytes, limit: int, count_only: bool
                ) -> tuple[list[KeyValue], int]:
    live = st._live
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
    return st._live_values[lo:stop], hi - lo


def _fetch_past(st: StoreState, key: bytes, range_end: bytes, rev: int, limit: int, count_only: bool
                ) -> tuple[list[KeyValue], int]:
    history = st._history
    if not range_end:
        kv = version_at(history.get(key), rev)
        if kv is None:
            return [], 0
        return ([] if count_only else [kv]), 1
    lo, hi = keyrange.bounds(key, range_end)
    if hi is not None and hi <= lo:
        return [], 0
    kvs: list[KeyValue] = []
    count = 0
    # Every key with history is either live or dead: walk both in key order.
    for k in heapq.merge(st._live.irange(lo, hi, inclusive=(True, False)),
                         st._dead.irange(lo, hi, inclusive=(True, False))):
        kv = version_at(history[k], rev)
        if kv is not None:
            count += 1
            if not count_only and (not limit or len(kvs) < limit):
                kvs.append(kv)
    return kvs, count


def children(st: StoreState, path: bytes | str, start_after: bytes = b"", limit: int = 0
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
        name = _next_child(st, base, after)
        if name is None:
            return names, False
        if limit and len(names) == limit:
            return names, True
        names.append(name)
        after = name + b"\0"


def _next_child(st: StoreState, base: bytes, lo_name: bytes) -> bytes | None:
    """The smallest child name ``>= lo_name`` under ``base`` (which ends with ``/``)."""
    live, keys, n = st._live, st._live_keys, len(base)
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


def events_since(st: StoreState, start_revision: int, key: bytes = b"", range_end: bytes = b"",
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
        return [], st._rev + 1
    if start_revision <= st._compact:
        raise CompactedError(st._compact)
    if start_revision > st._rev:
        return [], start_revision
    match = keyrange.matcher(key, range_end) if key else None
    out: list[Event] = []
    entries = st._log
    i = start_revision - st._compact - 1
    n = len(entries)
    while i < n:
        entry = entries[i]
        keys: Sequence[bytes] = (entry,) if type(entry) is bytes else entry  # type: ignore[assignment]  # see _log
        if match is not None:
            keys = [k for k in keys if match(k)]
        if keys:
            if limit and out and len(out) + len(keys) > limit:
                break
            rev = st._compact + 1 + i
            out.extend(_event_of(st, k, rev) for k in keys)
        i += 1
        if limit and len(out) >= limit:
            break
    return out, st._compact + 1 + i


def events_at(st: StoreState, revision: int) -> list[Event]:
    """The events of one retained revision, in order."""
    if revision <= st._compact:
        raise CompactedError(st._compact)
    if revision > st._rev:
        raise FutureRevisionError(revision, st._rev)
    entry = st._log[revision - st._compact - 1]
    keys: Sequence[bytes] = (entry,) if type(entry) is bytes else entry  # type: ignore[assignment]  # see _log
    return [_event_of(st, k, revision) for k in keys]


def _event_of(st: StoreState, key: bytes, rev: int) -> Event:
    """Rebuild the event of ``key`` at ``rev`` from its history. Its previous version is
    retained too: compaction keeps each key's latest version at or below the compact
    revision, and drops it only when it is a tombstone (then there is no prev_kv)."""
    hist = st._history[key]
    i = len(hist) - 1
    if hist[i].mod_revision != rev:
        i = bisect_left(hist, rev, key=MOD)
    prev = hist[i - 1] if i > 0 and hist[i - 1].version else None
    return event(hist[i], prev)
