"""The asyncio driver of one Raft node: ticks, messages, proposals and reads in; Ready out.

All Raft work happens in one task (``_run``), so the pure core is never entered concurrently.
Each wake-up drains everything queued since the last one, which is what turns many concurrent
proposals into one append, one fsync and one message per follower.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confer.raft.core import Config
from confer.raft.errors import NotLeader, ProposalDropped, RaftError
from confer.raft.fsm import StateMachine
from confer.raft.rawnode import RawNode, Status
from confer.raft.storage import WritableLogStorage
from confer.raft.types import (
    ConfChange,
    ConfState,
    EntryType,
    Message,
    Ready,
    StateRole,
)
from confer.server.transport import Transport

log = logging.getLogger("confer.node")


class OutcomeUnknown(RaftError):
    """The proposal may or may not have been committed (e.g. replaced by a snapshot)."""


class NodeStopped(RaftError):
    """The node was stopped before the request completed."""


@dataclass(slots=True)
class NodeOptions:
    tick_interval: float = 0.1
    """Seconds per Raft tick. Election timeout = election_tick x tick_interval."""
    snapshot_every: int = 10_000
    """Take a snapshot after this many applied entries."""
    keep_entries: int = 5_000
    """Entries kept in the log behind a snapshot, so slightly lagging followers need no
    snapshot transfer."""
    sync_in_thread: bool = True
    """Run fsync off the event loop (off for in-memory storage, where it costs nothing)."""


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
        self.node = RawNode(config, storage, rng)
        self.applied_index = snap.meta.index
        self._snapshot_index = snap.meta.index
        self._inbox: list[Message] = []
        self._proposals: list[tuple[bytes, asyncio.Future[Any]]] = []
        self._conf_changes: list[tuple[ConfChange, asyncio.Future[Any]]] = []
        self._reads: list[tuple[bytes, asyncio.Future[int]]] = []
        self._pending: dict[int, tuple[int, asyncio.Future[Any]]] = {}  # index -> (term, fut)
        self._read_wait: dict[bytes, asyncio.Future[int]] = {}  # waiting for a ReadState
        self._read_ready: list[tuple[int, asyncio.Future[int]]] = []  # waiting for apply
        self._read_ids = itertools.count(1)
        self._ticks = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self.leader = 0
        self.role = StateRole.FOLLOWER
        self.leader_listeners: list[Callable[[int, int], None]] = []
        """Called with (leader id, term) whenever the known leader changes."""

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
        if self._stopped:
            return
        self._stopped = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.transport.close()
        self._fail_all(NodeStopped(f"node {self.id} stopped"))

    # -- requests ---------------------------------------------------------------------------------
    async def propose(self, data: bytes) -> Any:
        """Replicate ``data`` and return the state machine's result for it once applied."""
        fut = self._new_future()
        self._proposals.append((data, fut))
        self._wake.set()
        return await fut

    async def change_membership(self, cc: ConfChange) -> ConfState:
        """Propose a single-server membership change; returns the membership once committed."""
        fut = self._new_future()
        self._conf_changes.append((cc, fut))
        self._wake.set()
        return await fut

    async def read_barrier(self) -> int:
        """Wait until a linearizable read may be served locally; returns the read index."""
        fut: asyncio.Future[int] = self._new_future()
        self._reads.append((b"%d" % next(self._read_ids), fut))
        self._wake.set()
        return await fut

    def transfer_leadership(self, target: int) -> None:
        self.node.transfer_leader(target)
        self._wake.set()

    def campaign(self) -> None:
        self.node.campaign()
        self._wake.set()

    def status(self) -> Status:
        return self.node.status()

    def _new_future(self) -> asyncio.Future[Any]:
        if self._stopped:
            raise NodeStopped(f"node {self.id} is stopped")
        return asyncio.get_running_loop().create_future()

    # -- the loop ---------------------------------------------------------------------------------
    def _on_message(self, m: Message) -> None:
        self._inbox.append(m)
        self._wake.set()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.options.tick_interval)
            self._ticks += 1
            self._wake.set()

    async def _run(self) -> None:
        node = self.node
        while not self._stopped:
            await self._wake.wait()
            self._wake.clear()
            try:
                while self._ticks:
                    self._ticks -= 1
                    node.tick()
                if self._inbox:
                    inbox, self._inbox = self._inbox, []
                    for m in inbox:
                        node.step(m)
                if self._proposals:
                    self._submit_proposals()
                if self._conf_changes:
                    self._submit_conf_changes()
                if self._reads:
                    self._submit_reads()
                while node.has_ready():
                    await self._handle_ready(node.ready())
            except Exception:
                log.exception("node %d: fatal error in the Raft loop; stopping", self.id)
                self._stopped = True
                self._fail_all(NodeStopped(f"node {self.id} failed"))
                raise

    def _submit_proposals(self) -> None:
        batch, self._proposals = self._proposals, []
        live = [(d, f) for d, f in batch if not f.done()]
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
        batch, self._reads = self._reads, []
        for ctx, f in batch:
            if f.done():
                continue
            try:
                self.node.read_index(ctx)
            except NotLeader as e:
                f.set_exception(e)
            else:
                self._read_wait[ctx] = f

    async def _handle_ready(self, rd: Ready) -> None:
        # 1. Persist, and make it durable before anything that depends on it leaves. The
        #    fsync runs in a thread: meanwhile the event loop keeps taking requests, which
        #    then share the next batch (pipelined group commit).
        storage = self.storage
        if rd.snapshot is not None:
            storage.apply_snapshot(rd.snapshot)
        if rd.entries:
            storage.append(rd.entries)
        if rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
        if rd.must_sync:
            if self.options.sync_in_thread:
                await asyncio.get_running_loop().run_in_executor(None, storage.sync)
            else:
                storage.sync()
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
        for rs in rd.read_states:
            f = self._read_wait.pop(rs.context, None)
            if f is not None and not f.done():
                self._read_ready.append((rs.index, f))
        if self._read_ready:
            self._release_reads()
        # 4. Acknowledge.
        self.node.advance(rd)
        self._maybe_snapshot()

    def _on_soft_state(self, leader: int, role: StateRole) -> None:
        changed = leader != self.leader
        if changed:
            # Reads waiting on the old leader's confirmation will never be answered.
            self._fail_reads(NotLeader(leader))
        self.leader = leader
        self.role = role
        if changed:
            term = self.node.raft.term
            for listener in self.leader_listeners:
                listener(leader, term)

    def _restore(self, rd: Ready) -> None:
        assert rd.snapshot is not None
        index = rd.snapshot.meta.index
        self.fsm.restore(rd.snapshot.data)
        self.applied_index = index
        self._snapshot_index = index
        for i in [i for i in self._pending if i <= index]:
            _, f = self._pending.pop(i)
            if not f.done():
                f.set_exception(OutcomeUnknown(f"entry {i} was replaced by a snapshot"))

    def _apply(self, rd: Ready) -> None:
        fsm = self.fsm
        pending = self._pending
        for e in rd.committed_entries:
            if e.type == EntryType.NORMAL:
                result = fsm.apply(e) if e.data else None
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
        self.applied_index = rd.committed_entries[-1].index

    def _release_reads(self) -> None:
        applied = self.applied_index
        waiting = []
        for index, f in self._read_ready:
            if f.done():
                continue
            if index <= applied:
                f.set_result(index)
            else:
                waiting.append((index, f))
        self._read_ready = waiting

    def _maybe_snapshot(self) -> None:
        applied = self.applied_index
        if applied - self._snapshot_index < self.options.snapshot_every:
            return
        conf = self.node.conf_state_at(applied)
        self.storage.create_snapshot(applied, conf, self.fsm.snapshot())
        self._snapshot_index = applied
        compact_to = applied - self.options.keep_entries
        if compact_to >= self.storage.first_index():
            self.storage.compact(compact_to)
        self.node.compacted(applied)

    def _fail_reads(self, exc: Exception) -> None:
        for f in self._read_wait.values():
            if not f.done():
                f.set_exception(exc)
        self._read_wait.clear()

    def _fail_all(self, exc: Exception) -> None:
        self._fail_reads(exc)
        futures = [f for _, f in self._proposals] + [f for _, f in self._conf_changes]
        futures += [f for _, f in self._reads] + [f for _, f in self._pending.values()]
        futures += [f for _, f in self._read_ready]
        for f in futures:
            if not f.done():
                f.set_exception(exc)
        self._proposals, self._conf_changes, self._reads = [], [], []
        self._pending.clear()
        self._read_ready = []
