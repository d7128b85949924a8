"""Command line: run many seeded scenarios and report any failure with its replay command.

    python -m confer.sim --seeds 100000                 # overnight
    python -m confer.sim --seeds 2000 --jobs 2 --nodes 5
    python -m confer.sim --seeds 1 --start 4242 --nodes 3 --steps 200 --trace   # replay one
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from collections.abc import Iterator
from functools import partial

from confer.sim.disk import StorageKind
from confer.sim.runner import ScenarioResult, run_scenario
from confer.sim.scenario import DEFAULT_STEPS, Flavour


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m confer.sim",
        description="Deterministic simulation of Confer's Raft core: randomized, seeded "
                    "scenarios with network faults, crashes, membership changes and snapshots.",
    )
    p.add_argument("--seeds", type=int, default=100, help="how many scenarios to run")
    p.add_argument("--start", type=int, default=0, help="first seed")
    p.add_argument("--nodes", type=int, choices=(2, 3, 4, 5), default=None,
                   help="cluster size (default: drawn from each seed)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="ticks of chaos per scenario")
    p.add_argument("--flavour", choices=[f.name.lower() for f in Flavour], default=None,
                   help="force a scenario flavour (default: drawn from each seed)")
    p.add_argument("--storage", choices=[k.value for k in StorageKind],
                   default=StorageKind.DURABLE.value,
                   help="durable: the real WAL and snapshot files on a simulated file system "
                        "that tears writes and loses unsynced data (default); model: a model "
                        "of written versus synced batches (faster, tests the core alone)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failure")
    p.add_argument("--trace", action="store_true",
                   help="print every event of each run (use with --seeds 1)")
    p.add_argument("--quiet", action="store_true", help="only print failures and the summary")
    return p.parse_args(argv)


def _results(args: argparse.Namespace) -> Iterator[ScenarioResult]:
    seeds = range(args.start, args.start + args.seeds)
    flavour = Flavour[args.flavour.upper()] if args.flavour else None
    run = partial(run_scenario, nodes=args.nodes, steps=args.steps, flavour=flavour,
                  trace=args.trace, storage=StorageKind(args.storage))
    if args.jobs <= 1:
        yield from map(run, seeds)
        return
    with multiprocessing.Pool(args.jobs) as pool:
        yield from pool.imap(run, seeds, chunksize=max(1, min(50, args.seeds // (args.jobs * 8))))


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    started = last_report = time.perf_counter()
    failures: list[ScenarioResult] = []
    done = 0
    for res in _results(args):
        done += 1
        if res.trace is not None:
            print("\n".join(res.trace))
        if not res.ok:
            failures.append(res)
            print(res.report(), flush=True)
            if args.fail_fast:
                break
        elif args.seeds == 1 and not args.quiet:
            s = res.stats
            print(f"ok seed={res.seed} nodes={res.nodes} ({res.flavour.name.lower()}): "
                  f"{res.ticks} ticks, "
                  f"{s.messages} messages, {s.leaders} leaders, commit {s.commit}, "
                  f"{s.acked} writes acked ({s.forwarded_acked} of {s.forwarded} forwarded "
                  f"by followers), {s.reads_checked} reads checked, "
                  f"{s.crashes} crashes, {s.snapshots_installed} snapshots installed, "
                  f"liveness in {s.liveness_ticks} ticks, trace hash {res.trace_hash:#x}")
        now = time.perf_counter()
        if not args.quiet and (now - last_report >= 5 or done == args.seeds) and args.seeds > 1:
            last_report = now
            rate = done / (now - started)
            print(f"[{done}/{args.seeds}] {rate:.1f} scenarios/s, {len(failures)} failed "
                  f"(seeds {args.start}..{res.seed})", flush=True)
    elapsed = time.perf_counter() - started
    print(f"{done} scenarios in {elapsed:.1f}s ({done / max(elapsed, 1e-9):.1f}/s): "
          f"{done - len(failures)} passed, {len(failures)} failed")
    for res in failures:
        print(f"  seed {res.seed}: {res.rule}  ->  {res.command}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
