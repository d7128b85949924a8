"""What `confer snapshot save` costs the member it copies: a 1-node cluster holding KEYS keys
of VALUE bytes; while the snapshot streams, a client reads one key in a loop. Prints the
snapshot's size and time, and the reads' median and slowest latency during the save (a
member that stopped serving while it serialised its store shows as one slow read).

    .venv/bin/python -m benchmarks.snapshot_save                 # 100,000 keys of 100 bytes
    .venv/bin/python -m benchmarks.snapshot_save --keys 20000 --value-size 1000
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from confer.client import Client, Op
from testing import ProcessCluster

TXN_OPS = 120


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--value-size", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ProcessCluster(1, Path(tmp)) as cluster:
        cluster.leader()
        value = "v" * args.value_size
        with Client(cluster.endpoints) as c:
            for start in range(0, args.keys, TXN_OPS):
                c.txn().then(*(Op.put(f"/bench/{i:08}", value)
                               for i in range(start, min(start + TXN_OPS, args.keys)))).commit()
            latencies: list[float] = []
            done = threading.Event()

            def read() -> None:
                while not done.is_set() and len(latencies) < 1_000_000:
                    t = time.perf_counter()
                    c.get("/bench/00000000", serializable=True)
                    latencies.append(time.perf_counter() - t)

            reader = threading.Thread(target=read)
            reader.start()
            time.sleep(0.5)
            before = len(latencies)
            t0 = time.perf_counter()
            out = Path(tmp) / "bench.snap"
            subprocess.run([sys.executable, "-m", "confer", "snapshot", "save", str(out),
                            "--endpoints", cluster.endpoints[0], "--timeout", "60"],
                           check=True, capture_output=True, timeout=600)
            elapsed = time.perf_counter() - t0
            done.set()
            reader.join(30)
        during = latencies[before:]
        print(f"{args.keys} keys of {args.value_size} B: snapshot of "
              f"{out.stat().st_size / 2**20:.1f} MiB saved in {elapsed:.2f} s; "
              f"{len(during)} reads meanwhile, median {statistics.median(during) * 1000:.1f} ms, "
              f"slowest {max(during) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
