"""Peer traffic from a non-member, to the peer port and the client port: it must change
nothing (store, membership, term, leader) and stop nothing."""

from __future__ import annotations

from tests.fuzz.conftest import assert_clean, run_phase


def test_non_member_peer_traffic_changes_nothing() -> None:
    report = run_phase("peer", 300)
    assert report.total >= 300 or report.classes, report.render()
    assert_clean(report)
