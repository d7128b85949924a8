"""Structured and random-byte requests to every client RPC of both APIs (and health)."""

from __future__ import annotations

from tests.fuzz.conftest import assert_clean, run_phase


def test_structured_requests_keep_the_node_correct() -> None:
    report = run_phase("structured", 300)
    assert report.total >= 300 or report.classes, report.render()
    assert_clean(report)


def test_random_bytes_keep_the_node_correct() -> None:
    report = run_phase("raw", 200)
    assert report.total >= 200 or report.classes, report.render()
    assert_clean(report)
