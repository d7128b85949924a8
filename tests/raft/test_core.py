"""Unit tests of the Raft core, each a short scenario over the synchronous test network."""

from __future__ import annotations

import pytest

from confer.raft import (
    ConfChange,
    ConfChangeInProgress,
    ConfChangeType,
    Entry,
    EntryType,
    LeadershipTransferInProgress,
    MemoryStorage,
    Message,
    MessageType,
    NotLeader,
    StateRole,
    bootstrap,
)

from .harness import Net

MT = MessageType


def test_election_elects_one_leader_and_followers_learn_it() -> None:
    net = Net(3)
    net.elect(1)
    assert net.leaders() == [1]
    for i in (2, 3):
        assert net.node(i).raft.lead == 1
        assert net.node(i).raft.term == net.node(1).raft.term


def test_randomized_timeout_elects_a_leader_without_help() -> None:
    net = Net(5)
    net.tick_all(40)
    assert len(net.leaders()) == 1


def test_prevote_keeps_a_partitioned_node_from_inflating_its_term() -> None:
    net = Net(3)
    net.elect(1)
    term = net.node(1).raft.term
    net.isolate(3)
    net.tick_all(100)  # node 3 keeps trying pre-votes, never wins one
    assert net.node(3).raft.term == term
    net.heal()
    net.tick_all(5)
    assert net.leaders() == [1]
    assert net.node(1).raft.term == term


def test_a_stale_vote_request_is_rejected_with_the_newer_term() -> None:
    """A candidate behind our term learns it from our rejection (else it may never hear of
    it, and lose every election to a node that only ever campaigns against others)."""
    net = Net(3)
    net.elect(1)
    term = net.node(1).raft.term
    last = net.node(2).raft.log.last_index()
    net.node(2).step(Message(MT.VOTE, to=2, frm=3, term=term - 1, index=last,
                             log_term=term))
    replies = [m for m in net.node(2).ready().messages if m.to == 3]
    assert [(m.type, m.term, m.reject) for m in replies] == [(MT.VOTE_RESP, term, True)]
    assert net.node(2).raft.vote != 3


def test_check_quorum_makes_an_isolated_leader_step_down() -> None:
    net = Net(3)
    net.elect(1)
    net.isolate(1)
    net.tick_all(2 * net.node(1).raft.cfg.election_tick + 1)
    assert net.role(1) != StateRole.LEADER
    assert len([i for i in (2, 3) if net.role(i) == StateRole.LEADER]) == 1


def test_a_vote_is_persisted_in_the_same_ready_before_the_grant_is_sent() -> None:
    net = Net(3)
    net.node(1).campaign()
    net.deliver(net.process(1))  # pre-votes reach 2 and 3
    net.deliver(net.process(2) + net.process(3))  # pre-vote grants back to 1
    net.deliver(net.process(1))  # real vote requests
    rd = net.node(2).ready()
    grants = [m for m in rd.messages if m.type == MT.VOTE_RESP and not m.reject]
    assert grants and rd.hard_state is not None and rd.hard_state.vote == 1 and rd.must_sync


def test_only_current_term_entries_commit_by_counting_replicas() -> None:
    """Raft paper Figure 8: a previous-term entry on a majority is not committed by counting."""
    net = Net(3)
    net.elect(1)
    r = net.node(1).raft
    committed = r.log.committed
    old_term = r.term
    r.log.append([Entry(committed + 1, old_term, b"old")])
    r.term = old_term + 1  # as if re-elected in a later term with that entry still pending
    r.prs[1].match = r.prs[2].match = committed + 1
    assert not r.maybe_commit()
    assert r.log.committed == committed
    r.log.append([Entry(committed + 2, r.term, b"new")])
    r.prs[1].match = r.prs[2].match = committed + 2
    assert r.maybe_commit()
    assert r.log.committed == committed + 2  # the old entry commits indirectly


