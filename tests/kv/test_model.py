"""The store against a simple reference model (a dict per revision), and snapshot round trips.

The model keeps every revision's whole state and events, so it is obviously right and slow;
the store must agree with it on every read at every retained revision and on every
``events_since`` answer, including after a snapshot is restored into another store. Leases
are part of it: a put with an unknown lease fails, and revoking a lease deletes its keys in
one revision.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confer.kv import (
    Compact,
    CompactedError,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRange,
    ErrorResult,
    Event,
    EventType,
    KeyValue,
    KVStore,
    LeaseGrant,
    LeaseGrantResult,
    LeaseRevoke,
    LeaseRevokeResult,
    Put,
    Txn,
    TxnResult,
    encode_command,
)
from confer.kv.keyrange import contains
from confer.kv.store import SnapshotAborted
from confer.raft.types import Entry

KEYS = [b"/a", b"/a/x", b"/a/y", b"/ab", b"/b", b"/c"]
RANGE_ENDS = [b"", b"\0", b"/a0", b"/b", b"/zz"]


@dataclass
class Model:
    states: dict[int, dict[bytes, KeyValue]] = field(default_factory=lambda: {1: {}})
    events: dict[int, list[Event]] = field(default_factory=lambda: {1: []})
    rev: int = 1
    compact: int = 0
    leases: dict[int, int] = field(default_factory=dict)

    def _commit(self, state: dict[bytes, KeyValue], events: list[Event]) -> None:
        if events:
            self.rev += 1
            self.states[self.rev] = state
            self.events[self.rev] = events

    def _put(self, state: dict[bytes, KeyValue], key: bytes, value: bytes, lease: int,
             events: list[Event]) -> None:
        prev = state.get(key)
        if prev is None:
            kv = KeyValue(key, self.rev + 1, self.rev + 1, 1, value, lease)
        else:
            kv = KeyValue(key, prev.create_revision, self.rev + 1, prev.version + 1, value, lease)
        state[key] = kv
        events.append(Event(EventType.PUT, kv, prev))

    def _delete(self, state: dict[bytes, KeyValue], key: bytes, range_end: bytes,
                events: list[Event]) -> None:
        for k in sorted(k for k in state if contains(key, range_end, k)):
            prev = state.pop(k)
            events.append(Event(EventType.DELETE, KeyValue(k, 0, self.rev + 1, 0, b"", 0), prev))

    def _holds(self, c: Compare) -> bool:
        kv = self.states[self.rev].get(c.key)
        if kv is None:
            if c.target == CompareTarget.VALUE:
                return False
            kv = KeyValue(c.key, 0, 0, 0, b"", 0)
        have = {CompareTarget.VERSION: kv.version, CompareTarget.CREATE: kv.create_revision,
                CompareTarget.MOD: kv.mod_revision, CompareTarget.VALUE: kv.value,
                CompareTarget.LEASE: kv.lease}[c.target]
        return {CompareResult.EQUAL: have == c.value, CompareResult.NOT_EQUAL: have != c.value,
                CompareResult.GREATER: have > c.value,  # type: ignore[operator]
                CompareResult.LESS: have < c.value}[c.result]  # type: ignore[operator]

    def apply(self, cmd: object) -> bool:
        """Apply; return False if the command must fail (and change nothing)."""
        state = dict(self.states[self.rev])
        events: list[Event] = []
        if isinstance(cmd, LeaseGrant):
            if cmd.id in self.leases:
                return False
            self.leases[cmd.id] = cmd.ttl
            return True
        if isinstance(cmd, LeaseRevoke):
            if self.leases.pop(cmd.id, None) is None:
                return False
            for k in sorted(k for k, kv in state.items() if kv.lease == cmd.id):
                self._delete(state, k, b"", events)
            self._commit(state, events)
            return True
        if isinstance(cmd, Put):
            if cmd.lease and cmd.lease not in self.leases:
                return False
            self._put(state, cmd.key, cmd.value, cmd.lease, events)
        elif isinstance(cmd, DeleteRange):
            self._delete(state, cmd.key, cmd.range_end, events)
        elif isinstance(cmd, Txn):  # flat, one write per key: see ``flat_txns``
            ok = all(self._holds(c) for c in cmd.compare)
            for op in cmd.success if ok else cmd.failure:
                if isinstance(op, Put):
                    self._put(state, op.key, op.value, op.lease, events)
                else:
                    self._delete(state, op.key, op.range_end, events)
        elif isinstance(cmd, Compact):
            if not self.compact < cmd.revision <= self.rev:
                return False
            self.compact = cmd.revision
            return True
        self._commit(state, events)
        return True


keys = st.sampled_from(KEYS)
LEASES = [3, 4]
puts = st.builds(Put, keys, st.binary(max_size=4), st.sampled_from([0, 0, *LEASES]))
deletes = st.builds(DeleteRange, keys, st.sampled_from(RANGE_ENDS))
lease_grants = st.builds(LeaseGrant, st.integers(1, 100), st.sampled_from(LEASES))
lease_revokes = st.builds(LeaseRevoke, st.sampled_from(LEASES))


@st.composite
def flat_txns(draw: st.DrawFn) -> Txn:
    def branch() -> list[object]:
        chosen = draw(st.lists(keys, unique=True, max_size=3))
        return [draw(st.builds(Put, st.just(k), st.binary(max_size=4)) | st.just(DeleteRange(k)))
                for k in chosen]

    compares = []
    for _ in range(draw(st.integers(0, 2))):
        target = draw(st.sampled_from(CompareTarget))
        value = draw(st.binary(max_size=2)) if target == CompareTarget.VALUE else draw(
            st.integers(0, 6))
        compares.append(Compare(draw(keys), b"", target, draw(st.sampled_from(CompareResult)),
                                value))
    return Txn(compares, branch(), branch())  # type: ignore[arg-type]


# Compaction is drawn as "how far behind the current revision", resolved when applied.
compactions = st.integers(-1, 6).map(lambda back: ("compact", back))
commands = st.lists(puts | puts | deletes | flat_txns() | compactions | lease_grants
                    | lease_revokes, max_size=30)


def run(store: KVStore, model: Model | None, cmds: list[object], index: int) -> int:
    for cmd in cmds:
        if isinstance(cmd, tuple):
            cmd = Compact((model.rev if model else store.revision) - cmd[1])
        index += 1
        result = store.apply(Entry(index, 1, encode_command(cmd)))  # type: ignore[arg-type]
        if model is not None:
            assert model.apply(cmd) != isinstance(result, ErrorResult), (cmd, result)
            if isinstance(cmd, Txn):
                assert isinstance(result, TxnResult)
            if isinstance(result, LeaseGrantResult):
                assert (result.id, result.ttl) == (cmd.id, cmd.ttl)  # type: ignore[union-attr]
            if isinstance(result, LeaseRevokeResult):
                assert result.revision == model.rev
            assert store.revision == model.rev
            assert {info.id: info.ttl for info in store.leases()} == model.leases
            assert store.compact_revision == model.compact
    return index


def check_against_model(store: KVStore, model: Model) -> None:
    for r in range(1, model.rev + 1):
        if r < model.compact:
            with pytest.raises(CompactedError):
                store.range(b"\0", b"\0", revision=r)
            continue
        expected = sorted(model.states[r].values(), key=lambda kv: kv.key)
        got = store.range(b"\0", b"\0", revision=r)
        assert got.kvs == expected and got.count == len(expected)
        for k in KEYS:
            assert store.get(k, r) == model.states[r].get(k)
            assert store.range(k, b"\0", revision=r, count_only=True).count == sum(
                1 for kv in expected if kv.key >= k)
    for start in range(1, model.rev + 2):
        if start <= model.compact:
            with pytest.raises(CompactedError):
                store.events_since(start)
            continue
        wanted = [e for r in range(start, model.rev + 1) for e in model.events[r]]
        assert store.events_since(start) == (wanted, model.rev + 1)
        assert store.events_since(start, b"/a", b"/a0")[0] == [
            e for e in wanted if b"/a" <= e.kv.key < b"/a0"]


def observe(store: KVStore) -> tuple[object, ...]:
    """Everything a client can see, at every revision still readable."""
    reads = [store.range(b"\0", b"\0", revision=r)
             for r in range(max(store.compact_revision, 1), store.revision + 1)]
    return (store.revision, store.compact_revision, store.applied_index, reads,
            store.events_since(store.oldest_revision), store.children(b"/"),
            store.children(b"/a"), [store.lease_keys(lease) for lease in (0, 3, 4)],
            store.leases())


@settings(max_examples=120, deadline=None)
@given(commands)
def test_store_agrees_with_the_model(cmds: list[object]) -> None:
    store, model = KVStore(), Model()
    run(store, model, cmds, 0)
    check_against_model(store, model)


@settings(max_examples=80, deadline=None)
@given(before=commands, after=commands)
def test_snapshot_round_trip_is_exact(before: list[object], after: list[object]) -> None:
    a, model = KVStore(), Model()
    index = run(a, model, before, 0)
    b = KVStore()
    b.execute(Put(b"/stale", b"state to be replaced"))
    b.restore(a.snapshot())
    assert observe(b) == observe(a)
    assert b.snapshot() == a.snapshot()
    run(a, model, after, index)
    run(b, None, after, index)
    assert observe(b) == observe(a)
    assert b.snapshot() == a.snapshot()
    check_against_model(b, model)


@settings(max_examples=80, deadline=None)
@given(before=commands, during=commands, step=st.integers(1, 4))
def test_an_incremental_snapshot_is_the_state_it_started_from(
        before: list[object], during: list[object], step: int) -> None:
    """snapshot_steps() captures the state at creation and yields snapshot()'s bytes of it
    (in parts), although writes go on between its steps; a compaction meanwhile aborts it."""
    a = KVStore()
    index = run(a, None, before, 0)
    expected = a.snapshot()
    steps = a.snapshot_steps(step)
    assert next(steps) is None  # captured
    compacted = False
    out = None
    for cmd in during:  # one write between two steps
        rev = a.compact_revision
        index = run(a, None, [cmd], index)
        compacted = compacted or a.compact_revision != rev
        try:
            out = next(steps, None)
        except SnapshotAborted:
            assert compacted
            return
        if out is not None:
            break
    if out is None:
        try:
            out = next(data for data in steps if data is not None)
        except SnapshotAborted:
            assert compacted
            return
    assert b"".join(out) == expected


def test_restore_of_nothing_is_the_empty_store() -> None:
    store = KVStore()
    store.execute(Put(b"/a", b""))
    store.restore(b"")
    assert (store.revision, len(store), store.events_since(1)) == (1, 0, ([], 2))


def test_restore_refuses_an_unknown_version() -> None:
    with pytest.raises(ValueError, match="version"):
        KVStore().restore(b"\x09" + KVStore().snapshot()[1:])


@pytest.mark.parametrize("enabled", [True, False])
def test_restore_leaves_the_garbage_collector_as_it_found_it(enabled: bool) -> None:
    """A restore pauses the cyclic collector (millions of new objects, none in a cycle),
    and gives it back as it was, a failed restore too."""
    a = KVStore()
    a.execute(Put(b"/a", b"1"))
    was = gc.isenabled()
    try:
        if not enabled:
            gc.disable()
        KVStore().restore(a.snapshot())
        assert gc.isenabled() == enabled
        with pytest.raises(ValueError):
            KVStore().restore(a.snapshot()[:-3])  # cut short: not valid msgpack
        assert gc.isenabled() == enabled
    finally:
        if was:
            gc.enable()
