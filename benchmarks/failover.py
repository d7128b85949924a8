"""Failover: kill -9 the leader, time the next acknowledged write. Confer and etcd, alternating.

Starts a 3-node Confer cluster and a 3-node etcd cluster (Debian's etcd-server) on loopback,
both with a 100 ms heartbeat and a 1 s election timeout (Confer: ``--tick-ms 100``, 10
election ticks; etcd: its defaults), and then, for ROUNDS rounds each, alternating between
the two systems:

1. waits until every member agrees on a leader and a write through each member succeeds;
2. kills the leader with SIGKILL;
3. from the kill on, starts a write (etcd v3 ``Put``, each with a 2 s timeout) every 50 ms,
   to the surviving members in turn, and records when the first one is acknowledged;
4. restarts the killed member on its data dir and lets the cluster settle.

Both systems are driven by the same client (raw etcd v3 gRPC stubs; Confer speaks etcd's API on
its client port), so the figure is the cluster's unavailability, not a client library's retry
policy. Prints each round, then the median and max of both. The figures of a shared machine
are indicative: run with a modest number of rounds, and compare the two systems of one run.

    .venv/bin/python -m benchmarks.failover --rounds 7
    .venv/bin/python -m benchmarks.failover --rounds 5 --only confer
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import grpc

import confer.aio
from benchmarks.etcd_compare import EtcdCluster
from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from testing import ProcessCluster

PROBE_INTERVAL = 0.05
"""Seconds between two writes started after the kill."""
PROBE_TIMEOUT = 2.0
"""Timeout of each write started after the kill."""
ROUND_LIMIT = 30.0
"""A round with no acknowledged write this long after the kill fails the run."""
SETTLE = 3.0
"""Seconds the cluster runs after the restarted member caught up, before the next kill."""


class System(Protocol):
    """The members of one cluster, by index: their client endpoints, kill and restart."""

    name: str
    endpoints: list[str]

    def kill(self, i: int) -> None: ...

    def restart(self, i: int) -> None: ...


class ConferSystem:
    name = "confer"

    def __init__(self, cluster: ProcessCluster) -> None:
        self.cluster = cluster
        self.nodes = list(cluster.nodes.values())
        self.endpoints = [n.client_addr for n in self.nodes]

    def kill(self, i: int) -> None:
        self.nodes[i].kill()

    def restart(self, i: int) -> None:
        self.nodes[i].start()


class EtcdSystem:
    name = "etcd"

    def __init__(self, cluster: EtcdCluster) -> None:
        self.cluster = cluster
        self.endpoints = cluster.endpoints

    def kill(self, i: int) -> None:
        proc = self.cluster.procs[i]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def restart(self, i: int) -> None:
        self.cluster.procs[i] = self.cluster.start_member(i)


async def leader_index(stubs: list[rpc_pb2_grpc.MaintenanceStub], live: list[int]) -> int | None:
    """The index of the member that every live member names as leader, or None."""
    answers = await asyncio.gather(*(stubs[i].Status(rpc_pb2.StatusRequest(), timeout=1)
                                     for i in live), return_exceptions=True)
    if any(isinstance(a, BaseException) for a in answers):
        return None
    leaders = {a.leader for a in answers if isinstance(a, rpc_pb2.StatusResponse)}
    ids = {a.header.member_id: i for i, a in zip(live, answers, strict=True)
           if isinstance(a, rpc_pb2.StatusResponse)}
    if len(leaders) != 1:
        return None
    return ids.get(leaders.pop())


async def settle(kvs: list[rpc_pb2_grpc.KVStub], mts: list[rpc_pb2_grpc.MaintenanceStub],
                 timeout: float = 60.0) -> int:
    """Wait until all members agree on a leader and accept a write each; return the leader."""
    deadline = time.monotonic() + timeout
    members = list(range(len(kvs)))
    while time.monotonic() < deadline:
        try:
            for kv in kvs:
                await kv.Put(rpc_pb2.PutRequest(key=b"/failover/warm", value=b"1"), timeout=2)
            leader = await leader_index(mts, members)
        except grpc.aio.AioRpcError:
            leader = None
        if leader is not None:
            return leader
        await asyncio.sleep(0.2)
    raise TimeoutError("the cluster did not settle")


async def next_write(kvs: list[rpc_pb2_grpc.KVStub], survivors: list[int], start: float,
                     value: bytes) -> float:
    """Seconds from ``start`` until the first acknowledged write of those started every
    PROBE_INTERVAL to the survivors in turn."""
    done: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def attempt(i: int) -> None:
        try:
            await kvs[i].Put(rpc_pb2.PutRequest(key=b"/failover/k", value=value),
                             timeout=PROBE_TIMEOUT)
        except grpc.aio.AioRpcError:
            return
        if not done.done():
            done.set_result(time.perf_counter() - start)

    tasks: list[asyncio.Task[None]] = []
    try:
        n = 0
        while not done.done():
            if time.perf_counter() - start > ROUND_LIMIT:
                raise TimeoutError(f"no write acknowledged {ROUND_LIMIT:g} s after the kill")
            tasks.append(asyncio.create_task(attempt(survivors[n % len(survivors)])))
            n += 1
            await asyncio.wait([done], timeout=PROBE_INTERVAL)
        return done.result()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def client_write(client: confer.aio.Client, start: float, value: bytes) -> float:
    """Seconds from ``start`` until one ``put`` of Confer's own client returns."""
    await client.put("/failover/k", value)
    return time.perf_counter() - start


