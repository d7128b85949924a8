"""Thousands of randomized scenarios, in blocks that pytest-xdist spreads over workers.

Each seed draws a cluster (2 to 5 nodes), a flavour, faults and a workload; see
``confer.sim.scenario``. A failure report names the seed and the command that replays it.
The nodes run the real durable storage on simulated file systems; one block runs on the
model of storage instead.
"""

from __future__ import annotations

import pytest

from confer.sim.disk import StorageKind
from confer.sim.runner import run_scenario

BLOCK = 100
BLOCKS = 20


@pytest.mark.parametrize(
    "first", range(0, BLOCK * BLOCKS, BLOCK), ids=lambda s: f"seeds-{s}-{s + BLOCK - 1}"
)
def test_randomized_scenarios(first: int) -> None:
    run_block(range(first, first + BLOCK), StorageKind.DURABLE)


def test_randomized_scenarios_on_the_storage_model() -> None:
    run_block(range(BLOCK), StorageKind.MODEL)


def run_block(seeds: range, storage: StorageKind) -> None:
    failures = [res.report() for res in (run_scenario(s, storage=storage) for s in seeds)
                if not res.ok]
    assert not failures, "\n\n".join(failures)
