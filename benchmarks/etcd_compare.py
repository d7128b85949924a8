"""Confer vs etcd, same machine, same load, same invocation.

Starts a local 3-node Confer cluster and a local 3-node etcd cluster (Debian's etcd-server,
`apt-get install etcd-server`), both on loopback with fsync on, and drives each through the etcd
v3 gRPC API with the same closed-loop load: N concurrent clients doing put or get (linearizable
and serializable) of VALUE_SIZE bytes for DURATION seconds. Then runs etcd's own benchmark,
`etcdctl check perf --load=X` (X in s, m, l, xl: 150, 1000, 8000, 15000 puts/s of 1 KiB from 50,
200, 500, 1000 clients for 60 s; PASS needs >90% of that rate, slowest request <= 0.5 s and
stddev <= 0.1 s) against each. The systems run one after the other, each on a fresh cluster
with nothing else running, and the prefix `/etcdctl-check-perf/` is emptied between check-perf
runs. Prints both systems side by side with the Confer/etcd ratio of every figure (throughput
ratio > 1: Confer faster; latency ratio > 1: Confer slower). Every process is started here,
bounded in time, and killed by PID at the end. Run it from the repository root as a
module: it starts Confer with the test-side `testing` package there.

    .venv/bin/python -m benchmarks.etcd_compare --clients 200 --duration 10
    .venv/bin/python -m benchmarks.etcd_compare --workload put --check-perf s,m,l,xl
    .venv/bin/python -m benchmarks.etcd_compare --workload none --check-perf s --json
    .venv/bin/python -m benchmarks.etcd_compare --only confer --workload none --check-perf m

With ``--all`` it runs every figure of issue 15 instead (these loads, check perf, failover,
watch fan-out, data at scale), the systems alternating, and prints one table of ratios
(``--out FILE``: as markdown too); ``--all --help`` lists its options
(benchmarks/compare_all.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc

from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from testing import ProcessCluster, free_port


class EtcdCluster:
    """Three etcd processes on loopback; killed and reaped on exit. ``extra_args`` go to
    every member (e.g. ``--snapshot-count``)."""

    def __init__(self, base: Path, extra_args: list[str] | None = None) -> None:
        self.base = base
        self.extra_args = extra_args or []
        self.ports = [(free_port(), free_port()) for _ in range(3)]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.founders = len(self.ports)  # the members after these joined a running cluster

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{c}" for c, _ in self.ports]

    def __enter__(self) -> EtcdCluster:
        for i in range(len(self.ports)):
            self.procs.append(self.start_member(i))
        self._wait_ready()
        return self

    def start_member(self, i: int) -> subprocess.Popen[bytes]:
        """Launch member ``i`` (again, on its data dir if it has one); its log is appended."""
        initial = ",".join(f"e{j}=http://127.0.0.1:{p}" for j, (_, p) in enumerate(self.ports))
        client, peer = self.ports[i]
        log = open(self.base / f"etcd{i}.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            return subprocess.Popen(
                ["etcd", "--name", f"e{i}", "--data-dir", str(self.base / f"etcd{i}"),
                 "--listen-client-urls", f"http://127.0.0.1:{client}",
                 "--advertise-client-urls", f"http://127.0.0.1:{client}",
                 "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-cluster", initial,
                 "--initial-cluster-state", "new" if i < self.founders else "existing",
                 "--log-level", "error", *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()

    def add_learner(self) -> str:
        """Add a member as a learner (``etcdctl member add --learner``) and start it; its
        client endpoint."""
        i = len(self.ports)
        self.ports.append((free_port(), free_port()))
        deadline = time.monotonic() + 60
        while True:  # refused ("unhealthy cluster") for 5 s after a member's restart
            rc, out = run_etcdctl(self.endpoints[:i], "member", "add", f"e{i}", "--learner",
                                  f"--peer-urls=http://127.0.0.1:{self.ports[i][1]}",
                                  timeout=60)
            if rc == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcdctl member add failed: {out[-300:]}")
            time.sleep(1)
        self.procs.append(self.start_member(i))
        return self.endpoints[i]

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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process ``pid`` has used (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """The resident set size of process ``pid`` (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, round(q * (len(values) - 1)))] if values else float("nan")


