"""gRPC services of coord.proto: ``Lease``, ``Lock`` and ``Election``.

- ``Lease``: Grant and Revoke are log writes (a follower forwards them to the leader through
  Raft, as every write). KeepAlive and TimeToLive need the leader's clock
  (:mod:`confer.server.leases`): a follower forwards TimeToLive, and proxies a KeepAlive
  stream, request by request, to whichever node leads, following leader changes.
- ``Lock`` and ``Election`` (etcd's v3lock and v3election, server side) run on any member. A
  caller's key ``<name>/<lease hex>`` is created through the log (a Txn: create it if missing,
  else reuse it); then the caller waits, on this member's applied state, until its key has the
  lowest create revision under the name. Each waiter waits only for the deletion of its
  immediate predecessor (the key created just before it) or of its own key, so releasing a
  lock wakes only the next waiter. Before granting, the member confirms with a ReadIndex round
  that the caller's key still exists: a waiter whose lease ended while it waited is refused.

See docs/coordination.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from confer.kv import (
    CompactedError,
    EventType,
    InvalidArgument,
    KeyValue,
    KVStore,
    LeaseGrant,
    LeaseRevoke,
    SortOrder,
    SortTarget,
    validate_command,
)
from confer.kv.paths import subtree_range, validate_path, validate_value
from confer.raft.errors import NotLeader
from confer.server.app import ConferServer, NoLeader
from confer.server.registry import GenericHandlersOnly
from confer.server.services import (
    DEFAULT_TIMEOUT,
    FORWARD_METADATA,
    Base,
    Code,
    KVService,
    RpcError,
    forwarded,
    kv_to_pb,
    path_key,
    rpc,
    stream_rpc,
    timeout_of,
    to_leader,
)
from confer.v1 import coord_pb2, coord_pb2_grpc, kv_pb2

log = logging.getLogger("confer.coord")

T = TypeVar("T")
CLEANUP_TIMEOUT = 10.0
"""How long deleting an abandoned waiter's key may take."""


def lease_hex(lease: int) -> str:
    """A lease id as it appears in lock and election keys: lowercase hex, no prefix (etcd)."""
    return f"{lease:x}"


def describe_lease(lease: int) -> str:
    return f"lease {lease} ({lease:#x})"


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
        return self.key.decode("utf-8", "surrogateescape")


@dataclass(slots=True)
class CoordStats:
    """Counters of this member's lock and election waiters (since the process started)."""

    wakeups: int = 0
    """Times a waiter woke up because its predecessor's (or its own) key was deleted."""
    granted: int = 0
    refused: int = 0
    """Waiters refused because their key (their lease) was gone when their turn came."""


