"""Data at scale: a million keys in 3-node Confer and 3-node etcd, side by side.

For each system in turn (a fresh 3-node cluster on loopback, fsync on; etcd is Debian's
etcd-server), the same Python client (etcd v3 gRPC stubs: Confer serves etcd's API on its
client port) does, and this script prints and returns:

1. **load**: KEYS keys of VALUE_SIZE bytes, in transactions of BATCH puts (etcd's default
   limit is 128 operations per transaction), CONCURRENCY of them in flight, through all
   three members; bounded by ``--load-timeout`` (the keys loaded by then are reported, and
   the rest of the run works with them);
2. **RSS** of each member (``VmRSS``, after a settle), and the data dirs' size on disk;
3. **backup snapshot**: the time to stream a member's snapshot (etcd's
   ``Maintenance.Snapshot``, what ``etcdctl snapshot save`` calls) and its size;
4. **range**: a linearizable Range of RANGE_KEYS consecutive keys through one member, the
   median of RANGE_RUNS;
5. **restart**: kill -9 a follower, start it again on its data dir, and time until a
   linearizable count of the loaded keys through it answers all of them (it serves again,
   caught up);
6. **new member**: add a fourth member as a learner (Confer: ``confer serve --join``;
   etcd: ``member add --learner``, then a start with ``--initial-cluster-state existing``)
   and time from its start until it holds every key (a serializable count through it).
   Both systems take a snapshot every SNAPSHOT_EVERY entries and keep 5000 entries after
   it (etcd 3.4's fixed catch-up window; Confer's ``--snapshot-catchup-entries``), so with
   more entries than that the new member is sent a snapshot, not the log.

Every process is started here, bounded in time, and killed by PID at the end. Figures on a
shared machine are indicative; compare the two systems of one run. Run from the repository
root as a module:

    .venv/bin/python -m benchmarks.datascale                          # 1M keys, both
    .venv/bin/python -m benchmarks.datascale --keys 100000 --only confer
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Protocol

import grpc

from benchmarks.etcd_compare import EtcdCluster, rss_bytes
from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from testing import ProcessCluster

PREFIX = b"/datascale/"
PREFIX_END = b"/datascale0"
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1),
                   ("grpc.use_local_subchannel_pool", 1)]
CATCHUP_ENTRIES = 5000
"""Entries kept after a snapshot: etcd 3.4's fixed ``snapshotCatchUpEntries``."""
STEP_TIMEOUT = 600.0
"""Seconds a restart or a new member may take to serve every key before the run fails."""


def key(i: int) -> bytes:
    return PREFIX + b"k%09d" % i


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class System(Protocol):
    """One 3-node cluster: its members by index (kill, restart, pids) and a fourth added."""

    name: str
    endpoints: list[str]

    def pids(self) -> list[int]: ...

    def data_dir(self, i: int) -> Path: ...

    def kill(self, i: int) -> None: ...

    def restart(self, i: int) -> None: ...

    def add_member(self) -> str:
        """Start a fourth member (a learner) that joins the cluster; its client endpoint.
        (Timed from when this returns: etcd's member add is made first, and retried while
        it refuses; Confer's new member adds itself as it starts.)"""
        ...


class ConferSystem:
    name = "confer"

    def __init__(self, cluster: ProcessCluster) -> None:
        self.cluster = cluster
        self.nodes = list(cluster.nodes.values())
        self.endpoints = [n.client_addr for n in self.nodes]

    def pids(self) -> list[int]:
        return [n.pid for n in self.nodes if n.pid is not None]

    def data_dir(self, i: int) -> Path:
        return self.nodes[i].data_dir

    def kill(self, i: int) -> None:
        self.nodes[i].kill()

    def restart(self, i: int) -> None:
        self.nodes[i].start()

    def add_member(self) -> str:
        node = self.cluster.add_node(len(self.nodes) + 1, join=self.endpoints[0])
        self.nodes.append(node)
        return node.client_addr


class EtcdSystem:
    name = "etcd"

    def __init__(self, cluster: EtcdCluster) -> None:
        self.cluster = cluster
        self.endpoints = cluster.endpoints

    def pids(self) -> list[int]:
        return [p.pid for p in self.cluster.procs]

    def data_dir(self, i: int) -> Path:
        return self.cluster.base / f"etcd{i}"

    def kill(self, i: int) -> None:
        proc = self.cluster.procs[i]
        proc.kill()
        proc.wait(timeout=30)

    def restart(self, i: int) -> None:
        self.cluster.procs[i] = self.cluster.start_member(i)

    def add_member(self) -> str:
        return self.cluster.add_learner()


