"""RawNode: the driver's handle on the Raft core (in the style of etcd's raft.RawNode).

The driver loop, in one place::

    while running:
        node.tick()                      # every tick interval
        node.step(message)               # for each message from a peer
        node.propose(...) / read_index(...)
        if node.has_ready():
            rd = node.ready()
            storage.apply_snapshot / append / set_hard_state;  storage.sync()   # 1. persist
            transport.send(rd.messages)                                          # 2. send
            state_machine.apply(rd.snapshot, rd.committed_entries)               # 3. apply
            node.advance(rd)                                                     # 4. ack

Persisting before sending is what makes a vote or an append acknowledgement safe to send.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from confer.raft.core import Config, Raft
from confer.raft.progress import ProgressState
from confer.raft.storage import BootstrapTarget, WritableLogStorage
from confer.raft.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Ready,
    SoftState,
    StateRole,
)

_LOCAL_TYPES = frozenset({MessageType.HUP, MessageType.BEAT, MessageType.CHECK_QUORUM})


# Not frozen: building a frozen dataclass costs several times more (one object.__setattr__
# per field), and these are read per request. They are copies: changing one changes nothing.
@dataclass(slots=True)
class BasicStatus:
    """The core's state at one moment, cheap enough to read per request (etcd's
    ``BasicStatus``)."""

    id: int
    term: int
    vote: int
    leader: int
    role: StateRole
    commit: int
    applied: int
    last_index: int
    first_index: int
    lead_transferee: int
    """The node a leadership transfer under way goes to (leader only), else NONE."""


@dataclass(slots=True)
class Status(BasicStatus):
    """:class:`BasicStatus` plus the membership and, on a leader, each node's match index."""

    conf_state: ConfState
    progress: dict[int, int]  # node -> match index (leader only)
    live: frozenset[int]
    """Leader only: the members it heard from within the last one or two election timeouts
    (itself included); what a membership change must keep a quorum of."""