async def closed_loop(endpoints: list[str], workload: str, clients: int, duration: float,
                      value_size: int, keys: int,
                      credentials: grpc.ChannelCredentials | None = None,
                      metadata: tuple[tuple[str, str], ...] = (),
                      pids: Sequence[int] = ()) -> dict[str, object]:
    """``credentials``: TLS (benchmarks/tls_cost.py), else plaintext; ``metadata`` goes with
    every call of the load (an auth token). With the servers' ``pids``, the result has
    their CPU time per request (``server_cpu_us_per_op``, all of them together): unlike
    ops/s, it hardly depends on what else the machine runs (nor on the load generator's
    own share of the CPU)."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(endpoints[i % len(endpoints)], options=options)
                if credentials is None else
                grpc.aio.secure_channel(endpoints[i % len(endpoints)], credentials,
                                        options=options)
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
        cpu0 = sum(cpu_seconds(p) for p in pids)
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
                        await stub.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=5,
                                       metadata=metadata)
                    else:
                        await stub.Range(rpc_pb2.RangeRequest(
                            key=key, serializable=workload == "get-serializable"), timeout=5,
                            metadata=metadata)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(client(n) for n in range(clients)))
        elapsed = time.perf_counter() - start
        cpu = sum(cpu_seconds(p) for p in pids) - cpu0
    finally:
        for ch in channels:
            await ch.close()
    latencies.sort()
    result: dict[str, object] = {
        "workload": workload, "ops": len(latencies), "errors": errors,
        "ops_per_sec": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "max_ms": round(latencies[-1] * 1000, 2) if latencies else float("nan")}
    if pids:
        result["server_cpu_us_per_op"] = round(cpu * 1e6 / max(1, len(latencies)), 1)
    return result


CHECK_PERF_PREFIX = "/etcdctl-check-perf/"
CHECK_PERF_TIMEOUT = 240.0  # 60 s of load, then delete, compact, defrag: generous but bounded


def run_etcdctl(endpoints: list[str], *args: str, timeout: float) -> tuple[int, str]:
    """One bounded etcdctl run; (exit status, stdout+stderr). Killed by PID on timeout.
    An endpoint may be an ``https://`` URL (the TLS flags then among ``args``)."""
    proc = subprocess.Popen(["etcdctl", f"--endpoints={','.join(endpoints)}",
                             "--command-timeout=30s", *args],
                            env={**os.environ, "ETCDCTL_API": "3"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
        return -1, out.decode(errors="replace") + f"\n(killed after {timeout:.0f}s)"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    return proc.returncode, out.decode(errors="replace")


def parse_check_perf(out: str) -> dict[str, Any]:
    """The verdict lines of `etcdctl check perf` (PASS or FAIL wording) as numbers."""
    def num(pattern: str) -> float | None:
        m = re.search(pattern, out)
        return float(m.group(1)) if m else None

    lines = [ln.strip() for ln in re.split(r"[\r\n]", out) if ln.strip()]
    verdict = lines[-1] if lines and lines[-1] in ("PASS", "FAIL") else "ERROR"
    slowest = num(r"Slowest request took(?: too long:)? ([\d.]+)s")
    stddev = num(r"Stddev(?: is| too high:) ([\d.]+)s")
    return {
        "verdict": verdict,
        "writes_per_sec": num(r"Throughput (?:is|too low:) (\d+) writes/s"),
        "slowest_ms": None if slowest is None else round(slowest * 1000, 1),
        "stddev_ms": None if stddev is None else round(stddev * 1000, 1),
        "errors": "too many errors" in out,
        "lines": [ln for ln in lines if "PASS" in ln or "FAIL" in ln or "Throughput" in ln
                  or "Slowest" in ln or "Stddev" in ln or "error" in ln.lower()][-8:],
    }


def check_perf(endpoints: list[str], load: str, flags: tuple[str, ...] = ()) -> dict[str, Any]:
    """``flags``: etcdctl's TLS flags (--cacert, --cert, --key), if any."""
    rc, out = run_etcdctl(endpoints, *flags, "del", "--prefix", CHECK_PERF_PREFIX, timeout=60)
    if rc != 0:
        return {"verdict": "ERROR", "lines": [f"del --prefix failed: {out[-300:]}"]}
    t0 = time.monotonic()
    rc, out = run_etcdctl(endpoints, *flags, "check", "perf", f"--load={load}",
                          "--auto-compact", "--auto-defrag", timeout=CHECK_PERF_TIMEOUT)
    r = parse_check_perf(out)
    r["exit"] = rc
    r["seconds"] = round(time.monotonic() - t0, 1)
    if r["verdict"] == "ERROR":
        r["lines"].append(out[-300:])
    return r


def ratio(confer: object, etcd: object) -> str:
    if not isinstance(confer, int | float) or not isinstance(etcd, int | float) or not etcd:
        return "n/a"
    return f"{confer / etcd:.2f}x"


def fmt(v: object, unit: str = "") -> str:
    return "n/a" if v is None else f"{v}{unit}"


def run_system(name: str, tmp: Path, args: argparse.Namespace, workloads: list[str],
               loads: list[str], runner: Any) -> dict[str, dict[str, Any]]:
    """Start a fresh 3-node cluster of ``name``, run everything on it, stop it."""
    results: dict[str, dict[str, Any]] = {}
    with ExitStack() as stack:
        base = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=tmp))  # fresh for each run
        if name == "confer":
            cluster: Any = stack.enter_context(ProcessCluster(3, base, tick_ms=100))
            for n in cluster.nodes.values():
                n.wait_ready()
            cluster.leader()
            pids = [n.pid for n in cluster.nodes.values()]
        else:
            cluster = stack.enter_context(EtcdCluster(base))
            pids = [p.pid for p in cluster.procs]
        for workload in workloads:
            r = runner(closed_loop(cluster.endpoints, workload, args.clients, args.duration,
                                   args.value_size, args.keys, pids=pids))
            results[f"grpc:{workload}"] = r
            line = (f"{name:<7} {workload:<17} {r['ops_per_sec']:>9} ops/s  "
                    f"p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  max {r['max_ms']} ms  "
                    f"servers' CPU {r['server_cpu_us_per_op']} us/op  "
                    f"({r['ops']} ops, {r['errors']} errors)")
            print(json.dumps({"system": name, **r}) if args.json else line, flush=True)
        for load in loads:
            r = check_perf(cluster.endpoints, load)
            results[f"check-perf:{load}"] = r
            if args.json:
                print(json.dumps({"system": name, "check_perf": load, **r}), flush=True)
            else:
                print(f"{name:<7} check perf --load={load}: {r['verdict']}  "
                      f"{fmt(r.get('writes_per_sec'))} writes/s  "
                      f"slowest {fmt(r.get('slowest_ms'), ' ms')}  "
                      f"stddev {fmt(r.get('stddev_ms'), ' ms')}  "
                      f"({r.get('seconds')} s)", flush=True)
    return results


