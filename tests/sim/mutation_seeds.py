"""Simulator seeds for mutation testing (``./dev mutate``), failing fast.

Not collected by the normal suite (the name has no ``test_`` prefix): ``test_random_scenarios``
already runs thousands of seeds there. Mutation testing replays this for every mutant that
survived the unit tests (``scripts/mutation_sweep.py``), so it runs few seeds and stops at the
first violation: the churn seeds that the injected-bug tests name as the first to expose a
lost commit (14), a stale read (24) and a forgotten vote (37), and seeds
0..``CONFER_MUTATION_SWEEP``-1 of each flavour.
"""

from __future__ import annotations

import os

import pytest

from confer.sim.runner import run_scenario
from confer.sim.scenario import Flavour

KNOWN_CHURN_SEEDS = (14, 24, 37)
SWEEP = int(os.environ.get("CONFER_MUTATION_SWEEP", "10"))
"""Seeds 0..SWEEP-1 of each flavour."""


@pytest.mark.parametrize(
    ("flavour", "seeds"),
    [(Flavour.CHURN, KNOWN_CHURN_SEEDS), (Flavour.CHURN, tuple(range(SWEEP))),
     (Flavour.MIXED, tuple(range(SWEEP)))],
    ids=["churn-known", "churn-sweep", "mixed-sweep"],
)
def test_seeds(flavour: Flavour, seeds: tuple[int, ...]) -> None:
    """Every safety invariant the checker knows, then liveness after healing."""
    for seed in seeds:
        res = run_scenario(seed, flavour=flavour)
        assert res.ok, res.report()
