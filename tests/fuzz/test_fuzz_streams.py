"""Abandoned, concurrent, flooded and half-closed streams."""

from __future__ import annotations

from tests.fuzz.conftest import assert_clean, run_phase


def test_streams_keep_the_node_correct() -> None:
    report = run_phase("streams", 0)
    assert report.total > 0, report.render()
    assert_clean(report)
