"""Unit tests that pin the Raft safety rules at their exact boundaries.

Each test was written for mutants that survived the rest of the suite (see
docs/mutation-testing.md): every docstring names the rule it pins. They call the log, the
quorum arithmetic and the core directly, so that an off-by-one in a rule fails here at once
instead of needing a rare simulator schedule.
"""

from __future__ import annotations

import pytest

from confer.raft import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    MemoryStorage,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
    StateRole,
)
from confer.raft.log import RaftLog, Unstable
from confer.raft.quorum import committed_index, majority, vote_result

from .harness import Net

MT = MessageType


def log_with(terms: list[int], committed: int = 0) -> RaftLog:
    """A log whose entries 1..n have ``terms``, all in storage, committed up to ``committed``."""
    st = MemoryStorage()
    st.append([Entry(i, t) for i, t in enumerate(terms, 1)])
    log = RaftLog(st)
    log.commit_to(committed)
    return log


def ents(first: int, terms: list[int]) -> list[Entry]:
    return [Entry(i, t) for i, t in enumerate(terms, first)]


def terms_of(log: RaftLog) -> list[int]:
    return [log.term(i) for i in range(1, log.last_index() + 1)]


# -- election restriction (§5.4.1) ------------------------------------------------------------
@pytest.mark.parametrize(
    ("last_index", "last_term", "granted"),
    [
        (3, 3, True),  # identical
        (4, 3, True),  # same last term, longer
        (2, 3, False),  # same last term, shorter
        (1, 4, True),  # later last term wins even when shorter
        (9, 2, False),  # earlier last term loses even when longer
    ],
)
def test_up_to_date_compares_last_term_then_length(last_index: int, last_term: int,
                                                   granted: bool) -> None:
    """Election restriction (§5.4.1): a voter grants only to a candidate whose log is at least
    as up to date: a later last term, or the same last term and at least the same length."""
    log = log_with([1, 2, 3])
    assert log.is_up_to_date(last_index, last_term) is granted


def test_a_voter_refuses_a_candidate_with_a_shorter_log_of_the_same_term() -> None:
    """Election restriction at the core: a vote request whose log is behind is rejected and
    the vote is not recorded."""
    net = Net(3, check_quorum=False)  # no leader lease: the request is considered
    net.elect(1)
    r2 = net.node(2).raft
    net.node(2).step(Message(MT.VOTE, to=2, frm=3, term=r2.term + 1,
                             index=r2.log.last_index() - 1, log_term=r2.log.last_term()))
    replies = [m for m in net.node(2).ready().messages if m.to == 3]
    assert [(m.type, m.reject) for m in replies] == [(MT.VOTE_RESP, True)]
    assert r2.vote != 3
    # The rejection carries the voter's term and commit point (see the candidate tests below).
    committed = r2.log.committed
    assert (replies[0].term, replies[0].commit, replies[0].log_term) == (
        r2.term, committed, r2.log.term(committed))


# -- vote persistence and one vote per term ----------------------------------------------------
def test_one_vote_per_term_and_it_survives_in_the_hard_state() -> None:
    """Election safety: having voted for 3 in a term, a node refuses 1 in the same term, and
    the vote it persists (hard state) is the one it granted."""
    net = Net(3, check_quorum=False)  # no leader lease: the requests are considered
    net.elect(1)
    r2 = net.node(2).raft
    term = r2.term + 1
    last, last_term = r2.log.last_index(), r2.log.last_term()
    net.node(2).step(Message(MT.VOTE, to=2, frm=3, term=term, index=last, log_term=last_term))
    rd = net.node(2).ready()
    assert [(m.to, m.reject, m.term) for m in rd.messages if m.type == MT.VOTE_RESP] == [
        (3, False, term)]  # a grant names its term: a late one must not count in a later term
    assert rd.hard_state is not None and (rd.hard_state.term, rd.hard_state.vote) == (term, 3)
    net.node(2).advance(rd)
    net.node(2).step(Message(MT.VOTE, to=2, frm=1, term=term, index=last, log_term=last_term))
    replies = [m for m in net.node(2).ready().messages if m.type == MT.VOTE_RESP]
    assert [(m.to, m.reject) for m in replies] == [(1, True)]
    assert r2.vote == 3


