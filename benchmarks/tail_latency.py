"""Tail latency at saturation: Confer and etcd side by side, alternating, in one invocation.

For each of ROUNDS rounds, and each system in turn (the order alternates between rounds, so
that neither always runs on the machine's quieter moments), this starts a fresh 3-node cluster
on loopback (fsync on; Confer with a 100 ms tick as in benchmarks/etcd_compare.py, etcd with its
defaults) and runs on it:

1. etcd's own ``etcdctl check perf --load=LOAD`` (``l``: 500 clients, 8000 puts/s of 1 KiB
   asked for 60 s; PASS needs 90% of that rate, slowest request <= 0.5 s, stddev <= 0.1 s);
2. a Python closed-loop load (``--clients`` clients, each one etcd v3 ``Put`` of 1 KiB at a
   time, spread over the three members as etcd's client balancer does) for ``--duration``
   seconds, reporting per-request latency percentiles (p50, p99, p99.9, max, stddev) and the
   errors by status code.

For Confer it also reads every member's term and leader before and after each load (a leader
change under load is one source of slow requests), and with ``--profile DIR`` records the
leader with py-spy during ``check perf`` (collapsed stacks, ``DIR/confer-r<round>.txt``;
``pip install py-spy``). Prints each run as it ends, then the median of every figure per
system and the Confer/etcd ratios. The machine may be shared: compare the systems within one
invocation, and report medians of several rounds.

    .venv/bin/python -m benchmarks.tail_latency --rounds 3
    .venv/bin/python -m benchmarks.tail_latency --rounds 1 --only confer --check-perf none
    .venv/bin/python -m benchmarks.tail_latency --rounds 1 --only confer --profile /tmp/prof
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from benchmarks.etcd_compare import EtcdCluster, check_perf, percentile
from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from testing import ProcessCluster

CHANNELS = 16
"""Client connections of the Python load (spread over the members round robin)."""


async def put_load(endpoints: list[str], clients: int, duration: float, value_size: int,
                   keys: int) -> dict[str, Any]:
    """``clients`` closed-loop writers for ``duration`` seconds; latency percentiles in ms.
    Every request has a 10 s timeout; a failed one counts as an error (by status code), not
    as a latency."""
    # The load generator's own collections (0.1 to 0.2 s each under load, seen with
    # gc.callbacks) would add to every request in flight: collect rarely, as the server does.
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(endpoints[i % len(endpoints)], options=options)
                for i in range(CHANNELS)]
    stubs = [rpc_pb2_grpc.KVStub(ch) for ch in channels]
    value = random.randbytes(value_size)
    names = [b"/tail/k%08d" % i for i in range(keys)]
    latencies: list[float] = []
    by_member: list[list[float]] = [[] for _ in endpoints]
    slowest: list[tuple[float, float]] = []  # (latency, start offset) of slow requests
    errors: Counter[str] = Counter()
    rng = random.Random(7)
    try:
        for ch in channels:
            await asyncio.wait_for(ch.channel_ready(), 10)
        start = time.perf_counter()
        deadline = start + duration

        async def client(n: int) -> None:
            stub = stubs[n % len(stubs)]
            mine = by_member[n % len(stubs) % len(endpoints)]
            while (t0 := time.perf_counter()) < deadline:
                try:
                    await stub.Put(rpc_pb2.PutRequest(key=names[rng.randrange(keys)],
                                                      value=value), timeout=10)
                except grpc.aio.AioRpcError as e:
                    errors[e.code().name] += 1
                    continue
                took = time.perf_counter() - t0
                latencies.append(took)
                mine.append(took)
                if took > 0.25:
                    slowest.append((took, t0 - start))

        await asyncio.gather(*(client(n) for n in range(clients)))
        elapsed = time.perf_counter() - start
    finally:
        for ch in channels:
            await ch.close()
        gc.set_threshold(*thresholds)
        gc.unfreeze()
    latencies.sort()
    slowest.sort(reverse=True)

    def ms(q: float) -> float:
        return round(percentile(latencies, q) * 1000, 1)

    return {"ops": len(latencies), "ops_per_sec": round(len(latencies) / elapsed, 1),
            "p50_ms": ms(0.5), "p99_ms": ms(0.99), "p999_ms": ms(0.999),
            "max_ms": round(latencies[-1] * 1000, 1) if latencies else None,
            "stddev_ms": round(statistics.pstdev(latencies) * 1000, 1) if latencies else None,
            "errors": dict(errors),
            "p50_max_ms_by_member": [
                (round(statistics.median(v) * 1000, 1), round(max(v) * 1000, 1)) if v else None
                for v in by_member],
            "slowest": [(round(t * 1000), round(at, 1)) for t, at in slowest[:5]]}


def confer_terms(cluster: ProcessCluster) -> list[tuple[int, int]]:
    """(term, leader) as each member reports it now; (0, 0) for one that does not answer."""
    out = []
    for n in cluster.nodes.values():
        st = n.status(timeout=2)
        out.append((st.raft_term, st.leader_id) if st is not None else (0, 0))
    return out


class Profiler:
    """py-spy recording one process until stopped; collapsed stacks into ``path``."""

    def __init__(self, pid: int, path: Path) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--rate", "100", "--format", "raw",
             "--nonblocking", "--output", str(path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def run_one(name: str, tmp: Path, args: argparse.Namespace, round_no: int,
            runner: Any) -> dict[str, Any]:
    """Start a fresh 3-node cluster of ``name``, run the loads on it, stop it."""
    result: dict[str, Any] = {"system": name, "round": round_no,
                              "loadavg_before": round(os.getloadavg()[0], 2)}
    base = tmp / f"{name}-r{round_no}"
    base.mkdir()
    with ExitStack() as stack:
        confer: ProcessCluster | None = None
        if name == "confer":
            confer = stack.enter_context(ProcessCluster(3, base, tick_ms=100,
                                                         extra_args=args.confer_args.split()))
            leader = confer.leader()
            endpoints = confer.endpoints
            result["terms_before"] = confer_terms(confer)
        else:
            endpoints = stack.enter_context(EtcdCluster(base)).endpoints
        if args.check_perf != "none":
            profiler = None
            if confer is not None and args.profile:
                args.profile.mkdir(parents=True, exist_ok=True)
                pid = confer.nodes[leader].pid
                assert pid is not None
                profiler = Profiler(pid, args.profile / f"confer-r{round_no}.txt")
            try:
                result["check_perf"] = check_perf(endpoints, args.check_perf)
            finally:
                if profiler is not None:
                    profiler.stop()
            if confer is not None:
                result["terms_after_check_perf"] = confer_terms(confer)
        if args.duration > 0:
            result["python"] = runner(put_load(endpoints, args.clients, args.duration,
                                               args.value_size, args.keys))
            if confer is not None:
                result["terms_after_python"] = confer_terms(confer)
    result["loadavg_after"] = round(os.getloadavg()[0], 2)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        for log in base.glob("*.log"):
            shutil.copy(log, args.keep / f"{name}-r{round_no}-{log.name}")
    return result


def describe(r: dict[str, Any]) -> str:
    lines = [f"{r['system']:<6} round {r['round']} (load average {r['loadavg_before']} -> "
             f"{r['loadavg_after']})"]
    if cp := r.get("check_perf"):
        lines.append(f"  check perf: {cp['verdict']}  {cp.get('writes_per_sec')} writes/s  "
                     f"slowest {cp.get('slowest_ms')} ms  stddev {cp.get('stddev_ms')} ms")
        if cp["verdict"] != "PASS":
            lines += [f"    {ln}" for ln in cp.get("lines", [])]
    if py := r.get("python"):
        lines.append(f"  python load: {py['ops_per_sec']} ops/s  p50 {py['p50_ms']}  p99 "
                     f"{py['p99_ms']}  p99.9 {py['p999_ms']}  max {py['max_ms']}  stddev "
                     f"{py['stddev_ms']} ms  errors {py['errors'] or 0}  slowest (ms, at s) "
                     f"{py['slowest']}")
        lines.append(f"    p50/max ms through each member: {py['p50_max_ms_by_member']}")
    for key in ("terms_before", "terms_after_check_perf", "terms_after_python"):
        if key in r:
            lines.append(f"  {key.replace('_', ' ')}: (term, leader) per member {r[key]}")
    return "\n".join(lines)


FIGURES = (("check_perf", "writes_per_sec", "check perf writes/s"),
           ("check_perf", "slowest_ms", "check perf slowest ms"),
           ("check_perf", "stddev_ms", "check perf stddev ms"),
           ("python", "ops_per_sec", "python puts/s"),
           ("python", "p50_ms", "python p50 ms"),
           ("python", "p99_ms", "python p99 ms"),
           ("python", "p999_ms", "python p99.9 ms"),
           ("python", "max_ms", "python max ms"),
           ("python", "stddev_ms", "python stddev ms"))


def median_of(runs: list[dict[str, Any]], part: str, key: str) -> float | None:
    values = [r[part][key] for r in runs if part in r and r[part].get(key) is not None]
    return round(statistics.median(values), 1) if values else None


def summary(results: list[dict[str, Any]], systems: list[str]) -> str:
    by = {s: [r for r in results if r["system"] == s] for s in systems}
    head = f"{'median of ' + str(max(len(v) for v in by.values())) + ' rounds':<24}"
    lines = [head + "".join(f"{s:>12}" for s in systems)
             + (f"{'ratio':>10}" if len(systems) == 2 else "")]
    for part, key, label in FIGURES:
        values = [median_of(by[s], part, key) for s in systems]
        if all(v is None for v in values):
            continue
        row = f"{label:<24}" + "".join(f"{'n/a' if v is None else v:>12}" for v in values)
        if len(systems) == 2 and values[0] is not None and values[1]:
            c, e = (values[systems.index("confer")], values[systems.index("etcd")])
            row += f"{c / e:>9.2f}x" if c is not None and e else f"{'n/a':>10}"
        lines.append(row)
    for s in systems:
        verdicts = [r["check_perf"]["verdict"] for r in by[s] if "check_perf" in r]
        if verdicts:
            lines.append(f"{s} check perf verdicts: {', '.join(verdicts)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--check-perf", default="l", choices=["s", "m", "l", "xl", "none"],
                    help="etcdctl check perf load ('none' to skip)")
    ap.add_argument("--clients", type=int, default=500, help="Python load: clients")
    ap.add_argument("--duration", type=float, default=20.0,
                    help="Python load: seconds (0 to skip)")
    ap.add_argument("--value-size", type=int, default=1024)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--only", choices=["confer", "etcd"])
    ap.add_argument("--profile", type=Path,
                    help="record the Confer leader with py-spy during check perf, into DIR")
    ap.add_argument("--confer-args", default="",
                    help="extra `confer serve` flags, e.g. '--snapshot-every 20000'")
    ap.add_argument("--keep", type=Path, help="copy the members' logs into DIR")
    ap.add_argument("--json", action="store_true", help="also print every run as JSON")
    args = ap.parse_args(argv)
    systems = [args.only] if args.only else ["confer", "etcd"]
    need = ["etcdctl"] if args.check_perf != "none" else []
    need += ["etcd"] if "etcd" in systems else []
    for tool in need:
        if shutil.which(tool) is None:
            print(f"{tool} not found: apt-get install etcd-server etcd-client", file=sys.stderr)
            return 2
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, command: "
          f"python -m benchmarks.tail_latency {' '.join(argv or sys.argv[1:])}", flush=True)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="confer-tail-") as d:
        for round_no in range(1, args.rounds + 1):
            order = systems if round_no % 2 else systems[::-1]
            for name in order:
                r = run_one(name, Path(d), args, round_no, runner)
                results.append(r)
                print(describe(r), flush=True)
                if args.json:
                    print(json.dumps(r), flush=True)
    print()
    print(summary(results, systems))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
