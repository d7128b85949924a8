"""The simulator catches classic Raft mistakes.

Each test breaks the core in one well-known way (monkeypatched from here: the core has no
flags for it), searches a bounded range of seeds for a scenario that exposes the mistake,
checks that the simulator reports the violation one would expect, and replays the same
seed on the real core to show the scenario itself is fine.

The searches use the leader-churn flavour: leaders struck soon after their election, one
entry per message and crashes aimed at the Readies that grant votes or acknowledge appends,
which is how divergent logs and lost votes arise.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from confer.raft import Message, MessageType, RawNode, Ready, StateRole
from confer.raft.core import Raft
from confer.raft.log import RaftLog
from confer.raft.types import Entry, SnapshotMeta
from confer.sim.checker import Rule
from confer.sim.fs import SimFS
from confer.sim.runner import ScenarioResult, run_scenario
from confer.sim.scenario import Flavour
from confer.storage.snapfile import SnapshotStore
from confer.storage.wal import WAL

SEARCH = range(0, 300)
"""Seeds searched for each mistake. The first hit comes much sooner (noted in each test); a
search that needs more means the simulator got worse at finding it."""


def first_violation(seeds: Iterable[int], flavour: Flavour = Flavour.CHURN,
                    nodes: int | None = None) -> ScenarioResult:
    for seed in seeds:
        res = run_scenario(seed, nodes, flavour=flavour)
        if not res.ok:
            return res
    raise AssertionError(f"no seed in {seeds} exposed the injected bug")


def caught(monkeypatch: pytest.MonkeyPatch, expected: set[Rule],
           flavour: Flavour = Flavour.CHURN, seeds: Iterable[int] = SEARCH,
           nodes: int | None = None) -> ScenarioResult:
    """Search for a violation with the bug in place, then replay that seed without it."""
    res = first_violation(seeds, flavour, nodes)
    assert res.rule in {r.name for r in expected}, res.report()
    assert res.command.startswith(f"python -m confer.sim --seeds 1 --start {res.seed} ")
    monkeypatch.undo()
    clean = run_scenario(res.seed, nodes, flavour=flavour)
    assert clean.ok, clean.report()
    return res


def test_granting_votes_without_the_log_up_to_date_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """§5.4.1: a voter must refuse a candidate whose log is behind its own."""
    monkeypatch.setattr(RaftLog, "is_up_to_date", lambda self, last_index, term: True)
    caught(monkeypatch, {Rule.LEADER_COMPLETENESS, Rule.COMMITTED_LOST,
                         Rule.STATE_MACHINE_SAFETY})
    # Exposed by about 70% of churn seeds; the first is seed 0.


def test_committing_a_previous_term_entry_by_counting_replicas(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """§5.4.2 / Figure 8: a leader may count replicas only for entries of its own term."""

    def maybe_commit(self: RaftLog, index: int, term: int) -> bool:
        if index > self.committed:  # no check that the entry is from the current term
            self.commit_to(index)
            return True
        return False

    monkeypatch.setattr(RaftLog, "maybe_commit", maybe_commit)
    caught(monkeypatch, {Rule.LEADER_COMPLETENESS, Rule.COMMITTED_LOST,
                         Rule.STATE_MACHINE_SAFETY})
    # Exposed by about 3% of churn seeds; the first is seed 28.


def test_answering_a_vote_before_it_is_durable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A granted vote must be synced before the grant is sent; otherwise a crash forgets it
    and the node can vote twice in one term."""
    real_ready = RawNode.ready

    def ready(self: RawNode) -> Ready:
        rd = real_ready(self)
        rd.must_sync = bool(rd.entries) or rd.snapshot is not None  # forgets term and vote
        return rd

    monkeypatch.setattr(RawNode, "ready", ready)
    # Two leaders in one term, or what follows from them.
    caught(monkeypatch, {Rule.ELECTION_SAFETY, Rule.COMMITTED_LOST, Rule.LEADER_COMPLETENESS,
                         Rule.STATE_MACHINE_SAFETY})
    # Exposed by about 2% of churn seeds; the first is seed 6.