# -- log matching and truncation (§5.3) --------------------------------------------------------
def test_an_append_that_does_not_match_the_previous_entry_changes_nothing() -> None:
    """Log matching: entries are accepted only after an entry with the same index and term."""
    log = log_with([1, 1, 2])
    assert log.maybe_append(3, 1, 3, ents(4, [3])) is None
    assert log.maybe_append(4, 2, 3, ents(5, [3])) is None  # past the end
    assert terms_of(log) == [1, 1, 2]
    assert log.committed == 0


def test_matching_entries_are_kept_and_conflicting_ones_are_truncated() -> None:
    """Log matching: the first conflicting entry and all after it are replaced; entries that
    match are left alone (no truncation of a longer matching tail by a stale append)."""
    log = log_with([1, 1, 2, 2])
    assert log.maybe_append(1, 1, 0, ents(2, [1, 2])) == 3  # a stale, matching prefix
    assert terms_of(log) == [1, 1, 2, 2]
    assert log.maybe_append(2, 1, 0, ents(3, [3])) == 3  # conflicts at 3
    assert terms_of(log) == [1, 1, 3]


def test_find_conflict_names_the_first_new_or_conflicting_index() -> None:
    """Log matching: the first entry that is new or whose term differs; 0 if all match."""
    log = log_with([1, 1, 2])
    assert log.find_conflict(ents(1, [1, 1, 2])) == 0
    assert log.find_conflict(ents(2, [1, 2, 3])) == 4
    assert log.find_conflict(ents(3, [2])) == 0
    assert log.find_conflict(ents(2, [1, 3])) == 3
    assert log.find_conflict(ents(1, [2])) == 1


def test_match_term_needs_the_entry_to_exist() -> None:
    """Log matching: a missing or compacted entry (term 0) matches only the empty prefix."""
    log = log_with([1, 2])
    assert log.match_term(0, 0)
    assert log.match_term(2, 2)
    assert not log.match_term(2, 1)
    assert not log.match_term(3, 0)  # past the end
    assert log.term(3) == 0


def test_unstable_append_truncates_at_the_first_new_index() -> None:
    """Truncation in the unstable tail: an append at index i replaces everything from i on."""
    u = Unstable(5)
    u.truncate_and_append(ents(5, [1, 1, 1]))
    u.truncate_and_append(ents(6, [2]))
    assert [(e.index, e.term) for e in u.entries] == [(5, 1), (6, 2)]
    u.truncate_and_append(ents(4, [3]))  # before the offset: replaces all of it
    assert (u.offset, [(e.index, e.term) for e in u.entries]) == (4, [(4, 3)])
    u.truncate_and_append(ents(5, [3]))  # right after the end: extends
    assert [(e.index, e.term) for e in u.entries] == [(4, 3), (5, 3)]


def test_stable_to_forgets_only_entries_that_were_persisted() -> None:
    """An acknowledgement for an entry that a newer append replaced (same index, other term)
    must not drop the newer, still unpersisted entry."""
    u = Unstable(1)
    u.truncate_and_append(ents(1, [1, 1]))
    u.truncate_and_append(ents(2, [2]))
    u.stable_to(2, 1)  # the old entry 2 was persisted, not the new one
    assert [(e.index, e.term) for e in u.entries] == [(1, 1), (2, 2)]
    u.stable_to(1, 1)
    assert (u.offset, [(e.index, e.term) for e in u.entries]) == (2, [(2, 2)])


# -- follower commit index = min(leader commit, last new entry) ------------------------------
def test_a_follower_commits_no_further_than_the_last_entry_the_append_vouched_for() -> None:
    """Follower commit rule: commit = min(leader's commit, index of the last new entry). A
    longer, unverified tail (here from an older term) must not be committed."""
    log = log_with([1, 1, 1, 1, 1])  # entries 3..5 are an old leader's, maybe divergent
    assert log.maybe_append(1, 1, 5, ents(2, [1])) == 2
    assert log.committed == 2
    assert log.maybe_append(2, 1, 1, []) == 2
    assert log.committed == 2  # never moves backwards


