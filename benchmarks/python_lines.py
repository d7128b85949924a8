"""Python lines and calls the server executes per request, by function, for two source trees:
where a difference in benchmarks/instructions.py's figures comes from, at the level of the
code.

Starts a single-node ``confer serve`` from each tree (``PYTHONPATH=<tree>/src``, this
interpreter) with a ``sys.settrace`` counter that SIGUSR1 starts and SIGUSR2 stops (it then
writes its counts), drives ``--requests`` requests of one workload after ``--warmup``
uncounted ones (one client, benchmarks/request_path_bench.py's workloads), and prints the
functions whose lines or calls per request differ most. The counts do not depend on the
machine's load (only the Raft loop's timer-driven rounds vary a little). Run it from the
repository root as a module:

  .venv/bin/python -m benchmarks.python_lines --tree /tmp/base --tree . --workload native-get
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import runpy
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

Counts = collections.Counter[tuple[str, str, str]]
"""(file, function, "line" or "call") -> how many."""


def serve_counting(out: str, serve_args: list[str]) -> None:
    """Run ``confer`` with ``serve_args`` in this process, counting between SIGUSR1 and
    SIGUSR2 (which writes the counts to ``out`` as JSON)."""
    counts: Counts = collections.Counter()

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            counts[(frame.f_code.co_filename, frame.f_code.co_name, "line")] += 1
        return local

    def on_call(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "call":  # a call, or a coroutine or generator resumed
            counts[(frame.f_code.co_filename, frame.f_code.co_name, "call")] += 1
            return local
        return None

    def start(*_: object) -> None:
        counts.clear()
        sys.settrace(on_call)
        threading.settrace(on_call)

    def stop(*_: object) -> None:
        sys.settrace(None)
        threading.settrace(None)  # type: ignore[arg-type]  # None turns it off
        Path(f"{out}.tmp").write_text(json.dumps([[*k, v] for k, v in counts.items()]))
        os.replace(f"{out}.tmp", out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = ["confer", *serve_args]
    runpy.run_module("confer", run_name="__main__", alter_sys=True)


def measure(tree: Path, workload: str, requests: int, warmup: int) -> Counts:
    """The counts of ``requests`` requests of ``workload`` to a server from ``tree``."""
    # Imported here: the server side of this module runs with another tree's confer package.
    from benchmarks.request_path_bench import WORKLOADS, drive, serve_command, wait_ready

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "counts.json"
        command, env, port = serve_command(tree, str(Path(tmp) / "data"))
        python, _, _, *serve_args = command  # python -m confer ...
        proc = subprocess.Popen(
            [python, "-m", "benchmarks.python_lines", "--serve-counting", str(out), "--",
             *serve_args],
            env={**env, "PYTHONPATH": f"{env['PYTHONPATH']}{os.pathsep}{os.getcwd()}"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            asyncio.run(wait_ready(port, timeout=60))
            asyncio.run(drive(port, WORKLOADS[workload], 1, warmup, 1e9))
            proc.send_signal(signal.SIGUSR1)
            time.sleep(0.5)  # the handler runs when the server's loop next runs Python
            asyncio.run(drive(port, WORKLOADS[workload], 1, requests, 1e9))
            proc.send_signal(signal.SIGUSR2)
            deadline = time.monotonic() + 30
            while not out.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            counts: Counts = collections.Counter()
            for file, function, kind, n in json.loads(out.read_text()):
                # the same module in two trees: by its path under src/ or site-packages/
                file = re.sub(r".*/(src|site-packages|python3\.\d+)/", "", file)
                counts[(file, function, kind)] += n
            return counts
        finally:
            proc.kill()
            proc.wait(10)


def main() -> None:
    if sys.argv[1:2] == ["--serve-counting"]:  # the server side (see measure)
        serve_counting(sys.argv[2], sys.argv[4:])
        return
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", type=Path, required=True,
                    help="two source trees (their src/ is put on PYTHONPATH)")
    ap.add_argument("--workload", default="native-get",
                    help="one of benchmarks/request_path_bench.py's workloads")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--top", type=int, default=40, help="functions shown")
    args = ap.parse_args()
    if len(args.tree) != 2:
        raise SystemExit("give two trees (--tree A --tree B)")
    n = args.requests
    a, b = (measure(t.resolve(), args.workload, n, args.warmup) for t in args.tree)
    for kind in ("call", "line"):
        print(f"{kind}s per request: {sum(v for k, v in a.items() if k[2] == kind) / n:.1f} -> "
              f"{sum(v for k, v in b.items() if k[2] == kind) / n:.1f}")
    functions = {k[:2] for k in (*a, *b)}

    def change(f: tuple[str, str]) -> float:
        return abs(b[(*f, "line")] - a[(*f, "line")]) + abs(b[(*f, "call")] - a[(*f, "call")])

    for f in sorted(functions, key=change, reverse=True)[:args.top]:
        line, call = (*f, "line"), (*f, "call")
        print(f"lines {a[line] / n:7.1f} -> {b[line] / n:7.1f}   calls {a[call] / n:5.1f} -> "
              f"{b[call] / n:5.1f}   {f[0]}:{f[1]}")


if __name__ == "__main__":
    main()
