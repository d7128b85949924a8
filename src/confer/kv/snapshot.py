"""Snapshots of the store: the whole state as bytes (at once, or a slice at a time while
writes go on), and restoring from them. Equal states give equal bytes."""

from __future__ import annotations

import gc
from bisect import bisect_right
from collections.abc import Iterator
from typing import Any

import msgpack

from confer.kv import auth
from confer.kv.alarms import update_nospace
from confer.kv.state import MOD, VERSION_OVERHEAD, StoreState
from confer.kv.types import KeyValue, new_kv

SNAPSHOT_VERSION = 4
"""2 added the lease table, 3 the alarms, 4 the auth state; versions 1 to 3 are still
read."""
SNAPSHOT_STEP_KEYS = 2000
"""Keys serialised per step of :func:`snapshot_steps` (a few milliseconds' work)."""


class SnapshotAborted(Exception):
    """An incremental snapshot (:meth:`KVStore.snapshot_steps`) was overtaken by a compaction
    or a restore, which rewrite the history it was reading."""


def snapshot(st: StoreState) -> bytes:
    """Serialise the whole state: one version byte (4), then a msgpack array
    ``[revision, compact_revision, applied_index, keys, histories, events, leases,
    last_lease_id, alarms, auth]``.

    ``keys`` is the sorted list of keys with retained history; ``histories[i]`` flattens
    the versions of ``keys[i]`` as ``create, mod, version, value, lease`` quintuples
    (a tombstone has version 0); ``events[j]`` lists, for revision
    ``compact_revision + 1 + j``, the indexes into ``keys`` of the keys it changed, in
    order. An event's kv is the key's version at that revision and its prev_kv the version
    before, so events cost no copy of any value. ``leases`` flattens the lease table as
    ``id, ttl`` pairs by id; ``last_lease_id`` is the last id the store picked; ``alarms``
    flattens the active alarms as ``member id, alarm type`` pairs, sorted; ``auth`` is
    :func:`confer.kv.auth.dump`'s list. Equal states give equal bytes. Version 1
    (:meth:`restore` still reads it) had no leases, version 2 no alarms, version 3 no
    auth state.
    """
    for parts in snapshot_steps(st, step=1 << 62):
        if parts is not None:
            return b"".join(parts)
    raise AssertionError("unreachable")


def snapshot_steps(st: StoreState, step: int = SNAPSHOT_STEP_KEYS
                   ) -> Iterator[list[bytes] | None]:
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
    return _snapshot_steps(st, step)


def _snapshot_steps(st: StoreState, step: int) -> Iterator[list[bytes] | None]:
    generation = st._generation
    rev, compact, applied = st._rev, st._compact, st.applied_index
    keys = sorted([*st._live_keys, *st._dead])  # two sorted runs: a linear merge
    events = st._log[:]  # revisions compact+1 .. rev
    leases: list[int] = []
    for lease in sorted(st._leases):
        leases += (lease, st._leases[lease])
    last_lease_id = st._last_lease_id
    alarms = [x for pair in sorted(st._alarms) for x in pair]
    auth_state = auth.dump(st._auth)
    yield None  # captured: the state as of now

    def check() -> None:
        if st._generation != generation:
            raise SnapshotAborted(f"the store was compacted or restored while a snapshot "
                                  f"at revision {rev} was being written")

    # msgpack.packb(body) with body built lazily: the same bytes, packed element-wise,
    # one part per step (no buffer the size of the snapshot is grown or copied here).
    packer = msgpack.Packer(autoreset=False)
    parts = [bytes((SNAPSHOT_VERSION,))]

    def cut() -> None:
        parts.append(packer.bytes())
        packer.reset()

    packer.pack_array_header(10)
    for x in (rev, compact, applied, keys):
        packer.pack(x)
    packer.pack_array_header(len(keys))
    history = st._history
    for lo in range(0, len(keys), step):
        check()
        for k in keys[lo : lo + step]:
            hist = history[k]
            if hist[-1].mod_revision > rev:  # changed since: only what was there at rev
                hist = hist[: bisect_right(hist, rev, key=MOD)]
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
                        else [position[k] for k in entry])  # type: ignore[index]  # see _log
        cut()
        yield None
    packer.pack(leases)
    packer.pack(last_lease_id)
    packer.pack(alarms)
    packer.pack(auth_state)
    cut()
    check()
    yield parts