def test_a_follower_takes_the_leader_commit_when_it_is_lower() -> None:
    """Follower commit rule, other side of the min: the leader's commit bounds it."""
    log = log_with([1])
    assert log.maybe_append(1, 1, 2, ents(2, [1, 1, 1])) == 4
    assert log.committed == 2


def test_heartbeats_never_commit_past_what_the_follower_holds() -> None:
    """Follower commit via heartbeats: the leader sends min(follower's match, commit), so a
    follower that is behind, or holds a divergent tail, never commits unverified entries."""
    net = Net(3)
    net.elect(1)
    net.isolate(3)
    net.node(1).propose(b"a")
    net.stabilize()
    r1 = net.node(1).raft
    assert r1.log.committed > r1.prs[3].match
    net.node(1).raft._bcast_heartbeat()
    beats = {m.to: m.commit for m in net.node(1).ready().messages if m.type == MT.HEARTBEAT}
    assert beats == {2: r1.log.committed, 3: r1.prs[3].match}


# -- commit rules (§5.4.2) ---------------------------------------------------------------------
def test_leader_commit_needs_an_entry_of_its_term_and_only_moves_forward() -> None:
    """Commit rule: the leader commits by counting replicas only an entry of its current term,
    and a commit never goes backwards."""
    log = log_with([1, 2, 2], committed=1)
    assert not log.maybe_commit(2, 3)  # entry 2 is from term 2, the leader is in term 3
    assert log.committed == 1
    assert log.maybe_commit(3, 2)
    assert log.committed == 3
    assert not log.maybe_commit(2, 2)
    assert not log.maybe_commit(3, 2)  # nothing new
    assert log.committed == 3


def test_committing_past_the_last_index_is_refused() -> None:
    """Commit rule: an index the log does not hold can never be committed."""
    log = log_with([1, 1])
    with pytest.raises(AssertionError):
        log.commit_to(3)
    log.commit_to(2)
    log.commit_to(1)  # lower: ignored
    assert log.committed == 2


@pytest.mark.parametrize(
    ("matches", "expected"),
    [
        ([5], 5),
        ([5, 3], 3),
        ([5, 4, 3], 4),
        ([9, 1, 7, 2], 2),
        ([9, 8, 7, 2, 1], 7),
    ],
)
def test_committed_index_is_what_a_majority_holds(matches: list[int], expected: int) -> None:
    """Commit rule: the quorum index is the highest index held by a majority of voters."""
    voters = list(range(1, len(matches) + 1))
    assert committed_index(voters, dict(zip(voters, matches, strict=True))) == expected


def test_committed_index_counts_voters_without_progress_as_zero() -> None:
    """Commit rule: a voter the leader has no progress for holds nothing; non-voters' matches
    do not count."""
    assert committed_index([1, 2, 3], {1: 7, 4: 7, 5: 7}) == 0
    assert committed_index([1, 2, 3], {1: 7, 2: 7}) == 7
    assert committed_index([], {1: 7}) == 0


@pytest.mark.parametrize(
    ("voters", "votes", "result"),
    [
        (3, {1: True}, None),
        (3, {1: True, 2: True}, True),
        (3, {1: True, 2: False}, None),
        (3, {1: True, 2: False, 3: False}, False),
        (4, {1: True, 2: True}, None),
        (4, {1: True, 2: True, 3: True}, True),
        (4, {1: True, 2: False, 3: False}, False),
        (5, {1: True, 2: True, 3: False, 4: False}, None),
        (5, {1: True, 6: True, 7: True}, None),  # non-voters do not count
    ],
)
def test_vote_result_needs_a_strict_majority(voters: int, votes: dict[int, bool],
                                             result: bool | None) -> None:
    """Election safety: a candidate wins only with a strict majority of the voters, and loses
    only once a majority can no longer be reached."""
    assert vote_result(range(1, voters + 1), votes) is result


