"""The replicated counter on Confer against PySyncObj's ``@replicated`` counter (not collected
by pytest; needs the ``bench`` extra: ``./dev bench replicated_vs_pysyncobj``).

    ./dev bench replicated_vs_pysyncobj
    ./dev bench replicated_vs_pysyncobj --seconds 10 --inflight 64

Each system runs 3 member processes on 127.0.0.1, on this machine, in the same run. The load
comes from inside member 1's process, as PySyncObj is used (it has no client protocol): keep
``--inflight`` increments in flight (each a blocking call in PySyncObj's terms: answered once
committed and applied on that member), for ``--seconds``, and print commands/s and latency
percentiles. Confer runs with its defaults: every write is fsync'd before it is acknowledged
(examples/counter.py, embedded with confer.replicated.Member); PySyncObj with its defaults:
an in-memory journal, no fsync. ``--with-client`` adds Confer's figure through its gRPC client
(AsyncAppClient from a separate process: one more network hop per command).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # examples/ and testing/


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def report(system: str, latencies: list[float], seconds: float) -> dict[str, Any]:
    return {"system": system, "commands": len(latencies),
            "per_second": len(latencies) / seconds,
            "p50_ms": percentile(latencies, 0.5) * 1e3,
            "p99_ms": percentile(latencies, 0.99) * 1e3}


# -- Confer --------------------------------------------------------------------------------------
async def confer_member(args: argparse.Namespace) -> None:
    from confer.replicated import Member
    from examples.counter import Counter

    member = Member(Counter, node_id=args.id, data_dir=Path(args.dir) / f"confer{args.id}",
                    listen_client=args.client, listen_peer=args.peers.split(",")[args.id - 1],
                    initial_cluster=",".join(f"{i}={p}" for i, p in
                                             enumerate(args.peers.split(","), 1)),
                    listen_metrics="none", log_level="warning")
    async with member:
        if args.id != 1 or args.serve_only:
            await asyncio.Event().wait()  # until killed
        while not member.leader_id:
            await asyncio.sleep(0.05)
        await member.incr(0)  # warmed up: a leader, a round through the log
        latencies: list[float] = []
        deadline = time.perf_counter() + args.seconds

        async def worker() -> None:
            while (start := time.perf_counter()) < deadline:
                await member.incr(1)
                latencies.append(time.perf_counter() - start)

        begin = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.inflight)))
        print(json.dumps(report("confer (embedded, fsync on)", latencies,
                                time.perf_counter() - begin)), flush=True)


async def confer_client(args: argparse.Namespace) -> None:
    from confer.replicated import AsyncAppClient
    from examples.counter import Counter

    async with AsyncAppClient(Counter, args.client, timeout=30) as counter:
        await counter.incr(0)
        latencies: list[float] = []
        deadline = time.perf_counter() + args.seconds

        async def worker() -> None:
            while (start := time.perf_counter()) < deadline:
                await counter.incr(1)
                latencies.append(time.perf_counter() - start)

        begin = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.inflight)))
        print(json.dumps(report("confer (gRPC client, fsync on)", latencies,
                                time.perf_counter() - begin)), flush=True)


# -- PySyncObj ------------------------------------------------------------------------------------
def pysyncobj_member(args: argparse.Namespace) -> None:
    from pysyncobj import SyncObj, replicated

    class Counter(SyncObj):  # type: ignore[misc]  # no stubs
        def __init__(self, me: str, partners: list[str]) -> None:
            super().__init__(me, partners)  # the defaults: no journal file, no fsync
            self.value = 0

        @replicated  # type: ignore[untyped-decorator]
        def incr(self, n: int) -> int:
            self.value += n
            return self.value

    peers = args.peers.split(",")
    me = peers[args.id - 1]
    counter = Counter(me, [p for p in peers if p != me])
    if args.id != 1:
        threading.Event().wait()  # until killed
    while counter._getLeader() is None:
        time.sleep(0.05)
    counter.incr(0, sync=True, timeout=30)
    latencies: list[float] = []
    lock = threading.Lock()
    done = threading.Event()
    deadline = time.perf_counter() + args.seconds
    inflight = [0]

    def send() -> None:
        start = time.perf_counter()

        def answered(result: Any, error: Any) -> None:
            with lock:
                if error == 0:  # FAIL_REASON.SUCCESS
                    latencies.append(time.perf_counter() - start)
                inflight[0] -= 1
            if time.perf_counter() < deadline:
                send()
            elif inflight[0] == 0:
                done.set()

        with lock:
            inflight[0] += 1
        counter.incr(1, callback=answered)

    begin = time.perf_counter()
    for _ in range(args.inflight):
        send()
    done.wait(args.seconds + 60)
    print(json.dumps(report("pysyncobj (defaults: no fsync)", latencies,
                            time.perf_counter() - begin)), flush=True)


# -- the run -------------------------------------------------------------------------------------
def run(role: str, args: argparse.Namespace, tmp: str, client: str | None = None) -> str:
    from testing.procs import free_port

    peers = ",".join(f"127.0.0.1:{free_port()}" for _ in range(3))
    clients = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    serve_only = ["--serve-only"] if client else []
    procs = [subprocess.Popen([sys.executable, __file__, "--role", role, "--id", str(i),
                               *serve_only,
                               "--peers", peers, "--client", clients[i - 1], "--dir", tmp,
                               "--seconds", str(args.seconds),
                               "--inflight", str(args.inflight)],
                              stdout=subprocess.PIPE, text=True)
             for i in (1, 2, 3)]
    try:
        if client is None:
            out, _ = procs[0].communicate(timeout=args.seconds + 120)
            return out.strip().splitlines()[-1]
        time.sleep(3)  # the members elect a leader
        out = subprocess.run([sys.executable, __file__, "--role", client, "--client",
                              ",".join(clients), "--seconds", str(args.seconds),
                              "--inflight", str(args.inflight)],
                             capture_output=True, text=True, timeout=args.seconds + 120)
        return out.stdout.strip().splitlines()[-1]
    finally:
        for p in procs:
            p.kill()
            p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--inflight", type=int, default=64, help="increments in flight")
    ap.add_argument("--client", default="", help=argparse.SUPPRESS)
    ap.add_argument("--role", default="", help=argparse.SUPPRESS)
    ap.add_argument("--id", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--peers", default="", help=argparse.SUPPRESS)
    ap.add_argument("--dir", default="", help=argparse.SUPPRESS)
    ap.add_argument("--serve-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--with-client", action="store_true",
                    help="also measure Confer through its gRPC client")
    args = ap.parse_args()
    if args.role == "confer":
        asyncio.run(confer_member(args))
        return
    if args.role == "confer-client":
        asyncio.run(confer_client(args))
        return
    if args.role == "pysyncobj":
        pysyncobj_member(args)
        return
    if importlib.util.find_spec("pysyncobj") is None:
        raise SystemExit("this benchmark needs PySyncObj: run it as ./dev bench "
                         "replicated_vs_pysyncobj (installs the bench extra)")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [json.loads(run("confer", args, tmp)), json.loads(run("pysyncobj", args, tmp))]
        if args.with_client:
            rows.append(json.loads(run("confer", args, tmp + "/c", client="confer-client")))
    print(f"3 members on 127.0.0.1, {args.inflight} increments in flight, "
          f"{args.seconds:g} s each")
    for r in rows:
        print(f"  {r['system']:<34} {r['per_second']:>9,.0f} commands/s   "
              f"p50 {r['p50_ms']:7.2f} ms   p99 {r['p99_ms']:7.2f} ms   ({r['commands']:,})")


if __name__ == "__main__":
    main()