def test_serving_read_index_without_confirming_leadership(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A leader must hear from a quorum before answering a ReadIndex: a deposed leader that
    does not know it yet would serve a stale read."""

    def release_at_once(self: Raft) -> None:
        if (not self.pending_reads or self.role != StateRole.LEADER
                or self.log.term(self.log.committed) != self.term):
            return
        reads, self.pending_reads = self.pending_reads, []
        for ctx, frm in reads:  # no heartbeat round
            self._release_read(ctx, frm, self.log.committed)

    monkeypatch.setattr(Raft, "_maybe_start_read_round", release_at_once)
    caught(monkeypatch, {Rule.LINEARIZABLE_READ})
    # Exposed by about 8% of churn seeds; the first is seed 24.


def test_a_follower_that_keeps_conflicting_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    """An AppendEntries that conflicts with a follower's log must truncate it (§5.3)."""

    def find_conflict(self: RaftLog, ents: list[Entry]) -> int:
        last = self.last_index()
        for e in ents:
            if e.index > last:  # only new entries count; conflicting ones are kept
                return e.index
        return 0

    monkeypatch.setattr(RaftLog, "find_conflict", find_conflict)
    caught(monkeypatch, {Rule.COMMITTED_LOST, Rule.LOG_MATCHING, Rule.STATE_MACHINE_SAFETY,
                         Rule.LEADER_COMPLETENESS})
    # Exposed by nearly every churn seed; the first is seed 0.


def test_the_mixed_flavour_catches_the_vote_check_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not only the churn flavour: the everyday mix of faults finds it as well."""
    monkeypatch.setattr(RaftLog, "is_up_to_date", lambda self, last_index, term: True)
    res = first_violation(range(0, 100), Flavour.MIXED)
    assert res.rule == Rule.LEADER_COMPLETENESS.name, res.report()


# -- storage mistakes: the real WAL runs in the simulator, on a file system that loses power ----
def test_a_wal_that_never_fdatasyncs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A WAL whose sync writes but does not fdatasync acknowledges what a crash may lose."""

    def sync(self: WAL) -> None:
        if not self._buf:
            return
        data = b"".join(self._buf)
        self._buf.clear()
        self._disk.write(self._fd, data)  # and no fdatasync
        self._synced = self._pos
        if self._synced >= self._segment_size:
            self._cut()

    monkeypatch.setattr(WAL, "sync", sync)
    # Lost votes or entries; or the core's own check that a commit index from the leader
    # lies within the log (etcd-raft's "was the raft log lost?").
    caught(monkeypatch, {Rule.ELECTION_SAFETY, Rule.COMMITTED_LOST, Rule.LEADER_COMPLETENESS,
                         Rule.STATE_MACHINE_SAFETY, Rule.CORE_ERROR})
    # Exposed by nearly every churn seed; the first is seed 0.


def test_a_wal_recovery_that_leaves_the_torn_tail_in_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Recovery must cut a torn final write off the file before appending after it: records
    written behind the leftover junk are not found by the next recovery, though they were
    synced. (The WAL's one truncate call is made to do nothing.)"""
    monkeypatch.setattr(SimFS, "truncate", lambda self, fd, size: None)
    # Synced records lost behind the junk, or the junk found inside a sealed segment.
    res = caught(monkeypatch, {Rule.ELECTION_SAFETY, Rule.COMMITTED_LOST,
                               Rule.LEADER_COMPLETENESS, Rule.STATE_MACHINE_SAFETY,
                               Rule.CORE_ERROR})
    assert res.rule != Rule.CORE_ERROR.name or "WALCorruptionError" in res.message, res.report()
    # Exposed by about 12% of churn seeds; the first is seed 4.


def test_a_snapshot_file_renamed_into_place_before_it_is_synced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A snapshot file must be durable before the WAL names it; skip its fsync and a crash
    leaves the WAL pointing at a torn file: the node cannot restart."""
    real_save = SnapshotStore.save

    def save(self: SnapshotStore, meta: SnapshotMeta, data: bytes) -> str:
        disk = self._disk
        disk.fsync = lambda fd: None  # type: ignore[method-assign]
        try:
            return real_save(self, meta, data)
        finally:
            del disk.fsync

    monkeypatch.setattr(SnapshotStore, "save", save)
    res = caught(monkeypatch, {Rule.CORE_ERROR}, Flavour.MIXED)
    assert "SnapshotCorruptionError" in res.message, res.report()
    # Exposed by 40% of mixed seeds; the first is seed 0.


# -- mistakes that only the widened fault model finds (docs/mutation-testing.md, gaps) --------
def test_a_vote_grant_without_its_term(monkeypatch: pytest.MonkeyPatch) -> None:
    """A vote grant must carry the term it was cast in: a grant held in the network across an
    election must not count for the candidate in its next term (gap 2: held responses)."""
    real = Raft._handle_vote_request

    def handle(self: Raft, m: Message) -> None:
        real(self, m)
        out = self.msgs[-1]
        if out.type in (MessageType.VOTE_RESP, MessageType.PRE_VOTE_RESP) and not out.reject:
            out.term = 0  # a term-less message counts in whatever term the candidate is in

    monkeypatch.setattr(Raft, "_handle_vote_request", handle)
    caught(monkeypatch, {Rule.ELECTION_SAFETY, Rule.COMMITTED_LOST, Rule.LEADER_COMPLETENESS,
                         Rule.STATE_MACHINE_SAFETY}, Flavour.MIXED, range(100, 130), nodes=3)
    # Exposed only since responses are held across elections, by about 1% of seeds: the first
    # 3-node mixed seed from 100 is 122.
