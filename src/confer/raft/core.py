"""The Raft consensus state machine.

Pure and deterministic: no I/O, no clock, no threads. Time moves only through :meth:`Raft.tick`;
randomness comes only from the injected ``rng``. Input is :meth:`Raft.step` (a message) and the
local calls (propose, read_index, ...); output accumulates in ``msgs``, ``read_states`` and the
log, which :class:`confer.raft.rawnode.RawNode` hands to the driver as a ``Ready``.

Membership changes are single-server changes (thesis §4.1). A change takes effect on every node
when its entry is *committed*, and the leader accepts a new change only once the previous one is
committed and it has committed an entry of its own term (which closes the bug in the original
single-server algorithm, see raft-dev "bug in single-server membership changes", 2015).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass

from confer.raft import quorum
from confer.raft.errors import (
    CompactedError,
    ConfChangeInProgress,
    LeadershipTransferInProgress,
    NotLeader,
)
from confer.raft.log import RaftLog
from confer.raft.progress import Progress, ProgressState
from confer.raft.storage import LogStorage
from confer.raft.types import (
    NONE,
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    ReadState,
    Snapshot,
    StateRole,
)

MT = MessageType

CAMPAIGN_TRANSFER = b"transfer"
"""Context of a vote request sent because of TimeoutNow: it overrides the leader lease."""


@dataclass(slots=True)
class Config:
    """Tuning of one Raft node. Ticks are the driver's time unit."""

    id: int
    election_tick: int = 10
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    max_inflight_bytes: int = 32 << 20
    max_committed_size_per_ready: int = 64 << 20
    snapshot_chunk_size: int = 1 << 20
    disable_proposal_forwarding: bool = False
    """A follower refuses proposals (NotLeader) instead of forwarding them to the leader."""
    snapshot_check: Callable[[bytes], bool] | None = None
    """Whether a snapshot received from a peer holds a valid state (the state machine's own
    format), checked once all its chunks are in, before it replaces anything. A snapshot that
    fails is dropped unanswered (the leader resends after an election timeout). It must be a
    pure function of the bytes, as the rest of the core."""

    def validate(self) -> None:
        if self.id <= 0:
            raise ValueError("node id must be a positive integer")
        if self.heartbeat_tick <= 0:
            raise ValueError("heartbeat_tick must be positive")
        if self.election_tick <= self.heartbeat_tick:
            raise ValueError("election_tick must be greater than heartbeat_tick")
        if self.max_inflight_msgs <= 0 or self.snapshot_chunk_size <= 0:
            raise ValueError("max_inflight_msgs and snapshot_chunk_size must be positive")


class CampaignKind(enum.Enum):
    PRE_ELECTION = 0
    ELECTION = 1
    TRANSFER = 2


@dataclass(slots=True)
class _ReadRound:
    """One heartbeat round confirming leadership for a batch of ReadIndex requests."""

    id: int
    index: int
    acks: set[int]
    reads: list[tuple[bytes, int]]  # (request context, requesting node)


@dataclass(slots=True)
class _IncomingSnapshot:
    meta_index: int
    meta_term: int
    buf: bytearray


