"""The fault-injection suite's nemeses (kill -9, SIGSTOP, partitions through its proxies)
against the job-queue example on 3 `confer serve --app` processes: producers and workers run
throughout, and no acknowledged job is lost or acknowledged twice. (The queue is the example
with an audit trail of its acknowledgements: see apps.AuditedJobQueue.)"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

from chaos.cluster import ChaosCluster
from chaos.nemesis import Nemesis
from confer.client import ConferError
from confer.replicated import AsyncAppClient
from tests.replicated.apps import AuditedJobQueue

APP = f"{Path(__file__).with_name('apps.py')}:AuditedJobQueue"
DURATION = 14.0
LEASE = 1.0


def test_no_acknowledged_job_is_lost_or_acknowledged_twice(tmp_path: Path) -> None:
    cluster = ChaosCluster(3, tmp_path, seed=16, snapshot_every=100)
    for node in cluster.procs.nodes.values():
        node.args += ["--app", APP]
    enqueued: set[int] = set()
    done: set[int] = set()
    twice: list[int] = []
    audit: list[int] = []

    async def produce(queue: AsyncAppClient[AuditedJobQueue], deadline: float, me: int) -> None:
        n = 0
        while time.monotonic() < deadline:
            n += 1
            try:
                enqueued.add(await queue.put(f"job {me}.{n}"))
            except ConferError:  # not applied, or unknown: not acknowledged either way
                await asyncio.sleep(0.05)

    async def work(queue: AsyncAppClient[AuditedJobQueue], deadline: float, me: str) -> None:
        while time.monotonic() < deadline:
            try:
                job = await queue.take(me, LEASE)
                if job is None:
                    await asyncio.sleep(0.02)
                elif await queue.ack(job[0]):
                    if job[0] in done:
                        twice.append(job[0])
                    done.add(job[0])
            except ConferError:  # a lost ack leaves the job to come out again
                await asyncio.sleep(0.05)

    async def run() -> None:
        deadline = time.monotonic() + DURATION
        nemesis = Nemesis(cluster, random.Random(16), ["kill", "pause", "partition"],
                          time.monotonic_ns(), quiet=(0.5, 1.5), hold=(1.0, 2.5))
        async with AsyncAppClient(AuditedJobQueue, cluster.endpoints(), timeout=3) as queue:
            await asyncio.gather(nemesis.run(deadline),
                                 *(produce(queue, deadline, i) for i in range(2)),
                                 *(work(queue, deadline, f"w{i}") for i in range(3)))
        assert not nemesis.errors, nemesis.errors
        assert len(nemesis.timeline) >= 2, nemesis.timeline  # faults came and went
        for i in cluster.members:
            cluster.restart(i)
        await asyncio.sleep(LEASE)  # the leases of jobs whose workers lost them run out
        async with AsyncAppClient(AuditedJobQueue, cluster.endpoints(), timeout=20) as queue:
            while (job := await queue.take("drain", 60.0)) is not None:
                assert job[0] not in done, f"job {job[0]} came out again once acknowledged"
                assert await queue.ack(job[0])
                done.add(job[0])
            assert await queue.pending() == 0
            audit.extend(await queue.audit())

    with cluster:
        asyncio.run(run())
    assert not twice, f"jobs acknowledged twice: {twice}"
    assert len(audit) == len(set(audit)), "a job acknowledged twice"
    assert done <= set(audit)
    lost = enqueued - set(audit)
    assert not lost, f"acknowledged jobs lost: {sorted(lost)}"
    assert len(enqueued) > 20, "too little work to tell"
