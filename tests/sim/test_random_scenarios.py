"""Thousands of randomized scenarios, in blocks that pytest-xdist spreads over workers.

Each seed draws a cluster (3 or 5 nodes), a flavour, faults and a workload; see
``confer.sim.scenario``. A failure report names the seed and the command that replays it.
"""

from __future__ import annotations

import pytest

from confer.sim.runner import run_scenario

BLOCK = 100
BLOCKS = 20


@pytest.mark.parametrize(
    "first", range(0, BLOCK * BLOCKS, BLOCK), ids=lambda s: f"seeds-{s}-{s + BLOCK - 1}"
)
def test_randomized_scenarios(first: int) -> None:
    failures = []
    for seed in range(first, first + BLOCK):
        res = run_scenario(seed)
        if not res.ok:
            failures.append(res.report())
    assert not failures, "\n\n".join(failures)