async def one_round(system: System, n: int, native: bool) -> tuple[float, int]:
    """Kill the leader, time the next write, restart it. Returns (seconds, killed index)."""
    channels = [grpc.aio.insecure_channel(e) for e in system.endpoints]
    client = confer.aio.Client(system.endpoints) if native else None
    try:
        kvs = [rpc_pb2_grpc.KVStub(ch) for ch in channels]
        mts = [rpc_pb2_grpc.MaintenanceStub(ch) for ch in channels]
        leader = await settle(kvs, mts)
        if client is not None:  # connected, and knowing the leader, as a busy client is
            await client.put("/failover/warm", b"1")
        survivors = [i for i in range(len(kvs)) if i != leader]
        start = time.perf_counter()
        system.kill(leader)
        print(f"  killed member {leader + 1} at {datetime.now(UTC):%H:%M:%S.%f}", flush=True)
        value = b"round %d" % n
        if client is not None:
            took = await client_write(client, start, value)
        else:
            took = await next_write(kvs, survivors, start, value)
    finally:
        if client is not None:
            await client.close()
        for ch in channels:
            await ch.close()
    system.restart(leader)
    channels = [grpc.aio.insecure_channel(e) for e in system.endpoints]
    try:
        await settle([rpc_pb2_grpc.KVStub(ch) for ch in channels],
                     [rpc_pb2_grpc.MaintenanceStub(ch) for ch in channels])
    finally:
        for ch in channels:
            await ch.close()
    await asyncio.sleep(SETTLE)
    return took, leader


def summary(values: list[float]) -> str:
    return (f"median {statistics.median(values):.2f} s  max {max(values):.2f} s  "
            f"min {min(values):.2f} s  ({len(values)} rounds)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7, help="kills per system")
    ap.add_argument("--only", choices=["confer", "etcd"], help="run just this system")
    ap.add_argument("--client", choices=["etcd", "confer"], default="etcd",
                    help="etcd: raw etcd v3 Put calls, one started every 50 ms after the kill "
                         "(both systems); confer: one put of Confer's own asyncio client, "
                         "with its retry policy (Confer only)")
    ap.add_argument("--log-level", default="info", help="the Confer nodes' log level")
    ap.add_argument("--keep", action="store_true",
                    help="keep the data dirs and logs (their path is printed)")
    ap.add_argument("--json", action="store_true",
                    help="end with one JSON line: {system: [seconds of each round]}")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    names = [args.only] if args.only else ["confer", "etcd"]
    native = args.client == "confer"
    if native and "etcd" in names:
        ap.error("--client confer measures Confer only: add --only confer")
    if "etcd" in names and shutil.which("etcd") is None:
        print("etcd not found: apt-get install etcd-server", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="confer-failover-"))
    results: dict[str, list[float]] = {name: [] for name in names}
    try:
        with ExitStack() as stack:
            systems: list[System] = []
            for name in names:
                (tmp / name).mkdir()
                if name == "confer":
                    cluster = stack.enter_context(ProcessCluster(
                        3, tmp / name, tick_ms=100, extra_args=["--log-level", args.log_level]))
                    systems.append(ConferSystem(cluster))
                else:
                    systems.append(EtcdSystem(stack.enter_context(EtcdCluster(tmp / name))))
            for n in range(args.rounds):
                for system in systems:
                    took, killed = asyncio.run(one_round(system, n, native))
                    results[system.name].append(took)
                    print(f"round {n + 1} {system.name:<6} killed member {killed + 1}: "
                          f"next write after {took:.2f} s", flush=True)
    finally:
        if args.keep:
            print(f"data and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    for name, values in results.items():
        print(f"{name:<6} kill -9 leader -> next acknowledged write: {summary(values)}")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