def test_fast_backtracking_skips_a_long_divergent_tail_in_few_round_trips() -> None:
    net = Net(3, check_quorum=False)
    net.elect(1)
    net.isolate(1)
    for i in range(50):
        net.node(1).propose(b"lost-%d" % i)
    net.process(1)  # appended locally, never reaches anyone
    net.elect(2)
    for i in range(50):
        net.node(2).propose(b"kept-%d" % i)
    net.stabilize()
    net.heal()
    net.sent.clear()
    net.tick_all(3)  # heartbeats reach node 1, which steps down and is repaired
    rejections = [m for m in net.sent if m.type == MT.APP_RESP and m.reject and m.frm == 1]
    assert len(rejections) <= 3
    assert [e.data for e in net.peers[1].applied if e.data.startswith(b"kept")] == [
        b"kept-%d" % i for i in range(50)
    ]
    assert not any(e.data.startswith(b"lost") for e in net.peers[1].applied)


def test_pipelining_is_bounded_by_the_inflight_window() -> None:
    net = Net(3, max_inflight_msgs=4)
    net.elect(1)
    net.drop(2, 1)  # node 2 never acknowledges
    net.sent.clear()
    for i in range(10):
        net.node(1).propose(b"p%d" % i)
        net.deliver(net.process(1))
        net.process(2)
    apps_to_2 = [m for m in net.sent if m.type == MT.APP and m.to == 2 and m.entries]
    assert len(apps_to_2) == 4
    net.heal()
    net.tick_all(3)
    assert [e.data for e in net.peers[2].applied] == [b"p%d" % i for i in range(10)]


def test_many_proposals_become_one_append_per_follower() -> None:
    net = Net(3)
    net.elect(1)
    for i in range(100):
        net.node(1).propose(b"x%d" % i)
    rd = net.node(1).ready()
    assert len(rd.entries) == 100
    apps = [m for m in rd.messages if m.type == MT.APP]
    assert sorted(m.to for m in apps) == [2, 3]
    assert all(len(m.entries) == 100 for m in apps)


def test_read_index_requests_share_one_heartbeat_round() -> None:
    net = Net(3)
    net.elect(1)
    net.sent.clear()
    for i in range(10):
        net.node(1).read_index(b"r%d" % i)
    net.stabilize()
    reads = net.peers[1].read_states
    assert [r.context for r in reads] == [b"r%d" % i for i in range(10)]
    assert {r.index for r in reads} == {net.node(1).raft.log.committed}
    assert net.count_sent(MT.HEARTBEAT) == 2  # one round: one heartbeat per follower


def test_read_index_waits_until_the_new_leader_commits_in_its_term() -> None:
    net = Net(3)
    net.node(1).campaign()
    for _ in range(4):  # pre-vote, grants, vote, grants: the no-op is appended, not committed
        net.deliver(net.process(1) + net.process(2) + net.process(3))
    assert net.role(1) == StateRole.LEADER
    r = net.node(1).raft
    assert r.log.term(r.log.committed) != r.term
    net.node(1).read_index(b"early")
    net.deliver(net.process(1))
    assert net.peers[1].read_states == []
    net.stabilize()
    assert [rs.context for rs in net.peers[1].read_states] == [b"early"]
    assert net.peers[1].read_states[0].index == r.log.committed


def test_a_follower_gets_a_read_index_from_the_leader() -> None:
    net = Net(3)
    net.elect(1)
    net.node(1).propose(b"w")
    net.stabilize()
    net.node(3).read_index(b"f")
    net.stabilize()
    assert [(rs.index, rs.context) for rs in net.peers[3].read_states] == [
        (net.node(1).raft.log.committed, b"f")
    ]