class Coordinator:
    """What Lock and Election share: the create-or-reuse txn, waiting for one's turn, and
    withdrawing a waiter that gave up. One per server."""

    def __init__(self, server: ConferServer) -> None:
        self.server = server
        self.kv = server.fsm.kv
        self.kv_service = KVService(server)
        self.limits = self.kv_service.limits
        self.notifier = DeletionNotifier(self.kv)
        self.stats = CoordStats()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- keys and reads ---------------------------------------------------------------------------
    def candidate_key(self, name: bytes, lease: int) -> bytes:
        """``<name>/<lease hex>``, checked against the key rules (length included)."""
        key = name + b"/" + lease_hex(lease).encode()
        return validate_path(key.decode("utf-8", "surrogateescape"), self.limits[0])

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

    # -- writes -----------------------------------------------------------------------------------
    async def txn(self, req: kv_pb2.TxnRequest, timeout: float) -> kv_pb2.TxnResponse:
        """Run a Txn through the log (forwarded to the leader through Raft from a
        follower)."""
        cmd = self.kv_service.txn_command(req)
        return self.kv_service.txn_response(await self.kv_service.submit(cmd, timeout))

    async def create_or_reuse(self, key: bytes, value: bytes, lease: int, timeout: float
                              ) -> Candidate:
        path = key.decode("utf-8", "surrogateescape")
        get = kv_pb2.RequestOp(range=kv_pb2.RangeRequest(path=path))
        req = kv_pb2.TxnRequest(
            compare=[kv_pb2.Compare(path=path, target=kv_pb2.Compare.CREATE,
                                    result=kv_pb2.Compare.EQUAL, create_revision=0)],
            success=[kv_pb2.RequestOp(put=kv_pb2.PutRequest(path=path, value=value,
                                                            lease=lease)), get],
            failure=[get])
        resp = await self.txn(req, timeout)
        kvs = resp.responses[-1].range.kvs
        if not kvs:
            raise RpcError(Code.INTERNAL, f"{path}: the create-or-reuse txn read no key")
        return Candidate(key, kvs[0].create_revision, lease, resp.succeeded,
                         resp.header.revision, kvs[0].value)

    async def delete_if_created_at(self, key: bytes, rev: int, timeout: float
                                   ) -> kv_pb2.TxnResponse:
        """Delete ``key`` only if it is still the key created at ``rev``."""
        path = key.decode("utf-8", "surrogateescape")
        return await self.txn(kv_pb2.TxnRequest(
            compare=[kv_pb2.Compare(path=path, target=kv_pb2.Compare.CREATE,
                                    result=kv_pb2.Compare.EQUAL, create_revision=rev)],
            success=[kv_pb2.RequestOp(delete=kv_pb2.DeleteRequest(path=path))]), timeout)

    # -- waiting ----------------------------------------------------------------------------------
    async def acquire(self, kind: str, name: bytes, key: bytes, value: bytes, lease: int,
                      context: grpc.aio.ServicerContext,
                      on_reuse: Callable[[Candidate], Awaitable[None]] | None = None
                      ) -> Candidate:
        """Create (or reuse) the caller's key and wait until it is first under ``name``.

        Waits until then, or until the call's deadline or cancellation; on any failure the
        key is deleted if this call created it (the deletion runs even after cancellation).
        """
        timeout = timeout_of(context)
        # Shielded: if the caller goes away while the key is being created, the result is
        # still needed, to delete the key again.
        creation = asyncio.ensure_future(self.create_or_reuse(key, value, lease, timeout))
        granted = False
        try:
            cand = await asyncio.shield(creation)
            if on_reuse is not None and not cand.created:
                await on_reuse(cand)
            if self.kv.revision < cand.revision:  # a follower that has not applied it yet
                await self.server.read_barrier(timeout)
            remaining = context.time_remaining()
            wait = self.wait_turn(kind, name, cand)
            if remaining is None:
                await wait
            else:
                await asyncio.wait_for(wait, max(0.0, remaining))
            granted = True
            self.stats.granted += 1
            return cand
        finally:
            if not granted:
                self._withdraw_later(kind, creation)

    async def wait_turn(self, kind: str, name: bytes, cand: Candidate) -> None:
        """Return once ``cand`` has the lowest create revision under ``name``.

        Waits for the deletion of the predecessor (the key created just before it) or of the
        candidate's own key, then looks again: only the next waiter wakes when a key goes.
        Raises ``NOT_FOUND`` (lease gone) or ``FAILED_PRECONDITION`` (key deleted, lease
        alive) if the candidate's key is gone, whether during the wait or at the end, after
        a ReadIndex round confirmed the latest state.
        """
        key, rev = cand.key, cand.rev
        while True:
            mine = self.kv.get(key)
            if mine is None or mine.create_revision != rev:
                raise self._lost(kind, name, cand)
            pred = self.predecessor(name, rev)
            if pred is None:
                break
            log.debug("%s %s: %s waits for %s", kind, name.decode(errors="replace"),
                      cand.path, pred.key.decode(errors="replace"))
            gone = await self.notifier.deleted((pred.key, key))
            self.stats.wakeups += 1
            log.debug("%s %s: waiter %s woke up: %s was deleted", kind,
                      name.decode(errors="replace"), cand.path,
                      gone.decode(errors="replace") if gone else "(state restored)")
        # First in line on this member's state. etcd once granted a lock here to a waiter
        # whose lease had expired meanwhile: confirm against the latest committed state.
        await self.server.read_barrier(DEFAULT_TIMEOUT)
        mine = self.kv.get(key)
        if mine is None or mine.create_revision != rev:
            raise self._lost(kind, name, cand)

    def _lost(self, kind: str, name: bytes, cand: Candidate) -> RpcError:
        self.stats.refused += 1
        outcome = "not elected" if kind == "election" else "the lock was not acquired"
        where = f"{kind} {name.decode(errors='replace')}"
        if self.kv.lease_ttl(cand.lease) is None:
            return RpcError(Code.NOT_FOUND,
                            f"{where}: {describe_lease(cand.lease)} expired or was revoked "
                            f"while waiting; {outcome}")
        return RpcError(Code.FAILED_PRECONDITION,
                        f"{where}: key {cand.path} of {describe_lease(cand.lease)} was deleted "
                        f"while waiting; {outcome}")

    def _withdraw_later(self, kind: str, creation: asyncio.Future[Candidate]) -> None:
        task = asyncio.ensure_future(self._withdraw(kind, creation))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _withdraw(self, kind: str, creation: asyncio.Future[Candidate]) -> None:
        """Delete the key of a waiter that gave up, if its own call created it."""
        try:
            cand = await creation
        except BaseException:  # not created (or the server is stopping): nothing to delete
            return
        if not cand.created:
            return  # it existed before this call (e.g. the lease already holds the lock)
        try:
            await self.delete_if_created_at(cand.key, cand.rev, CLEANUP_TIMEOUT)
            log.debug("%s: withdrew %s", kind, cand.path)
        except Exception as e:
            log.warning("%s: could not delete the abandoned key %s (its lease will): %s", kind,
                        cand.path, e)


