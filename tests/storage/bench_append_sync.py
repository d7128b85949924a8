"""Microbenchmark of the hot path: append + sync of small batches (not collected by pytest).

    .venv/bin/python tests/storage/bench_append_sync.py [--batches N] [--nosync]

Runs in a temporary directory that is removed afterwards.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from confer.raft.types import Entry, HardState
from confer.storage import Disk, DurableStorage, NoSyncDisk


def run(batches: int, per_batch: int, size: int, disk: Disk) -> float:
    payload = bytes(size)
    with tempfile.TemporaryDirectory() as d:
        st = DurableStorage.open(d, disk=disk)
        index = 1
        t0 = time.perf_counter()
        for _ in range(batches):
            ents = [Entry(i, 1, payload) for i in range(index, index + per_batch)]
            index += per_batch
            st.append(ents)
            st.set_hard_state(HardState(1, 1, index - 1))
            st.sync()
        elapsed = time.perf_counter() - t0
        st.close()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=10_000)
    ap.add_argument("--per-batch", type=int, default=10)
    ap.add_argument("--nosync", action="store_true", help="skip fdatasync (CPU cost only)")
    args = ap.parse_args()
    disk = NoSyncDisk() if args.nosync else Disk()
    for size in (64, 1024):
        t = run(args.batches, args.per_batch, size, disk)
        n = args.batches * args.per_batch
        print(f"{args.batches} batches x {args.per_batch} entries x {size:4d} B "
              f"({'no fsync' if args.nosync else 'fdatasync'}): {t:.3f} s, "
              f"{t / args.batches * 1e6:.1f} us/batch, {n / t:,.0f} entries/s")


if __name__ == "__main__":
    main()
