"""Load generator for a running Confer cluster (or one it starts): ops/s and latency.

Workloads:
  put               Put of VALUE_SIZE bytes to one of KEYS keys
  get               linearizable Range of one key (ReadIndex)
  get-serializable  serializable Range of one key (local state)
  watch             WATCHERS watch one prefix; CLIENTS writers put into it; measures
                    end-to-end delivery latency (put sent -> event received) and events/s

Every run is bounded by --duration and --max-ops. Run it from the repository root as a
module: --spawn uses the test-side `testing` package there. Examples:

  .venv/bin/python -m benchmarks.server_bench --spawn 3 --workload put --clients 200
  .venv/bin/python -m benchmarks.server_bench --endpoints 127.0.0.1:7379 --workload get --json
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import grpc

from confer.v1 import kv_pb2, kv_pb2_grpc
from testing import ProcessCluster


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def summary(name: str, latencies: list[float], elapsed: float, errors: int,
            extra: dict[str, object] | None = None) -> dict[str, object]:
    latencies.sort()
    return {
        "workload": name, "ops": len(latencies), "errors": errors,
        "seconds": round(elapsed, 2),
        "ops_per_sec": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "max_ms": round(latencies[-1] * 1000, 2) if latencies else float("nan"),
        **(extra or {}),
    }


class Load:
    def __init__(self, args: argparse.Namespace, endpoints: list[str]) -> None:
        self.args = args
        # Several connections, spread over the members, like many client processes would use.
        self.channels = [grpc.aio.insecure_channel(
            endpoints[i % len(endpoints)], options=[("grpc.use_local_subchannel_pool", 1)])
            for i in range(args.channels)]
        self.stubs = [kv_pb2_grpc.KVStub(ch) for ch in self.channels]
        self.value = random.randbytes(args.value_size)
        self.keys = [f"/bench/{'k' * max(0, args.key_size - 16)}{i:08d}"
                     for i in range(args.keys)]

    async def close(self) -> None:
        for ch in self.channels:
            await ch.close()

    async def closed_loop(self, op: str) -> dict[str, object]:
        args = self.args
        latencies: list[float] = []
        errors = 0
        budget = args.max_ops
        rng = random.Random(1)

        async def client(n: int) -> None:
            nonlocal budget, errors
            stub = self.stubs[n % len(self.stubs)]
            while budget > 0 and time.perf_counter() < deadline:
                budget -= 1
                key = self.keys[rng.randrange(len(self.keys))]
                t0 = time.perf_counter()
                try:
                    if op == "put":
                        await stub.Put(kv_pb2.PutRequest(path=key, value=self.value), timeout=5)
                    else:
                        await stub.Range(kv_pb2.RangeRequest(
                            path=key, serializable=op == "get-serializable"), timeout=5)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        if op != "put":  # something to read
            for chunk in range(0, min(1000, len(self.keys)), 100):
                await asyncio.gather(*(self.stubs[0].Put(kv_pb2.PutRequest(
                    path=k, value=self.value), timeout=30) for k in self.keys[chunk:chunk + 100]))
        start = time.perf_counter()
        deadline = start + args.duration
        await asyncio.gather(*(client(n) for n in range(args.clients)))
        return summary(op, latencies, time.perf_counter() - start, errors,
                       {"clients": args.clients, "value_size": args.value_size})

    async def watch_fanout(self) -> dict[str, object]:
        args = self.args
        sent: dict[int, float] = {}  # revision -> time the put was sent
        latencies: list[float] = []
        received = 0
        deadline = time.perf_counter() + args.duration
        ready = 0

        async def watcher(n: int) -> None:
            nonlocal received, ready
            stream = self.stubs[n % len(self.stubs)].Watch(
                kv_pb2.WatchRequest(path="/bench", recursive=True), timeout=args.duration + 30)
            async for resp in stream:
                if resp.created:
                    ready += 1
                    continue
                now = time.perf_counter()
                for e in resp.events:
                    received += 1
                    t0 = sent.get(e.kv.mod_revision)
                    if t0 is not None:
                        latencies.append(now - t0)
                if now > deadline:
                    break

        async def writer(n: int, counter: itertools.count[int]) -> None:
            stub = self.stubs[n % len(self.stubs)]
            while time.perf_counter() < deadline and next(counter) < args.max_ops:
                t0 = time.perf_counter()
                resp = await stub.Put(kv_pb2.PutRequest(path=self.keys[n % len(self.keys)],
                                                        value=self.value), timeout=5)
                sent[resp.header.revision] = t0
                await asyncio.sleep(args.write_interval)

        watchers = [asyncio.create_task(watcher(n)) for n in range(args.watchers)]
        while ready < args.watchers:
            await asyncio.sleep(0.05)
        start = time.perf_counter()
        counter = itertools.count()
        await asyncio.gather(*(writer(n, counter) for n in range(args.clients)))
        await asyncio.sleep(1.0)  # let the last events arrive
        for w in watchers:
            w.cancel()
        elapsed = time.perf_counter() - start
        result = summary("watch", latencies, elapsed, 0,
                         {"watchers": args.watchers, "writes": len(sent),
                          "events_delivered": received,
                          "events_per_sec": round(received / elapsed, 1)})
        result["ops"] = len(sent)
        result["ops_per_sec"] = round(len(sent) / elapsed, 1)
        return result


async def run(args: argparse.Namespace, endpoints: list[str]) -> list[dict[str, object]]:
    load = Load(args, endpoints)
    try:
        out = []
        for workload in args.workload.split(","):
            if workload == "watch":
                out.append(await load.watch_fanout())
            elif workload in ("put", "get", "get-serializable"):
                out.append(await load.closed_loop(workload))
            else:
                raise SystemExit(f"unknown workload {workload!r}")
        return out
    finally:
        await load.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--endpoints", help="comma-separated client addresses of a cluster")
    where.add_argument("--spawn", type=int, default=3, help="start a local N-node cluster")
    ap.add_argument("--workload", default="put", help="put,get,get-serializable,watch")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--channels", type=int, default=16, help="gRPC connections to spread over")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--max-ops", type=int, default=1_000_000)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--key-size", type=int, default=24)
    ap.add_argument("--value-size", type=int, default=1024)
    ap.add_argument("--watchers", type=int, default=100)
    ap.add_argument("--write-interval", type=float, default=0.01,
                    help="watch workload: pause of each writer between puts")
    ap.add_argument("--tick-ms", type=int, default=100, help="--spawn: Raft tick")
    ap.add_argument("--target", choices=("leader", "all"), default="leader",
                    help="--spawn: send every request to the leader (as confer.Client does "
                         "for writes), or spread them over all members (followers forward "
                         "writes)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    with ExitStack() as stack:
        if args.endpoints:
            endpoints = args.endpoints.split(",")
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="confer-bench-"))
            cluster = stack.enter_context(ProcessCluster(args.spawn, Path(tmp),
                                                         tick_ms=args.tick_ms))
            leader = cluster.leader()
            endpoints = cluster.endpoints
            if args.target == "leader":  # as the client library does for writes
                endpoints = [cluster.nodes[leader].client_addr]
        results = runner(run(args, endpoints))
    for r in results:
        if args.json:
            print(json.dumps(r))
        else:
            extra = (f"  events/s {r['events_per_sec']}  delivered {r['events_delivered']}"
                     if r["workload"] == "watch" else "")
            print(f"{r['workload']:<17} {r['ops_per_sec']:>9} ops/s  p50 {r['p50_ms']} ms  "
                  f"p99 {r['p99_ms']} ms  max {r['max_ms']} ms  ({r['ops']} ops, "
                  f"{r['errors']} errors){extra}")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