# -- Lease -------------------------------------------------------------------------------------
class _Upstream:
    """A follower's KeepAlive stream to the leader, on behalf of one client stream. Reopened
    on the current leader whenever the leader changes or the stream fails."""

    def __init__(self, server: ConferServer) -> None:
        self.server = server
        self.call: Any = None
        self.leader = 0

    async def renew(self, req: coord_pb2.LeaseKeepAliveRequest
                    ) -> coord_pb2.LeaseKeepAliveResponse:
        leader = self.server.require_node().leader
        if self.call is None or leader != self.leader:
            self.close()
            stub = coord_pb2_grpc.LeaseStub(self.server.leader_channel())
            self.call = stub.KeepAlive(metadata=FORWARD_METADATA)
            self.leader = leader
        await self.call.write(req)
        resp = await self.call.read()
        if resp is grpc.aio.EOF:
            self.close()
            raise NoLeader("the leader ended the keep-alive stream")
        return resp  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.call is not None:
            self.call.cancel()
            self.call = None


class LeaseService(Base, coord_pb2_grpc.LeaseServicer):
    def __init__(self, server: ConferServer) -> None:
        super().__init__(server)
        self.lessor = server.lessor

    def _pause(self) -> Awaitable[None]:
        return asyncio.sleep(self.server.cfg.tick_ms / 1000)

    @rpc
    async def Grant(self, req: coord_pb2.LeaseGrantRequest, context: Any
                    ) -> coord_pb2.LeaseGrantResponse:
        validate_command(LeaseGrant(req.ttl, req.id))
        cmd = LeaseGrant(max(req.ttl, self.lessor.min_ttl), req.id)
        result = await self.write(cmd, context)
        resp = coord_pb2.LeaseGrantResponse(header=self.server.header(), id=result.id,
                                            ttl=result.ttl)
        resp.header.revision = result.revision
        return resp

    @rpc
    async def Revoke(self, req: coord_pb2.LeaseRevokeRequest, context: Any
                     ) -> coord_pb2.LeaseRevokeResponse:
        cmd = LeaseRevoke(req.id)
        validate_command(cmd)
        result = await self.write(cmd, context)
        resp = coord_pb2.LeaseRevokeResponse(header=self.server.header(),
                                             deleted=len(result.deleted))
        resp.header.revision = result.revision
        return resp

    async def at_leader(self, context: Any, local: Callable[[float], Awaitable[T]],
                        forward: Callable[[grpc.aio.Channel, float], Awaitable[T]]) -> T:
        """Answer with ``local`` on the leader, or ``forward`` the call to it; follow leader
        changes until the call's deadline."""
        deadline = time.monotonic() + timeout_of(context)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoLeader("no leader answered in time")
            if self.server.is_leader():
                try:
                    return await local(remaining)
                except NotLeader:
                    if forwarded(context):
                        raise NoLeader("forwarded to a node that is no longer the leader"
                                       ) from None
            elif forwarded(context):
                raise NoLeader("forwarded to a node that is no longer the leader")
            else:
                await self.server.wait_for_leader(remaining)
                if not self.server.is_leader():
                    return await forward(self.server.leader_channel(),
                                         max(0.0, deadline - time.monotonic()))
                continue
            await self._pause()

    @rpc
    async def TimeToLive(self, req: coord_pb2.LeaseTimeToLiveRequest, context: Any
                         ) -> coord_pb2.LeaseTimeToLiveResponse:
        async def local(timeout: float) -> coord_pb2.LeaseTimeToLiveResponse:
            got = await self.lessor.time_to_live(req.id, timeout)
            resp = coord_pb2.LeaseTimeToLiveResponse(header=self.server.header(), id=req.id)
            if got is None:
                resp.ttl = resp.remaining_ms = -1
                return resp
            remaining, resp.granted_ttl = got
            resp.ttl = int(remaining)
            resp.remaining_ms = int(remaining * 1000)
            if req.keys:
                resp.keys.extend(k.decode("utf-8", "surrogateescape")
                                 for k in self.kv.lease_keys(req.id))
            return resp

        return await self.at_leader(context, local,
                                    to_leader(coord_pb2_grpc.LeaseStub, "TimeToLive", req))

    @rpc
    async def Leases(self, req: coord_pb2.LeaseLeasesRequest, context: Any
                     ) -> coord_pb2.LeaseLeasesResponse:
        await self.read_barrier(False, context)
        return coord_pb2.LeaseLeasesResponse(
            header=self.server.header(),
            leases=[coord_pb2.LeaseStatus(id=info.id, granted_ttl=info.ttl)
                    for info in self.kv.leases()])

    @stream_rpc
    async def KeepAlive(self, requests: AsyncIterator[coord_pb2.LeaseKeepAliveRequest],
                        context: Any) -> AsyncIterator[coord_pb2.LeaseKeepAliveResponse]:
        upstream = _Upstream(self.server)
        try:
            async for req in requests:
                yield await self._keep_alive(req, upstream, context)
        finally:
            upstream.close()

    async def _keep_alive(self, req: coord_pb2.LeaseKeepAliveRequest, upstream: _Upstream,
                          context: Any) -> coord_pb2.LeaseKeepAliveResponse:
        """Renew one lease: here on the leader, else through ``upstream``, retrying across
        leader changes for up to ``DEFAULT_TIMEOUT``. A stream forwarded to this node is
        never forwarded again: it fails (UNAVAILABLE) and the follower reconnects."""
        deadline = time.monotonic() + DEFAULT_TIMEOUT
        was_forwarded = forwarded(context)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoLeader(f"no leader renewed {describe_lease(req.id)} in time")
            try:
                if self.server.is_leader():
                    upstream.close()
                    ttl = await self.lessor.renew(req.id, remaining)
                    return coord_pb2.LeaseKeepAliveResponse(header=self.server.header(),
                                                            id=req.id, ttl=ttl)
                if was_forwarded:
                    raise NoLeader("forwarded to a node that is no longer the leader")
                await self.server.wait_for_leader(remaining)
                if not self.server.is_leader():
                    return await asyncio.wait_for(upstream.renew(req), remaining)
                continue
            except NotLeader:
                if was_forwarded:
                    raise NoLeader("forwarded to a node that is no longer the leader"
                                   ) from None
            except (NoLeader, TimeoutError, grpc.aio.AioRpcError) as e:
                if was_forwarded:
                    raise
                log.debug("keep-alive of %s: %s; retrying", describe_lease(req.id), e)
                upstream.close()
            await self._pause()


