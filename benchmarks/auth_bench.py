"""The cost of authentication: the same puts and linearizable gets against one cluster with
authentication off, then on (a user whose role allows the keys, its simple token in every
call's metadata), then off again (the machine's drift). Prints ops/s and latency for each,
and the ratio.

Bounded by --duration per phase. Run from the repository root as a module:

  .venv/bin/python -m benchmarks.auth_bench --spawn 3 --clients 100 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import grpc

from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.v1 import kv_pb2, kv_pb2_grpc
from testing import ProcessCluster


async def phase(endpoint: str, op: str, args: argparse.Namespace,
                metadata: tuple[tuple[str, str], ...]) -> tuple[float, float, float, int]:
    """(ops/s, p50 ms, p99 ms, errors) of ``op`` ("put" or "get") for ``args.duration``."""
    channels = [grpc.aio.insecure_channel(endpoint, options=[("grpc.use_local_subchannel_pool",
                                                              1)]) for _ in range(8)]
    stubs = [kv_pb2_grpc.KVStub(ch) for ch in channels]
    value = random.randbytes(args.value_size)
    keys = [f"/bench/k{i:06d}" for i in range(1000)]
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + args.duration

    async def client(n: int) -> None:
        nonlocal errors
        stub, rng = stubs[n % len(stubs)], random.Random(n)
        while time.perf_counter() < deadline:
            key = keys[rng.randrange(len(keys))]
            t0 = time.perf_counter()
            try:
                if op == "put":
                    await stub.Put(kv_pb2.PutRequest(path=key, value=value), timeout=5,
                                   metadata=metadata)
                else:
                    await stub.Range(kv_pb2.RangeRequest(path=key), timeout=5,
                                     metadata=metadata)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(args.clients)))
    elapsed = time.perf_counter() - start
    for ch in channels:
        await ch.close()
    latencies.sort()

    def pick(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 \
            if latencies else 0.0

    return len(latencies) / elapsed, pick(0.5), pick(0.99), errors


def disable_auth(endpoint: str) -> None:
    with grpc.insecure_channel(endpoint) as ch:
        auth = rpc_pb2_grpc.AuthStub(ch)
        root = auth.Authenticate(rpc_pb2.AuthenticateRequest(name="root", password="rootpw"),
                                 timeout=10).token
        auth.AuthDisable(rpc_pb2.AuthDisableRequest(), timeout=10,
                         metadata=(("token", root),))


def enable_auth(endpoint: str) -> str:
    """Root, a user ``bench`` with readwrite on /bench, auth on; ``bench``'s token."""
    with grpc.insecure_channel(endpoint) as ch:
        auth = rpc_pb2_grpc.AuthStub(ch)
        auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="root", password="rootpw"), timeout=10)
        auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"),
                           timeout=10)
        auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name="bench"), timeout=10)
        auth.RoleGrantPermission(rpc_pb2.AuthRoleGrantPermissionRequest(
            name="bench", perm={"permType": "READWRITE", "key": b"/bench/",
                                "range_end": b"/bench0"}), timeout=10)
        auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="bench", password="benchpw"), timeout=10)
        auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="bench", role="bench"),
                           timeout=10)
        auth.AuthEnable(rpc_pb2.AuthEnableRequest(), timeout=10)
        return str(auth.Authenticate(rpc_pb2.AuthenticateRequest(name="bench",
                                                                 password="benchpw"),
                                     timeout=10).token)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spawn", type=int, default=1, help="nodes of the local cluster")
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    ap.add_argument("--value-size", type=int, default=256)
    args = ap.parse_args(argv)
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="confer-auth-bench-"))
        cluster = stack.enter_context(ProcessCluster(args.spawn, Path(tmp)))
        endpoint = cluster.nodes[cluster.leader()].client_addr
        results: dict[tuple[str, str], tuple[float, float, float, int]] = {}
        for op in ("put", "get"):
            results[("off", op)] = asyncio.run(phase(endpoint, op, args, ()))
        token = enable_auth(endpoint)
        for op in ("put", "get"):
            results[("on", op)] = asyncio.run(phase(endpoint, op, args, (("token", token),)))
        disable_auth(endpoint)  # off again: shows how much the machine's load drifted
        for op in ("put", "get"):
            results[("off again", op)] = asyncio.run(phase(endpoint, op, args, ()))
    for (mode, op), (rate, p50, p99, errors) in results.items():
        print(f"auth {mode:<9} {op}  {rate:9.0f} ops/s  p50 {p50:.2f} ms  p99 {p99:.2f} ms  "
              f"({errors} errors)")
    for op in ("put", "get"):
        off = (results[("off", op)][0] + results[("off again", op)][0]) / 2
        print(f"{op}: auth on / off (mean of both) = {results[('on', op)][0] / off:.2f}")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