class Raft:
    """One node's Raft state. Drive it through :class:`~confer.raft.rawnode.RawNode`."""

    def __init__(self, config: Config, storage: LogStorage, rng: random.Random) -> None:
        config.validate()
        self.cfg = config
        self.id = config.id
        self.rng = rng
        self.log = RaftLog(storage)
        hs, conf = storage.initial_state()
        # The driver restores the state machine from this snapshot, so it is applied. The log
        # may keep entries before it (catch-up entries for slow followers): never apply those
        # again, and read membership changes only after it.
        snap_index = storage.snapshot().meta.index
        if hs.commit > self.log.last_index():
            raise ValueError(
                f"persisted commit {hs.commit} is past the last log index "
                f"{self.log.last_index()}"
            )
        # A snapshot holds only committed entries, so its index is committed even if a crash
        # kept the snapshot but lost the hard state written beside it.
        self.log.commit_to(max(hs.commit, snap_index))
        self.log.applied_to(snap_index)
        self.term = hs.term
        self.vote = hs.vote
        self.lead = NONE
        self.role = StateRole.FOLLOWER
        self.conf = conf
        self.conf_history: list[tuple[int, ConfState]] = [(snap_index, conf)]
        self.conf_through = snap_index  # committed entries scanned for membership changes
        self.conf_commit_unsynced = False
        self.prs: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_tick
        self.deferred_vote: Message | None = None
        """The last vote request ignored because of the leader lease: answered once the lease
        runs out with no word from the leader (see :meth:`_tick_election`)."""
        self.lead_transferee = NONE
        self.pending_conf_index = 0
        self.pending_reads: list[tuple[bytes, int]] = []
        self.read_round: _ReadRound | None = None
        self.next_read_round = 1
        self.incoming_snapshot: _IncomingSnapshot | None = None
        # Set when proposals were appended; the broadcast happens once per Ready (batching).
        self.append_pending = False
        self._apply_committed_conf_changes()
        self.become_follower(self.term, NONE)

    # ------------------------------------------------------------------------------------------
    # Membership
    # ------------------------------------------------------------------------------------------
    def promotable(self) -> bool:
        return self.id in self.conf.voters

    def _rebuild_progress(self) -> None:
        last = self.log.last_index()
        old = self.prs
        self.prs = {}
        for node in self.conf.members():
            pr = old.get(node)
            if pr is None:
                pr = Progress(last + 1, self.cfg.max_inflight_msgs, self.cfg.max_inflight_bytes)
                if node == self.id:
                    pr.match = last
            pr.is_learner = node in self.conf.learners
            self.prs[node] = pr

    def _apply_committed_conf_changes(self) -> None:
        """Membership changes take effect once committed: scan newly committed entries."""
        committed = self.log.committed
        if committed <= self.conf_through:
            return
        lo = max(self.conf_through + 1, self.log.first_index())
        before = self.conf
        changed = False
        for e in self.log.slice(lo, committed + 1):
            if e.type == EntryType.CONF_CHANGE:
                self.conf = self.conf.apply(ConfChange.decode(e.data))
                self.conf_history.append((e.index, self.conf))
                changed = True
        self.conf_through = committed
        if changed:
            # Make the commit durable at once: a node that restarted with an older commit would
            # run with the old membership and might wait forever for a removed voter.
            self.conf_commit_unsynced = True
            self._on_conf_changed(before)

    def _on_conf_changed(self, before: ConfState) -> None:
        if self.role == StateRole.LEADER:
            # Removed nodes get no more messages: send each the commit of its removal, so it
            # learns it was removed (best effort; the server also tells it when it calls in).
            for node in before.members() - self.conf.members():
                if node != self.id and node in self.prs:
                    self.prs[node].probe_sent = False
                    self.send_append(node)
        self._rebuild_progress()
        if self.role != StateRole.LEADER:
            return
        if self.lead_transferee and self.lead_transferee not in self.conf.voters:
            self.lead_transferee = NONE
        if self.id not in self.conf.voters:
            # Removed (or demoted) leader: tell followers the commit index, then step down.
            self.bcast_append()
            self.become_follower(self.term, NONE)
            return
        if self.maybe_commit():
            self._apply_committed_conf_changes()
        self.bcast_append()

    def conf_state_at(self, index: int) -> ConfState:
        """The membership in force after applying entry ``index`` (for snapshots)."""
        result = self.conf_history[0][1]
        for at, conf in self.conf_history:
            if at > index:
                break
            result = conf
        return result

    def compact_conf_history(self, index: int) -> None:
        """Forget membership history older than a snapshot at ``index``."""
        keep = [(at, c) for at, c in self.conf_history if at > index]
        self.conf_history = [(index, self.conf_state_at(index)), *keep]

    # ------------------------------------------------------------------------------------------
    # Role transitions
    # ------------------------------------------------------------------------------------------
    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.deferred_vote = None
        self.randomized_election_timeout = self.cfg.election_tick + self.rng.randrange(
            self.cfg.election_tick
        )
        self.lead_transferee = NONE
        self.votes = {}
        self.pending_conf_index = 0
        self.pending_reads = []
        self.read_round = None
        self.append_pending = False
        self.prs = {}
        self._rebuild_progress()

    def become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.lead = lead
        self.role = StateRole.FOLLOWER

    def become_pre_candidate(self) -> None:
        # PreVote does not touch term or vote: a partitioned node cannot disrupt the cluster.
        self.votes = {}
        self.lead = NONE
        self.role = StateRole.PRE_CANDIDATE

    def become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = StateRole.CANDIDATE

    def become_leader(self) -> None:
        self._reset(self.term)
        self.lead = self.id
        self.role = StateRole.LEADER
        self.prs[self.id].become_replicate()
        # No membership change until an entry of this term commits (see module docstring).
        self.pending_conf_index = self.log.last_index()
        self._append_entries([Entry(0, 0, b"")])
        self.bcast_append()

    # ------------------------------------------------------------------------------------------
    # Time
    # ------------------------------------------------------------------------------------------
    def tick(self) -> None:
        if self.role == StateRole.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.deferred_vote is not None and self.election_elapsed >= self.cfg.election_tick:
            # The lease ran out and the leader said nothing since: a candidate saw it die
            # first (its timer runs ahead of ours by up to a tick, or its timeout came
            # early). Answer it now rather than leave it to campaign again a whole
            # randomized timeout later.
            m, self.deferred_vote = self.deferred_vote, None
            self.step(m)
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.step(Message(MT.HUP, frm=self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_tick:
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                self.step(Message(MT.CHECK_QUORUM, frm=self.id))
            if self.role == StateRole.LEADER and self.lead_transferee:
                self.lead_transferee = NONE  # transfer timed out
        if self.role != StateRole.LEADER:
            return
        for node, pr in self.prs.items():
            if node != self.id and pr.state == ProgressState.SNAPSHOT:
                pr.snap_stall_ticks += 1
                if pr.snap_stall_ticks >= self.cfg.election_tick:
                    self._send_snapshot_chunk(node, pr)  # chunk or ack was lost: resend
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self.step(Message(MT.BEAT, frm=self.id))

    # ------------------------------------------------------------------------------------------
    # Sending
    # ------------------------------------------------------------------------------------------
    def send(self, m: Message) -> None:
        # Votes carry their own term. A forwarded proposal carries none: like a local
        # proposal, it is appended by whichever node leads when it arrives (etcd-raft).
        if m.type not in (MT.VOTE, MT.PRE_VOTE, MT.VOTE_RESP, MT.PRE_VOTE_RESP, MT.PROP):
            m.term = self.term
        m.frm = self.id
        self.msgs.append(m)

    def send_append(self, to: int, send_if_empty: bool = True) -> bool:
        pr = self.prs[to]
        if pr.is_paused():
            return False
        prev_index = pr.next - 1
        log = self.log
        if prev_index < log.first_index() - 1:
            return self._start_snapshot(to, pr)
        prev_term = log.term(prev_index)
        try:
            ents = log.entries_from(pr.next, self.cfg.max_size_per_msg)
        except CompactedError:
            return self._start_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        self.send(
            Message(MT.APP, to=to, index=prev_index, log_term=prev_term, entries=ents,
                    commit=log.committed)
        )
        if ents:
            pr.sent_entries(ents[-1].index, sum(e.size() for e in ents))
        elif pr.state == ProgressState.PROBE:
            pr.probe_sent = True
        return True

    def _start_snapshot(self, to: int, pr: Progress) -> bool:
        snap = self.log.snapshot()
        pr.become_snapshot(snap.meta.index)
        pr.snapshot = snap
        self._send_snapshot_chunk(to, pr)
        return True

    def _send_snapshot_chunk(self, to: int, pr: Progress) -> None:
        # Finish the snapshot this transfer started with, even if a newer one was taken since:
        # it is still a valid committed state. Starting over on every new snapshot starves a
        # follower whose transfer takes longer than the interval between snapshots.
        snap = pr.snapshot
        if snap is None or snap.meta.index != pr.pending_snapshot:
            snap = self.log.snapshot()
            pr.become_snapshot(snap.meta.index)
            pr.snapshot = snap
        start = pr.snap_offset
        chunk = snap.data[start : start + self.cfg.snapshot_chunk_size]
        pr.snap_stall_ticks = 0
        self.send(
            Message(MT.SNAP, to=to, snapshot=snap.meta, snap_offset=start, snap_data=chunk,
                    snap_done=start + len(chunk) >= len(snap.data))
        )

    def bcast_append(self) -> None:
        self.append_pending = False
        for node in self.prs:
            if node != self.id:
                self.send_append(node)

    def _bcast_heartbeat(self) -> None:
        ctx = self.read_round.id.to_bytes(8, "big") if self.read_round else b""
        for node, pr in self.prs.items():
            if node != self.id:
                # Never tell a follower to commit past what it is known to hold.
                commit = min(pr.match, self.log.committed)
                self.send(Message(MT.HEARTBEAT, to=node, commit=commit, context=ctx))

    # ------------------------------------------------------------------------------------------
    # Local requests
    # ------------------------------------------------------------------------------------------
    def propose(self, payloads: list[bytes]) -> tuple[int, int]:
        """Append ``payloads`` as NORMAL entries. Returns (last index, term).

        A follower that knows the leader forwards them in one PROP message instead and
        returns ``(0, 0)``: the leader decides their index, or drops them (during a leadership
        transfer, or if it no longer leads), so the proposer must recognise its entries by
        their contents when they are applied. Without a known leader (and on a candidate, or
        with ``disable_proposal_forwarding``) this raises NotLeader.
        """
        for p in payloads:
            if not p:
                raise ValueError("empty proposals are reserved for the leader's no-op entry")
        if self.role != StateRole.LEADER and self._can_forward():
            self.send(Message(MT.PROP, to=self.lead, entries=[Entry(0, 0, p) for p in payloads]))
            return 0, 0
        self._check_can_propose()
        last = self._append_entries([Entry(0, 0, p) for p in payloads])
        self.append_pending = True
        return last, self.term

    def _can_forward(self) -> bool:
        return (self.role == StateRole.FOLLOWER and self.lead != NONE
                and not self.cfg.disable_proposal_forwarding)

    def propose_conf_change(self, cc: ConfChange) -> tuple[int, int]:
        self._check_can_propose()
        if self.pending_conf_index > self.log.committed:
            raise ConfChangeInProgress(self.lead)
        new = self.conf.apply(cc)
        if not new.voters:
            raise ValueError("a membership change may not remove the last voter")
        if new == self.conf and not cc.context:
            # With a context, the change re-announces a member (its new address): the voters
            # stay as they are, the application learns the context when it is committed.
            raise ValueError(f"membership change {cc.type.name} {cc.node_id} changes nothing")
        last = self._append_entries([Entry(0, 0, cc.encode(), EntryType.CONF_CHANGE)])
        self.pending_conf_index = last
        self.append_pending = True
        return last, self.term

    def _check_can_propose(self) -> None:
        if self.role != StateRole.LEADER:
            raise NotLeader(self.lead)
        if self.lead_transferee:
            raise LeadershipTransferInProgress(self.lead)

    def _append_entries(self, ents: list[Entry]) -> int:
        index = self.log.last_index()
        term = self.term
        for e in ents:
            index += 1
            e.index = index
            e.term = term
        last = self.log.append(ents)
        self.prs[self.id].maybe_update(last)
        if self.maybe_commit():  # a single-voter cluster commits at once
            self._apply_committed_conf_changes()
        return last

    def maybe_commit(self) -> bool:
        match = {node: pr.match for node, pr in self.prs.items()}
        index = quorum.committed_index(self.conf.voters, match)
        # Only entries of the current term commit by counting replicas (§5.4.2, Figure 8).
        if not self.log.maybe_commit(index, self.term):
            return False
        self._maybe_start_read_round()
        return True

    def has_deferred_work(self) -> bool:
        return self.append_pending or self._can_start_read_round()

    def _can_start_read_round(self) -> bool:
        # The commit index is only known to be current once an entry of this term committed.
        return (self.read_round is None and bool(self.pending_reads)
                and self.role == StateRole.LEADER
                and self.log.term(self.log.committed) == self.term)

    def flush(self) -> None:
        """Send what was deferred to batch it: one append per follower for all proposals
        since the last Ready, and one heartbeat round for all reads queued meanwhile."""
        if self.append_pending and self.role == StateRole.LEADER:
            self.bcast_append()
        self.append_pending = False
        self._maybe_start_read_round()

    def read_index(self, ctx: bytes) -> None:
        """Request a linearizable read; a ReadState(index, ctx) follows when confirmed."""
        if self.role == StateRole.LEADER:
            self._leader_read_index(ctx, self.id)
        elif self.lead != NONE:
            self.send(Message(MT.READ_INDEX, to=self.lead, context=ctx))
        else:
            raise NotLeader(NONE)

    def _leader_read_index(self, ctx: bytes, frm: int) -> None:
        if len(self.conf.voters) == 1 and self.log.term(self.log.committed) == self.term:
            self._release_read(ctx, frm, self.log.committed)
            return
        # The round starts at the next flush, so every read queued until then shares it.
        self.pending_reads.append((ctx, frm))

    def _maybe_start_read_round(self) -> None:
        if not self._can_start_read_round():
            return
        if len(self.conf.voters) == 1:
            reads, self.pending_reads = self.pending_reads, []
            for ctx, frm in reads:
                self._release_read(ctx, frm, self.log.committed)
            return
        self.read_round = _ReadRound(self.next_read_round, self.log.committed, {self.id},
                                     self.pending_reads)
        self.next_read_round += 1
        self.pending_reads = []
        self._bcast_heartbeat()

    def _release_read(self, ctx: bytes, frm: int, index: int) -> None:
        if frm == self.id:
            self.read_states.append(ReadState(index, ctx))
        else:
            self.send(Message(MT.READ_INDEX_RESP, to=frm, index=index, context=ctx))

    def transfer_leader(self, target: int) -> None:
        self.step(Message(MT.TRANSFER_LEADER, frm=target))

    # ------------------------------------------------------------------------------------------
    # Step
    # ------------------------------------------------------------------------------------------
    def step(self, m: Message) -> None:
        if not self._step_term(m):
            return
        t = m.type
        if t == MT.HUP:
            if self.role != StateRole.LEADER and self.promotable():
                self.campaign(CampaignKind.PRE_ELECTION if self.cfg.pre_vote
                              else CampaignKind.ELECTION)
        elif t in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role == StateRole.LEADER:
            self._step_leader(m)
        elif self.role == StateRole.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)
        self._apply_committed_conf_changes()

    def _step_term(self, m: Message) -> bool:
        """Handle the message's term (§5.1). Returns False if the message is to be dropped."""
        if m.term == 0:
            return True  # local message
        if m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (self.cfg.check_quorum and self.lead != NONE
                            and self.election_elapsed < self.cfg.election_tick)
                if in_lease and not force:
                    # We heard from a live leader recently: ignore the disruption (§4.2.3),
                    # unless the lease runs out before the leader is heard from again.
                    self.deferred_vote = m
                    return False
            if m.type == MT.PRE_VOTE or (m.type == MT.PRE_VOTE_RESP and not m.reject):
                pass  # pre-votes use a future term without adopting it
            elif m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
                self.become_follower(m.term, m.frm)
            else:
                self.become_follower(m.term, NONE)
            return True
        if m.term < self.term:
            if m.type in (MT.APP, MT.HEARTBEAT) and (self.cfg.check_quorum or self.cfg.pre_vote):
                # A stale leader may be cut off by PreVote/CheckQuorum from ever learning the
                # new term; answering lets it step down.
                self.send(Message(MT.APP_RESP, to=m.frm))
            elif m.type in (MT.PRE_VOTE, MT.VOTE):
                # Reject with our term (the Raft paper's reply; etcd-raft ignores a stale VOTE).
                # Else a candidate that never hears from us otherwise (we are not in its
                # config's view of who campaigns) stays behind our term for good: found by
                # the simulator with pre-vote off, a stale-config node out-campaigning the
                # only candidate it could vote for.
                resp = MT.PRE_VOTE_RESP if m.type == MT.PRE_VOTE else MT.VOTE_RESP
                self.send(Message(resp, to=m.frm, term=self.term, reject=True))
            return False
        return True

    def _handle_vote_request(self, m: Message) -> None:
        resp = MT.VOTE_RESP if m.type == MT.VOTE else MT.PRE_VOTE_RESP
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.lead == NONE)
            or (m.type == MT.PRE_VOTE and m.term > self.term and not self._outranks(m))
        )
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # Granted: the vote reaches the hard state, which the driver persists before
            # sending this response (Ready order).
            self.send(Message(resp, to=m.frm, term=m.term))
            if m.type == MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            # Tell the candidate how far our log is committed. A candidate whose log matches at
            # that point learns the commit index, and with it any membership change up to it:
            # a voter that missed the commit of a change removing (or demoting) the old leader
            # may otherwise wait forever for that node's vote.
            commit = self.log.committed
            self.send(Message(resp, to=m.frm, term=self.term, reject=True, commit=commit,
                              log_term=self.log.term(commit)))

    def _outranks(self, m: Message) -> bool:
        """Whether we, a pre-candidate of the same election as the pre-vote ``m``, refuse it
        because we rank higher: by log (last term, then last index), then by id. Two
        survivors that time out together (a leader of 3 crashed) used to grant each other's
        pre-votes, both stand, and split the vote: one more randomized timeout. Now the
        lower one grants the higher one, which our log passes, and only the higher stands.
        The order is total, so exactly one of two such pre-candidates yields."""
        if self.role != StateRole.PRE_CANDIDATE or m.term != self.term + 1:
            return False
        log = self.log
        return (log.last_term(), log.last_index(), self.id) > (m.log_term, m.index, m.frm)

    def campaign(self, kind: CampaignKind) -> None:
        if kind == CampaignKind.PRE_ELECTION:
            self.become_pre_candidate()
            vote_type = MT.PRE_VOTE
            term = self.term + 1
        else:
            self.become_candidate()
            vote_type = MT.VOTE
            term = self.term
        self.votes[self.id] = True
        result = quorum.vote_result(self.conf.voters, self.votes)
        if result:
            if kind == CampaignKind.PRE_ELECTION:
                self.campaign(CampaignKind.ELECTION)
            else:
                self.become_leader()
            return
        ctx = CAMPAIGN_TRANSFER if kind == CampaignKind.TRANSFER else b""
        last = self.log.last_index()
        last_term = self.log.last_term()
        for node in sorted(self.conf.voters):
            if node != self.id:
                self.send(Message(vote_type, to=node, term=term, index=last,
                                  log_term=last_term, context=ctx))

    # -- leader ----------------------------------------------------------------------------------
    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == MT.BEAT:
            self._bcast_heartbeat()
            return
        if t == MT.CHECK_QUORUM:
            if not self._quorum_active():
                self.become_follower(self.term, NONE)
            return
        if t == MT.READ_INDEX:
            self._leader_read_index(m.context, m.frm)
            return
        if t == MT.TRANSFER_LEADER:
            self._handle_transfer(m.frm)
            return
        if t == MT.PROP:
            self._append_forwarded(m)
            return
        pr = self.prs.get(m.frm)
        if pr is None:
            return  # not a member (any more)
        pr.recent_active = True
        if t == MT.APP_RESP:
            self._handle_append_response(m, pr)
        elif t == MT.HEARTBEAT_RESP:
            pr.probe_sent = False
            if pr.state == ProgressState.REPLICATE and pr.inflights.full():
                # An append may have been lost; free a slot so the next one reveals the gap.
                pr.inflights.free_first_one()
            if pr.match < self.log.last_index():
                self.send_append(m.frm)
            if m.context and self.read_round is not None:
                self._ack_read_round(m)
        elif t == MT.SNAP_RESP:
            if pr.state != ProgressState.SNAPSHOT or m.index != pr.pending_snapshot:
                return
            pr.snap_offset = m.snap_offset  # next offset the follower expects
            self._send_snapshot_chunk(m.frm, pr)

    def _append_forwarded(self, m: Message) -> None:
        """Proposals a follower forwarded: appended like local ones, or dropped (not refused:
        the proposer learns their fate only by applying them) while a transfer is under way.
        Only non-empty NORMAL entries are taken: membership changes are never forwarded."""
        if self.lead_transferee:
            return
        ents = [Entry(0, 0, e.data) for e in m.entries
                if e.data and e.type == EntryType.NORMAL]
        if ents:
            self._append_entries(ents)
            self.append_pending = True

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        if m.reject:
            hint = m.reject_hint
            if m.log_term > 0:
                hint, _ = self.log.find_conflict_by_term(hint, m.log_term)
            if pr.maybe_decr_to(m.index, hint):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self.send_append(m.frm)
            return
        updated = pr.maybe_update(m.index)
        if pr.state == ProgressState.SNAPSHOT:
            if pr.match < pr.pending_snapshot and pr.match + 1 < self.log.first_index():
                return  # still needs the snapshot
            # Installed (or not needed): resume normal replication from what it has.
            pr.become_probe()
            pr.become_replicate()
        elif not updated:
            return
        elif pr.state == ProgressState.PROBE:
            pr.become_replicate()
        else:
            pr.inflights.free_le(m.index)
        if self.maybe_commit():
            self._apply_committed_conf_changes()
            if self.role != StateRole.LEADER:
                return
            # Tell followers at the next flush: acks handled together, and proposals made
            # meanwhile, then share one append per follower.
            self.append_pending = True
        else:
            while self.send_append(m.frm, send_if_empty=False):
                pass
        if m.frm == self.lead_transferee and pr.match == self.log.last_index():
            self.send(Message(MT.TIMEOUT_NOW, to=m.frm))

    def _ack_read_round(self, m: Message) -> None:
        rnd = self.read_round
        assert rnd is not None
        if int.from_bytes(m.context, "big") != rnd.id or m.frm not in self.conf.voters:
            return
        rnd.acks.add(m.frm)
        if len(rnd.acks) < quorum.majority(len(self.conf.voters)):
            return
        self.read_round = None
        for ctx, frm in rnd.reads:
            self._release_read(ctx, frm, rnd.index)
        self._maybe_start_read_round()

    def _quorum_active(self) -> bool:
        active = 0
        for node, pr in self.prs.items():
            if node == self.id:
                active += node in self.conf.voters
                continue
            if pr.recent_active and not pr.is_learner:
                active += 1
            pr.active_before = pr.recent_active
            pr.recent_active = False
        return active >= quorum.majority(len(self.conf.voters))

    def _handle_transfer(self, target: int) -> None:
        pr = self.prs.get(target)
        if pr is None or pr.is_learner or target == self.id:
            return
        if self.lead_transferee == target:
            return  # already under way
        self.lead_transferee = target
        self.election_elapsed = 0  # the transfer must finish within one election timeout
        if pr.match == self.log.last_index():
            self.send(Message(MT.TIMEOUT_NOW, to=target))
        else:
            self.send_append(target)

    # -- follower --------------------------------------------------------------------------------
    def _heard_from_leader(self, leader: int) -> None:
        self.election_elapsed = 0
        self.lead = leader
        self.deferred_vote = None  # the lease holds again: the request stays ignored

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == MT.APP:
            self._heard_from_leader(m.frm)
            self._handle_append(m)
        elif t == MT.HEARTBEAT:
            self._heard_from_leader(m.frm)
            self.log.commit_to(m.commit)
            self.send(Message(MT.HEARTBEAT_RESP, to=m.frm, context=m.context))
        elif t == MT.SNAP:
            self._heard_from_leader(m.frm)
            self._handle_snapshot_chunk(m)
        elif t == MT.TRANSFER_LEADER:
            if self.lead != NONE:
                self.send(Message(MT.TRANSFER_LEADER, to=self.lead, frm=m.frm))
                self.msgs[-1].frm = m.frm  # the target, not us
        elif t == MT.TIMEOUT_NOW:
            if self.promotable():
                self.campaign(CampaignKind.TRANSFER)
        elif t == MT.READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))
        elif t == MT.PROP and self._can_forward() and m.entries:
            # Forwarded to us by a node that took us for the leader: pass it on (etcd-raft).
            # With no leader known it is dropped, and the proposer's wait times out.
            self.send(Message(MT.PROP, to=self.lead, entries=m.entries))

    def _handle_append(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            self.send(Message(MT.APP_RESP, to=m.frm, index=log.committed))
            return
        last_new = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self.send(Message(MT.APP_RESP, to=m.frm, index=last_new))
            return
        hint_index, hint_term = log.find_conflict_by_term(
            min(m.index, log.last_index()), m.log_term
        )
        self.send(Message(MT.APP_RESP, to=m.frm, index=m.index, reject=True,
                          reject_hint=hint_index, log_term=hint_term))

    def _handle_snapshot_chunk(self, m: Message) -> None:
        meta = m.snapshot
        assert meta is not None
        if meta.index <= self.log.committed:
            # Already have it all; tell the leader where we are.
            self.incoming_snapshot = None
            self.send(Message(MT.APP_RESP, to=m.frm, index=self.log.committed))
            return
        inc = self.incoming_snapshot
        if m.snap_offset == 0 and (inc is None or inc.meta_index != meta.index
                                   or inc.meta_term != meta.term or inc.buf):
            inc = self.incoming_snapshot = _IncomingSnapshot(meta.index, meta.term, bytearray())
        if inc is None or inc.meta_index != meta.index or inc.meta_term != meta.term:
            self.send(Message(MT.SNAP_RESP, to=m.frm, index=meta.index, snap_offset=0))
            return
        if m.snap_offset != len(inc.buf):
            # Duplicate or out of order: say which offset we expect.
            self.send(Message(MT.SNAP_RESP, to=m.frm, index=meta.index,
                              snap_offset=len(inc.buf)))
            return
        inc.buf += m.snap_data
        if not m.snap_done:
            self.send(Message(MT.SNAP_RESP, to=m.frm, index=meta.index,
                              snap_offset=len(inc.buf)))
            return
        self.incoming_snapshot = None
        snap = Snapshot(meta, bytes(inc.buf))
        check = self.cfg.snapshot_check
        if check is not None and not check(snap.data):
            return
        if self.restore(snap):
            self.send(Message(MT.APP_RESP, to=m.frm, index=self.log.last_index()))
        else:
            self.send(Message(MT.APP_RESP, to=m.frm, index=self.log.committed))

    def restore(self, snap: Snapshot) -> bool:
        """Install a snapshot received from the leader. False if it brings nothing new."""
        meta = snap.meta
        if meta.index <= self.log.committed:
            return False
        if self.log.match_term(meta.index, meta.term):
            # Our log already has the snapshot's last entry: just fast-forward the commit.
            self.log.commit_to(meta.index)
            return False
        self.log.restore(snap)
        self.conf = meta.conf_state
        self.conf_history = [(meta.index, meta.conf_state)]
        self.conf_through = meta.index
        self._rebuild_progress()
        return True

    # -- candidate --------------------------------------------------------------------------------
    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t in (MT.APP, MT.HEARTBEAT, MT.SNAP):
            # A leader exists for our term: stand down and process it as a follower.
            self.become_follower(m.term, m.frm)
            self._step_follower(m)
            return
        my_resp = MT.PRE_VOTE_RESP if self.role == StateRole.PRE_CANDIDATE else MT.VOTE_RESP
        if t != my_resp:
            return
        if m.reject and m.commit > self.log.committed and self.log.match_term(m.commit,
                                                                              m.log_term):
            self.log.commit_to(m.commit)  # same entry there, so the same committed prefix
            self._apply_committed_conf_changes()
            if not self.promotable():
                self.become_follower(self.term, NONE)  # no longer a voter: stop campaigning
                return
        self.votes[m.frm] = not m.reject
        result = quorum.vote_result(self.conf.voters, self.votes)
        if result is True:
            if self.role == StateRole.PRE_CANDIDATE:
                self.campaign(CampaignKind.ELECTION)
            else:
                self.become_leader()
        elif result is False:
            self.become_follower(self.term, NONE)
