"""Locks and elections (etcd's v3lock and v3election, server side), for both APIs.

They run on any member. A caller's key ``<name>/<lease hex>`` is created through the log (a
txn: create it if missing, else reuse it); then the caller waits, on this member's applied
state, until its key has the lowest create revision under the name. Each waiter waits only
for the deletion of its immediate predecessor (the key created just before it) or of its own
key, so releasing a lock wakes only the next waiter. Before granting, the member confirms
with a ReadIndex round that the caller's key still exists: a waiter whose lease ended while
it waited is refused. See docs/coordination.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from confer.kv import (
    CompactedError,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRange,
    EventType,
    KeyValue,
    KVStore,
    Put,
    RangeOp,
    RangeResult,
    SortOrder,
    SortTarget,
    Txn,
    TxnResult,
)
from confer.kv.paths import subtree_range
from confer.server.api.context import DEFAULT_TIMEOUT, Access, AccessKind, RequestContext
from confer.server.api.core import Core
from confer.server.api.errors import (
    CandidateVanished,
    LockHeldByOther,
    LockNotHeld,
    NoElectionLeader,
    NotElectionLeader,
    WaiterLost,
)

log = logging.getLogger("confer.coord")

CLEANUP_TIMEOUT = 10.0
"""How long deleting an abandoned waiter's key may take."""


def lease_hex(lease: int) -> str:
    """A lease id as it appears in lock and election keys: lowercase hex, no prefix (etcd)."""
    return f"{lease:x}"


def candidate_key(name: bytes, lease: int) -> bytes:
    """``<name>/<lease hex>``: a session's key under a lock or election name (etcd)."""
    return name + b"/" + lease_hex(lease).encode()


def _text(key: bytes) -> str:
    return key.decode("utf-8", "surrogateescape")


# -- waiting for deletions ---------------------------------------------------------------------
class DeletionNotifier:
    """Futures that resolve when one of a few keys is deleted from the applied state.

    Registered with the store's push listener, so a waiter that reads the state and then
    registers, with no ``await`` in between, cannot miss a deletion. A snapshot restore wakes
    every waiter (the state jumped: re-read it). A future's result is the deleted key (None
    after a restore).
    """

    def __init__(self, kv: KVStore) -> None:
        self._waiting: dict[bytes, set[asyncio.Future[bytes | None]]] = {}
        kv.add_listener(self._on_events)
        kv.add_restore_listener(self._on_restore)

    def deleted(self, keys: Iterable[bytes]) -> asyncio.Future[bytes | None]:
        """A future resolved when any of ``keys`` is deleted."""
        fut: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        watched = tuple(dict.fromkeys(keys))
        for key in watched:
            self._waiting.setdefault(key, set()).add(fut)
        fut.add_done_callback(lambda f: self._forget(f, watched))
        return fut

    def _forget(self, fut: asyncio.Future[bytes | None], keys: tuple[bytes, ...]) -> None:
        for key in keys:
            futures = self._waiting.get(key)
            if futures is not None:
                futures.discard(fut)
                if not futures:
                    del self._waiting[key]

    def _on_events(self, events: tuple[Any, ...]) -> None:
        if not self._waiting:
            return
        for e in events:
            if e.type == EventType.DELETE:
                for fut in list(self._waiting.get(e.kv.key, ())):
                    if not fut.done():
                        fut.set_result(e.kv.key)

    def _on_restore(self, revision: int) -> None:
        for futures in list(self._waiting.values()):
            for fut in list(futures):
                if not fut.done():
                    fut.set_result(None)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A lock waiter's or election candidate's key, as the create-or-reuse txn left it."""

    key: bytes
    rev: int
    """The key's create revision: its place in the queue, and the fencing token."""
    lease: int
    created: bool
    """Whether this call created the key (else it already existed and is reused)."""
    revision: int
    """The store revision after the txn."""
    value: bytes

    @property
    def path(self) -> str:
        return _text(self.key)


@dataclass(slots=True)
class CoordStats:
    """Counters of this member's lock and election waiters (since the process started)."""

    wakeups: int = 0
    """Times a waiter woke up because its predecessor's (or its own) key was deleted."""
    granted: int = 0
    refused: int = 0
    """Waiters refused because their key (their lease) was gone when their turn came."""


@dataclass(frozen=True, slots=True)
class LeaderChange:
    """An election's leader (or its new value), as of ``revision`` (0: now)."""

    kv: KeyValue
    revision: int


def _created_at(key: bytes, rev: int) -> Compare:
    return Compare(key, target=CompareTarget.CREATE, result=CompareResult.EQUAL, value=rev)


