"""Machine instructions the server executes per request, through each API, for one or more
source trees: a figure no other load on the machine changes.

Starts a single-node ``confer serve`` from each tree (``PYTHONPATH=<tree>/src``, this
interpreter, ``PYTHONHASHSEED=0``) under valgrind's callgrind with instrumentation off, so it
starts at a few times native speed. Then, with ``callgrind_control``: instrumentation on;
counts zeroed, ``--idle`` seconds without requests, counts dumped (the background's
instructions per second: Raft ticks, lease and compaction duties, gRPC's pollers); then for
each workload ``--warmup`` requests, counts zeroed, ``--requests`` requests by the same
closed-loop client as benchmarks/request_path_bench.py (``--clients`` of them, one by
default: each request alone through the server), counts dumped. A workload's figure is
its instructions less the idle rate times its duration, divided by its requests. Only the
server's user-space instructions count (all its threads: Python, grpcio's core, protobuf;
not the kernel's work, so not the fsync either), which is why it hardly moves between runs
whatever else the machine does. Callgrind slows the server 50 to 100 times: a few hundred
requests per workload are enough (the figures of two runs agree within about 1 %).

Run it from the repository root as a module, with valgrind installed (``apt-get install
valgrind``), e.g. to compare a tree of an older commit with this one:

  git worktree add --detach /tmp/base f68e494
  .venv/bin/python -m benchmarks.instructions --tree /tmp/base --tree .
  .venv/bin/python -m benchmarks.instructions --tree . --workload etcd-put --keep /tmp/cg

``--keep DIR`` keeps each dump there (``callgrind_annotate DIR/<tree>-<workload>.out`` shows
where the instructions go). Every server is started here, bounded in time, and killed by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.request_path_bench import WORKLOADS, drive, serve_command, wait_ready

CONTROL_TIMEOUT = 60.0
"""Seconds a callgrind_control command may take (it waits for the server to reach a point
where valgrind can take the command)."""


class Callgrind:
    """A ``confer serve`` from one tree under callgrind, and the commands that count it."""

    def __init__(self, tree: Path, tmp: Path) -> None:
        self.out = tmp / "callgrind.out"
        command, env, self.port = serve_command(tree, str(tmp / "data"))
        self.proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--trace-children=no", "--instr-atstart=no",
             f"--callgrind-out-file={self.out}", *command],
            env={**env, "PYTHONHASHSEED": "0"}, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        self.dumps = 0

    def control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(self.proc.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=CONTROL_TIMEOUT)

    def dump(self) -> tuple[int, Path]:
        """Dump the counts since the last zero or dump: (instructions, the dump file)."""
        self.control("--dump")
        self.dumps += 1
        path = Path(f"{self.out}.{self.dumps}")
        deadline = time.monotonic() + CONTROL_TIMEOUT
        while time.monotonic() < deadline:
            found = re.search(r"^totals: (\d+)", path.read_text() if path.exists() else "",
                              re.MULTILINE)
            if found:  # the last line: the dump is whole
                return int(found.group(1)), path
            time.sleep(0.2)
        raise TimeoutError(f"callgrind wrote no dump {path}")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(30)


def measure(tree: Path, workloads: list[str], args: argparse.Namespace
            ) -> tuple[float, dict[str, float]]:
    """(idle instructions per second, {workload: instructions per request}) of a server
    started from ``tree``."""
    with tempfile.TemporaryDirectory() as tmp:
        server = Callgrind(tree, Path(tmp))
        try:
            asyncio.run(wait_ready(server.port, timeout=args.start_timeout))
            server.control("--instr=on")
            server.control("--zero")
            t0 = time.monotonic()
            time.sleep(args.idle)
            idle, _ = server.dump()
            idle_rate = idle / (time.monotonic() - t0)
            out = {}
            for name in workloads:
                load = WORKLOADS[name]
                asyncio.run(drive(server.port, load, args.clients, args.warmup, 1e9))
                server.control("--zero")
                t0 = time.monotonic()
                done = asyncio.run(drive(server.port, load, args.clients, args.requests, 1e9))
                seconds = time.monotonic() - t0
                total, path = server.dump()
                out[name] = (total - idle_rate * seconds) / done
                if args.keep:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, args.keep / f"{tree.name}-{name}.out")
            return idle_rate, out
        finally:
            server.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", type=Path, required=True,
                    help="a source tree (its src/ is put on PYTHONPATH); repeat to compare")
    ap.add_argument("--workload", default=",".join(WORKLOADS))
    ap.add_argument("--requests", type=int, default=400, help="counted, per workload")
    ap.add_argument("--warmup", type=int, default=50, help="not counted, per workload")
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--idle", type=float, default=5.0, help="seconds of idle counting")
    ap.add_argument("--rounds", type=int, default=1, help="the trees alternate; medians")
    ap.add_argument("--start-timeout", type=float, default=180.0)
    ap.add_argument("--keep", type=Path, help="keep the dumps in this directory")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    workloads = args.workload.split(",")
    if unknown := set(workloads) - set(WORKLOADS):
        raise SystemExit(f"unknown workload(s) {', '.join(sorted(unknown))}: "
                         f"choose from {', '.join(WORKLOADS)}")
    trees = [str(t.resolve()) for t in args.tree]
    idle: dict[str, list[float]] = {}
    per_request: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        for tree in trees:
            rate, figures = measure(Path(tree), workloads, args)
            idle.setdefault(tree, []).append(rate)
            print(f"round {r + 1} {tree}: idle {rate / 1e6:.2f} M instructions/s", flush=True)
            for name, figure in figures.items():
                per_request.setdefault((tree, name), []).append(figure)
                print(f"round {r + 1} {tree} {name}: {figure / 1e3:.1f} k instructions/request",
                      flush=True)
    print(f"\nmedians of {args.rounds} round(s), {args.requests} requests per workload, "
          f"{args.clients} client(s); thousands of instructions per request, "
          "change against the first tree:")
    print(f"{'workload':24}" + "".join(f"{os.path.basename(t):>24}" for t in trees))
    for name in workloads:
        first = statistics.median(per_request[(trees[0], name)])
        cells = []
        for tree in trees:
            m = statistics.median(per_request[(tree, name)])
            cells.append(f"{m / 1e3:.1f}" + (f" ({m / first - 1:+.1%})" if tree != trees[0]
                                             else ""))
        print(f"{name:24}" + "".join(f"{c:>24}" for c in cells))
    print(f"{'idle, M per second':24}" + "".join(
        f"{statistics.median(idle[t]) / 1e6:>24.2f}" for t in trees))


if __name__ == "__main__":
    main()
