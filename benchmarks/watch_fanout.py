"""Watch fan-out: N watchers of one prefix on M etcd Watch streams, writes at a fixed rate.

Starts a local 3-node Confer cluster (and, with ``--etcd``, a local 3-node etcd cluster of
Debian's ``/usr/bin/etcd``, in the same invocation, one after the other), all on loopback,
every process started here and killed by PID at the end. On one member it opens M Watch
streams (etcd v3 API, over a few connections) and creates N/M watches of the prefix on each,
as etcd's clients multiplex them (``watch_id`` 0, "server chooses"); then it puts one key of
the prefix RATE times a second, WRITES times, each value carrying its send time. It prints,
per system: events delivered of those expected (N x WRITES), watches that missed an event or
saw one twice or out of order, p50/p99/max delivery latency (send of the put to receipt of the
event, over every watcher and write), the member's CPU time per write (from the first write
until every event was received) and its RSS growth per watcher.

The watchers run in this one Python process: decoding N responses per write is part of the
latency measured, the same for both systems. Figures on a shared machine are indicative.

    .venv/bin/python -m benchmarks.watch_fanout --watchers 2000 --streams 100 --etcd
    .venv/bin/python -m benchmarks.watch_fanout --watchers 10000 --streams 100 --writes 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from benchmarks.etcd_compare import EtcdCluster, cpu_seconds, percentile, rss_bytes
from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from testing import ProcessCluster

PREFIX = b"/fanout/"
PREFIX_END = b"/fanout0"
STAMP = struct.Struct("<d")


@dataclass
class Tally:
    """What the watchers received."""

    latencies: list[float] = field(default_factory=list)
    per_watch: dict[tuple[int, int], int] = field(default_factory=dict)
    last_revision: dict[tuple[int, int], int] = field(default_factory=dict)
    out_of_order: int = 0
    refused: int = 0
    created: int = 0


class WatchStream:
    """One Watch stream carrying ``count`` watches of the prefix."""

    def __init__(self, n: int, stub: rpc_pb2_grpc.WatchStub, count: int, tally: Tally) -> None:
        self.n = n
        self.count = count
        self.tally = tally
        self.requests: asyncio.Queue[rpc_pb2.WatchRequest | None] = asyncio.Queue()
        self.call = stub.Watch(self._requests())

    async def _requests(self) -> AsyncIterator[rpc_pb2.WatchRequest]:
        while (req := await self.requests.get()) is not None:
            yield req

    def create_all(self) -> None:
        for _ in range(self.count):
            self.requests.put_nowait(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
                key=PREFIX, range_end=PREFIX_END)))

    async def receive(self) -> None:
        t = self.tally
        async for resp in self.call:
            now = time.perf_counter()
            if resp.created:
                if resp.canceled:
                    t.refused += 1
                else:
                    t.created += 1
                continue
            key = (self.n, resp.watch_id)
            for e in resp.events:
                t.latencies.append(now - STAMP.unpack(e.kv.value)[0])
                if e.kv.mod_revision <= t.last_revision.get(key, 0):
                    t.out_of_order += 1
                t.last_revision[key] = e.kv.mod_revision
                t.per_watch[key] = t.per_watch.get(key, 0) + 1

    def close(self) -> None:
        self.requests.put_nowait(None)
        self.call.cancel()


async def wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def fanout(endpoint: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    tally = Tally()
    channels = [grpc.aio.insecure_channel(endpoint, options=[
        ("grpc.use_local_subchannel_pool", 1)]) for _ in range(args.channels)]
    per_stream = [args.watchers // args.streams + (i < args.watchers % args.streams)
                  for i in range(args.streams)]
    streams = [WatchStream(i, rpc_pb2_grpc.WatchStub(channels[i % len(channels)]), count,
                           tally) for i, count in enumerate(per_stream)]
    readers = [asyncio.ensure_future(s.receive()) for s in streams]
    try:
        kv = rpc_pb2_grpc.KVStub(channels[0])
        await kv.Put(rpc_pb2.PutRequest(key=b"/warmup", value=b"1"), timeout=30)
        await asyncio.sleep(1.0)
        rss_before = rss_bytes(pid)
        t0 = time.perf_counter()
        for s in streams:
            s.create_all()
        if not await wait_for(lambda: tally.created + tally.refused >= args.watchers, 120):
            raise TimeoutError(f"only {tally.created} of {args.watchers} watches created")
        create_s = time.perf_counter() - t0
        await asyncio.sleep(1.0)
        rss_after = rss_bytes(pid)
        expected = tally.created * args.writes
        cpu_before = cpu_seconds(pid)
        for i in range(args.writes):
            due = t0 = time.perf_counter()
            await kv.Put(rpc_pb2.PutRequest(key=PREFIX + b"k%d" % (i % 10),
                                            value=STAMP.pack(t0)), timeout=30)
            await asyncio.sleep(max(0.0, due + 1 / args.rate - time.perf_counter()))
        await wait_for(lambda: len(tally.latencies) >= expected, args.drain)
        await asyncio.sleep(0.5)  # anything extra (a duplicate) would arrive now
        cpu = cpu_seconds(pid) - cpu_before
    finally:
        for s in streams:
            s.close()
        for r in readers:
            r.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for ch in channels:
            await ch.close()
    lat = sorted(tally.latencies)
    short = sum(1 for k in tally.per_watch if tally.per_watch[k] != args.writes)
    short += tally.created - len(tally.per_watch)  # watches that got nothing at all
    return {"watchers": tally.created, "refused": tally.refused, "streams": args.streams,
            "writes": args.writes, "expected": expected, "delivered": len(lat),
            "watches_wrong_count": short, "out_of_order": tally.out_of_order,
            "p50_ms": round(percentile(lat, 0.5) * 1000, 1),
            "p99_ms": round(percentile(lat, 0.99) * 1000, 1),
            "max_ms": round(lat[-1] * 1000, 1) if lat else None,
            "create_s": round(create_s, 2),
            "server_cpu_ms_per_write": round(cpu * 1000 / args.writes, 1),
            "rss_per_watcher_bytes": round((rss_after - rss_before) / max(1, tally.created))}


def run_system(name: str, tmp: Path, args: argparse.Namespace, runner: Any) -> dict[str, Any]:
    with ExitStack() as stack:
        (tmp / name).mkdir()
        if name == "confer":
            cluster: Any = stack.enter_context(ProcessCluster(3, tmp / name, tick_ms=100))
            for n in cluster.nodes.values():
                n.wait_ready()
            cluster.leader()
            node = cluster.nodes[1]
            endpoint, pid = node.client_addr, node.pid
        else:
            cluster = stack.enter_context(EtcdCluster(tmp / name))
            endpoint, pid = cluster.endpoints[0], cluster.procs[0].pid
        result: dict[str, Any] = runner(fanout(endpoint, pid, args))
        return {"system": name, **result}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--watchers", type=int, default=2000)
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--channels", type=int, default=4, help="connections the streams share")
    ap.add_argument("--writes", type=int, default=20)
    ap.add_argument("--rate", type=float, default=1.0, help="writes per second")
    ap.add_argument("--drain", type=float, default=30.0,
                    help="seconds to wait for the last events after the last write")
    ap.add_argument("--etcd", action="store_true", help="also run against a local etcd")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not (0 < args.streams <= args.watchers and args.writes > 0 and args.rate > 0
            and args.channels > 0):
        ap.error("need 0 < streams <= watchers, writes > 0, rate > 0, channels > 0")
    if args.etcd and shutil.which("etcd") is None:
        print("etcd not found: apt-get install etcd-server", file=sys.stderr)
        return 2
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    with tempfile.TemporaryDirectory(prefix="confer-watch-fanout-") as d:
        for name in ["confer", "etcd"] if args.etcd else ["confer"]:
            r = run_system(name, Path(d), args, runner)
            if args.json:
                print(json.dumps(r), flush=True)
                continue
            print(f"{name:<7} {r['watchers']} watchers on {r['streams']} streams, "
                  f"{r['writes']} writes at {args.rate}/s: delivered {r['delivered']} of "
                  f"{r['expected']} (watches with a wrong count {r['watches_wrong_count']}, "
                  f"out of order {r['out_of_order']}, refused {r['refused']}); "
                  f"latency p50 {r['p50_ms']} ms p99 {r['p99_ms']} ms max {r['max_ms']} ms; "
                  f"member CPU {r['server_cpu_ms_per_write']} ms/write; created in "
                  f"{r['create_s']} s, RSS +{r['rss_per_watcher_bytes']} B/watcher",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
