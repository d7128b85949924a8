"""Scripted scenarios on the simulated cluster, readable as stories.

Every step runs the real Raft core on the simulated network and disks, and the invariant
checker watches all along: any safety violation raises at the step that caused it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from confer.raft import NotLeader, StateRole
from confer.raft.log import RaftLog
from confer.sim.checker import InvariantViolation, Rule
from confer.sim.cluster import Cluster, ClusterConfig
from confer.sim.disk import DurableDisk, StorageKind
from confer.sim.network import LinkConditions
from confer.sim.node import CrashPoint, CrashTrigger, NodeState, Outcome


def followers(c: Cluster, leader: int) -> list[int]:
    return [n for n in c.up() if n != leader]


def test_a_partitioned_leader_steps_down_and_catches_up() -> None:
    c = Cluster(ClusterConfig(nodes=3), seed=1)
    old = c.wait_for_leader()

    # Cut the leader off. A write it accepts now can never commit.
    c.isolate(old)
    doomed = c.propose(old, b"written on the minority")

    # The majority elects a new leader, which commits a write of its own.
    assert c.run_until(lambda: c.leader() not in (None, old), max_ticks=100)
    new = c.leader()
    assert new is not None
    kept = c.propose(new, b"written on the majority")
    c.wait_for(kept)
    assert kept.acked

    # Heal: the old leader steps down, drops its doomed write and catches up.
    c.heal_network()
    assert c.run_until(lambda: c.node(old).applied >= kept.index, max_ticks=100)
    assert c.node(old).role is StateRole.FOLLOWER
    assert c.node(old).leader_id == new
    assert b"written on the majority" in c.node(old).commands
    assert b"written on the minority" not in c.node(old).commands
    assert doomed.outcome is Outcome.LOST


def test_transfer_leadership_to_node_3() -> None:
    c = Cluster(ClusterConfig(nodes=3), seed=2)
    lead = c.wait_for_leader()
    target = 3 if lead != 3 else 1

    c.transfer_leader(target)

    assert c.run_until(lambda: c.leader() == target, max_ticks=30)
    p = c.propose(target, b"after the transfer")
    c.wait_for(p)
    assert p.acked


def test_remove_the_leader() -> None:
    c = Cluster(ClusterConfig(nodes=3), seed=3)
    lead = c.wait_for_leader()
    rest = followers(c, lead)

    removal = c.remove(lead)
    c.wait_for(removal)
    assert removal.acked

    # The others elect a leader among themselves; the old leader is retired.
    assert c.run_until(lambda: c.leader() in rest, max_ticks=100)
    assert c.members().voters == frozenset(rest)
    assert c.run_until(lambda: c.node(lead).state is NodeState.SHUT_DOWN, max_ticks=100)
    new = c.leader()
    assert new is not None
    p = c.propose(new, b"without the old leader")
    c.wait_for(p)
    assert p.acked


def test_add_a_learner_let_it_catch_up_by_snapshot_and_promote_it() -> None:
    chunk = 32
    c = Cluster(ClusterConfig(nodes=3, snapshot_every=5, snapshot_chunk_size=chunk), seed=4)
    lead = c.wait_for_leader()
    writes = [c.propose(lead, b"w%d" % i) for i in range(30)]
    c.wait_for(writes[-1])

    # Node 4 joins as a learner. The log it needs is compacted away on every node, so the
    # leader sends a snapshot, in small chunks.
    joined = c.add_learner(4)
    c.wait_for(joined)
    assert c.run_until(lambda: c.node(4).applied >= writes[-1].index, max_ticks=200)
    assert c.node(4).snapshots_installed >= 1
    assert len(c.node(4).disk.live.snapshot().data) > 5 * chunk  # it took several chunks
    assert c.node(4).commands[:30] == [b"w%d" % i for i in range(30)]
    assert 4 in c.members().learners

    promoted = c.promote(4)
    c.wait_for(promoted)
    assert c.members().voters == frozenset({1, 2, 3, 4})


def test_a_lagging_follower_catches_up_while_the_leader_keeps_taking_snapshots() -> None:
    """Regression (found by the simulator): the leader restarted a chunked snapshot transfer
    whenever it took a newer snapshot, so under steady writes a follower whose transfer took
    longer than the interval between snapshots never caught up."""
    c = Cluster(ClusterConfig(nodes=3, snapshot_every=4, snapshot_chunk_size=32), seed=9)
    lead = c.wait_for_leader()
    lagging = followers(c, lead)[0]
    cut = c.isolate(lagging)
    for i in range(150):
        c.propose(lead, b"before-%d" % i)
        c.run_ticks(1)
    c.unblock(cut)

    def write_and_tick() -> bool:  # a write every tick: a new snapshot every 4 ticks
        c.propose(lead, b"during-%d" % c.ticks)
        c.run_ticks(1)
        return c.node(lagging).snapshots_installed > 0

    assert c.run_until(write_and_tick, max_ticks=100)
    assert c.node(lagging).applied >= 150


def test_read_index_from_a_follower() -> None:
    c = Cluster(ClusterConfig(nodes=3), seed=5)
    lead = c.wait_for_leader()
    w = c.propose(lead, b"x=1")
    c.wait_for(w)

    f = followers(c, lead)[0]
    r = c.read(f)
    c.wait_for(r)

    # The follower answered at an index covering the acknowledged write.
    assert r.index >= w.index
    assert b"x=1" in c.node(f).commands


def test_a_proposal_to_a_follower_raises_not_leader_when_forwarding_is_off() -> None:
    c = Cluster(ClusterConfig(nodes=3, forward_proposals=False), seed=6)
    lead = c.wait_for_leader()
    c.run_ticks(2)  # let every follower hear from the leader

    for f in followers(c, lead):
        with pytest.raises(NotLeader) as err:
            c.propose(f, b"x")
        assert err.value.leader == lead


def test_proposals_to_followers_are_forwarded_committed_once_and_acked_there() -> None:
    c = Cluster(ClusterConfig(nodes=3, link=LinkConditions(min_delay=1, max_delay=8)), seed=6)
    lead = c.wait_for_leader()
    c.run_ticks(2)
    f1, f2 = followers(c, lead)
    ps = [c.propose(f1 if i % 2 else f2, b"f%d" % i) for i in range(20)]
    assert all(p.forwarded and p.index == 0 for p in ps)
    mine = c.propose(lead, b"leader's")
    for p in [*ps, mine]:
        c.wait_for(p)
        assert p.acked
    # Each is applied exactly once, at the index its follower reported.
    for n in c.nodes.values():
        assert sorted(n.commands) == sorted([b"f%d" % i for i in range(20)] + [b"leader's"])
    log = c.node(lead).fsm.commands
    assert {p.payload: p.index for p in ps} == {cmd: i for i, cmd in log if cmd != b"leader's"}


def test_a_forwarded_proposal_lost_with_its_leader_settles_as_unknown() -> None:
    c = Cluster(ClusterConfig(nodes=3), seed=8)
    lead = c.wait_for_leader()
    c.run_ticks(2)
    f = followers(c, lead)[0]
    c.one_way([f], [lead])  # the PROP never arrives
    p = c.propose(f, b"dropped")
    assert p.forwarded
    c.run_ticks(4 * c.cfg.election_tick)
    assert p.outcome is Outcome.UNKNOWN
    assert all(b"dropped" not in n.commands for n in c.nodes.values())


def test_a_follower_without_a_leader_refuses_proposals() -> None:
    c = Cluster(ClusterConfig(nodes=3), seed=9)
    lead = c.wait_for_leader()
    f = followers(c, lead)[0]
    c.isolate(f)
    assert c.run_until(lambda: c.node(f).leader_id == 0, max_ticks=100)
    with pytest.raises(NotLeader) as err:
        c.propose(f, b"x")
    assert err.value.leader == 0


def test_a_crash_between_write_and_sync_loses_only_unsynced_writes() -> None:
    c = Cluster(ClusterConfig(nodes=3, storage=StorageKind.MODEL), seed=7)
    lead = c.wait_for_leader()
    f = followers(c, lead)[0]

    # The follower will die after writing the next entries it receives, before syncing them.
    c.crash_during_next_ready(f, CrashPoint.BEFORE_SYNC, CrashTrigger.ENTRIES)
    p = c.propose(lead, b"x")
    c.run_ticks(1)
    assert c.node(f).state is NodeState.DOWN
    assert c.node(f).disk.live.last_index() < p.index  # the unsynced write is gone

    # It was never acknowledged, so nothing committed was lost: the write commits on the
    # other two, and the follower catches up after a restart.
    c.wait_for(p)
    assert p.acked
    c.restart(f)
    assert c.run_until(lambda: c.node(f).applied >= p.index, max_ticks=50)


def test_a_torn_wal_write_is_cut_off_on_restart_and_the_follower_catches_up() -> None:
    """The same story on the real WAL: the power fails in the middle of the follower's sync.
    Whatever part of the write survived, the restart recovers a valid log (a torn tail is cut
    off by the WAL's recovery) and the follower catches up."""
    assert sum(_torn_sync_on_a_follower(seed) for seed in range(7, 17)) > 0


def _torn_sync_on_a_follower(seed: int) -> bool:
    """True if recovery had a torn record to cut off."""
    c = Cluster(ClusterConfig(nodes=3), seed=seed)
    lead = c.wait_for_leader()
    f = followers(c, lead)[0]
    disk = c.node(f).disk
    assert isinstance(disk, DurableDisk)
    c.crash_during_next_ready(f, CrashPoint.BEFORE_SYNC, CrashTrigger.ENTRIES)
    p = c.propose(lead, b"x" * 50)
    c.run_ticks(1)
    assert c.node(f).state is NodeState.DOWN
    assert disk.fs.power_cuts == 1  # in the sync's write or fdatasync
    seg = max(n for n in disk.fs.files(DurableDisk.ROOT) if n.endswith(".wal"))
    size = disk.fs.size(seg)
    c.wait_for(p)
    assert p.acked
    c.restart(f)
    assert c.node(f).disk.live.last_index() <= p.index
    cut_off = disk.fs.size(seg) < size
    assert c.run_until(lambda: c.node(f).applied >= p.index, max_ticks=50)
    return cut_off


def test_a_leader_that_demotes_itself_and_goes_quiet_does_not_strand_the_survivor() -> None:
    """Regression (found by the simulator): membership changes take effect when committed. The
    leader of {1, 2} commits its own demotion and steps down, but its messages saying so are
    lost; it also holds an entry the survivor lacks. The survivor still believes in {1, 2},
    and the old leader refuses its vote (its own log is longer) and never campaigns (it is a
    learner now). Its refusal carries its commit index, so the survivor learns about the
    demotion and elects itself.
    """
    # One entry per message, one message in flight: entries travel one by one.
    c = Cluster(ClusterConfig(nodes=3, max_size_per_msg=1, max_inflight_msgs=1), seed=8)
    lead = c.wait_for_leader()
    survivor, gone = followers(c, lead)
    c.wait_for(c.remove(gone))
    c.wait_for(c.propose(lead, b"two voters now"))  # syncs the commit: the operator retires it
    assert c.run_until(lambda: c.node(gone).state is NodeState.SHUT_DOWN, max_ticks=20)

    demotion = c.demote(lead)
    extra = c.propose(lead, b"only on the old leader")
    survivor_log = c.node(survivor).raw.raft.log  # type: ignore[union-attr]
    while survivor_log.last_index() < demotion.index:
        c.run_units(1)
    cut = c.one_way([lead], [survivor])  # from now on the survivor hears nothing from it
    c.wait_for(demotion)
    assert demotion.acked
    assert c.node(lead).role is StateRole.FOLLOWER
    assert c.node(survivor).commit < demotion.index
    assert survivor_log.last_index() < extra.index

    c.unblock(cut)
    assert c.run_until(lambda: c.leader() == survivor, max_ticks=100)
    assert c.members().voters == frozenset({survivor})


def _figure_8(c: Cluster) -> None:
    """Figure 8 of the Raft paper, on three nodes, step by step."""

    def until(pred: Callable[[], bool]) -> None:
        for _ in range(5000):
            if pred():
                return
            c.run_units(1)
        raise AssertionError("timed out")

    def quiet(nid: int) -> None:  # keep a node from starting elections for a while
        c.node(nid).raw.raft.randomized_election_timeout = 10**6  # type: ignore[union-attr]

    def role(nid: int) -> StateRole | None:
        return c.node(nid).role

    s1 = c.wait_for_leader()
    c.run_ticks(3)
    s2, s3 = followers(c, s1)

    # (a) s1 leads, but its new entries reach nobody.
    cut = c.isolate(s1)
    for i in range(3):
        c.propose(s1, b"old-%d" % i)
    c.run_ticks(1)

    # (b) s2 is elected by s3, then cut off before its first entry (same index) reaches s3.
    c.unblock(cut)
    cut = c.partition([s1], [s2, s3])
    quiet(s3)
    until(lambda: role(s2) is StateRole.LEADER)
    c.unblock(cut)
    cut2 = c.isolate(s2)

    # (c) s1 is elected again (by s3, whose log is shorter) and sends s3 its old entries, one
    # per message; s3 has acknowledged them, but not yet s1's entry of the new term ...
    quiet(s3)
    until(lambda: role(s1) is StateRole.LEADER and c.node(s1).term > c.node(s2).term)
    s1_log = c.node(s1).raw.raft  # type: ignore[union-attr]
    newest = s1_log.log.last_index()
    until(lambda: s1_log.prs[s3].match >= newest - 1)

    # (d) ... when s1 is cut off, and s2 (whose last term is newer than the old entries)
    # wins s3's vote and overwrites them.
    c.unblock(cut2)
    c.isolate(s1)
    quiet(s3)
    until(lambda: role(s2) is StateRole.LEADER and c.node(s2).term > c.node(s1).term)
    c.run_ticks(20)


def test_figure_8_is_harmless_with_the_real_commit_rule() -> None:
    c = Cluster(ClusterConfig(nodes=3, max_size_per_msg=1, max_inflight_msgs=1,
                              link=LinkConditions(min_delay=3, max_delay=3)), seed=3)
    _figure_8(c)  # s1 committed nothing by counting old replicas, so nothing is lost ...
    c.heal_network()
    lead = c.leader()
    assert lead is not None
    assert c.run_until(lambda: all(c.node(n).applied == c.node(lead).applied for n in c.up()),
                       max_ticks=100)
    for n in c.up():  # ... and the overwritten entries were never applied anywhere
        assert not any(cmd.startswith(b"old-") for cmd in c.node(n).commands)


def test_figure_8_with_a_broken_commit_rule_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def maybe_commit(self: RaftLog, index: int, term: int) -> bool:
        if index > self.committed:  # counts replicas for entries of any term
            self.commit_to(index)
            return True
        return False

    monkeypatch.setattr(RaftLog, "maybe_commit", maybe_commit)
    c = Cluster(ClusterConfig(nodes=3, max_size_per_msg=1, max_inflight_msgs=1,
                              link=LinkConditions(min_delay=3, max_delay=3)), seed=3)
    with pytest.raises(InvariantViolation) as err:
        _figure_8(c)
    # s2 became leader without the entries s1 had (wrongly) committed.
    assert err.value.rule is Rule.LEADER_COMPLETENESS