async def load(endpoints: list[str], keys: int, value_size: int, batch: int,
               concurrency: int, timeout: float) -> int:
    """Put keys 0..keys-1 in transactions of ``batch`` puts; the number loaded (all of them
    unless ``timeout`` seconds passed first)."""
    channels = [grpc.aio.insecure_channel(e, options=CHANNEL_OPTIONS) for e in endpoints]
    stubs = [rpc_pb2_grpc.KVStub(ch) for ch in channels]
    value = os.urandom(value_size)
    starts = iter(range(0, keys, batch))
    deadline = time.monotonic() + timeout
    loaded = 0

    async def worker(n: int) -> None:
        nonlocal loaded
        stub = stubs[n % len(stubs)]
        for start in starts:
            if time.monotonic() > deadline:
                return
            ops = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key(i), value=value))
                   for i in range(start, min(keys, start + batch))]
            for attempt in range(5):
                try:
                    await stub.Txn(rpc_pb2.TxnRequest(success=ops), timeout=60)
                    break
                except grpc.aio.AioRpcError:
                    if attempt == 4:
                        raise
                    await asyncio.sleep(1)
            loaded += len(ops)

    try:
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
    finally:
        for ch in channels:
            await ch.close()
    return loaded


async def count(endpoint: str, serializable: bool, timeout: float = 30) -> tuple[int, int]:
    """(keys under PREFIX, revision) through ``endpoint``."""
    async with grpc.aio.insecure_channel(endpoint, options=CHANNEL_OPTIONS) as ch:
        r = await rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(
            key=PREFIX, range_end=PREFIX_END, count_only=True, serializable=serializable),
            timeout=timeout)
        return r.count, r.header.revision


async def wait_serving(endpoint: str, keys: int, serializable: bool, start: float) -> float:
    """Seconds from ``start`` until ``endpoint`` counts ``keys`` keys."""
    while True:
        try:
            n, _ = await count(endpoint, serializable, timeout=5)
            if n >= keys:
                return time.monotonic() - start
        except grpc.aio.AioRpcError:
            pass
        if time.monotonic() - start > STEP_TIMEOUT:
            raise TimeoutError(f"{endpoint} did not serve {keys} keys in {STEP_TIMEOUT:g} s")
        await asyncio.sleep(0.1)


async def leader_index(endpoints: list[str]) -> int:
    """The index of the leader among ``endpoints``."""
    for _ in range(100):
        ids, leader = [], 0
        for e in endpoints:
            async with grpc.aio.insecure_channel(e) as ch:
                st = await rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(),
                                                                   timeout=5)
            ids.append(st.header.member_id)
            leader = st.leader
        if leader in ids:
            return ids.index(leader)
        await asyncio.sleep(0.2)
    raise TimeoutError("no leader among the members")


async def backup(endpoint: str, path: Path) -> tuple[float, int]:
    """Stream ``endpoint``'s snapshot to ``path``: (seconds, bytes)."""
    t0 = time.monotonic()
    size = 0
    async with grpc.aio.insecure_channel(endpoint, options=CHANNEL_OPTIONS) as ch:
        with path.open("wb") as f:
            async for part in rpc_pb2_grpc.MaintenanceStub(ch).Snapshot(
                    rpc_pb2.SnapshotRequest(), timeout=STEP_TIMEOUT):
                f.write(part.blob)
                size += len(part.blob)
    return time.monotonic() - t0, size


async def range_keys(endpoint: str, n: int, runs: int) -> tuple[float, int]:
    """Median seconds of ``runs`` linearizable Ranges of ``n`` consecutive keys, and the
    number of keys the last one returned."""
    times = []
    got = 0
    async with grpc.aio.insecure_channel(endpoint, options=CHANNEL_OPTIONS) as ch:
        stub = rpc_pb2_grpc.KVStub(ch)
        for _ in range(runs):
            t0 = time.monotonic()
            r = await stub.Range(rpc_pb2.RangeRequest(key=key(0), range_end=key(n)),
                                 timeout=STEP_TIMEOUT)
            times.append(time.monotonic() - t0)
            got = len(r.kvs)
    return statistics.median(times), got


def mib(n: float) -> float:
    return round(n / (1 << 20), 1)