# -- Lock --------------------------------------------------------------------------------------
class LockService(Base, coord_pb2_grpc.LockServicer):
    def __init__(self, server: ConferServer, coordinator: Coordinator) -> None:
        super().__init__(server)
        self.coord = coordinator

    @rpc
    async def Lock(self, req: coord_pb2.LockRequest, context: Any) -> coord_pb2.LockResponse:
        name = path_key(req.name, self.limits)
        if req.lease <= 0:
            raise InvalidArgument(f"lock {req.name}: a lease is required (Lease.Grant)")
        key = self.coord.candidate_key(name, req.lease)
        cand = await self.coord.acquire("lock", name, key, b"", req.lease, context)
        return coord_pb2.LockResponse(header=self.server.header(), key=cand.path,
                                      fencing_token=cand.rev)

    @rpc
    async def Unlock(self, req: coord_pb2.UnlockRequest, context: Any
                     ) -> coord_pb2.UnlockResponse:
        path = path_key(req.key, self.limits).decode("utf-8", "surrogateescape")
        held = [kv_pb2.Compare(path=path, target=kv_pb2.Compare.EXISTS, exists=True)]
        if req.lease:
            held.append(kv_pb2.Compare(path=path, target=kv_pb2.Compare.LEASE,
                                       result=kv_pb2.Compare.EQUAL, lease=req.lease))
        resp = await self.coord.txn(kv_pb2.TxnRequest(
            compare=held,
            success=[kv_pb2.RequestOp(delete=kv_pb2.DeleteRequest(path=path))],
            failure=[kv_pb2.RequestOp(range=kv_pb2.RangeRequest(path=path))]),
            timeout_of(context))
        if not resp.succeeded:
            kvs = resp.responses[0].range.kvs
            if not kvs:
                raise RpcError(Code.NOT_FOUND, f"unlock {req.key}: the lock is not held "
                                               "(no such key)")
            raise RpcError(Code.FAILED_PRECONDITION,
                           f"unlock {req.key}: held by lease {kvs[0].lease:x}, "
                           f"not by lease {req.lease:x}")
        return coord_pb2.UnlockResponse(header=resp.header)


