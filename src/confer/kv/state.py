"""The MVCC store's data structures, shared by the modules that read and write them.

:class:`StoreState` holds the state; :mod:`~confer.kv.writes` (put, delete, txn),
:mod:`~confer.kv.leases`, :mod:`~confer.kv.compaction`, :mod:`~confer.kv.reads` (ranges,
children, watch history) and :mod:`~confer.kv.snapshot` are functions over it, and
:class:`~confer.kv.store.KVStore` puts them together. The attributes are private to the kv
package: only its modules touch them.

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
- ``_size``: the store's approximate size in bytes, what the server's space quota is checked
  against: every retained version counts its key, its value and ``VERSION_OVERHEAD``. It is
  kept as versions are added and compacted away, so it costs nothing to read and is the same
  on every member that applied the same entries.
- ``_auth``: users, roles, permissions and the enabled flag (:mod:`confer.kv.auth`), a few
  dicts: small, and read on every request while auth is enabled.
- ``_alarms``: the active alarms, ``(member id, alarm type)`` pairs (etcd's alarm store);
  ``_nospace`` is true while one of them is a NOSPACE alarm (checked by every put).
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Callable
from operator import attrgetter

from sortedcontainers import SortedDict, SortedList

from confer.kv.auth import AuthListener, AuthState
from confer.kv.types import Event, EventType, KeyValue, new_event

log = logging.getLogger("confer.kv")

MOD = attrgetter("mod_revision")
"""The key of a history's bisections: its versions are in ``mod_revision`` order."""
PUT, DELETE = EventType.PUT, EventType.DELETE

EventListener = Callable[[tuple[Event, ...]], None]
LeaseListener = Callable[[int, int], None]
"""Called with ``(lease id, ttl)`` after a grant and ``(lease id, 0)`` after a revocation."""
VERSION_OVERHEAD = 64
"""Bytes counted per retained version besides its key and value (its revisions, version,
lease and the index entries that hold it): a rough, fixed figure, so the size is cheap and
deterministic."""
Change = tuple[KeyValue, KeyValue | None]
"""A key's change in a revision: (its new version or tombstone, its previous version)."""


class StoreState:
    """The store's state (see the module's docstring) and who listens to its changes."""

    def __init__(self) -> None:
        self._listeners: list[EventListener] = []
        self._restore_listeners: list[Callable[[int], None]] = []
        self._lease_listeners: list[LeaseListener] = []
        self._auth_listeners: list[AuthListener] = []
        self._generation = 0  # bumped when retained history is rewritten (compaction, restore)
        self._reset()

    def _reset(self) -> None:
        self._generation += 1
        self._live: SortedDict[bytes, KeyValue] = SortedDict()
        self._live_keys = self._live.keys()
        self._live_values = self._live.values()
        self._history: dict[bytes, list[KeyValue]] = {}
        self._dead: SortedList[bytes] = SortedList()
        self._dirty: set[bytes] = set()
        # Per revision, the key it changed or the keys (a txn, a range delete). Readers tell
        # them apart with `type(x) is bytes`, which mypy does not narrow on the other side; an
        # isinstance would (and cost more, once per event read).
        self._log: list[bytes | tuple[bytes, ...]] = [()]
        self._rev = 1  # etcd: an empty store is at revision 1; the first write makes it 2
        self._compact = 0
        self._lease_keys: dict[int, set[bytes]] = {}
        self._leases: dict[int, int] = {}  # lease id -> TTL in seconds
        self._last_lease_id = 0  # the last id the store picked for a grant of id 0
        self._size = 0
        self._alarms: set[tuple[int, int]] = set()
        self._nospace = False
        self._auth = AuthState()
        self.applied_index = 0
        """Index of the last Raft entry given to :meth:`apply` (kept in snapshots)."""


def event(kv: KeyValue, prev: KeyValue | None) -> Event:
    """The event of a change: a put, or a delete when ``kv`` is a tombstone."""
    return new_event(PUT if kv.version else DELETE, kv, prev)


def version_at(hist: list[KeyValue] | None, rev: int) -> KeyValue | None:
    """The key's live version at ``rev`` from its history, or None (absent or deleted)."""
    if not hist:
        return None
    kv = hist[-1]
    if kv.mod_revision > rev:
        i = bisect_right(hist, rev, key=MOD)
        if i == 0:
            return None
        kv = hist[i - 1]
    return None if kv.version == 0 else kv


def commit(st: StoreState, rev: int, changes: list[Change]) -> None:
    """Make ``rev`` the current revision, with ``changes`` as its events."""
    st._rev = rev
    if len(changes) == 1:
        st._log.append(changes[0][0].key)
    else:
        st._log.append(tuple(kv.key for kv, _ in changes))
    if st._listeners:
        notify(st, tuple(event(kv, prev) for kv, prev in changes), rev)


def notify(st: StoreState, events: tuple[Event, ...], rev: int) -> None:
    """Hand a new revision's events to the listeners; log what they raise."""
    for callback in st._listeners:
        try:
            callback(events)
        except Exception:
            log.exception("kv listener %r failed at revision %d", callback, rev)
