"""How long an app's snapshot holds the event loop: a state machine holding ENTRIES dict
entries and as many list items is snapshotted as a member does it (a step per loop turn, the
parts joined in a worker thread) while a ticker task measures the loop's longest stall.
Prints, for the whole-state snapshot (``incremental_snapshot = False``: the state packed at
once, as before incremental snapshots) and the default chunked one: the longest stall, the
steps, the snapshot's size and time, and the time a restore takes (whole, as before).

    .venv/bin/python -m benchmarks.app_snapshot_stall                  # 200,000 entries
    .venv/bin/python -m benchmarks.app_snapshot_stall --entries 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import time

from confer.replicated import StateMachine
from confer.replicated.machine import field
from confer.replicated.replica import Replica
from confer.server.fsm import ServerStateMachine

TICK = 0.001


class Chunked(StateMachine):
    entries: dict[str, str] = field(dict)
    items: list[int] = field(list)


class Whole(Chunked):
    incremental_snapshot = False


async def measure(cls: type[Chunked], n: int) -> None:
    fsm = ServerStateMachine(Replica(cls))
    assert fsm.app is not None
    machine = fsm.app.machine
    machine.entries = {f"/jobs/{i:08}": f"payload-{i}" for i in range(n)}
    machine.items = list(range(n))
    longest = 0.0
    running = True

    async def ticker() -> None:
        nonlocal longest
        last = time.perf_counter()
        while running:
            await asyncio.sleep(TICK)
            now = time.perf_counter()
            longest = max(longest, now - last - TICK)
            last = now

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    longest = 0.0
    start = time.perf_counter()
    steps, parts = 0, None
    for parts in fsm.snapshot_steps():  # as Node._build_snapshot drives it
        steps += 1
        if parts is not None:
            break
        await asyncio.sleep(0)
    assert parts is not None
    data = await asyncio.to_thread(b"".join, parts)
    took = time.perf_counter() - start
    await asyncio.sleep(0.05)
    running = False
    await tick
    t = time.perf_counter()
    ServerStateMachine(Replica(cls)).restore(data)
    restore = time.perf_counter() - t
    label = "whole (before)" if cls is Whole else "chunked (after)"
    print(f"{label:16} longest loop stall {longest * 1e3:7.1f} ms   steps {steps:5}   "
          f"{len(data) / 1e6:6.1f} MB in {took * 1e3:7.1f} ms   restore {restore * 1e3:7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200_000)
    args = parser.parse_args()
    for cls in (Whole, Chunked):
        asyncio.run(measure(cls, args.entries))


if __name__ == "__main__":
    main()