# -- Election ----------------------------------------------------------------------------------
class ElectionService(Base, coord_pb2_grpc.ElectionServicer):
    def __init__(self, server: ConferServer, coordinator: Coordinator) -> None:
        super().__init__(server)
        self.coord = coordinator

    def leader_key(self, leader: coord_pb2.LeaderKey) -> tuple[bytes, bytes]:
        """Check a LeaderKey: its name and key are paths, and the key is under the name."""
        name = path_key(leader.name, self.limits)
        key = path_key(leader.key, self.limits)
        if not key.startswith(name + b"/") or leader.rev <= 0:
            raise InvalidArgument(f"election {leader.name}: {leader.key!r} at revision "
                                  f"{leader.rev} is not a leader key of this election")
        return name, key

    async def proclaim(self, key: bytes, rev: int, lease: int, value: bytes, timeout: float
                       ) -> kv_pb2.TxnResponse:
        path = key.decode("utf-8", "surrogateescape")
        validate_value(value, self.limits[1])
        resp = await self.coord.txn(kv_pb2.TxnRequest(
            compare=[kv_pb2.Compare(path=path, target=kv_pb2.Compare.CREATE,
                                    result=kv_pb2.Compare.EQUAL, create_revision=rev),
                     kv_pb2.Compare(path=path, target=kv_pb2.Compare.LEASE,
                                    result=kv_pb2.Compare.EQUAL, lease=lease)],
            success=[kv_pb2.RequestOp(put=kv_pb2.PutRequest(path=path, value=value,
                                                            lease=lease))]), timeout)
        if not resp.succeeded:
            raise RpcError(Code.FAILED_PRECONDITION,
                           f"election: not leader ({path} created at revision {rev} with "
                           f"{describe_lease(lease)} no longer exists)")
        return resp

    @rpc
    async def Campaign(self, req: coord_pb2.CampaignRequest, context: Any
                       ) -> coord_pb2.CampaignResponse:
        name = path_key(req.name, self.limits)
        if req.lease <= 0:
            raise InvalidArgument(f"election {req.name}: a lease is required (Lease.Grant)")
        validate_value(req.value, self.limits[1])
        key = self.coord.candidate_key(name, req.lease)

        async def on_reuse(cand: Candidate) -> None:  # campaigning again: new value (etcd)
            if cand.value != req.value:
                await self.proclaim(cand.key, cand.rev, cand.lease, req.value,
                                    timeout_of(context))

        cand = await self.coord.acquire("election", name, key, req.value, req.lease, context,
                                        on_reuse)
        return coord_pb2.CampaignResponse(
            header=self.server.header(),
            leader=coord_pb2.LeaderKey(name=name.decode("utf-8", "surrogateescape"),
                                       key=cand.path, rev=cand.rev, lease=cand.lease))

    @rpc
    async def Proclaim(self, req: coord_pb2.ProclaimRequest, context: Any
                       ) -> coord_pb2.ProclaimResponse:
        _, key = self.leader_key(req.leader)
        resp = await self.proclaim(key, req.leader.rev, req.leader.lease, req.value,
                                   timeout_of(context))
        return coord_pb2.ProclaimResponse(header=resp.header)

    @rpc
    async def Leader(self, req: coord_pb2.LeaderRequest, context: Any
                     ) -> coord_pb2.LeaderResponse:
        name = path_key(req.name, self.limits)
        await self.read_barrier(False, context)
        kv = self.coord.first(name)
        if kv is None:
            raise RpcError(Code.NOT_FOUND, f"election {req.name}: no leader")
        return coord_pb2.LeaderResponse(header=self.server.header(), kv=kv_to_pb(kv))

    @stream_rpc
    async def Observe(self, req: coord_pb2.LeaderRequest, context: Any
                      ) -> AsyncIterator[coord_pb2.LeaderResponse]:
        name = path_key(req.name, self.limits)
        await self.server.read_barrier(timeout_of(context))
        start, end = subtree_range(name)
        hub = self.server.hub
        watcher = hub.watcher(start, end, self.kv.revision + 1)  # no await since the read
        last: tuple[bytes, int] | None = None
        current = self.coord.first(name)
        if current is not None:
            last = (current.key, current.mod_revision)
            yield coord_pb2.LeaderResponse(header=self.server.header(), kv=kv_to_pb(current))
        async with contextlib.aclosing(hub.events(watcher)) as batches:
            async for batch in batches:
                revision = batch[-1].kv.mod_revision
                try:  # the leader as of that revision, so that no leader is skipped
                    current = self.coord.first(name, revision)
                except CompactedError:
                    current = self.coord.first(name)
                if current is None or (current.key, current.mod_revision) == last:
                    continue
                last = (current.key, current.mod_revision)
                resp = coord_pb2.LeaderResponse(header=self.server.header(),
                                                kv=kv_to_pb(current))
                resp.header.revision = revision
                yield resp

    @rpc
    async def Resign(self, req: coord_pb2.ResignRequest, context: Any
                     ) -> coord_pb2.ResignResponse:
        _, key = self.leader_key(req.leader)
        resp = await self.coord.delete_if_created_at(key, req.leader.rev, timeout_of(context))
        return coord_pb2.ResignResponse(header=resp.header)


def add_coordination_services(server: ConferServer,
                              grpc_server: grpc.aio.Server | GenericHandlersOnly) -> None:
    """Register ``Lease``, ``Lock`` and ``Election`` on ``grpc_server``."""
    coordinator = Coordinator(server)
    coord_pb2_grpc.add_LeaseServicer_to_server(LeaseService(server), grpc_server)
    coord_pb2_grpc.add_LockServicer_to_server(LockService(server, coordinator), grpc_server)
    coord_pb2_grpc.add_ElectionServicer_to_server(ElectionService(server, coordinator),
                                                  grpc_server)


__all__ = ["Candidate", "Coordinator", "DeletionNotifier", "ElectionService", "LeaseService",
           "LockService", "add_coordination_services", "lease_hex"]
