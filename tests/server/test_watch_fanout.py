"""The watch hub's fan-out through its WatchIndex: every watcher gets exactly the events a
brute-force scan of every applied event would give it: nothing lost, nothing twice, in
order, whether it reads live, falls behind and catches up from the history, or is created
and cancelled between writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from unittest import mock

from hypothesis import example, given, settings
from hypothesis import strategies as st

from confer.kv import DeleteRange, Event, KVStore, Put, Txn, encode_command, prefix_end
from confer.raft.types import Entry
from confer.server import watch as watch_mod
from confer.server.api.kv import tree_span
from confer.server.watch import Watcher, WatchHub, boundary_match

KEYS = [b"/a", b"/a/b", b"/a/b/c", b"/a-", b"/a.b", b"/ab", b"/b", b"/b/x", b"/c", b"a", b"\xff"]
key = st.sampled_from(KEYS)


@dataclass
class Spec:
    """A watcher as the test sees it: what it should get, decided by brute force."""

    shape: str
    key: bytes
    end: bytes
    start: int  # 0: from now
    accept: object = None
    path: bytes = b""  # of a tree watch
    watcher: Watcher | None = None
    first: int = 0  # the first revision it may see
    got: list[tuple[int, bytes, int]] = field(default_factory=list)
    cancelled_at: int | None = None

    def contains(self, k: bytes) -> bool:
        if self.shape == "tree":
            return bool(self.accept(k))  # type: ignore[operator]
        if not self.end:
            return k == self.key
        return self.key <= k and (self.end == b"\0" or k < self.end)


def spec_of(shape: str, k: bytes, other: bytes, start: int) -> Spec:
    if shape == "single":
        return Spec(shape, k, b"", start)
    if shape == "prefix":
        return Spec(shape, k, prefix_end(k), start)
    if shape == "from":
        return Spec(shape, k, b"\0", start)
    if shape == "range":
        return Spec(shape, k, other, start)
    path = k if k.startswith(b"/") else b"/"
    lo, hi = tree_span(path)
    return Spec("tree", lo, hi, start, accept=boundary_match(path), path=path)


OPS = st.one_of(
    st.tuples(st.just("put"), key),
    st.tuples(st.just("delete"), key),
    st.tuples(st.just("txn"), st.lists(key, min_size=2, max_size=4, unique=True)),
    st.tuples(st.just("watch"), st.sampled_from(["single", "prefix", "from", "range", "tree"]),
              key, key, st.integers(0, 6), st.booleans()),
    st.tuples(st.just("cancel"), st.integers(0, 20)),
    st.tuples(st.just("drain"), st.integers(0, 20)),
)


def drain(hub: WatchHub, s: Spec) -> None:
    """Take everything the watcher has now (bounded: each take makes progress)."""
    assert s.watcher is not None
    for _ in range(1_000):
        for e in hub.take(s.watcher):
            s.got.append((int(e.type), e.kv.key, e.kv.mod_revision))
        if not hub.pending(s.watcher):
            return
    raise AssertionError("take made no progress")


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(OPS, max_size=40), limit=st.sampled_from([3, 10_000]))
# A live subtree watch of /a is pushed /a- by the index (its key range) but must not get it.
@example(ops=[("watch", "tree", b"/a", b"/a", 0, True), ("put", b"/a-"), ("put", b"/a/b")],
         limit=10_000)
# A live watcher that overflows its buffer falls back to the history, then goes live again.
@example(ops=[("watch", "prefix", b"/a", b"", 0, True), ("txn", [b"/a", b"/a/b", b"/ab"]),
              ("txn", [b"/a-", b"/a.b"]), ("drain", 0), ("put", b"/a/b/c")], limit=3)
def test_index_fanout_equals_brute_force(ops: list[tuple], limit: int) -> None:  # type: ignore[type-arg]
    kv = KVStore()
    applied: list[Event] = []
    kv.add_listener(applied.extend)
    hub = WatchHub(kv)
    specs: list[Spec] = []
    index = 0

    def apply(cmd: object) -> None:
        nonlocal index
        index += 1
        kv.apply(Entry(index, 1, encode_command(cmd)))  # type: ignore[arg-type]

    with mock.patch.object(watch_mod, "MAX_BUFFERED_EVENTS", limit):  # 3: falls back often
        for op in ops:
            if op[0] == "put":
                apply(Put(op[1], b"v"))
            elif op[0] == "delete":
                apply(DeleteRange(op[1]))
            elif op[0] == "txn":
                apply(Txn([], [Put(k, b"t") for k in op[1]], []))
            elif op[0] == "watch":
                s = spec_of(op[1], op[2], op[3], min(op[4], kv.revision))
                s.first = s.start or kv.revision + 1
                s.watcher = (hub.tree_watcher(s.path, (s.key, s.end), s.start)
                             if s.shape == "tree" else hub.watcher(s.key, s.end, s.start))
                specs.append(s)
                if op[5]:
                    drain(hub, s)  # live from now on: later events come pushed, not read
            elif specs and op[0] == "cancel":
                s = specs[op[1] % len(specs)]
                if s.cancelled_at is None:
                    drain(hub, s)  # what it was owed up to now, then nothing more
                    s.cancelled_at = kv.revision
                    assert s.watcher is not None
                    hub.cancel(s.watcher)
            elif specs and op[0] == "drain":
                drain(hub, specs[op[1] % len(specs)])
        for s in specs:
            drain(hub, s)
    for s in specs:
        last = kv.revision if s.cancelled_at is None else s.cancelled_at
        want = [(int(e.type), e.kv.key, e.kv.mod_revision) for e in applied
                if s.first <= e.kv.mod_revision <= last and s.contains(e.kv.key)]
        assert s.got == want, (s.shape, s.key, s.end, s.first)
    # Cancelled watchers are gone from the index; the others are still there.
    assert len(hub.index) == len(hub.watchers) == sum(s.cancelled_at is None for s in specs)
