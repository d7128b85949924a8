"""Raft core throughput: a 3-node cluster in one process, real WAL with fsync, in-process network.

Reports committed proposals per second and proposal latency percentiles (propose -> applied on
the leader) for each payload size. Every run is bounded by a duration and an operation count.

    .venv/bin/python benchmarks/raft_bench.py                       # 64 B and 1 KiB, 200 clients
    .venv/bin/python benchmarks/raft_bench.py --sizes 1024 --clients 50 --duration 10 --json
    .venv/bin/python benchmarks/raft_bench.py --storage memory      # the in-memory twin
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from confer.raft.fsm import StateMachine
from confer.raft.storage import MemoryStorage, WritableLogStorage
from confer.raft.types import ConfChange, ConfState, Entry
from confer.server.local import LocalCluster
from confer.server.node import NodeOptions


class CountingStateMachine(StateMachine):
    """Keeps only a count and the last payload: the benchmark measures Raft, not the FSM."""

    def __init__(self) -> None:
        self.count = 0

    def apply(self, entry: Entry) -> int:
        self.count += 1
        return self.count

    def apply_conf_change(self, index: int, cc: ConfChange, conf: ConfState) -> None:
        """Membership is not this benchmark's concern."""

    def snapshot(self) -> bytes:
        return self.count.to_bytes(8, "big")

    def restore(self, data: bytes) -> None:
        self.count = int.from_bytes(data, "big") if data else 0


class SyncCounter:
    """Wraps a storage to count syncs and appended entries (to show group commit)."""

    def __init__(self, inner: WritableLogStorage) -> None:
        self._inner = inner
        self.syncs = 0
        self.appended = 0

    def __getattr__(self, name: str):  # delegate everything else
        return getattr(self._inner, name)

    def append(self, entries: list[Entry]) -> None:
        self.appended += len(entries)
        self._inner.append(entries)

    def sync(self) -> None:
        self.syncs += 1
        self._inner.sync()


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


async def run_one(size: int, clients: int, duration: float, max_ops: int, storage_kind: str,
                  workdir: Path) -> dict[str, float]:
    counters: dict[int, SyncCounter] = {}

    def storage_factory(node_id: int) -> WritableLogStorage:
        if storage_kind == "memory":
            inner: WritableLogStorage = MemoryStorage()
        else:
            from confer.storage import DurableStorage

            inner = DurableStorage.open(workdir / f"size{size}-node{node_id}")
        counters[node_id] = SyncCounter(inner)
        return counters[node_id]  # type: ignore[return-value]

    cluster = LocalCluster(3, storage_factory=storage_factory, fsm_factory=CountingStateMachine,
                           options=NodeOptions(tick_interval=0.05, snapshot_every=50_000,
                                               keep_entries=10_000))
    await cluster.start()
    try:
        leader = await cluster.wait_leader()
        payload = b"x" * size
        for _ in range(100):  # warm up
            await leader.propose(payload)
        latencies: list[float] = []
        deadline = time.perf_counter() + duration
        budget = max_ops

        async def client() -> None:
            nonlocal budget
            while budget > 0 and time.perf_counter() < deadline:
                budget -= 1
                t0 = time.perf_counter()
                await leader.propose(payload)
                latencies.append(time.perf_counter() - t0)

        base = {i: (c.syncs, c.appended) for i, c in counters.items()}
        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    finally:
        await cluster.stop()
    latencies.sort()
    lead_counter = counters[leader.id]
    syncs = lead_counter.syncs - base[leader.id][0]
    appended = lead_counter.appended - base[leader.id][1]
    return {
        "payload_bytes": size,
        "clients": clients,
        "ops": len(latencies),
        "seconds": round(elapsed, 3),
        "ops_per_sec": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "max_ms": round(latencies[-1] * 1000, 2) if latencies else float("nan"),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else float("nan"),
        "leader_syncs": syncs,
        "entries_per_sync": round(appended / syncs, 1) if syncs else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="64,1024", help="payload sizes in bytes, comma separated")
    ap.add_argument("--clients", type=int, default=200, help="concurrent proposers")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per payload size")
    ap.add_argument("--max-ops", type=int, default=500_000, help="upper bound on proposals")
    ap.add_argument("--storage", choices=("wal", "memory"), default="wal")
    ap.add_argument("--json", action="store_true", help="print one JSON object per run")
    args = ap.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
        loop_name = "uvloop"
    except ImportError:
        loop_name = "asyncio"
    results = []
    with tempfile.TemporaryDirectory(prefix="confer-bench-") as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            r = asyncio.run(run_one(size, args.clients, args.duration, args.max_ops,
                                    args.storage, Path(tmp)))
            results.append(r)
            if args.json:
                print(json.dumps({**r, "storage": args.storage, "loop": loop_name}))
            else:
                print(f"{size:>6} B  {r['ops_per_sec']:>9.0f} proposals/s  "
                      f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
                      f"max {r['max_ms']:.2f} ms  ({r['ops']} ops, {args.clients} clients, "
                      f"{r['entries_per_sync']} entries/fsync, {args.storage}, {loop_name})")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
