"""The short fuzz run of CI: each phase against a node of its own, so that one phase's
findings do not hide another's (docs/fuzzing.md). Deterministic: fixed seeds, generation only."""

from __future__ import annotations

import pytest

from testing.fuzz import FuzzConfig, Report, fuzz

SEED = 12
"""Fixed: the CI run sends the same requests every time (Hypothesis seeded, no database)."""


def run_phase(phase: str, requests: int) -> Report:
    """Fuzz one phase with a bounded number of requests and return the report."""
    return fuzz(FuzzConfig(seed=SEED, requests=requests, phases=(phase,), check_every=100))


def assert_clean(report: Report) -> None:
    """No failure of any kind: the report (counts, failure classes and reproductions) is the
    assertion message."""
    if report.classes:
        pytest.fail(report.render(), pytrace=False)