def test_proposals_to_a_non_leader_name_the_known_leader() -> None:
    net = Net(3, disable_proposal_forwarding=True)
    with pytest.raises(NotLeader) as exc:
        net.node(2).propose(b"x")
    assert exc.value.leader == 0
    net.elect(1)
    with pytest.raises(NotLeader) as exc:
        net.node(2).propose(b"x")
    assert exc.value.leader == 1
    net.isolate(2)
    net.tick_all(3 * net.node(2).raft.cfg.election_tick)  # node 2 forgets the leader
    with pytest.raises(NotLeader) as exc:
        net.node(2).read_index(b"r")
    assert exc.value.leader == 0


def test_a_follower_forwards_its_proposals_to_the_leader_in_one_message() -> None:
    net = Net(3)
    net.elect(1)
    assert net.node(2).propose(b"f1", b"f2") == (0, 0)  # index decided by the leader
    rd = net.node(2).ready()
    props = [m for m in rd.messages if m.type == MT.PROP]
    assert len(props) == 1 and props[0].to == 1 and props[0].term == 0
    assert [e.data for e in props[0].entries] == [b"f1", b"f2"]
    assert net.node(2).raft.log.last_index() == net.node(1).raft.log.last_index()  # not here
    net.node(2).advance(rd)
    net.deliver(rd.messages)
    net.node(1).propose(b"l1")
    net.stabilize()
    for i in (1, 2, 3):
        assert [e.data for e in net.peers[i].applied] == [b"f1", b"f2", b"l1"]


def test_proposals_without_a_leader_to_forward_to_are_refused() -> None:
    net = Net(3)
    with pytest.raises(NotLeader) as exc:  # no leader known yet
        net.node(2).propose(b"x")
    assert exc.value.leader == 0
    net.elect(1)
    net.isolate(1)
    net.node(2).campaign()  # a candidate forwards nothing
    assert net.role(2) != StateRole.FOLLOWER
    with pytest.raises(NotLeader) as exc:
        net.node(2).propose(b"x")
    assert exc.value.leader == 0
    with pytest.raises(ValueError):
        net.node(3).propose(b"")


def test_a_leader_drops_forwarded_proposals_during_a_transfer() -> None:
    net = Net(3)
    net.elect(1)
    net.drop(1, 3)  # node 3 lags, so the transfer takes a while
    net.node(1).propose(b"x")
    net.stabilize()
    net.node(1).transfer_leader(3)
    net.node(2).propose(b"during")  # forwarded, arrives during the transfer: dropped
    net.stabilize()
    net.heal()
    net.tick_all(2)
    assert net.leaders() == [3]
    net.node(2).propose(b"after")  # forwarded to the new leader
    net.stabilize()
    assert [e.data for e in net.peers[2].applied] == [b"x", b"after"]


def test_a_forwarded_proposal_reaching_a_deposed_leader_is_passed_on() -> None:
    net = Net(3)
    net.elect(1)
    net.node(2).propose(b"p")
    msgs = net.process(2)  # the PROP, still in flight to node 1 ...
    net.node(1).transfer_leader(3)  # ... when node 3 takes over
    net.stabilize()
    assert net.leaders() == [3] and net.node(1).raft.lead == 3
    net.deliver(msgs)
    net.stabilize()
    assert [e.data for e in net.peers[1].applied] == [b"p"]
    assert net.count_sent(MT.PROP) == 2


def test_forwarded_membership_changes_and_empty_entries_are_ignored() -> None:
    net = Net(3)
    net.elect(1)
    last = net.node(1).raft.log.last_index()
    cc = ConfChange(ConfChangeType.REMOVE, 3).encode()
    net.node(1).step(Message(MT.PROP, to=1, frm=2, entries=[
        Entry(0, 0, cc, EntryType.CONF_CHANGE), Entry(0, 0, b""), Entry(0, 0, b"ok")]))
    net.stabilize()
    assert net.node(1).raft.log.last_index() == last + 1
    assert net.node(1).raft.conf.voters == {1, 2, 3}
    assert [e.data for e in net.peers[3].applied] == [b"ok"]