def test_majority_is_more_than_half() -> None:
    """Quorum size: any two majorities intersect."""
    assert [majority(n) for n in range(1, 7)] == [1, 2, 2, 3, 3, 4]


def test_a_leader_with_only_itself_at_the_new_index_does_not_commit() -> None:
    """Commit rule at the core: the leader's own append is not a majority of three."""
    net = Net(3)
    net.elect(1)
    net.isolate(1)
    before = net.node(1).raft.log.committed
    net.node(1).propose(b"alone")
    net.stabilize()
    assert net.node(1).raft.log.committed == before
    assert net.role(1) == StateRole.LEADER


# -- ReadIndex -----------------------------------------------------------------------------------
def test_read_index_waits_for_a_majority_of_voters_to_ack_the_round() -> None:
    """ReadIndex: the leader answers only after a majority of voters (itself included)
    confirmed its leadership in that round; in five nodes, one follower's ack is not enough."""
    net = Net(5)
    net.elect(1)
    for j in (3, 4, 5):
        net.isolate(j)
    net.node(1).read_index(b"r")
    net.stabilize()
    assert net.peers[1].read_states == []  # acks from 1 and 2 only
    net.heal()
    net.isolate(4)
    net.isolate(5)
    net.tick(1)  # the next heartbeat carries the round again
    net.stabilize()
    assert [rs.context for rs in net.peers[1].read_states] == [b"r"]


def test_read_index_ignores_acks_of_another_round_and_of_non_voters() -> None:
    """ReadIndex: only heartbeat acks that carry the current round's id, from voters, count."""
    net = Net(3)
    net.elect(1)
    net.add(4, MemoryStorage())
    net.node(1).propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    net.stabilize()
    r1 = net.node(1).raft
    net.isolate(1)
    net.node(1).read_index(b"r")
    net.deliver(net.process(1))  # the round starts; its heartbeats are lost
    rnd = r1.read_round
    assert rnd is not None
    other = (rnd.id + 1).to_bytes(8, "big")
    for frm, ctx in ((2, other), (4, rnd.id.to_bytes(8, "big"))):
        net.node(1).step(Message(MT.HEARTBEAT_RESP, to=1, frm=frm, term=r1.term, context=ctx))
    net.process(1)
    assert net.peers[1].read_states == []
    net.node(1).step(Message(MT.HEARTBEAT_RESP, to=1, frm=2, term=r1.term,
                             context=rnd.id.to_bytes(8, "big")))
    net.process(1)
    assert [rs.context for rs in net.peers[1].read_states] == [b"r"]


def test_read_index_is_the_commit_index_when_the_round_started() -> None:
    """ReadIndex: the read index is the commit index at the time of the request, not a later
    one (nor an earlier one, which could miss a write acknowledged before the read)."""
    net = Net(3)
    net.elect(1)
    net.node(1).propose(b"w")
    net.stabilize()
    r1 = net.node(1).raft
    at_request = r1.log.committed
    net.node(1).read_index(b"r")
    net.deliver(net.process(1))  # the heartbeat round is out
    net.node(1).propose(b"later")  # commits together with the acks
    net.stabilize()
    assert r1.log.committed > at_request
    assert [(rs.index, rs.context) for rs in net.peers[1].read_states] == [(at_request, b"r")]


def test_a_single_voter_serves_reads_only_after_committing_in_its_term() -> None:
    """ReadIndex on one voter: no round is needed, but the commit index is current only once
    an entry of the leader's term committed."""
    net = Net(1)
    term = net.node(1).raft.term
    net.node(1).campaign()
    r1 = net.node(1).raft
    assert r1.role == StateRole.LEADER and r1.term == term + 1
    assert r1.log.term(r1.log.committed) == r1.term
    net.node(1).read_index(b"r")
    net.process(1)
    assert [(rs.index, rs.context) for rs in net.peers[1].read_states] == [
        (r1.log.committed, b"r")
    ]