def restore(st: StoreState, data: bytes) -> None:
    """Replace the state with a snapshot's (``b""``: the empty store). Listeners stay
    registered; restore listeners are told the new revision."""
    if not data:
        st._reset()
    else:
        if data[0] not in (1, 2, 3, SNAPSHOT_VERSION):
            raise ValueError(f"unknown kv snapshot version {data[0]}")
        # Millions of new objects, none in a cycle: the cyclic collector, run again and again
        # by the allocations, would scan the growing heap each time (a restore of 200k keys
        # took three times as long with it).
        collecting = gc.isenabled()
        gc.disable()
        try:
            _load(st, msgpack.unpackb(memoryview(data)[1:]), data[0])
        finally:
            if collecting:
                gc.enable()
    for callback in st._restore_listeners:
        callback(st._rev)


def _load(st: StoreState, body: list[Any], version: int) -> None:
    # ``body`` is the unpacked msgpack array written by snapshot(); its fields' types:
    rev: int
    compact: int
    applied: int
    keys: list[bytes]
    histories: list[list[Any]]  # per key, flat [create, mod, version, value, lease] * n
    events: list[list[int]]  # per revision, indexes into keys
    leases: list[int]
    last_lease_id: int
    alarms: list[int] = []  # flat [member id, alarm type] * n
    auth_state = auth.AuthState()
    if version == 1:  # before leases: keys may name leases that were never granted
        rev, compact, applied, keys, histories, events = body
        leases = []
        last_lease_id = 0
    elif version == 2:  # before alarms
        rev, compact, applied, keys, histories, events, leases, last_lease_id = body
    elif version == 3:  # before the auth state
        rev, compact, applied, keys, histories, events, leases, last_lease_id, alarms = body
    else:
        (rev, compact, applied, keys, histories, events, leases, last_lease_id, alarms,
         auth_body) = body
        auth_state = auth.load(auth_body)
    st._reset()
    live: dict[bytes, KeyValue] = {}
    history: dict[bytes, list[KeyValue]] = {}
    dead: list[bytes] = []
    size = 0
    for k, flat in zip(keys, histories, strict=True):
        if len(flat) == 5:  # one version, most keys: no comprehension, no generator
            create, mod, ver, value, lease = flat
            last = new_kv(k, create, mod, ver, value, lease)
            hist = [last]
            size += len(value) + len(k) + VERSION_OVERHEAD
        else:
            hist = [new_kv(k, flat[i], flat[i + 1], flat[i + 2], flat[i + 3], flat[i + 4])
                    for i in range(0, len(flat), 5)]
            size += (sum(len(kv.value) for kv in hist)
                     + len(hist) * (len(k) + VERSION_OVERHEAD))
            last = hist[-1]
        history[k] = hist
        if last.version:
            live[k] = last
            if last.lease:
                st._lease_keys.setdefault(last.lease, set()).add(k)
        else:
            dead.append(k)
        if len(hist) > 1 or not last.version:
            st._dirty.add(k)
    st._live.update(live)
    st._history = history
    st._dead.update(dead)
    st._log = [keys[p[0]] if len(p) == 1 else tuple(keys[i] for i in p) for p in events]
    st._rev, st._compact, st.applied_index = rev, compact, applied
    st._leases = dict(zip(leases[::2], leases[1::2], strict=True))
    st._last_lease_id = last_lease_id
    st._size = size
    st._alarms = set(zip(alarms[::2], alarms[1::2], strict=True))
    update_nospace(st)
    st._auth = auth_state
    if len(st._log) != rev - compact:
        raise ValueError("kv snapshot is inconsistent: event log does not match revisions")
