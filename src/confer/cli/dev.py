"""`confer dev`: a local N-node cluster in one command, for trying things out."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from confer.nodeproc import NodeProcess


def run_dev(nodes: int, base_port: int, data_dir: Path, tick_ms: int) -> int:
    procs = [NodeProcess(i, data_dir / f"node{i}", base_port + 2 * (i - 1),
                         base_port + 2 * (i - 1) + 1) for i in range(1, nodes + 1)]
    initial = ",".join(f"{p.node_id}={p.peer_addr}" for p in procs)
    for p in procs:
        p.args = ["--initial-cluster", initial, "--tick-ms", str(tick_ms),
                  "--name", f"dev{p.node_id}"]
    stop = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for p in procs:
            p.start()
        endpoints = ",".join(p.client_addr for p in procs)
        print(f"confer dev: {nodes} nodes, data in {data_dir.resolve()}, logs beside it")
        for p in procs:
            print(f"  node {p.node_id}: client {p.client_addr}  peer {p.peer_addr}  "
                  f"pid {p.pid}")
        print(f"\nTry:  export CONFER_ENDPOINTS={endpoints}\n"
              "      confer put /app/config/timeout 30 && confer get /app/config/timeout\n"
              "      confer status\nCtrl-C stops the cluster.", flush=True)
        while not stop:
            for p in procs:
                if not p.alive():
                    print(f"node {p.node_id} exited (code {p.proc.returncode if p.proc else '?'});"
                          f" see {p.log_path}", file=sys.stderr)
                    stop = True
            time.sleep(0.2)
    finally:
        for p in procs:
            p.stop(timeout=10)
    print("confer dev: stopped")
    return 0
