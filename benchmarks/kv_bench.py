"""Microbenchmark of the KV state machine (not collected by pytest).

    .venv/bin/python benchmarks/kv_bench.py            # default: 200k puts of 1 KiB
    .venv/bin/python benchmarks/kv_bench.py --n 500000 --keys 100000 --value-size 1024

Measures, in one process with no Raft: ``apply()`` of pre-encoded Put entries (decode +
MVCC write + event log + one listener, as the watch hub will be), single-key reads now and in
the past, a prefix range, ``children`` of a wide directory, snapshot and restore.

Rates are given in process CPU time (what the store costs, even on a busy shared machine)
and in wall time. ``--no-gc`` disables Python's cyclic collector during the put phase, to
show its share: the retained history is millions of small objects it keeps re-scanning.
"""

from __future__ import annotations

import argparse
import gc
import time

from confer.kv import Compact, KVStore, Put, encode_command, prefix_end
from confer.raft.types import Entry


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>10,.0f}/s ({seconds * 1e6 / n:5.2f} µs each)"


class _Clock:
    """Process CPU time and wall time of a block."""

    def __enter__(self) -> _Clock:
        self.cpu, self.wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu = time.process_time() - self.cpu
        self.wall = time.perf_counter() - self.wall

    def rates(self, n: int) -> str:
        return f"cpu {_rate(n, self.cpu)}   wall {_rate(n, self.wall)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=200_000, help="puts to apply")
    ap.add_argument("--keys", type=int, default=50_000, help="distinct keys written")
    ap.add_argument("--value-size", type=int, default=1024)
    ap.add_argument("--no-gc", action="store_true", help="disable the cyclic GC for the puts")
    args = ap.parse_args()

    value = b"x" * args.value_size
    keys = [b"/bench/dir%03d/key%08d" % (i % 100, i) for i in range(args.keys)]
    entries = [Entry(i + 1, 1, encode_command(Put(keys[i % args.keys], value)))
               for i in range(args.n)]
    store = KVStore()
    seen = 0

    def listener(events: tuple[object, ...]) -> None:
        nonlocal seen
        seen += len(events)

    store.add_listener(listener)
    apply = store.apply
    if args.no_gc:
        gc.disable()
    with _Clock() as clock:
        for e in entries:
            apply(e)
    gc.enable()
    print(f"apply Put {args.value_size} B, {args.n} puts on {args.keys} keys: "
          f"{clock.rates(args.n)}")
    assert seen == args.n and store.revision == args.n + 1

    reads = 200_000
    with _Clock() as clock:
        for i in range(reads):
            store.range(keys[i % args.keys])
    print(f"range(single key), now:           {clock.rates(reads)}")
    past = store.revision - args.n // 2
    with _Clock() as clock:
        for i in range(reads):
            store.range(keys[i % args.keys], revision=past)
    print(f"range(single key), past revision: {clock.rates(reads)}")

    prefix = b"/bench/dir042/"
    with _Clock() as clock:
        for _ in range(1000):
            r = store.range(prefix, prefix_end(prefix), limit=100)
    print(f"range(prefix of {r.count} keys, limit=100): {clock.rates(1000)}")

    t0 = time.perf_counter()
    names, _ = store.children(b"/bench")
    print(f"children(/bench) -> {len(names)} dirs of {args.keys // 100} keys each: "
          f"{(time.perf_counter() - t0) * 1e3:.2f} ms")

    t0 = time.perf_counter()
    snap = store.snapshot()
    t1 = time.perf_counter()
    other = KVStore()
    other.restore(snap)
    t2 = time.perf_counter()
    print(f"snapshot: {len(snap) / 1e6:.1f} MB in {(t1 - t0) * 1e3:.0f} ms, "
          f"restore in {(t2 - t1) * 1e3:.0f} ms")

    t0 = time.perf_counter()
    result = store.execute(Compact(store.revision - 1))
    print(f"compact to revision {store.revision - 1}: {(time.perf_counter() - t0) * 1e3:.0f} ms "
          f"({result})")


if __name__ == "__main__":
    main()
