"""The cost of TLS and of auth: the same 3-node Confer cluster, plaintext, then with mTLS on
the client and peer ports (certificates of `confer tls init`), then with mTLS and auth on,
under the same load.

For each mode, a fresh cluster on loopback (fsync on) gets the closed-loop etcd-API load of
benchmarks/etcd_compare.py (N clients doing puts of VALUE_SIZE bytes for DURATION seconds,
over 16 connections) and then `etcdctl check perf --load=X` (with --cacert/--cert/--key under
mTLS). With auth (``mtls+auth``), the load runs as a user whose role has READWRITE on the
bench prefix only, its simple token in every call's ``token`` metadata (as etcd's clients
send it; without it, the client certificate's common name, no user, would be refused), and
check perf runs with ``--user root:...`` (it compacts and defragments: root only). Prints
the modes side by side with each figure's ratio to plaintext (throughput ratio < 1: that
share is the cost). With ``--runs N`` the modes run N times, one after the other in turn
(so a change in the machine's load hits every mode alike), and the table shows each
figure's median over the runs (verdicts: how many passed), with the load average each mode
started under (a shared machine's load is the first thing to read). Every process is
started here, bounded in time, and killed by PID at the end. Run it from the repository
root as a module:

    .venv/bin/python -m benchmarks.tls_cost --clients 200 --duration 10 --check-perf m --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import grpc

from benchmarks.etcd_compare import check_perf, closed_loop, fmt, ratio
from confer.cli.dev import client_credentials
from confer.cli.tls import client_flags, init_dir, server_flags
from confer.etcdpb.authpb import auth_pb2
from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from testing import ProcessCluster

MODES = ("plaintext", "mtls", "mtls+auth")
ROOT_PASSWORD = "bench-root"
USER, PASSWORD = "bench", "bench-password"
PREFIX = b"/bench/"
"""The keys of closed_loop's load: the bench user's role may read and write these only."""


def enable_auth(endpoint: str, tls: grpc.ChannelCredentials) -> str:
    """etcd's bootstrap (root with the root role, a role with READWRITE on the bench prefix, a
    user with that role), auth on; returns the bench user's simple token."""
    with grpc.secure_channel(endpoint, tls) as ch:
        auth = rpc_pb2_grpc.AuthStub(ch)
        auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="root", password=ROOT_PASSWORD),
                     timeout=30)
        auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"),
                           timeout=30)
        auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name=USER), timeout=30)
        auth.RoleGrantPermission(rpc_pb2.AuthRoleGrantPermissionRequest(
            name=USER, perm=auth_pb2.Permission(
                permType=auth_pb2.Permission.READWRITE, key=PREFIX,
                range_end=PREFIX[:-1] + b"0")), timeout=30)
        auth.UserAdd(rpc_pb2.AuthUserAddRequest(name=USER, password=PASSWORD), timeout=30)
        auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user=USER, role=USER), timeout=30)
        auth.AuthEnable(rpc_pb2.AuthEnableRequest(), timeout=30)
        token: str = auth.Authenticate(rpc_pb2.AuthenticateRequest(
            name=USER, password=PASSWORD), timeout=30).token
        return token