def print_comparison(res: dict[str, dict[str, dict[str, Any]]], workloads: list[str],
                     loads: list[str]) -> None:
    c, e = res["confer"], res["etcd"]
    print("\nConfer vs etcd (ratio = Confer / etcd; throughput > 1x and latency < 1x favour "
          "Confer)")
    if workloads:
        print(f"{'grpc load':<20}{'figure':<10}{'confer':>12}{'etcd':>12}{'ratio':>10}")
        for w in workloads:
            for key, label in (("ops_per_sec", "ops/s"), ("p50_ms", "p50 ms"),
                               ("p99_ms", "p99 ms"), ("max_ms", "max ms"),
                               ("server_cpu_us_per_op", "CPU us/op")):
                cv, ev = c[f"grpc:{w}"][key], e[f"grpc:{w}"][key]
                print(f"{w:<20}{label:<10}{cv:>12}{ev:>12}{ratio(cv, ev):>10}")
    if loads:
        print(f"{'check perf':<20}{'figure':<10}{'confer':>12}{'etcd':>12}{'ratio':>10}")
        for load in loads:
            cr, er = c[f"check-perf:{load}"], e[f"check-perf:{load}"]
            print(f"{'--load=' + load:<20}{'verdict':<10}{cr['verdict']:>12}"
                  f"{er['verdict']:>12}{'':>10}")
            for key, label in (("writes_per_sec", "writes/s"), ("slowest_ms", "slowest ms"),
                               ("stddev_ms", "stddev ms")):
                cv, ev = cr.get(key), er.get(key)
                print(f"{'':<20}{label:<10}{fmt(cv):>12}{fmt(ev):>12}{ratio(cv, ev):>10}")
        for system, r in (("confer", c), ("etcd", e)):
            for load in loads:
                for line in r[f"check-perf:{load}"]["lines"]:
                    print(f"  {system} --load={load}: {line}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--all" in argv:  # every figure of issue 15, one table: benchmarks/compare_all.py
        from benchmarks.compare_all import main as compare_all

        return compare_all([a for a in argv if a != "--all"])
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", default="put,get,get-serializable",
                    help="grpc load workloads, comma-separated; 'none' to skip")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--value-size", type=int, default=1024)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--check-perf", default="s,m",
                    help="etcdctl check perf loads (s,m,l,xl), comma-separated; 'none' to skip")
    ap.add_argument("--order", default="etcd,confer", choices=["etcd,confer", "confer,etcd"],
                    help="which system runs first")
    ap.add_argument("--only", choices=["confer", "etcd"],
                    help="run just this system (no comparison; etcd need not be installed "
                         "for --only confer)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    workloads = [w for w in args.workload.split(",") if w and w != "none"]
    loads = [x for x in args.check_perf.split(",") if x and x != "none"]
    if bad := [x for x in loads if x not in ("s", "m", "l", "xl")]:
        ap.error(f"unknown check perf load(s): {bad}")
    systems = [args.only] if args.only else args.order.split(",")
    for tool, pkg in (("etcd", "etcd-server"), ("etcdctl", "etcd-client")):
        if tool == "etcd" and "etcd" not in systems:
            continue
        if shutil.which(tool) is None:
            print(f"{tool} not found: apt-get install {pkg}", file=sys.stderr)
            return 2
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="confer-vs-etcd-") as d:
        for name in systems:
            results[name] = run_system(name, Path(d), args, workloads, loads, runner)
    if args.json:
        print(json.dumps(results))
    elif not args.only:  # a single system's figures were printed as they came
        print_comparison(results, workloads, loads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
