"""One fault-injection run: start a cluster, run clients and nemeses, then check everything.

The run is bounded: clients and nemeses stop at ``duration``; healing, catching up and the
final reads each have their own deadline; the cluster and the proxies are torn down in a
``finally``. The seed fixes the workload choices and the fault schedule; the interleaving of
real processes is not reproducible, so a seed reproduces the scenario, not the exact history.
"""

from __future__ import annotations

import asyncio
import json
import random
import shlex
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from chaos import checks, linearizability, models
from chaos.cluster import ChaosCluster
from chaos.history import FAIL, HistoryWriter, pair, read_events
from chaos.nemesis import Nemesis
from chaos.report import write_report
from chaos.workloads import (
    DATA_PREFIX,
    LOCK_PREFIX,
    Client,
    LockClient,
    Recorder,
    RegisterClient,
    TxnClient,
    Watcher,
    prefix_end,
    read_reference,
)
from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc

REGISTER_FS = {"read", "write", "cas", "cas-rev"}
LOCK_FS = {"lock", "fenced-write", "unlock"}


@dataclass
class RunConfig:
    """What to run; every field has a command-line flag in ``python -m chaos``."""

    seed: int = 1
    nodes: int = 3
    duration: float = 30.0
    """Seconds of load and faults."""
    nemeses: list[str] = field(default_factory=lambda: ["kill", "pause", "partition"])
    register_clients: int = 4
    txn_clients: int = 2
    lock_clients: int = 3
    watchers: int = 2
    keys: int = 4
    groups: int = 0
    """Transaction key groups; 0 = one per 150 s of run (at least 2), so that no group's
    history grows past what the linearizability search decides quickly."""
    stale_reads: bool = False
    """Serializable (local, possibly stale) reads: a deliberate bug the checker must catch."""
    timeout: float = 2.0
    """Deadline of each client call, seconds."""
    tick_ms: int = 50
    snapshot_every: int = 200
    quiet: tuple[float, float] = (1.0, 3.0)
    hold: tuple[float, float] = (2.0, 5.0)
    out: Path = Path("chaos-runs")

    def command(self) -> str:
        """The command line that repeats this run's scenario."""
        args = [sys.executable, "-m", "chaos", "--seed", str(self.seed),
                "--nodes", str(self.nodes), "--duration", f"{self.duration:g}",
                "--nemesis", ",".join(self.nemeses) or "none",
                "--clients", f"{self.register_clients},{self.txn_clients},{self.lock_clients}",
                "--watchers", str(self.watchers), "--keys", str(self.keys),
                "--groups", str(self.groups),
                "--out", str(self.out)]
        if self.stale_reads:
            args.append("--stale-reads")
        return shlex.join(args)


@dataclass
class RunResult:
    valid: bool
    report_dir: Path
    verdicts: dict[str, Any]
    summary: str


def _linearizability(verdict: linearizability.Verdict) -> dict[str, Any]:
    """A linearizability verdict as a report entry: ok only if every key was proven."""
    return {"ok": verdict.valid, "status": verdict.status,
            "counts": {"keys": len(verdict.partitions),
                       "operations": sum(p.ops for p in verdict.partitions),
                       "steps": sum(p.steps for p in verdict.partitions)},
            "seconds": round(sum(p.elapsed for p in verdict.partitions), 3),
            "problems": [] if verdict.valid else [verdict.render()]}


async def _final_state(endpoints: list[str], timeout: float) -> tuple[dict[str, Any], int]:
    """A linearizable read of every data key (retried on any member): {key: (value, mod)}."""
    deadline = time.monotonic() + timeout
    key = DATA_PREFIX.encode()
    last: Exception | None = None
    while time.monotonic() < deadline:
        for addr in endpoints:
            async with grpc.aio.insecure_channel(addr) as ch:
                try:
                    resp = await rpc_pb2_grpc.KVStub(ch).Range(
                        rpc_pb2.RangeRequest(key=key, range_end=prefix_end(key)), timeout=3)
                except grpc.aio.AioRpcError as e:
                    last = e
                    continue
            final = {kv.key.decode(): (kv.value.decode(), kv.mod_revision) for kv in resp.kvs}
            return final, max((mod for _, mod in final.values()), default=0)
        await asyncio.sleep(0.5)
    raise TimeoutError(f"no linearizable final read within {timeout}s: {last}")