def run_mode(mode: str, tmp: Path, certs: Path, args: argparse.Namespace, loads: list[str]
             ) -> dict[str, Any]:
    """A fresh 3-node cluster in ``mode`` (under ``tmp``; TLS with the files in ``certs``):
    the grpc put load, then check perf."""
    tls = mode != "plaintext"
    creds = client_credentials(certs) if tls else None
    with ProcessCluster(3, tmp / mode, tick_ms=100,
                        extra_args=server_flags(certs) if tls else [],
                        credentials=creds) as cluster:
        cluster.leader()
        flags = tuple(client_flags(certs)) if tls else ()
        metadata: tuple[tuple[str, str], ...] = ()
        if mode == "mtls+auth":
            assert creds is not None
            # Per call, as etcd's clients send it (a metadata plugin would add a thread hop
            # per call on the client, which shares the machine with the cluster).
            metadata = (("token", enable_auth(cluster.endpoints[0], creds)),)
            flags += ("--user", f"root:{ROOT_PASSWORD}")
        results: dict[str, Any] = {"load_average": round(os.getloadavg()[0], 1)}
        if args.clients:
            r = asyncio.run(closed_loop(cluster.endpoints, "put", args.clients, args.duration,
                                        args.value_size, args.keys, creds, metadata))
            results["put"] = r
            print(f"{mode:<10} put {r['ops_per_sec']:>9} ops/s  p50 {r['p50_ms']} ms  "
                  f"p99 {r['p99_ms']} ms  ({r['ops']} ops, {r['errors']} errors)", flush=True)
        endpoints = [("https://" if tls else "") + e for e in cluster.endpoints]
        for load in loads:
            r = check_perf(endpoints, load, flags)
            results[f"check-perf:{load}"] = r
            print(f"{mode:<10} check perf --load={load}: {r['verdict']}  "
                  f"{fmt(r.get('writes_per_sec'))} writes/s  "
                  f"slowest {fmt(r.get('slowest_ms'), ' ms')}", flush=True)
            if r["verdict"] == "ERROR":  # say why: etcdctl's last words
                print(f"{mode:<10}   {' | '.join(r.get('lines', []))[-300:]}", flush=True)
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
    ap.add_argument("--modes", default=",".join(MODES),
                    help=f"comma-separated, from {', '.join(MODES)} (plaintext always runs)")
    ap.add_argument("--runs", type=int, default=1,
                    help="run the modes this many times in turn; the table shows medians")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    loads = [x for x in args.check_perf.split(",") if x and x != "none"]
    modes = ["plaintext", *(m for m in args.modes.split(",") if m and m != "plaintext")]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        ap.error(f"unknown mode {unknown[0]!r}; choose from {', '.join(MODES)}")
    runs: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="confer-tls-cost-") as d:
        certs = Path(d) / "certs"
        init_dir(certs)
        for n in range(max(args.runs, 1)):
            run: dict[str, dict[str, Any]] = {}
            for mode in modes:
                run[mode] = run_mode(mode, Path(d) / f"run{n}", certs, args, loads)
            runs.append(run)
    if args.json:
        print(json.dumps(runs))
        return 0
    print_table(runs, modes, loads)
    return 0


def _median(values: list[Any]) -> Any:
    numbers = [v for v in values if isinstance(v, int | float)]
    return round(statistics.median(numbers), 1) if numbers else None


def print_table(runs: list[dict[str, dict[str, Any]]], modes: list[str], loads: list[str]
                ) -> None:
    """Each figure per mode (the median over the runs), and each secure mode's ratio to
    plaintext."""
    others = modes[1:]
    print(f"\n{len(runs)} run(s); medians" if len(runs) > 1 else "")
    print(f"{'figure':<32}" + "".join(f"{m:>12}" for m in modes)
          + "".join(f"{m + '/plain':>18}" for m in others))

    def per_mode(get: Any) -> list[Any]:
        return [_median([get(run[m]) for run in runs]) for m in modes]

    rows: list[tuple[str, list[Any]]] = [
        ("load average at start", per_mode(lambda r: r["load_average"]))]
    if "put" in runs[0]["plaintext"]:
        rows += [(f"put {key}", per_mode(lambda r, k=key: r["put"][k]))
                 for key in ("ops_per_sec", "p50_ms", "p99_ms")]
    for load in loads:
        name = f"check-perf:{load}"
        rows.append((f"check perf {load} passed", [
            f"{sum(run[m][name]['verdict'] == 'PASS' for run in runs)}/{len(runs)}"
            for m in modes]))
        rows += [(f"check perf {load} {key}", per_mode(lambda r, k=key, n=name: r[n].get(k)))
                 for key in ("writes_per_sec", "slowest_ms")]
    for label, values in rows:
        print(f"{label:<32}" + "".join(f"{fmt(v):>12}" for v in values)
              + "".join(f"{ratio(v, values[0]):>18}" for v in values[1:]))


if __name__ == "__main__":
    raise SystemExit(main())