# -- the log around a snapshot -----------------------------------------------------------------
def snapshotted_log(index: int, term: int) -> RaftLog:
    """A log restored from a snapshot at (index, term), with no entries after it."""
    st = MemoryStorage()
    st.apply_snapshot(Snapshot(SnapshotMeta(index, term, ConfState(frozenset({1})))))
    return RaftLog(st)


def test_the_snapshot_entry_keeps_its_term_for_the_election_restriction() -> None:
    """Election restriction after a snapshot: the last term of a log that ends at its snapshot
    is the snapshot's term (not 0), so a candidate with an older last term is refused."""
    log = snapshotted_log(10, 3)
    assert (log.last_index(), log.last_term()) == (10, 3)
    assert log.match_term(10, 3)
    assert log.term(9) == 0  # compacted
    assert not log.is_up_to_date(20, 2)
    assert log.is_up_to_date(10, 3)


def test_a_received_snapshot_keeps_its_term_until_it_is_persisted() -> None:
    """Same rule while the snapshot is still unstable (received, not yet persisted)."""
    log = log_with([1, 1])
    log.restore(Snapshot(SnapshotMeta(10, 3, ConfState(frozenset({1})))))
    assert (log.first_index(), log.last_index(), log.last_term()) == (11, 10, 3)
    assert log.term(2) == 0
    assert not log.is_up_to_date(20, 2)
    assert log.committed == 10


def test_an_append_may_not_overwrite_a_committed_entry() -> None:
    """Log matching / leader completeness: a committed entry is never truncated."""
    log = log_with([1, 1, 1], committed=3)
    with pytest.raises(AssertionError):
        log.append(ents(3, [2]))
    with pytest.raises(AssertionError):
        log.maybe_append(1, 1, 3, ents(2, [1, 2]))  # conflicts at 3, which is committed
    assert terms_of(log) == [1, 1, 1]
    assert log.append(ents(4, [2])) == 4


def test_unstable_append_before_the_offset_replaces_everything() -> None:
    """Truncation in the unstable tail, when the new entries start before it."""
    u = Unstable(5)
    u.truncate_and_append(ents(5, [1, 1]))
    u.truncate_and_append(ents(3, [2]))  # 3 == offset - len: no coincidence may extend
    assert (u.offset, [(e.index, e.term) for e in u.entries]) == (3, [(3, 2)])


def test_a_fresh_log_applies_from_its_first_index() -> None:
    """State machine safety: every committed entry is handed over for applying, the first
    one included."""
    log = log_with([1, 1, 1], committed=3)
    assert [e.index for e in log.next_committed_entries(None)] == [1, 2, 3]
    assert log.applied == 0


def test_two_voters_confirm_leadership_before_serving_a_read() -> None:
    """ReadIndex: only a single voter may skip the heartbeat round; with two voters the
    follower's ack is needed (the leader alone is not a majority)."""
    net = Net(2)
    net.elect(1)
    net.isolate(1)
    net.node(1).read_index(b"r")
    net.stabilize()
    assert net.peers[1].read_states == []
    net.heal()
    net.tick(1)
    net.stabilize()
    assert [rs.context for rs in net.peers[1].read_states] == [b"r"]


def test_each_read_round_has_its_own_id() -> None:
    """ReadIndex: an ack of an earlier round (a late heartbeat response) must not confirm a
    later round, so every round gets a new id."""
    net = Net(3)
    net.elect(1)
    r1 = net.node(1).raft
    ids = []
    for ctx in (b"a", b"b", b"c"):
        net.node(1).read_index(ctx)
        net.process(1)
        assert r1.read_round is not None
        ids.append(r1.read_round.id)
        net.node(1).step(Message(MT.HEARTBEAT_RESP, to=1, frm=2, term=r1.term,
                                 context=r1.read_round.id.to_bytes(8, "big")))
    assert len(set(ids)) == 3 and ids == sorted(ids)