def measure(system: System, tmp: Path, args: argparse.Namespace,
            run: Callable[[Awaitable[Any]], Any], say: Callable[[str], None]
            ) -> dict[str, Any]:
    """Every figure of one system, in the order of the module's docstring."""
    out: dict[str, Any] = {"system": system.name}
    t0 = time.monotonic()
    loaded = run(load(system.endpoints, args.keys, args.value_size, args.batch,
                      args.concurrency, args.load_timeout))
    out["load_s"] = round(time.monotonic() - t0, 1)
    out["keys"] = loaded
    out["keys_per_s"] = round(loaded / max(out["load_s"], 1e-9))
    say(f"{system.name}: loaded {loaded} keys in {out['load_s']} s "
        f"({out['keys_per_s']} keys/s)")
    time.sleep(args.settle)
    rss = [rss_bytes(pid) for pid in system.pids()]
    out["rss_mib"] = [mib(r) for r in rss]
    out["rss_mib_max"] = mib(max(rss))
    out["disk_mib"] = [mib(dir_bytes(system.data_dir(i))) for i in range(3)]
    say(f"{system.name}: RSS per member {out['rss_mib']} MiB; on disk {out['disk_mib']} MiB")

    seconds, size = run(backup(system.endpoints[0], tmp / f"{system.name}.backup"))
    (tmp / f"{system.name}.backup").unlink()
    out["backup_s"], out["backup_mib"] = round(seconds, 2), mib(size)
    say(f"{system.name}: backup snapshot {out['backup_mib']} MiB in {out['backup_s']} s")

    n = min(args.range_keys, loaded)
    seconds, got = run(range_keys(system.endpoints[0], n, args.range_runs))
    out["range_keys"], out["range_s"] = got, round(seconds, 3)
    say(f"{system.name}: range of {got} keys in {out['range_s']} s "
        f"(median of {args.range_runs})")

    leader = run(leader_index(system.endpoints))
    victim = (leader + 1) % 3
    system.kill(victim)
    t0 = time.monotonic()
    system.restart(victim)
    out["restart_s"] = round(run(wait_serving(system.endpoints[victim], loaded, False, t0)), 2)
    out["restart_member_rss_mib"] = mib(rss_bytes(system.pids()[victim]))
    say(f"{system.name}: member {victim + 1} killed and restarted: serving every key after "
        f"{out['restart_s']} s")

    if not args.no_new_member:
        endpoint, t0 = system.add_member(), time.monotonic()
        out["new_member_s"] = round(run(wait_serving(endpoint, loaded, True, t0)), 2)
        say(f"{system.name}: a new member holds every key after {out['new_member_s']} s")
    return out


def start(name: str, tmp: Path, args: argparse.Namespace, stack: ExitStack) -> System:
    (tmp / name).mkdir()
    if name == "confer":
        cluster = stack.enter_context(ProcessCluster(
            3, tmp / name, tick_ms=100,
            extra_args=["--snapshot-every", str(args.snapshot_every),
                        "--snapshot-catchup-entries", str(CATCHUP_ENTRIES)]))
        cluster.leader()
        return ConferSystem(cluster)
    return EtcdSystem(stack.enter_context(EtcdCluster(
        tmp / name, extra_args=["--snapshot-count", str(args.snapshot_every)])))


def run_all(args: argparse.Namespace, say: Callable[[str], None] = print
            ) -> dict[str, dict[str, Any]]:
    """Each system of ``args.systems`` in turn, on a fresh cluster: {system: figures}."""
    try:
        import uvloop

        run: Callable[[Awaitable[Any]], Any] = uvloop.run
    except ImportError:
        run = asyncio.run
    results = {}
    with tempfile.TemporaryDirectory(prefix="confer-datascale-") as d:
        for name in args.systems:
            with ExitStack() as stack:
                system = start(name, Path(d), args, stack)
                results[name] = measure(system, Path(d), args, run, say)
    return results


FIGURES = [("load_s", "load (s)", False), ("keys_per_s", "keys/s", True),
           ("rss_mib_max", "RSS, largest member (MiB)", False),
           ("backup_mib", "backup snapshot (MiB)", False),
           ("backup_s", "backup snapshot (s)", False),
           ("range_s", "range of RANGE keys (s)", False),
           ("restart_s", "restart to serving (s)", False),
           ("new_member_s", "new member caught up (s)", False)]
"""(key, label, higher is better) of the figures compared."""


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--value-size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64, help="puts per transaction (<= 128)")
    ap.add_argument("--concurrency", type=int, default=16, help="transactions in flight")
    ap.add_argument("--load-timeout", type=float, default=900.0,
                    help="seconds the load may take; the keys loaded by then are used")
    ap.add_argument("--snapshot-every", type=int, default=5000,
                    help="entries between snapshots, both systems (etcd --snapshot-count)")
    ap.add_argument("--range-keys", type=int, default=100_000)
    ap.add_argument("--range-runs", type=int, default=3)
    ap.add_argument("--settle", type=float, default=5.0,
                    help="seconds between the load and the RSS reading")
    ap.add_argument("--no-new-member", action="store_true", help="skip the fourth member")
    ap.add_argument("--only", choices=["confer", "etcd"], help="run just this system")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON line")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if not (0 < args.batch <= 128 and args.keys > 0 and args.concurrency > 0):
        ap.error("need 0 < batch <= 128, keys > 0, concurrency > 0")
    args.systems = [args.only] if args.only else ["etcd", "confer"]
    if "etcd" in args.systems and shutil.which("etcd") is None:
        print("etcd not found: apt-get install etcd-server", file=sys.stderr)
        return 2
    results = run_all(args, say=lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(results))
        return 0
    names = list(results)
    print(f"{'figure':<30}" + "".join(f"{n:>12}" for n in names)
          + (f"{'ratio':>10}" if len(names) == 2 else ""))
    for k, label, _ in FIGURES:
        values = [results[n].get(k) for n in names]
        line = f"{label.replace('RANGE', str(args.range_keys)):<30}"
        line += "".join(f"{'n/a' if v is None else v:>12}" for v in values)
        if len(names) == 2 and all(isinstance(v, int | float) and v for v in values):
            line += f"{values[1] / values[0]:>9.2f}x"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
