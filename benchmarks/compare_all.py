"""Every figure of issue 15 for Confer and etcd in one invocation, and one table of ratios.

Run as ``python -m benchmarks.etcd_compare --all [options]`` (or ``-m benchmarks.compare_all``)
from the repository root. The figures (``--figures``, comma-separated; all by default):

- ``reads``: linearizable and serializable gets, and ``puts``: puts, both by
  etcd_compare's closed loop (``--clients`` concurrent clients for ``--duration`` s
  through all three members), with the servers' CPU time per request;
- ``check-perf``: ``etcdctl check perf --load=X`` for each load of ``--check-perf``;
- ``failover``: benchmarks/failover.py, ``--failover-rounds`` kills of the leader each;
- ``watch``: benchmarks/watch_fanout.py for each WATCHERS/STREAMS of ``--watch``;
- ``datascale``: benchmarks/datascale.py with ``--datascale-keys`` keys.

reads, puts and check-perf run ``--repeat`` times with the systems alternating (etcd,
Confer, etcd, Confer...), each time on a fresh 3-node cluster, and the table shows the
medians; failover alternates its rounds itself; watch and datascale run each system once,
one after the other. Each benchmark in a child process is bounded in time (its process
group is killed at the limit). ``--quick`` shortens everything (for a try, not a record).
The table goes to stdout; ``--out FILE`` also writes it as markdown with the command, the
date, the machine and the load average before and after.

    .venv/bin/python -m benchmarks.etcd_compare --all --out docs/perf-latest.md
    .venv/bin/python -m benchmarks.etcd_compare --all --figures reads,puts --repeat 3
    .venv/bin/python -m benchmarks.etcd_compare --all --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import datascale
from benchmarks.etcd_compare import run_system

FIGURES = ["reads", "puts", "check-perf", "failover", "watch", "datascale"]
Row = tuple[str, str, Any, Any, str]
"""(section, figure, Confer's value, etcd's value, "higher" or "lower" is better, or "")."""


def median(values: list[Any]) -> Any:
    """The median of the numbers (None if there are none); strings joined (verdicts)."""
    nums = [v for v in values if isinstance(v, int | float)]
    if nums:
        m = statistics.median(nums)
        return round(m, 2) if isinstance(m, float) else m
    strs = [str(v) for v in values if v is not None]
    return "/".join(strs) if strs else None


def alternate(args: argparse.Namespace, workloads: list[str], loads: list[str],
              tmp: Path) -> dict[str, list[dict[str, dict[str, Any]]]]:
    """``args.repeat`` runs of etcd_compare's loads per system, the systems alternating."""
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    load_args = argparse.Namespace(clients=args.clients, duration=args.duration,
                                   value_size=args.value_size, keys=args.keys, json=False)
    runs: dict[str, list[dict[str, dict[str, Any]]]] = {"etcd": [], "confer": []}
    for _ in range(args.repeat):
        for name in ("etcd", "confer"):
            runs[name].append(run_system(name, tmp, load_args, workloads, loads, runner))
    return runs


def grpc_rows(runs: dict[str, list[dict[str, dict[str, Any]]]], workloads: list[str]
              ) -> list[Row]:
    rows: list[Row] = []
    for w in workloads:
        for key, label, better in (("ops_per_sec", "ops/s", "higher"),
                                   ("p99_ms", "p99 ms", "lower"),
                                   ("server_cpu_us_per_op", "servers' CPU us/op", "lower")):
            values = [median([r[f"grpc:{w}"].get(key) for r in runs[name]])
                      for name in ("confer", "etcd")]
            rows.append((w, label, values[0], values[1], better))
    return rows


def check_perf_rows(runs: dict[str, list[dict[str, dict[str, Any]]]], loads: list[str]
                    ) -> list[Row]:
    rows: list[Row] = []
    for load in loads:
        for name in ("confer", "etcd"):
            for n, run in enumerate(runs[name]):
                for line in run[f"check-perf:{load}"]["lines"]:  # etcdctl's verdict lines
                    print(f"  {name} run {n + 1} --load={load}: {line}")
        for key, label, better in (("verdict", "verdict", ""),
                                   ("writes_per_sec", "writes/s", "higher"),
                                   ("slowest_ms", "slowest ms", "lower"),
                                   ("stddev_ms", "stddev ms", "lower")):
            values = [median([r[f"check-perf:{load}"].get(key) for r in runs[name]])
                      for name in ("confer", "etcd")]
            rows.append((f"check perf --load={load}", label, values[0], values[1], better))
    return rows


