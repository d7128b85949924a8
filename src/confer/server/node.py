"""The asyncio driver of one Raft node: ticks, messages, proposals and reads in; Ready out.

All Raft work happens in one task (``_run``), so the pure core is never entered concurrently.
Each wake-up drains everything queued since the last one, which is what turns many concurrent
proposals into one append, one fsync and one message per follower.

A follower may propose too (``propose(data, forward=True)``): the core forwards the commands
to the leader in one PROP message, and the leader appends them like its own. Their index is
unknown to the follower, so each is wrapped with a request id in a FORWARDED entry (see
:mod:`confer.envelope`); every node applies the command without the wrapper, and the node
waiting on that id resolves its request with the result it computed itself. A forwarded
proposal the leader dropped (leader change, leadership transfer) is never applied: after
``forward_timeout`` it fails with :class:`OutcomeUnknown`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confer.envelope import EntryKind, unwrap_forwarded, wrap_forwarded
from confer.raft.core import Config
from confer.raft.errors import NotLeader, ProposalDropped, RaftError
from confer.raft.fsm import SnapshotSteps, StateMachine
from confer.raft.rawnode import BasicStatus, RawNode, Status
from confer.raft.storage import WritableLogStorage
from confer.raft.types import (
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Ready,
    SnapshotMeta,
    StateRole,
)
from confer.server.metrics import RaftTimings
from confer.server.transport import Transport

log = logging.getLogger("confer.node")

_FORWARDED = int(EntryKind.FORWARDED)  # a plain int: compared for every entry applied
_PROP = MessageType.PROP


class OutcomeUnknown(RaftError):
    """The proposal may or may not have been committed (e.g. replaced by a snapshot)."""


class NodeStopped(RaftError):
    """The node was stopped before the request completed."""


class Overloaded(ProposalDropped):
    """Too many writes are in flight on this node (``NodeOptions.max_inflight``): the
    proposal was refused before it reached the log, so it is safe to retry later (the
    request layer answers etcd's "too many requests")."""

    def __init__(self, node_id: int, limit: int, leader: int) -> None:
        super().__init__(f"too many requests: node {node_id} has {limit} writes in flight "
                         "already", leader)


@dataclass(slots=True)
class NodeOptions:
    tick_interval: float = 0.1
    """Seconds per Raft tick. Election timeout = election_tick x tick_interval."""
    snapshot_every: int = 100_000
    """Take a snapshot after this many applied entries."""
    keep_entries: int = 5_000
    """Entries kept in the log behind a snapshot, so slightly lagging followers need no
    snapshot transfer."""
    inline_sync_limit: float = 0.001
    """fsync runs on the event loop while it takes less than this (seconds, a moving
    average): handing a fast fsync (~0.1 ms) to a thread and back costs more CPU than the
    fsync, and a busy node does one per round. Above it, fsync runs in a worker thread, so
    that a slow disk does not stall the loop (requests arriving meanwhile join the next
    batch). 0: always in a thread."""
    background_snapshots: bool = True
    """Build snapshots a slice at a time between other work (as many slices as the state
    machine's ``snapshot_steps()`` makes), and write them in a thread (when off, the loop
    stops while it snapshots)."""
    batch_window: float = 0.02
    """Under full load, the shortest time between two rounds of the Raft loop (seconds, at
    most a quarter tick), so that each round's Ready, fsync and peer messages carry many
    requests: a fifth less CPU per write and more, on a busy cluster. 0 turns it off."""
    batch_min_inflight: int = 8
    """Load is measured as writes in flight on this node (waiting to be applied here, or, on
    the leader, appended and not yet committed). Below this many, every round runs at once,
    so a lone client's (or a few clients') requests are never held back; from there the
    spacing grows with the load, to the full window at twice as many."""
    forward_timeout: float | None = None
    """Seconds a follower waits for a proposal it forwarded to the leader to be applied
    before reporting OutcomeUnknown (the leader may have dropped it). Default: etcd's
    request timeout, 5 s plus two election timeouts. (Three election timeouts, tried first,
    misfired under overload: at `etcdctl check perf --load=xl` writes waited longer than
    that in the queue, and failed although nothing was lost.) Once the leader changes, the
    writes forwarded before get one election timeout more at most."""
    max_inflight: int = 5_000
    """Writes this node takes in at once: queued for the log, appended and not yet applied
    here, or forwarded and not yet applied; a leader also counts every entry of its log not
    yet committed, its followers' forwarded writes included. Beyond it, ``propose`` refuses
    at once (:class:`Overloaded`), before the write reaches the log: a saturated node pushes
    back on its clients instead of queueing them without bound (etcd refuses with "too many
    requests" when 5,000 committed entries wait to be applied)."""
    max_round_entries: int = 1_024
    """Entries one round of the loop proposes at most, so that a round's append, fsync,
    messages and apply stay short whatever arrives at once. A leader shares them between
    its own clients' writes and those its followers forward: when both wait, each gets at
    least half; the rest wait for the next round, in order."""


class RaftNode:
    """Runs a :class:`RawNode` over real storage, a transport and a state machine."""

    def __init__(self, config: Config, storage: WritableLogStorage, transport: Transport,
                 fsm: StateMachine, options: NodeOptions | None = None,
                 rng: random.Random | None = None) -> None:
        self.options = options or NodeOptions()
        self.storage = storage
        self.transport = transport
        self.fsm = fsm
        snap = storage.snapshot()
        if not snap.is_empty():
            fsm.restore(snap.data)
        # Without a seed for tests, the election timeouts come from a fresh random source:
        # RawNode's default (seeded with the node id) made every start of a member draw the
        # same timeouts, and two members of one cluster drew equal ones at the same step
        # (nodes 1 and 3: 1.9 s both, after the first election), so their timeouts fired
        # together after a leader crash, at the slow end, and split the vote.
        self.node = RawNode(config, storage, rng if rng is not None else random.Random())
        self._election_tick = config.election_tick
        self.applied_index = snap.meta.index
        self._snapshot_index = snap.meta.index
        self._sync_cost = 0.0  # moving average of an fsync's duration, in seconds
        self.timings = RaftTimings()
        """WAL and snapshot durations, for the metrics (confer.server.metrics)."""
        self._snapshot_job: asyncio.Task[None] | None = None
        self._staggered = False  # the first snapshot since start or restore was offset
        self._snapshot_built: tuple[SnapshotMeta, bytes] | None = None
        self._inbox: list[Message] = []
        self._proposals: list[tuple[bytes, bool, asyncio.Future[Any]]] = []  # data, forward
        self._forwarded: dict[int, asyncio.Future[Any]] = {}  # request id -> waiting request
        # (deadline tick, request id, term it was forwarded in): both in order.
        self._forward_expiry: deque[tuple[int, int, int]] = deque()
        timeout = self.options.forward_timeout
        if timeout is None:
            timeout = 5.0 + 2 * config.election_tick * self.options.tick_interval
        self._forward_ticks = max(1, round(timeout / self.options.tick_interval))
        # Unique to this process: an entry proposed by an earlier incarnation of this node
        # (still in the log when it restarts) never answers a new request.
        self._request_ids = itertools.count(random.SystemRandom().getrandbits(62))
        self._tick_count = 0
        # (deadline on the loop's clock, sequence, request): proposals given a timeout, which
        # fail with TimeoutError at the first tick after it (cheaper than a timer each).
        self._deadlines: list[tuple[float, int, asyncio.Future[Any]]] = []
        self._deadline_seq = itertools.count()
        self._batch_window = min(self.options.batch_window, self.options.tick_interval / 4)
        self._last_round = 0.0
        self._conf_changes: list[tuple[ConfChange, asyncio.Future[Any]]] = []
        self._reads: list[asyncio.Future[int]] = []  # for the next ReadIndex request
        self._pending: dict[int, tuple[int, asyncio.Future[Any]]] = {}  # index -> (term, fut)
        # The ReadIndex request in flight (its context, its reads, the tick it was made),
        # until its ReadState comes; then its reads with their index until it is applied.
        self._read_asked: tuple[bytes, list[asyncio.Future[int]], int] | None = None
        self._read_ready: list[tuple[int, list[asyncio.Future[int]]]] = []
        self._read_retry_ticks = max(1, config.election_tick // 2)
        self._read_ids = itertools.count(1)
        self._ticks = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False  # no more requests: stop() was called, or the loop failed
        self._closed = False  # stop() was called
        self.leader = 0
        self.role = StateRole.FOLLOWER
        self.leader_listeners: list[Callable[[int, int], None]] = []
        """Called with (leader id, term) whenever the known leader changes."""
        self.failure: Exception | None = None
        """Why the node stopped on its own: its loop failed (a bug, a failed WAL write) or
        writing a snapshot did. None while it runs, or after stop()."""
        self.failure_listeners: list[Callable[[Exception], None]] = []
        """Called once, with the cause, when the node fails (see :attr:`failure`): it then
        serves nothing, and its process should stop (see ConferServer.fail)."""

    @property
    def id(self) -> int:
        return self.node.id

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        self.transport.set_handler(self._on_message)
        self._tasks = [asyncio.create_task(self._run(), name=f"raft-{self.id}"),
                       asyncio.create_task(self._ticker(), name=f"tick-{self.id}")]

    async def stop(self) -> None:
        """Stop driving the node. Queued and in-flight requests fail with NodeStopped."""
        if self._closed:
            return
        self._closed = True
        self._stopped = True
        self._wake.set()
        if self._snapshot_job is not None:
            self._tasks.append(self._snapshot_job)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.transport.close()
        self._fail_all(NodeStopped(f"node {self.id} stopped"))

    # -- requests ---------------------------------------------------------------------------------
    async def propose(self, data: bytes, forward: bool = False,
                      timeout: float | None = None) -> Any:
        """Replicate ``data`` and return the state machine's result for it once applied here.

        Only the leader proposes, unless ``forward``: then a follower forwards ``data`` to the
        leader through Raft, and fails with OutcomeUnknown if it is not applied within
        ``forward_timeout``. NotLeader when this node does not lead (``forward``: when it
        knows no leader). With ``timeout`` (seconds), TimeoutError at the first tick after it
        (the write may still be applied).
        """
        fut = self._new_future()
        if self._inflight() >= self.options.max_inflight:
            raise Overloaded(self.id, self.options.max_inflight, self.leader)
        self._proposals.append((data, forward, fut))
        if timeout is not None:
            heapq.heappush(self._deadlines, (fut.get_loop().time() + timeout,
                                             next(self._deadline_seq), fut))
        self._wake.set()
        return await fut

    async def change_membership(self, cc: ConfChange) -> ConfState:
        """Propose a single-server membership change; returns the membership once committed."""
        fut: asyncio.Future[ConfState] = self._new_future()
        self._conf_changes.append((cc, fut))
        self._wake.set()
        return await fut

    async def read_barrier(self) -> int:
        """Wait until a linearizable read may be served locally; returns the read index."""
        fut: asyncio.Future[int] = self._new_future()
        self._reads.append(fut)
        self._wake.set()
        return await fut

    def transfer_leadership(self, target: int) -> None:
        self.node.transfer_leader(target)
        self._wake.set()

    def campaign(self) -> None:
        self.node.campaign()
        self._wake.set()

    def report_unreachable(self, node_id: int) -> None:
        """The transport failed to deliver to ``node_id``: stop pipelining to it."""
        self.node.report_unreachable(node_id)

    @property
    def term(self) -> int:
        """The core's current term (cheap: read for every response header)."""
        return self.node.term

    def basic_status(self) -> BasicStatus:
        """The core's term, vote, leader, role and indexes, now."""
        return self.node.basic_status()

    def status(self) -> Status:
        """:meth:`basic_status` plus the membership and the leader's view of progress."""
        return self.node.status()

    @property
    def conf_state(self) -> ConfState:
        """The membership in force now (cheap, unlike :meth:`status`)."""
        return self.node.conf_state

    def _new_future(self) -> asyncio.Future[Any]:
        if self._stopped:
            raise NodeStopped(f"node {self.id} is stopped")
        return asyncio.get_running_loop().create_future()

    # -- the loop ---------------------------------------------------------------------------------
    def _on_message(self, m: Message) -> None:
        self._inbox.append(m)
        self._wake.set()

    async def _ticker(self) -> None:
        # Ticks keep to a fixed grid: sleeping a whole interval after each wake-up let every
        # tick's lateness add up (2% slower ticks on an idle loop, more on a busy one, so
        # longer election timeouts). A tick a whole interval late (the loop was stalled)
        # starts the grid afresh rather than firing the missed ticks in a burst: a burst
        # could fire an election timeout before the messages that arrived meanwhile are
        # stepped.
        loop = asyncio.get_running_loop()
        interval = self.options.tick_interval
        due = loop.time() + interval
        while True:
            await asyncio.sleep(due - loop.time())
            self._ticks += 1
            self._wake.set()
            due += interval
            if due <= loop.time():
                due = loop.time() + interval

    async def _run(self) -> None:
        node = self.node
        loop = asyncio.get_running_loop()
        while not self._stopped:
            await self._wake.wait()
            if self._batch_window:
                # Let requests, proposals and acks pile up into one round: one Ready, one
                # fsync and one message per peer for all of them.
                wait = self._last_round + self._round_spacing() - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            self._last_round = loop.time()
            self._wake.clear()
            if self._stopped:  # failed while waiting (writing a snapshot): no more rounds
                return
            try:
                while self._ticks:
                    self._ticks -= 1
                    self._tick_count += 1
                    node.tick()
                expiry = self._forward_expiry
                if expiry and expiry[0][0] <= self._tick_count:
                    self._expire_forwarded()
                if self._deadlines and self._deadlines[0][0] <= loop.time():
                    self._expire_deadlines(loop.time())
                forwarded = self._step_inbox() if self._inbox else 0
                if self._proposals:
                    self._submit_proposals(forwarded)
                if self._conf_changes:
                    self._submit_conf_changes()
                if self._reads or self._read_asked is not None:  # (retried if unanswered)
                    self._submit_reads()
                while node.has_ready() and not self._stopped:
                    await self._handle_ready(node.ready())
                if self._snapshot_built is not None:
                    self._record_snapshot()
            except Exception as e:
                self._fail(e)
                return  # stop() still ends the ticker and closes the transport

    def _fail(self, cause: Exception) -> None:
        """The node cannot go on: its loop failed (the Ready being handled was neither
        sent nor advanced, so nothing it held was acknowledged), or writing a snapshot
        did. Every waiting request fails, and the listeners (the process) learn why. One
        line at ERROR; the traceback only at DEBUG (a full disk is not a bug, and its
        traceback would only bury the cause)."""
        if self.failure is not None or self._closed:
            return
        log.error("node %d stops serving: %s", self.id, describe_failure(cause))
        log.debug("node %d: failure", self.id, exc_info=cause)
        self._stopped = True
        self.failure = cause
        self._wake.set()  # the loop, if it is waiting (a snapshot failed), sees it and ends
        self._fail_all(NodeStopped(f"node {self.id} failed: {describe_failure(cause)}"))
        for listener in self.failure_listeners:
            listener(cause)

    def _inflight(self) -> int:
        """Writes in flight on this node (see ``NodeOptions.max_inflight``)."""
        inflight = len(self._proposals) + len(self._pending) + len(self._forwarded)
        if self.role == StateRole.LEADER:
            return max(inflight, self.node.uncommitted)
        return inflight

    def _round_spacing(self) -> float:
        """The batching window for the load now: none when lightly loaded."""
        inflight = self._inflight()
        low = self.options.batch_min_inflight
        if inflight < low:
            return 0.0
        return self._batch_window * min(1.0, inflight / (2 * low))

    def _step_inbox(self) -> int:
        """Step the messages that arrived since the last round; return how many forwarded
        entries a leader took from them. Forwarded proposals (PROP) take at most their share
        of the round (``NodeOptions.max_round_entries``: all of it but what the local
        proposals waiting may claim, up to half); the PROPs after that wait for the next
        round, in order, while every other message is stepped now. One PROP is always taken,
        however large, so that each round makes progress."""
        inbox, self._inbox = self._inbox, []
        node = self.node
        if node.role != StateRole.LEADER:
            for m in inbox:
                node.step(m)
            return 0
        budget = self.options.max_round_entries
        share = budget - min(len(self._proposals), budget // 2)
        taken = 0
        deferred: list[Message] = []
        for m in inbox:
            if m.type == _PROP:
                if deferred or (taken and taken + len(m.entries) > share):
                    deferred.append(m)
                    continue
                taken += len(m.entries)
            node.step(m)
        if deferred:
            self._inbox[:0] = deferred
            self._wake.set()
        return taken

    def _submit_proposals(self, forwarded: int = 0) -> None:
        """Propose (or, not leading, forward) the writes queued, at most what is left of the
        round's entries after the ``forwarded`` ones, and at least half of them; the others
        wait for the next round, in order."""
        budget = self.options.max_round_entries
        room = max(budget - forwarded, budget // 2)
        if len(self._proposals) > room:
            batch, self._proposals = self._proposals[:room], self._proposals[room:]
            self._wake.set()
        else:
            batch, self._proposals = self._proposals, []
        # The core's role now, not the last Ready's: this round's ticks and messages may
        # have changed it.
        node = self.node
        if node.role != StateRole.LEADER:
            self._forward_proposals(batch, node.leader)
            return
        live = [(d, f) for d, _, f in batch if not f.done()]
        if not live:
            return
        try:
            last, term = self.node.propose(*(d for d, _ in live))
        except (ProposalDropped, ValueError) as e:
            for _, f in live:
                f.set_exception(e)
            return
        first = last - len(live) + 1
        for i, (_, f) in enumerate(live):
            self._pending[first + i] = (term, f)

    def _forward_proposals(self, batch: list[tuple[bytes, bool, asyncio.Future[Any]]],
                           leader: int) -> None:
        """Not leading: forward the proposals that may be (tagged with request ids, in one
        PROP message), refuse the others."""
        ids: list[int] = []
        tagged: list[bytes] = []
        futures: list[asyncio.Future[Any]] = []
        for data, forward, f in batch:
            if f.done():
                continue
            if not forward:
                f.set_exception(NotLeader(leader))
                continue
            rid = next(self._request_ids) & 0xFFFF_FFFF_FFFF_FFFF
            ids.append(rid)
            tagged.append(wrap_forwarded(rid, data))
            futures.append(f)
        if not futures:
            return
        try:
            self.node.propose(*tagged)
        except (ProposalDropped, ValueError) as e:
            for f in futures:
                f.set_exception(e)
            return
        deadline = self._tick_count + self._forward_ticks
        term = self.node.term
        waiting = self._forwarded
        expiry = self._forward_expiry
        for rid, f in zip(ids, futures, strict=True):
            waiting[rid] = f
            expiry.append((deadline, rid, term))

    def _expire_deadlines(self, now: float) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            f = heapq.heappop(deadlines)[2]
            if not f.done():
                f.set_exception(TimeoutError("the write was not applied in time"))

    def _expire_forwarded(self) -> None:
        expiry = self._forward_expiry
        now = self._tick_count
        while expiry and expiry[0][0] <= now:
            f = self._forwarded.pop(expiry.popleft()[1], None)
            if f is not None and not f.done():
                f.set_exception(OutcomeUnknown(
                    "a write forwarded to the leader was not applied in time: the leader may "
                    "have dropped it (leader change or transfer), or may yet apply it"))

    def _expire_forwarded_before(self, term: int) -> None:
        """An entry of ``term`` was applied: the writes forwarded in earlier terms that are
        still waiting were lost with their leader. The log's terms only grow, so whatever
        that leader appended came before this entry and was applied already; only a
        proposal still in flight, passed on by a deposed leader, could yet be appended."""
        expiry = self._forward_expiry
        while expiry and expiry[0][2] < term:
            _, rid, forwarded_in = expiry.popleft()
            f = self._forwarded.pop(rid, None)
            if f is not None and not f.done():
                f.set_exception(OutcomeUnknown(
                    f"a write forwarded to the leader of term {forwarded_in} was not applied "
                    f"before the entries of term {term}: that leader lost it (or, passed on "
                    "by it, another may yet apply it)"))

    def _submit_conf_changes(self) -> None:
        batch, self._conf_changes = self._conf_changes, []
        for cc, f in batch:
            if f.done():
                continue
            try:
                index, term = self.node.propose_conf_change(cc)
            except (ProposalDropped, ValueError) as e:
                f.set_exception(e)
            else:
                self._pending[index] = (term, f)

    def _submit_reads(self) -> None:
        """One ReadIndex request at a time, for all the reads that arrived until it is made
        (as etcd's read loop does): under load, each request carries every read that came
        while the one before was answered, so a follower sends the leader one message for
        them, and the leader confirms them with one heartbeat round. Every one of them
        began before the request is made, so the index the leader confirms is at least the
        commit index when each began: what each must see. A request not answered within
        half an election timeout (a message lost) is made again, with its reads."""
        asked = self._read_asked
        if asked is not None:
            if self._tick_count - asked[2] < self._read_retry_ticks:
                return  # these go with the next request, once this one is answered
            self._reads = asked[1] + self._reads
        batch, self._reads = self._reads, []
        batch = [f for f in batch if not f.done()]  # not those given up (deadline passed)
        self._read_asked = None
        if not batch:
            return
        ctx = b"%d" % next(self._read_ids)
        try:
            self.node.read_index(ctx)
        except NotLeader as e:
            for f in batch:
                f.set_exception(e)
        else:
            self._read_asked = (ctx, batch, self._tick_count)

    async def _handle_ready(self, rd: Ready) -> None:
        # 1. Persist, and make it durable before anything that depends on it leaves. A slow
        #    fsync runs in a thread: meanwhile the event loop keeps taking requests, which
        #    then share the next batch (pipelined group commit); see inline_sync_limit.
        storage = self.storage
        if rd.snapshot is not None:
            storage.apply_snapshot(rd.snapshot)
        if rd.entries:
            start = time.perf_counter()
            storage.append(rd.entries)
            self.timings.append.observe(time.perf_counter() - start)
        if rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
        if rd.must_sync:
            if self._sync_cost < self.options.inline_sync_limit:
                cost = _timed(storage.sync)
            else:
                cost = await asyncio.get_running_loop().run_in_executor(None, _timed,
                                                                        storage.sync)
            self._sync_cost += (cost - self._sync_cost) / 8
            self.timings.fsync.observe(cost)
        # 2. Send.
        if rd.messages:
            self.transport.send(rd.messages)
        # 3. Apply.
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.leader, rd.soft_state.role)
        if rd.snapshot is not None:
            self._restore(rd)
        if rd.committed_entries:
            self._apply(rd)
        asked = self._read_asked
        if asked is not None:
            for rs in rd.read_states:
                if rs.context == asked[0]:
                    self._read_ready.append((rs.index, asked[1]))
                    self._read_asked = None
                    if self._reads:
                        self._wake.set()  # the reads that waited: the next request
                    break
        if self._read_ready:
            self._release_reads()
        # 4. Acknowledge.
        self.node.advance(rd)
        self._maybe_snapshot()

    def _on_soft_state(self, leader: int, role: StateRole) -> None:
        if role != self.role:
            log.debug("node %d: %s in term %d (leader %d)", self.id, role.name.lower(),
                      self.node.term, leader)
        changed = leader != self.leader
        if changed:
            # Reads waiting on the old leader's confirmation will never be answered.
            self._fail_reads(NotLeader(leader))
            if self._forward_expiry:
                # Writes forwarded to the old leader may be lost with it: give them one
                # election timeout to turn up in the log, not the whole forward timeout.
                # (Deadlines stay in order: the earlier ones are only capped.)
                cutoff = self._tick_count + self._election_tick
                self._forward_expiry = deque((min(deadline, cutoff), rid, term)
                                             for deadline, rid, term in self._forward_expiry)
        self.leader = leader
        self.role = role
        if changed:
            term = self.node.term
            for listener in self.leader_listeners:
                listener(leader, term)

    def _restore(self, rd: Ready) -> None:
        assert rd.snapshot is not None
        index = rd.snapshot.meta.index
        start = time.perf_counter()
        self.fsm.restore(rd.snapshot.data)
        self.timings.snapshot_apply.observe(time.perf_counter() - start)
        self.applied_index = index
        self._snapshot_index = index
        self._staggered = False  # now in step with the leader's snapshots: part again
        for i in [i for i in self._pending if i <= index]:
            _, f = self._pending.pop(i)
            if not f.done():
                f.set_exception(OutcomeUnknown(f"entry {i} was replaced by a snapshot"))
        # A forwarded proposal may be in the snapshot, or may still be applied after it.
        forwarded, self._forwarded = self._forwarded, {}
        for f in forwarded.values():
            if not f.done():
                f.set_exception(OutcomeUnknown("a snapshot replaced the log while a forwarded "
                                               "write was pending"))

    def _apply(self, rd: Ready) -> None:
        fsm = self.fsm
        pending = self._pending
        forwarded = self._forwarded
        for e in rd.committed_entries:
            if e.type == EntryType.NORMAL:
                data = e.data
                if not data or data[0] != _FORWARDED:
                    result = fsm.apply(e) if data else None
                else:  # proposed by a follower: apply the command without its wrapper
                    rid, command = unwrap_forwarded(data)
                    result = fsm.apply(Entry(e.index, e.term, command)) if command else None
                    if forwarded:
                        f = forwarded.pop(rid, None)
                        if f is not None and not f.done():
                            f.set_result(result)
            else:
                result = self.node.conf_state_at(e.index)
                fsm.apply_conf_change(e.index, ConfChange.decode(e.data), result)
            if pending:
                waiter = pending.pop(e.index, None)
                if waiter is not None and not waiter[1].done():
                    term, f = waiter
                    if term == e.term:
                        f.set_result(result)
                    else:
                        f.set_exception(ProposalDropped("lost to a leader change", self.leader))
        last = rd.committed_entries[-1]
        self.applied_index = last.index
        expiry = self._forward_expiry
        if expiry and expiry[0][2] < last.term:
            self._expire_forwarded_before(last.term)

    def _release_reads(self) -> None:
        applied = self.applied_index
        waiting = []
        for index, reads in self._read_ready:
            if index <= applied:
                for f in reads:
                    if not f.done():
                        f.set_result(index)
            else:
                waiting.append((index, reads))
        self._read_ready = waiting

    def _maybe_snapshot(self) -> None:
        applied = self.applied_index
        due = applied - self._snapshot_index - self.options.snapshot_every
        if due < 0 or self._snapshot_job is not None:
            return
        if not self._staggered:
            if due < self._snapshot_offset():
                return
            self._staggered = True
        conf = self.node.conf_state_at(applied)
        if not self.options.background_snapshots:
            self.storage.create_snapshot(applied, conf, self.fsm.snapshot())
            self._compact_after_snapshot(applied)
            return
        # The state as of now is captured at once; the rest runs beside the Raft loop.
        meta = SnapshotMeta(applied, self.storage.term(applied), conf)
        self._snapshot_job = asyncio.create_task(
            self._build_snapshot(meta, self.fsm.snapshot_steps()), name=f"snapshot-{self.id}")

    def _snapshot_offset(self) -> int:
        """How many entries more than ``snapshot_every`` this member waits for its first
        snapshot since it started (or restored one): ``snapshot_every / 2`` times its rank
        among the voters over their number. Without it every member reached the same index
        at the same moment and snapshotted together: three snapshots at once on a machine's
        CPUs and disk (the WAL's fsyncs among them) stalled commits for a second or more. The
        members keep their distance afterwards, each snapshotting every ``snapshot_every``."""
        voters = sorted(self.node.conf_state.voters)
        if self.id not in voters:
            return 0
        return self.options.snapshot_every * voters.index(self.id) // (2 * len(voters))

    async def _build_snapshot(self, meta: SnapshotMeta, steps: SnapshotSteps) -> None:
        """Serialise the state machine a slice per loop turn, then join the parts and write
        the file in a thread (``bytes.join`` and file writes release the GIL: a snapshot
        of tens of megabytes would otherwise stop the loop for a large fraction of a
        second); the Raft loop records it (:meth:`_record_snapshot`)."""
        loop = asyncio.get_running_loop()
        save = self.storage.save_snapshot_file

        def finish(parts: list[bytes]) -> bytes:
            data = b"".join(parts)
            save(meta, data)
            return data

        start = time.perf_counter()
        try:
            parts = None
            for parts in steps:
                if parts is not None:
                    break
                await asyncio.sleep(0)
            assert parts is not None
            data = await loop.run_in_executor(None, finish, parts)
        except asyncio.CancelledError:
            raise
        except OSError as e:  # the disk failed (full, EIO): as for the WAL, stop (etcd too)
            self._snapshot_job = None
            self._fail(e)
            return
        except Exception as e:  # aborted by a compaction or a restore meanwhile
            log.info("node %d: snapshot at %d abandoned (%s); will retry", self.id,
                     meta.index, e)
            self._snapshot_job = None
            return
        self.timings.snapshot_save.observe(time.perf_counter() - start)
        self._snapshot_built = (meta, data)
        self._wake.set()

    def _record_snapshot(self) -> None:
        assert self._snapshot_built is not None
        meta, data = self._snapshot_built
        self._snapshot_built = None
        self._snapshot_job = None
        if meta.index <= self._snapshot_index:
            return  # a newer snapshot was installed meanwhile
        self.storage.create_snapshot(meta.index, meta.conf_state, data, saved=meta)
        self._compact_after_snapshot(meta.index)

    def _compact_after_snapshot(self, index: int) -> None:
        self._snapshot_index = index
        compact_to = index - self.options.keep_entries
        storage = self.storage
        if compact_to >= storage.first_index():
            # The next Ready's sync (in a worker thread if the disk is slow) makes the
            # compaction durable and deletes the obsolete files.
            storage.compact(compact_to, sync=False)
        self.node.compacted(index)

    def _fail_reads(self, exc: Exception) -> None:
        if self._read_asked is not None:
            for f in self._read_asked[1]:
                if not f.done():
                    f.set_exception(exc)
            self._read_asked = None
            if self._reads:
                self._wake.set()  # the reads that waited: a request to the new leader

    def _fail_all(self, exc: NodeStopped) -> None:
        """Fail every waiting request: with ``exc`` those that never reached the log, with
        OutcomeUnknown the writes that did (appended here, or forwarded to the leader): the
        others may have them, or this node's log may, and commit them later."""
        self._fail_reads(exc)
        futures = [f for _, _, f in self._proposals] + [f for _, f in self._conf_changes]
        futures += self._reads + [f for _, reads in self._read_ready for f in reads]
        for f in futures:
            if not f.done():
                f.set_exception(exc)
        unknown = OutcomeUnknown(f"{exc}; the write may still be applied")
        for f in [f for _, f in self._pending.values()] + list(self._forwarded.values()):
            if not f.done():
                f.set_exception(unknown)
        self._proposals, self._conf_changes, self._reads = [], [], []
        self._pending.clear()
        self._forwarded.clear()
        self._forward_expiry.clear()
        self._deadlines.clear()
        self._read_ready = []


def describe_failure(exc: BaseException) -> str:
    """One line naming an exception and, if it wraps one (a failed WAL write), its cause."""
    text = f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__
    if cause is not None and str(cause) not in text and repr(cause) not in text:
        text += f" (caused by {type(cause).__name__}: {cause})"
    return text.replace("\n", " ")


def _timed(call: Callable[[], object]) -> float:
    """Seconds ``call()`` took."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start
