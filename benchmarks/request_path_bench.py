"""The server's cost per request, through each API, for one or more source trees.

Starts a single-node ``confer serve`` from each tree in turn (``PYTHONPATH=<tree>/src``, this
interpreter), drives it with a bounded closed-loop load, and reads the server process's CPU
time from /proc. CPU microseconds per request is the figure that matters on a CPU-bound node
and is far less sensitive than ops/s to whatever else the machine runs. Rounds alternate
between the trees, and medians are printed, so two trees compare fairly in one invocation:

  .venv/bin/python -m benchmarks.request_path_bench --tree /path/to/base --tree . --rounds 5

Run it from the repository root as a module (it takes free ports from the test-side
``testing`` package). A tree whose server has the metrics listener gets it on a free port
too, as a default ``confer serve`` has it. benchmarks/instructions.py counts the same
requests in machine instructions, which no other load on the machine changes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.v1 import kv_pb2, kv_pb2_grpc
from testing import free_port

CLK_TCK = os.sysconf("SC_CLK_TCK")

Call = Callable[[grpc.aio.Channel, int], Awaitable[object]]


def native_put(ch: grpc.aio.Channel, i: int) -> Awaitable[object]:
    return kv_pb2_grpc.KVStub(ch).Put(kv_pb2.PutRequest(path=f"/bench/k{i % 1000}",
                                                        value=b"x" * 256), timeout=10)


def etcd_put(ch: grpc.aio.Channel, i: int) -> Awaitable[object]:
    return rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"/bench/k%d" % (i % 1000),
                                                          value=b"x" * 256), timeout=10)


def native_get(ch: grpc.aio.Channel, i: int) -> Awaitable[object]:
    return kv_pb2_grpc.KVStub(ch).Range(kv_pb2.RangeRequest(path=f"/bench/k{i % 1000}"),
                                        timeout=10)


def etcd_get_serializable(ch: grpc.aio.Channel, i: int) -> Awaitable[object]:
    return rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"/bench/k%d" % (i % 1000),
                                                              serializable=True), timeout=10)


WORKLOADS: dict[str, Call] = {"native-put": native_put, "etcd-put": etcd_put,
                              "native-get": native_get,
                              "etcd-get-serializable": etcd_get_serializable}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


async def drive(port: int, call: Call, clients: int, ops: int, seconds: float) -> int:
    """Closed-loop load: ``clients`` tasks share ``ops`` requests; stops at ``seconds``."""
    addr = f"127.0.0.1:{port}"
    channels = [grpc.aio.insecure_channel(addr) for _ in range(4)]
    counter = iter(range(ops))
    deadline = time.monotonic() + seconds
    done = 0

    async def client(k: int) -> None:
        nonlocal done
        ch = channels[k % len(channels)]
        for i in counter:
            if time.monotonic() >= deadline:
                return
            await call(ch, i)
            done += 1

    try:
        await asyncio.gather(*(client(k) for k in range(clients)))
    finally:
        for ch in channels:
            await ch.close()
    return done


async def wait_ready(port: int, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        while True:
            try:
                await native_put(ch, 0)
                return
            except grpc.aio.AioRpcError:
                if time.monotonic() > end:
                    raise
                await asyncio.sleep(0.1)


def serve_command(tree: Path, data_dir: str) -> tuple[list[str], dict[str, str], int]:
    """The command line and environment of a single-node ``confer serve`` from ``tree`` on
    free ports, and its client port."""
    port = free_port()
    args = ["-m", "confer", "serve", "--data-dir", data_dir,
            "--listen-client", f"127.0.0.1:{port}", "--listen-peer", f"127.0.0.1:{free_port()}"]
    if "listen_metrics" in (tree / "src/confer/server/config.py").read_text():
        args += ["--listen-metrics", f"127.0.0.1:{free_port()}"]
    return [sys.executable, *args], {**os.environ, "PYTHONPATH": str(tree / "src")}, port


def measure(tree: Path, workloads: list[str], clients: int, ops: int, seconds: float
            ) -> dict[str, tuple[float, float]]:
    """{workload: (ops/s, server CPU µs per op)} for one server started from ``tree``."""
    with tempfile.TemporaryDirectory() as tmp:
        command, env, port = serve_command(tree, tmp)
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            asyncio.run(wait_ready(port))
            out = {}
            for name in workloads:
                cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
                n = asyncio.run(drive(port, WORKLOADS[name], clients, ops, seconds))
                cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
                out[name] = (n / (t1 - t0), (cpu1 - cpu0) / max(n, 1) * 1e6)
            return out
        finally:
            proc.kill()
            proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", type=Path, required=True,
                    help="a source tree (its src/ is put on PYTHONPATH); repeat to compare")
    ap.add_argument("--workload", default=",".join(WORKLOADS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--ops", type=int, default=20_000, help="at most, per workload and round")
    ap.add_argument("--seconds", type=float, default=8.0, help="at most, per workload and round")
    args = ap.parse_args()
    workloads = args.workload.split(",")
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in range(args.rounds):
        for tree in args.tree:
            for name, figures in measure(tree.resolve(), workloads, args.clients, args.ops,
                                         args.seconds).items():
                results.setdefault((str(tree), name), []).append(figures)
                print(f"round {r + 1} {tree} {name}: {figures[0]:.0f} ops/s, "
                      f"{figures[1]:.0f} µs CPU/op", flush=True)
    print(f"\nmedians of {args.rounds} rounds ({args.clients} clients):")
    print(f"{'tree':40} {'workload':24} {'ops/s':>8} {'µs CPU/op':>10}")
    for (tree, name), runs in results.items():
        print(f"{tree:40} {name:24} {statistics.median(r[0] for r in runs):8.0f} "
              f"{statistics.median(r[1] for r in runs):10.0f}")


if __name__ == "__main__":
    main()