class RawNode:
    """Wraps :class:`Raft` with the Ready/advance protocol."""

    def __init__(self, config: Config, storage: WritableLogStorage,
                 rng: random.Random | None = None) -> None:
        self.raft = Raft(config, storage, rng if rng is not None else random.Random(config.id))
        self._prev_hard = HardState(self.raft.term, self.raft.vote, self.raft.log.committed)
        self._prev_soft = SoftState(NONE, StateRole.FOLLOWER, self.raft.term)
        self._outstanding = False

    # -- inputs -----------------------------------------------------------------------------------
    def tick(self) -> None:
        self.raft.tick()

    def campaign(self) -> None:
        """Start an election now instead of waiting for the election timeout."""
        self.raft.step(Message(MessageType.HUP, frm=self.raft.id))

    def step(self, m: Message) -> None:
        """Feed a message from a peer. Local-only types and self-addressed messages are ignored."""
        if m.type in _LOCAL_TYPES or m.frm == self.raft.id:
            return
        self.raft.step(m)

    def propose(self, *payloads: bytes) -> tuple[int, int]:
        """Propose commands. Returns (index of the last one, term).

        Raises :class:`~confer.raft.errors.ProposalDropped` (with the known leader) when this
        node cannot accept proposals. The command is committed if the entry applied at that
        index carries that term; a different term there means it was lost to a leader change.

        A follower that knows the leader forwards the commands to it and returns ``(0, 0)``:
        their index is unknown here, so the driver must tag them (e.g. with a request id) to
        recognise them when applied; if the leader drops them they are never applied.
        """
        return self.raft.propose(list(payloads))

    def propose_conf_change(self, cc: ConfChange) -> tuple[int, int]:
        return self.raft.propose_conf_change(cc)

    def read_index(self, ctx: bytes) -> None:
        """Ask for a linearizable read point; answered by a ReadState with the same ``ctx``."""
        self.raft.read_index(ctx)

    def transfer_leader(self, target: int) -> None:
        self.raft.transfer_leader(target)

    def report_unreachable(self, node: int) -> None:
        """The transport failed to deliver to ``node``: stop pipelining to it."""
        pr = self.raft.prs.get(node)
        if (pr is not None and self.raft.role == StateRole.LEADER
                and pr.state == ProgressState.REPLICATE):
            pr.become_probe()

    # -- outputs ----------------------------------------------------------------------------------
    def _soft_state(self) -> SoftState:
        r = self.raft
        return SoftState(r.lead, r.role, r.term)

    def _hard_state(self) -> HardState:
        r = self.raft
        return HardState(r.term, r.vote, r.log.committed)

    def has_ready(self) -> bool:
        r = self.raft
        log = r.log
        return bool(
            r.msgs or r.read_states or r.has_deferred_work()
            or log.unstable.entries or log.unstable.snapshot is not None
            or log.has_next_committed()
            or self._hard_state() != self._prev_hard
            or self._soft_state() != self._prev_soft
        )

    def ready(self) -> Ready:
        """The next batch of work. Call :meth:`advance` with it before asking for another."""
        if self._outstanding:
            raise RuntimeError("ready() called again before advance()")
        r = self.raft
        r.flush()
        log = r.log
        rd = Ready()
        soft = self._soft_state()
        if soft != self._prev_soft:
            rd.soft_state = soft
            self._prev_soft = soft
        hard = self._hard_state()
        if hard != self._prev_hard:
            rd.hard_state = hard
        rd.entries = list(log.unstable.entries)
        rd.snapshot = log.unstable.snapshot
        rd.committed_entries = log.next_committed_entries(r.cfg.max_committed_size_per_ready)
        if rd.snapshot is not None:
            log.applying = max(log.applying, rd.snapshot.meta.index)
        if rd.committed_entries:
            log.applying = rd.committed_entries[-1].index
        rd.messages, r.msgs = r.msgs, []
        rd.read_states, r.read_states = r.read_states, []
        rd.must_sync = bool(rd.entries) or rd.snapshot is not None or (
            rd.hard_state is not None
            and (rd.hard_state.term != self._prev_hard.term
                 or rd.hard_state.vote != self._prev_hard.vote
                 or r.conf_commit_unsynced)
        )
        r.conf_commit_unsynced = False
        self._outstanding = True
        return rd

    def advance(self, rd: Ready) -> None:
        """Acknowledge that ``rd`` was persisted, sent and applied."""
        log = self.raft.log
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.snapshot is not None:
            log.unstable.stable_snap_to(rd.snapshot.meta.index)
            log.applied_to(rd.snapshot.meta.index)
        if rd.entries:
            last = rd.entries[-1]
            log.unstable.stable_to(last.index, last.term)
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)
        self._outstanding = False

    # -- snapshots --------------------------------------------------------------------------------
    def conf_state_at(self, index: int) -> ConfState:
        """Membership as of entry ``index``: what a snapshot at ``index`` must record."""
        return self.raft.conf_state_at(index)

    def compacted(self, index: int) -> None:
        """Tell the core the log was compacted up to a snapshot at ``index``."""
        self.raft.compact_conf_history(index)

    # -- observation: the one way to read the core's state -----------------------------------------
    @property
    def id(self) -> int:
        return self.raft.id

    @property
    def term(self) -> int:
        """The current term: the cheapest read, for every response header."""
        return self.raft.term

    @property
    def conf_state(self) -> ConfState:
        """The membership in force now (cheap: read for every inbound peer batch)."""
        return self.raft.conf

    def basic_status(self) -> BasicStatus:
        """Term, vote, leader, role and log indexes (no copies of membership or progress)."""
        r = self.raft
        log = r.log
        return BasicStatus(r.id, r.term, r.vote, r.lead, r.role, log.committed, log.applied,
                           log.last_index(), log.first_index(), r.lead_transferee)

    def status(self) -> Status:
        """:meth:`basic_status` plus the membership and the leader's view of progress."""
        r = self.raft
        log = r.log
        leader = r.role == StateRole.LEADER
        progress = {n: pr.match for n, pr in r.prs.items()} if leader else {}
        live = (frozenset(n for n, pr in r.prs.items() if n == r.id or pr.is_live())
                if leader else frozenset())
        return Status(r.id, r.term, r.vote, r.lead, r.role, log.committed, log.applied,
                      log.last_index(), log.first_index(), r.lead_transferee, r.conf, progress,
                      live)


def bootstrap(storage: BootstrapTarget, voters: list[int],
              contexts: Mapping[int, bytes] | None = None) -> None:
    """Initialise an empty storage for a new cluster of ``voters``.

    Every founding member must be bootstrapped with the same list (and contexts): the
    membership is written as committed CONF_CHANGE entries at term 1, identical on every node.
    ``contexts`` gives each voter's ConfChange context (the server puts addresses there).
    """
    contexts = contexts or {}
    if storage.last_index() != 0:
        raise ValueError("storage already holds a log; refusing to bootstrap over it")
    if not voters or len(set(voters)) != len(voters) or min(voters) <= 0:
        raise ValueError("bootstrap needs distinct positive node ids")
    ents = [
        Entry(i + 1, 1, ConfChange(ConfChangeType.ADD_VOTER, v, contexts.get(v, b"")).encode(),
              EntryType.CONF_CHANGE)
        for i, v in enumerate(voters)
    ]
    storage.append(ents)
    storage.set_hard_state(HardState(term=1, vote=NONE, commit=len(ents)))
    storage.sync()
