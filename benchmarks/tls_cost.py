"""The cost of TLS: the same 3-node Confer cluster, plaintext and then with mTLS on the client
and peer ports (certificates of `confer tls init`), under the same load.

For each mode, a fresh cluster on loopback (fsync on) gets the closed-loop etcd-API load of
benchmarks/etcd_compare.py (N clients doing puts of VALUE_SIZE bytes for DURATION seconds,
over 16 connections) and then `etcdctl check perf --load=X` (with --cacert/--cert/--key under
mTLS). Prints both modes side by side with the mTLS/plaintext ratio of each figure
(throughput ratio < 1: TLS costs that share). Every process is started here, bounded in
time, and killed by PID at the end. Run it from the repository root as a module:

    .venv/bin/python -m benchmarks.tls_cost --clients 200 --duration 10 --check-perf m
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.etcd_compare import check_perf, closed_loop, fmt, ratio
from confer.cli.dev import client_credentials
from confer.cli.tls import client_flags, init_dir, server_flags
from testing import ProcessCluster

MODES = ("plaintext", "mtls")


def run_mode(mode: str, tmp: Path, args: argparse.Namespace, loads: list[str]
             ) -> dict[str, Any]:
    """A fresh 3-node cluster in ``mode``: the grpc put load, then check perf."""
    certs = tmp / "certs"
    tls = mode == "mtls"
    creds = client_credentials(certs) if tls else None
    with ProcessCluster(3, tmp / mode, tick_ms=100,
                        extra_args=server_flags(certs) if tls else [],
                        credentials=creds) as cluster:
        cluster.leader()
        results: dict[str, Any] = {}
        if args.clients:
            r = asyncio.run(closed_loop(cluster.endpoints, "put", args.clients, args.duration,
                                        args.value_size, args.keys, creds))
            results["put"] = r
            print(f"{mode:<10} put {r['ops_per_sec']:>9} ops/s  p50 {r['p50_ms']} ms  "
                  f"p99 {r['p99_ms']} ms  ({r['ops']} ops, {r['errors']} errors)", flush=True)
        endpoints = [("https://" if tls else "") + e for e in cluster.endpoints]
        flags = tuple(client_flags(certs)) if tls else ()
        for load in loads:
            r = check_perf(endpoints, load, flags)
            results[f"check-perf:{load}"] = r
            print(f"{mode:<10} check perf --load={load}: {r['verdict']}  "
                  f"{fmt(r.get('writes_per_sec'))} writes/s  "
                  f"slowest {fmt(r.get('slowest_ms'), ' ms')}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=200, help="0: no grpc put load")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--value-size", type=int, default=1024)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--check-perf", default="m",
                    help="etcdctl check perf loads (s,m,l,xl), comma-separated; 'none' to skip")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    loads = [x for x in args.check_perf.split(",") if x and x != "none"]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="confer-tls-cost-") as d:
        init_dir(Path(d) / "certs")
        for mode in MODES:
            results[mode] = run_mode(mode, Path(d), args, loads)
    if args.json:
        print(json.dumps(results))
        return 0
    plain, tls = results["plaintext"], results["mtls"]
    print(f"\n{'figure':<32}{'plaintext':>12}{'mtls':>12}{'ratio':>10}")
    rows = []
    if "put" in plain:
        rows += [(f"put {key}", plain["put"][key], tls["put"][key])
                 for key in ("ops_per_sec", "p50_ms", "p99_ms")]
    for load in loads:
        p, t = plain[f"check-perf:{load}"], tls[f"check-perf:{load}"]
        rows.append((f"check perf {load} verdict", p["verdict"], t["verdict"]))
        rows += [(f"check perf {load} {key}", p.get(key), t.get(key))
                 for key in ("writes_per_sec", "slowest_ms")]
    for label, pv, tv in rows:
        print(f"{label:<32}{fmt(pv):>12}{fmt(tv):>12}{ratio(tv, pv):>10}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
