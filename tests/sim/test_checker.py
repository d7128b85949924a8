"""The invariant checker, fed directly."""

from __future__ import annotations

import pytest

from confer.raft import ReadState
from confer.sim.checker import Checker, InvariantViolation, Rule
from confer.sim.cluster import Cluster, ClusterConfig


def test_two_leaders_in_one_term_are_reported() -> None:
    c = Cluster(ClusterConfig(nodes=3), seed=1)
    lead = c.wait_for_leader()
    other = next(n for n in c.up() if n != lead)
    raft = c.node(other).raw.raft  # type: ignore[union-attr]
    raft.term = c.node(lead).term
    raft.role = type(raft.role).LEADER  # pretend: the core never does this
    with pytest.raises(InvariantViolation) as err:
        c.checker.observe(other, raft)
    assert err.value.rule is Rule.ELECTION_SAFETY


def test_a_read_that_misses_an_acknowledged_write_is_reported() -> None:
    chk = Checker()
    chk.commit_hi = 10
    chk.on_ack(7)
    chk.on_read_issued(b"r1", node=1, now=100)
    chk.on_read_state(1, ReadState(6, b"r1"))
    with pytest.raises(InvariantViolation) as err:
        chk.on_read_served(1, ReadState(6, b"r1"), applied=6)
    assert err.value.rule is Rule.LINEARIZABLE_READ


def test_a_read_issued_before_the_write_was_acknowledged_may_miss_it() -> None:
    chk = Checker()
    chk.commit_hi = 10
    chk.on_read_issued(b"r1", node=1, now=100)
    chk.on_ack(7)  # concurrent with the read
    chk.on_read_state(1, ReadState(6, b"r1"))
    chk.on_read_served(1, ReadState(6, b"r1"), applied=6)
    assert chk.reads_checked == 1