def test_membership_changes_go_one_at_a_time() -> None:
    net = Net(3)
    net.elect(1)
    net.node(1).propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    with pytest.raises(ConfChangeInProgress):
        net.node(1).propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 5))
    net.stabilize()
    net.node(1).propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 5))
    net.stabilize()
    assert net.node(2).raft.conf.learners == {4, 5}


def test_membership_changes_that_make_no_sense_are_refused() -> None:
    net = Net(1)
    net.elect(1)
    with pytest.raises(ValueError, match="last voter"):
        net.node(1).propose_conf_change(ConfChange(ConfChangeType.REMOVE, 1))
    with pytest.raises(ValueError, match="changes nothing"):
        net.node(1).propose_conf_change(ConfChange(ConfChangeType.ADD_VOTER, 1))


def test_a_learner_catches_up_does_not_vote_and_is_promoted() -> None:
    net = Net(3)
    net.elect(1)
    for i in range(5):
        net.node(1).propose(b"d%d" % i)
    net.stabilize()
    net.add(4, MemoryStorage())  # a fresh node, not bootstrapped
    net.node(1).propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    net.stabilize()
    net.tick_all(2)
    assert [e.data for e in net.peers[4].applied] == [b"d%d" % i for i in range(5)]
    assert 4 in net.node(1).raft.conf.learners
    # Learners never campaign.
    net.tick(4, 100)
    assert net.role(4) == StateRole.FOLLOWER
    net.node(1).propose_conf_change(ConfChange(ConfChangeType.ADD_VOTER, 4))
    net.stabilize()
    assert net.node(4).raft.conf.voters == {1, 2, 3, 4}


def test_a_removed_leader_steps_down_and_the_rest_elect_a_new_one() -> None:
    net = Net(3)
    net.elect(1)
    net.node(1).propose_conf_change(ConfChange(ConfChangeType.REMOVE, 1))
    net.stabilize()
    assert net.role(1) == StateRole.FOLLOWER
    net.tick_all(30)
    assert len(net.leaders()) == 1 and net.leaders()[0] in (2, 3)
    assert net.node(2).raft.conf.voters == {2, 3}


def test_leadership_transfer_hands_over_and_blocks_proposals_meanwhile() -> None:
    net = Net(3)
    net.elect(1)
    net.drop(1, 3)  # node 3 lags, so the transfer must first catch it up
    net.node(1).propose(b"x")
    net.stabilize()
    net.node(1).transfer_leader(3)
    with pytest.raises(LeadershipTransferInProgress):
        net.node(1).propose(b"y")
    net.heal()
    net.tick_all(2)
    assert net.leaders() == [3]
    assert [e.data for e in net.peers[3].applied] == [b"x"]


def test_a_lagging_follower_gets_the_snapshot_in_chunks() -> None:
    net = Net(3, snapshot_chunk_size=1000)
    net.elect(1)
    net.isolate(3)
    for i in range(20):
        net.node(1).propose(b"e%d" % i)
    net.stabilize()
    leader = net.peers[1]
    applied = net.node(1).raft.log.applied
    data = bytes(range(256)) * 40  # 10 KiB of "state"
    leader.storage.create_snapshot(applied, net.node(1).conf_state_at(applied), data)
    leader.storage.compact(applied)
    net.node(1).compacted(applied)
    net.heal()
    net.sent.clear()
    net.tick_all(3)
    chunks = [m for m in net.sent if m.type == MT.SNAP and m.to == 3]
    assert len(chunks) >= 10
    assert net.peers[3].storage.snapshot().data == data
    assert net.node(3).raft.log.committed == net.node(1).raft.log.committed


def test_bootstrap_refuses_bad_input_and_an_existing_log() -> None:
    with pytest.raises(ValueError):
        bootstrap(MemoryStorage(), [])
    with pytest.raises(ValueError):
        bootstrap(MemoryStorage(), [1, 1])
    s = MemoryStorage()
    bootstrap(s, [1])
    with pytest.raises(ValueError, match="already"):
        bootstrap(s, [1])