class CoordinationRequests:
    """Lock and Election, one per member."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.kv = core.kv
        self.notifier = DeletionNotifier(self.kv)
        self.stats = CoordStats()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- reads ----------------------------------------------------------------------------------
    def first(self, name: bytes, revision: int = 0) -> KeyValue | None:
        """The key under ``name`` with the lowest create revision (the lock holder, the
        elected leader), at ``revision`` (0: now)."""
        start, end = subtree_range(name)
        res = self.kv.range(start, end, revision=revision, sort_order=SortOrder.ASCEND,
                            sort_target=SortTarget.CREATE, limit=1)
        return res.kvs[0] if res.kvs else None

    def predecessor(self, name: bytes, rev: int) -> KeyValue | None:
        """The key under ``name`` created last before revision ``rev``, if any."""
        start, end = subtree_range(name)
        res = self.kv.range(start, end, max_create_revision=rev - 1,
                            sort_order=SortOrder.DESCEND, sort_target=SortTarget.CREATE,
                            limit=1, keys_only=True)
        return res.kvs[0] if res.kvs else None

    # -- writes ---------------------------------------------------------------------------------
    async def _txn(self, ctx: RequestContext, key: bytes, txn: Txn,
                   deadline: float | None = None) -> TxnResult:
        """Run ``txn`` on ``key`` through the log (by ``deadline``, if given, instead of the
        request's)."""
        if deadline is not None:
            ctx = dataclasses.replace(ctx, deadline=deadline)
        result: TxnResult = await self.core.write(ctx, txn, Access(AccessKind.WRITE, key))
        return result

    async def create_or_reuse(self, ctx: RequestContext, key: bytes, value: bytes,
                              lease: int) -> Candidate:
        get = RangeOp(key)
        result = await self._txn(ctx, key, Txn([_created_at(key, 0)],
                                               [Put(key, value, lease=lease), get], [get]))
        last = result.responses[-1]
        assert isinstance(last, RangeResult)
        if not last.kvs:
            raise CandidateVanished(f"{_text(key)}: the create-or-reuse txn read no key")
        kv = last.kvs[0]
        return Candidate(key, kv.create_revision, lease, result.succeeded, result.revision,
                         kv.value)

    async def delete_if_created_at(self, ctx: RequestContext, key: bytes, rev: int,
                                   deadline: float | None = None) -> TxnResult:
        """Delete ``key`` only if it is still the key created at ``rev``."""
        return await self._txn(ctx, key, Txn([_created_at(key, rev)], [DeleteRange(key)], []),
                               deadline)

    # -- waiting --------------------------------------------------------------------------------
    async def acquire(self, ctx: RequestContext, kind: str, name: bytes, value: bytes,
                      lease: int,
                      on_reuse: Callable[[Candidate], Awaitable[None]] | None = None
                      ) -> Candidate:
        """Create (or reuse) the caller's key and wait until it is first under ``name``.

        Waits until then, or until the call's deadline or cancellation (a caller that set no
        deadline may wait for ever); on any failure the key is deleted if this call created
        it (the deletion runs even after cancellation).
        """
        key = candidate_key(name, lease)
        self.core.check(ctx, Access(AccessKind.WRITE, key))
        # Waiting reads the other candidates' keys: etcd's lock needs read on the prefix.
        self.core.check(ctx, Access(AccessKind.READ, *subtree_range(name)))
        # Shielded: if the caller goes away while the key is being created, the result is
        # still needed, to delete the key again.
        creation = asyncio.ensure_future(self.create_or_reuse(ctx, key, value, lease))
        granted = False
        try:
            cand = await asyncio.shield(creation)
            if on_reuse is not None and not cand.created:
                await on_reuse(cand)
            if self.kv.revision < cand.revision:  # a follower that has not applied it yet
                await self.core.consensus.read_barrier(ctx.deadline)
            wait = self.wait_turn(ctx, kind, name, cand)
            if ctx.wait_until is None:
                await wait
            else:
                await asyncio.wait_for(wait, max(0.0, ctx.wait_until - time.monotonic()))
            granted = True
            self.stats.granted += 1
            return cand
        finally:
            if not granted:
                self._withdraw_later(ctx, kind, creation)

    async def wait_turn(self, ctx: RequestContext, kind: str, name: bytes, cand: Candidate
                        ) -> None:
        """Return once ``cand`` has the lowest create revision under ``name``.

        Waits for the deletion of the predecessor (the key created just before it) or of the
        candidate's own key, then looks again: only the next waiter wakes when a key goes.
        Raises WaiterLost if the candidate's key is gone, whether during the wait or at the
        end, after a ReadIndex round confirmed the latest state.
        """
        key, rev = cand.key, cand.rev
        while True:
            mine = self.kv.get(key)
            if mine is None or mine.create_revision != rev:
                raise self._lost(kind, name, cand)
            pred = self.predecessor(name, rev)
            if pred is None:
                break
            log.debug("%s %s: %s waits for %s", kind, _text(name), cand.path, _text(pred.key))
            gone = await self.notifier.deleted((pred.key, key))
            self.stats.wakeups += 1
            log.debug("%s %s: waiter %s woke up: %s was deleted", kind, _text(name),
                      cand.path, _text(gone) if gone else "(state restored)")
        # First in line on this member's state. etcd once granted a lock here to a waiter
        # whose lease had expired meanwhile: confirm against the latest committed state.
        await self.core.consensus.read_barrier(_from_now(DEFAULT_TIMEOUT))
        mine = self.kv.get(key)
        if mine is None or mine.create_revision != rev:
            raise self._lost(kind, name, cand)

    def _lost(self, kind: str, name: bytes, cand: Candidate) -> WaiterLost:
        self.stats.refused += 1
        return WaiterLost(kind, name.decode(errors="replace"), cand.path, cand.lease,
                          self.kv.lease_ttl(cand.lease) is None)

    def _withdraw_later(self, ctx: RequestContext, kind: str,
                        creation: asyncio.Future[Candidate]) -> None:
        task = asyncio.ensure_future(self._withdraw(ctx, kind, creation))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _withdraw(self, ctx: RequestContext, kind: str,
                        creation: asyncio.Future[Candidate]) -> None:
        """Delete the key of a waiter that gave up, if its own call created it."""
        try:
            cand = await creation
        except BaseException:  # not created (or the server is stopping): nothing to delete
            return
        if not cand.created:
            return  # it existed before this call (e.g. the lease already holds the lock)
        try:
            await self.delete_if_created_at(ctx, cand.key, cand.rev,
                                            _from_now(CLEANUP_TIMEOUT))
            log.debug("%s: withdrew %s", kind, cand.path)
        except Exception as e:
            log.warning("%s: could not delete the abandoned key %s (its lease will): %s", kind,
                        cand.path, e)

    # -- locks ----------------------------------------------------------------------------------
    async def lock(self, ctx: RequestContext, name: bytes, lease: int) -> Candidate:
        """Wait until the caller's lease holds the lock ``name``; the candidate's create
        revision is the fencing token."""
        return await self.acquire(ctx, "lock", name, b"", lease)

    async def unlock(self, ctx: RequestContext, key: bytes, lease: int = 0) -> TxnResult:
        """Delete a lock key; with ``lease``, only if that lease holds it (LockNotHeld,
        LockHeldByOther)."""
        held = [Compare(key, target=CompareTarget.VERSION, result=CompareResult.GREATER,
                        value=0)]
        if lease:
            held.append(Compare(key, target=CompareTarget.LEASE, result=CompareResult.EQUAL,
                                value=lease))
        result = await self._txn(ctx, key, Txn(held, [DeleteRange(key)], [RangeOp(key)]))
        if not result.succeeded:
            found = result.responses[0]
            assert isinstance(found, RangeResult)
            if not found.kvs:
                raise LockNotHeld(_text(key))
            raise LockHeldByOther(_text(key), found.kvs[0].lease, lease)
        return result

    # -- elections ------------------------------------------------------------------------------
    async def campaign(self, ctx: RequestContext, name: bytes, lease: int, value: bytes
                       ) -> Candidate:
        """Wait until the caller's lease leads the election ``name``. Campaigning again with
        a lease that already has a key there proclaims the new value (etcd)."""
        async def on_reuse(cand: Candidate) -> None:
            if cand.value != value:
                await self.proclaim(ctx, cand.key, cand.rev, cand.lease, value)

        return await self.acquire(ctx, "election", name, value, lease, on_reuse)

    async def proclaim(self, ctx: RequestContext, key: bytes, rev: int, lease: int,
                       value: bytes, *, check_lease: bool = True) -> TxnResult:
        """Set the leader's value, only while ``key`` is still the key created at ``rev``
        (and, with ``check_lease``, still held by ``lease``): NotElectionLeader otherwise."""
        compares = [_created_at(key, rev)]
        if check_lease:
            compares.append(Compare(key, target=CompareTarget.LEASE,
                                    result=CompareResult.EQUAL, value=lease))
        result = await self._txn(ctx, key, Txn(compares, [Put(key, value, lease=lease)], []))
        if not result.succeeded:
            raise NotElectionLeader(_text(key), rev, lease)
        return result

    async def resign(self, ctx: RequestContext, key: bytes, rev: int) -> TxnResult:
        return await self.delete_if_created_at(ctx, key, rev)

    async def leader(self, ctx: RequestContext, name: bytes) -> KeyValue:
        """The election's leader now (linearizable); NoElectionLeader if there is none."""
        await self.core.read(ctx, Access(AccessKind.READ, *subtree_range(name)))
        kv = self.first(name)
        if kv is None:
            raise NoElectionLeader(name.decode(errors="replace"))
        return kv

    async def observe(self, ctx: RequestContext, name: bytes) -> AsyncIterator[LeaderChange]:
        """The current leader, then each new leader (or new value of the leader's key), as
        of the revision that made it so: no leader is skipped."""
        start, end = subtree_range(name)
        await self.core.read(ctx, Access(AccessKind.READ, start, end))
        hub = self.core.host.hub
        watcher = hub.watcher(start, end, self.kv.revision + 1)  # no await since the read
        last: tuple[bytes, int] | None = None
        revision = 0
        async with contextlib.aclosing(hub.events(watcher)) as batches:
            while True:
                try:
                    current = self.first(name, revision)
                except CompactedError:
                    current = self.first(name)
                if current is not None and (current.key, current.mod_revision) != last:
                    last = (current.key, current.mod_revision)
                    yield LeaderChange(current, revision)
                revision = (await anext(batches))[-1].kv.mod_revision


def _from_now(seconds: float) -> float:
    return time.monotonic() + seconds