# -- vote persistence ----------------------------------------------------------------------------
def test_a_restarted_node_remembers_its_vote() -> None:
    """Vote persistence: a node restarted from its hard state still holds the vote it cast in
    that term, so it grants the same candidate again and refuses every other."""
    net = Net(3, check_quorum=False)
    net.elect(1)
    r2 = net.node(2).raft
    term = r2.term + 1
    last, last_term = r2.log.last_index(), r2.log.last_term()
    net.node(2).step(Message(MT.VOTE, to=2, frm=3, term=term, index=last, log_term=last_term))
    net.process(2)  # the vote is persisted
    net.add(2, net.peers[2].storage)  # restart from storage
    assert (net.node(2).raft.term, net.node(2).raft.vote) == (term, 3)
    for frm, rejected in ((1, True), (3, False)):
        net.node(2).step(Message(MT.VOTE, to=2, frm=frm, term=term, index=last,
                                 log_term=last_term))
        replies = [m for m in net.process(2) if m.type == MT.VOTE_RESP]
        assert [(m.to, m.reject) for m in replies] == [(frm, rejected)]


# -- candidates ------------------------------------------------------------------------------------
def candidate_of_three() -> Net:
    net = Net(3, check_quorum=False, pre_vote=False)
    net.elect(1)
    net.node(2).campaign()  # a candidate in the next term; its vote requests are not delivered
    net.process(2)
    assert net.role(2) == StateRole.CANDIDATE
    return net


def test_a_candidate_rejected_by_a_majority_steps_down_in_its_term() -> None:
    """Election safety: a lost election ends as a follower in the same term, with the vote
    for itself kept (so it cannot vote again in that term)."""
    net = candidate_of_three()
    r2 = net.node(2).raft
    term = r2.term
    for frm in (1, 3):
        net.node(2).step(Message(MT.VOTE_RESP, to=2, frm=frm, term=term, reject=True))
    assert (r2.role, r2.term, r2.vote, r2.lead) == (StateRole.FOLLOWER, term, 2, 0)


def test_a_candidate_learns_the_commit_only_from_a_voter_whose_log_matches() -> None:
    """Commit rule, via rejected votes: a voter's commit point may be adopted only if the
    candidate holds the same entry there (log matching implies the same committed prefix)."""
    net = candidate_of_three()
    net.node(1).propose(b"x")
    net.deliver([m for m in net.process(1) if m.to == 3])
    net.process(3)  # 3 holds entry x; commit unknown to 2
    r2 = net.node(2).raft
    term, committed = r2.term, r2.log.committed
    # Entry x is not in 2's log: a claimed commit there must not move 2's commit.
    net.node(2).step(Message(MT.VOTE_RESP, to=2, frm=3, term=term, reject=True,
                             commit=committed + 1, log_term=r2.term - 1))
    assert r2.log.committed == committed
    # A commit point whose entry 2 holds, with the same term, is adopted.
    r2.log.committed = committed - 1
    net.node(2).step(Message(MT.VOTE_RESP, to=2, frm=1, term=term, reject=True,
                             commit=committed, log_term=r2.log.term(committed)))
    assert r2.log.committed == committed


# -- snapshots at the core -----------------------------------------------------------------------
def test_a_snapshot_the_log_already_covers_changes_nothing() -> None:
    """Log matching with snapshots: a snapshot at or below the commit index, or one whose last
    entry the log already holds, is not installed (installing it would drop entries the
    leader counts as replicated here); the commit index moves up to it."""
    net = Net(3)
    net.elect(1)
    for i in range(3):
        net.node(1).propose(b"e%d" % i)
    net.stabilize()
    r2 = net.node(2).raft
    committed, last = r2.log.committed, r2.log.last_index()
    conf = r2.conf
    old = Snapshot(SnapshotMeta(committed - 1, r2.log.term(committed - 1), conf))
    assert not r2.restore(old)
    r2.log.committed = committed - 2  # as if the commit of the last entries were not known
    held = Snapshot(SnapshotMeta(committed - 1, r2.log.term(committed - 1), conf))
    assert not r2.restore(held)
    assert (r2.log.committed, r2.log.last_index()) == (committed - 1, last)