def run_child(args: list[str], timeout: float) -> list[Any]:
    """Run ``python -m <args>`` in its own process group, bounded by ``timeout`` seconds
    (then the whole group is killed: the clusters it started too); its stderr passes
    through, its stdout is echoed afterwards; returns the JSON values of its stdout lines."""
    cmd = [sys.executable, "-m", *args]
    print(f"$ {shlex.join(cmd[1:])}", flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        print(f"  (killed after {timeout:.0f} s)", flush=True)
        return []
    values = []
    for line in out.decode(errors="replace").splitlines():
        if line.startswith(("{", "[")):
            values.append(json.loads(line))
        else:
            print(f"  {line}", flush=True)
    return values


def failover_rows(args: argparse.Namespace) -> list[Row]:
    values = run_child(["benchmarks.failover", "--rounds", str(args.failover_rounds),
                        "--json"], timeout=120 + 90 * args.failover_rounds)
    if not values:
        return [("failover", "next write after kill -9 (s)", None, None, "lower")]
    res = values[-1]
    return [("failover", f"{label} of {args.failover_rounds} (s)",
             *(round(f(res[n]), 2) if res.get(n) else None for n in ("confer", "etcd")),
             "lower") for label, f in (("median", statistics.median), ("max", max))]


def watch_rows(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    for config in args.watch.split(","):
        watchers, streams = config.split("/")
        section = f"watch {watchers} watchers / {streams} streams"
        values = run_child(["benchmarks.watch_fanout", "--watchers", watchers, "--streams",
                            streams, "--writes", str(args.watch_writes), "--etcd", "--json"],
                           timeout=600 + 2 * args.watch_writes)
        res = {v["system"]: v for v in values if isinstance(v, dict) and "system" in v}
        confer, etcd = res.get("confer", {}), res.get("etcd", {})
        rows.append((section, "events delivered %", delivered(confer), delivered(etcd),
                     "higher"))
        for key, label in (("p99_ms", "p99 ms"), ("server_cpu_ms_per_write",
                                                  "member CPU ms/write")):
            rows.append((section, label, confer.get(key), etcd.get(key), "lower"))
    return rows


def delivered(result: dict[str, Any]) -> float | None:
    """The share of the expected events a watch_fanout run delivered, in percent."""
    if not result:
        return None
    return round(100 * result["delivered"] / max(1, result["expected"]), 2)


def datascale_rows(args: argparse.Namespace) -> list[Row]:
    values = run_child(["benchmarks.datascale", "--keys", str(args.datascale_keys),
                        "--range-keys", str(min(100_000, args.datascale_keys)), "--json"],
                       timeout=args.datascale_timeout)
    res = values[-1] if values else {}
    section = f"{args.datascale_keys} keys"
    rows: list[Row] = []
    for key, label, higher in datascale.FIGURES:
        label = label.replace("RANGE", str(min(100_000, args.datascale_keys)))
        rows.append((section, label, res.get("confer", {}).get(key),
                     res.get("etcd", {}).get(key), "higher" if higher else "lower"))
    return rows


def ratio(confer: Any, etcd: Any) -> str:
    if not isinstance(confer, int | float) or not isinstance(etcd, int | float) or not etcd:
        return ""
    return f"{confer / etcd:.2f}x"


def verdict(row: Row) -> str:
    """Whether Confer's figure is at least etcd's (the issue's target), or ""."""
    _, _, c, e, better = row
    if not better or not isinstance(c, int | float) or not isinstance(e, int | float):
        return ""
    return "yes" if (c >= e if better == "higher" else c <= e) else "no"


def table(rows: list[Row]) -> list[str]:
    """The rows as a markdown table."""
    lines = ["| | figure | Confer | etcd | Confer / etcd | better | Confer at least etcd's |",
             "|---|---|---|---|---|---|---|"]
    last = None
    for row in rows:
        section, label, c, e, better = row
        lines.append(f"| {section if section != last else ''} | {label} | "
                     f"{'n/a' if c is None else c} | {'n/a' if e is None else e} | "
                     f"{ratio(c, e)} | {better} | {verdict(row)} |")
        last = section
    return lines


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                .splitlines() if ln.startswith("model name")), "unknown CPU")
    try:
        etcd = subprocess.run(["etcd", "--version"], capture_output=True, text=True,
                              timeout=10).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        etcd = "etcd: unknown version"
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return f"{os.cpu_count()} cores ({cpu}); {etcd}; Confer {rev or 'unknown commit'}"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.etcd_compare --all",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--figures", default=",".join(FIGURES),
                    help=f"which, comma-separated, of {','.join(FIGURES)}")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs per system of reads, puts and check-perf (medians)")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--value-size", type=int, default=1024)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--check-perf", default="m,l", help="etcdctl check perf loads")
    ap.add_argument("--failover-rounds", type=int, default=7)
    ap.add_argument("--watch", default="10000/100",
                    help="WATCHERS/STREAMS configurations, comma-separated")
    ap.add_argument("--watch-writes", type=int, default=20)
    ap.add_argument("--datascale-keys", type=int, default=1_000_000)
    ap.add_argument("--datascale-timeout", type=float, default=3600.0,
                    help="seconds the datascale benchmark may take, both systems")
    ap.add_argument("--quick", action="store_true",
                    help="--repeat 1 --duration 5 --check-perf m --failover-rounds 3 "
                         "--watch 2000/100 --watch-writes 10 --datascale-keys 100000")
    ap.add_argument("--out", type=Path, help="also write the table here, as markdown")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if args.quick:
        args.repeat, args.duration, args.check_perf = 1, 5.0, "m"
        args.failover_rounds, args.watch, args.watch_writes = 3, "2000/100", 10
        args.datascale_keys = 100_000
    figures = [f for f in args.figures.split(",") if f]
    if bad := [f for f in figures if f not in FIGURES]:
        ap.error(f"unknown figure(s) {bad}: choose among {FIGURES}")
    if args.repeat < 1 or args.failover_rounds < 1:
        ap.error("--repeat and --failover-rounds must be at least 1")
    for tool, pkg in (("etcd", "etcd-server"), ("etcdctl", "etcd-client")):
        if shutil.which(tool) is None:
            print(f"{tool} not found: apt-get install {pkg}", file=sys.stderr)
            return 2
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    measured_on = machine()  # the commit measured: the one checked out at the start
    rows: list[Row] = []
    workloads = ([w for w in ("get", "get-serializable") if "reads" in figures]
                 + (["put"] if "puts" in figures else []))
    loads = [x for x in args.check_perf.split(",") if x] if "check-perf" in figures else []
    with tempfile.TemporaryDirectory(prefix="confer-vs-etcd-all-") as d:
        if workloads:
            rows += grpc_rows(alternate(args, workloads, [], Path(d)), workloads)
        if loads:
            rows += check_perf_rows(alternate(args, [], loads, Path(d)), loads)
    if "failover" in figures:
        rows += failover_rows(args)
    if "watch" in figures:
        rows += watch_rows(args)
    if "datascale" in figures:
        rows += datascale_rows(args)
    load_after = os.getloadavg()
    lines = table(rows)
    print("\n" + "\n".join(lines))
    if args.out:
        command = "python -m benchmarks.etcd_compare --all " + shlex.join(
            sys.argv[1:] if argv is None else argv)
        minutes = (datetime.now(UTC) - started).total_seconds() / 60
        args.out.write_text("\n".join([
            "# Confer vs etcd: every figure of issue 15", "",
            f"Measured {started:%Y-%m-%d %H:%M} UTC ({minutes:.0f} minutes) on "
            f"{measured_on}; load average {load_before[0]:.1f} before, "
            f"{load_after[0]:.1f} after (1-minute). 3-node clusters on loopback, fsync on.",
            "", f"    {command.strip()}", "",
            "Ratios are Confer / etcd; \"better\" says which way is better for the figure. "
            "Medians of the runs (see benchmarks/compare_all.py).", "", *lines, ""]))
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
