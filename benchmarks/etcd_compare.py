"""Confer vs etcd, same machine, same load, same invocation.

Starts a local 3-node Confer cluster and a local 3-node etcd cluster (Debian's etcd-server,
`apt-get install etcd-server`), both on loopback with fsync on, and drives each through the etcd
v3 gRPC API with the same closed-loop load: N concurrent clients doing put or get (linearizable
and serializable) of VALUE_SIZE bytes for DURATION seconds. Prints ops/s and latency
percentiles side by side. Every process is started here and killed by PID at the end.

    .venv/bin/python benchmarks/etcd_compare.py --clients 200 --duration 10
    .venv/bin/python benchmarks/etcd_compare.py --workload put --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import grpc

from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.testing import ProcessCluster, free_port


class EtcdCluster:
    """Three etcd processes on loopback; killed and reaped on exit."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.ports = [(free_port(), free_port()) for _ in range(3)]
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{c}" for c, _ in self.ports]

    def __enter__(self) -> EtcdCluster:
        initial = ",".join(f"e{i}=http://127.0.0.1:{p}" for i, (_, p) in enumerate(self.ports))
        for i, (client, peer) in enumerate(self.ports):
            log = open(self.base / f"etcd{i}.log", "wb")  # the child keeps its own copy
            self.procs.append(subprocess.Popen(
                ["etcd", "--name", f"e{i}", "--data-dir", str(self.base / f"etcd{i}"),
                 "--listen-client-urls", f"http://127.0.0.1:{client}",
                 "--advertise-client-urls", f"http://127.0.0.1:{client}",
                 "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-cluster", initial, "--initial-cluster-state", "new",
                 "--log-level", "error"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
            log.close()
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with grpc.insecure_channel(self.endpoints[0]) as ch:
                    rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"ready", value=b"1"),
                                                timeout=2)
                return
            except grpc.RpcError:
                time.sleep(0.2)
        raise TimeoutError("etcd cluster did not become ready")

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait(timeout=30)


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, round(q * (len(values) - 1)))] if values else float("nan")


async def closed_loop(endpoints: list[str], workload: str, clients: int, duration: float,
                      value_size: int, keys: int) -> dict[str, object]:
    channels = [grpc.aio.insecure_channel(endpoints[i % len(endpoints)],
                                          options=[("grpc.use_local_subchannel_pool", 1)])
                for i in range(16)]
    stubs = [rpc_pb2_grpc.KVStub(ch) for ch in channels]
    value = random.randbytes(value_size)
    names = [b"/bench/k%08d" % i for i in range(keys)]
    try:
        if workload != "put":
            for i in range(0, min(keys, 1000), 100):
                await asyncio.gather(*(stubs[0].Put(rpc_pb2.PutRequest(key=k, value=value),
                                                    timeout=30) for k in names[i:i + 100]))
        latencies: list[float] = []
        errors = 0
        rng = random.Random(7)
        start = time.perf_counter()
        deadline = start + duration

        async def client(n: int) -> None:
            nonlocal errors
            stub = stubs[n % len(stubs)]
            while time.perf_counter() < deadline:
                key = names[rng.randrange(min(keys, 1000) if workload != "put" else keys)]
                t0 = time.perf_counter()
                try:
                    if workload == "put":
                        await stub.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=5)
                    else:
                        await stub.Range(rpc_pb2.RangeRequest(
                            key=key, serializable=workload == "get-serializable"), timeout=5)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(client(n) for n in range(clients)))
        elapsed = time.perf_counter() - start
    finally:
        for ch in channels:
            await ch.close()
    latencies.sort()
    return {"workload": workload, "ops": len(latencies), "errors": errors,
            "ops_per_sec": round(len(latencies) / elapsed, 1),
            "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
            "max_ms": round(latencies[-1] * 1000, 2) if latencies else float("nan")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", default="put,get,get-serializable")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--value-size", type=int, default=1024)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if shutil.which("etcd") is None:
        print("etcd not found: apt-get install etcd-server", file=sys.stderr)
        return 2
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    rows = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="confer-vs-etcd-")))
        (tmp / "confer").mkdir()
        confer = stack.enter_context(ProcessCluster(3, tmp / "confer", tick_ms=100))
        confer.leader()
        etcd = stack.enter_context(EtcdCluster(tmp))
        for workload in args.workload.split(","):
            for name, endpoints in (("confer", confer.endpoints), ("etcd", etcd.endpoints)):
                r = runner(closed_loop(endpoints, workload, args.clients, args.duration,
                                       args.value_size, args.keys))
                rows.append({"system": name, **r})
                if args.json:
                    print(json.dumps(rows[-1]))
                else:
                    print(f"{name:<7} {workload:<17} {r['ops_per_sec']:>9} ops/s  "
                          f"p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  max {r['max_ms']} ms  "
                          f"({r['ops']} ops, {r['errors']} errors)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