async def _load(cfg: RunConfig, cluster: ChaosCluster, run_dir: Path, t0: int,
                nemesis: Nemesis) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Clients, watchers and nemesis until the deadline, then heal, catch up, read the end."""
    rng = random.Random(cfg.seed)
    history = HistoryWriter(run_dir / "history.jsonl")
    watch_log = HistoryWriter(run_dir / "watches.jsonl")
    rec = Recorder(history, t0)
    deadline = time.monotonic() + cfg.duration
    keys = [f"{DATA_PREFIX}reg/{i}" for i in range(cfg.keys)]
    groups = {f"g{g}": [f"{DATA_PREFIX}txn/g{g}/{k}" for k in "abc"]
              for g in range(cfg.groups or max(2, int(cfg.duration // 150)))}
    common: dict[str, Any] = {"endpoints": cluster.endpoints, "timeout": cfg.timeout}
    clients: list[Client] = []
    index = 0
    for _ in range(cfg.register_clients):
        clients.append(RegisterClient(rec, index=index, rng=random.Random(rng.random()),
                                      keys=keys, stale_reads=cfg.stale_reads, **common))
        index += 1
    for _ in range(cfg.txn_clients):
        clients.append(TxnClient(rec, index=index, rng=random.Random(rng.random()),
                                 groups=groups, **common))
        index += 1
    for _ in range(cfg.lock_clients):
        clients.append(LockClient(rec, index=index, rng=random.Random(rng.random()),
                                  lock=f"{LOCK_PREFIX}l0", resource=f"{DATA_PREFIX}fenced/r0",
                                  **common))
        index += 1
    stop = asyncio.Event()
    final_rev: list[int] = []
    watchers = [Watcher(watch_log, t0, cluster.endpoints, w, start_rev=1 if w == 0 else 2 + w)
                for w in range(cfg.watchers)]
    watch_tasks = [asyncio.create_task(w.run(stop, lambda: final_rev[0] if final_rev else None))
                   for w in watchers]
    try:
        await asyncio.gather(nemesis.run(deadline), *(c.run(deadline) for c in clients))
        # Everything healed by the nemesis; make sure every member runs again.
        for i in cluster.members:
            cluster.restart(i)
        final, rev = await _final_state(cluster.endpoints(), timeout=60)
        final_rev.append(rev)
        stop.set()
        _, pending = await asyncio.wait(watch_tasks, timeout=60)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        reference = await read_reference(cluster.endpoints()[0], DATA_PREFIX, rev, timeout=60)
    finally:
        stop.set()
        for t in watch_tasks:
            t.cancel()
        await asyncio.gather(*watch_tasks, return_exceptions=True)
        history.close()
        watch_log.close()
    return final, reference


def _caught_up(records: list[dict[str, Any]], final: dict[str, Any]) -> dict[str, Any]:
    """Every watcher reached the last revision of the run (the gap check ends where each
    watcher ended, so one that stalled must be caught here)."""
    target = max((mod for _, mod in final.values()), default=0)
    ends = {r["watcher"]: r["last_rev"] for r in records if r["type"] == "end"}
    starts = {r["watcher"] for r in records if r["type"] == "start"}
    problems = [f"watcher {w} ended at revision {ends.get(w)}, the run reached {target}"
                for w in sorted(starts) if ends.get(w, 0) < target]
    return {"ok": not problems, "problems": problems,
            "counts": {"watchers": len(starts), "final_revision": target}}


def check_run(run_dir: Path, reference: list[dict[str, Any]],
              final: dict[str, Any]) -> dict[str, Any]:
    """Every checker's verdict on a recorded run."""
    ops = pair(read_events(run_dir / "history.jsonl"))
    records = list(read_events(run_dir / "watches.jsonl"))
    # A call that failed with an error (not an answer such as "compare failed") tells the
    # linearizability checker nothing: it had no effect, and it observed nothing.
    answered = [op for op in ops if not (op.status == FAIL and op.error)]
    register_ops = [op for op in answered if op.f in REGISTER_FS]
    txn_ops = [op for op in answered if op.f == "txn"]
    results = {
        "linearizable-registers": _linearizability(
            linearizability.check(register_ops, models.Register())),
        "linearizable-txns": _linearizability(
            linearizability.check(txn_ops, models.MultiRegister())),
        "events-agree": checks.check_events_agree(ops, reference),
        "no-lost-writes": checks.check_no_lost_writes(ops, reference, final),
        "watches": checks.check_watches(records, reference),
        "locks": checks.check_locks([op for op in ops if op.f in LOCK_FS], reference),
        "watchers-caught-up": _caught_up(records, final),
    }
    return results


def run(cfg: RunConfig) -> RunResult:
    """One run, start to report. Never leaves a process or a proxy behind."""
    run_dir = cfg.out / f"seed-{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("history.jsonl", "watches.jsonl"):
        (run_dir / name).touch()  # a run that fails early still gets a report
    cluster = ChaosCluster(cfg.nodes, run_dir / "cluster", seed=cfg.seed, tick_ms=cfg.tick_ms,
                           snapshot_every=cfg.snapshot_every)
    t0 = time.monotonic_ns()
    nemesis = Nemesis(cluster, random.Random(cfg.seed * 7919 + 1), cfg.nemeses, t0,
                      quiet=cfg.quiet, hold=cfg.hold)
    error = ""
    final: dict[str, Any] = {}
    reference: list[dict[str, Any]] = []
    try:
        cluster.start()
        t0 = nemesis.t0 = time.monotonic_ns()
        final, reference = asyncio.run(_load(cfg, cluster, run_dir, t0, nemesis))
    except Exception as e:  # reported as a failed run, with the cluster's logs kept
        error = f"{type(e).__name__}: {e}"
        (run_dir / "error.txt").write_text(traceback.format_exc())
    finally:
        cluster.stop()
    verdicts: dict[str, Any] = {}
    if not error:
        verdicts = check_run(run_dir, reference, final)
        valid = all(v["ok"] if isinstance(v, dict) else v.ok for v in verdicts.values())
    else:
        verdicts = {"run": {"ok": False, "error": error}}
        valid = False
    meta = {"seed": cfg.seed, "nodes": cfg.nodes, "duration": cfg.duration,
            "nemeses": cfg.nemeses, "reproduce": cfg.command(), "valid": valid,
            "nemesis_errors": nemesis.errors, **({"error": error} if error else {})}
    (run_dir / "reference.json").write_text(json.dumps(reference))
    write_report(run_dir, run_dir / "history.jsonl", run_dir / "watches.jsonl",
                 nemesis.timeline, verdicts, meta)
    summary = (run_dir / "summary.txt").read_text()
    return RunResult(valid, run_dir, verdicts, summary)
