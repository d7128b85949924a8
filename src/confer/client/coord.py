"""Coordination handles: leases kept alive in the background, locks, leader elections and
service registrations, one class each for ``confer.Client`` and ``confer.aio.Client``.

A handle runs its operations as plans (:mod:`confer.client.plans`) on its client's I/O
layer, as the client methods do: with ``confer.Client`` a method blocks and returns the
result; with ``confer.aio.Client`` it returns a coroutine. Handles are generic in their
client's type (``Lock[confer.Client]``, ``Lock[confer.aio.Client]``), and their methods are
typed accordingly (:class:`HandleMethod`). A handle is a context manager with
the blocking client (``with``), an async context manager with the asyncio client
(``async with``), and with the asyncio client it can be awaited too (``await
client.lease(10)``: entering without the ``with``).

**Loss.** Every handle tells the application when what it holds is gone: ``lost`` (a flag),
``error`` (why), ``wait_lost(timeout)`` (blocks, or a coroutine) and ``on_lost(callback)``
(called once, in the keep-alive's thread or task; with asyncio a coroutine function's
coroutine runs as a task). A lease is lost when the cluster answers that it no longer exists
(revoked, expired) or when no renewal was acknowledged within its TTL counted from when the
last acknowledged renewal was sent (:class:`~confer.client.policy.Renewal`). A lock, a
leadership or a registration is lost when its lease is, or when its key is deleted (a watch on
the key, the *guard*, sees it). Closing or releasing a handle is not a loss.

**Failures of a waiting call.** Lock and Campaign calls wait on the server; they are retried
with the same lease when an attempt fails (the server reuses the waiting key). If they fail for
good, or their outcome stays unknown, or the caller is interrupted (``KeyboardInterrupt``,
asyncio cancellation), the handle revokes its own lease before raising: whatever key the calls
may have created goes with it, so no one is left holding a lock the caller does not know of.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Coroutine, Generator, Sequence
from dataclasses import replace
from types import MethodType, TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from confer.catalog import Record
from confer.client import calls, protocol
from confer.client.checks import Check, Damper, Result
from confer.client.errors import (
    ConferError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    LeaseLost,
    Lost,
    NotFound,
    OutcomeUnknown,
)
from confer.client.models import (
    EventType,
    HealthStatus,
    Instance,
    KeyValue,
    LeaseRevokeResult,
    LeaseTimeToLive,
    TxnResult,
    WatchEvent,
    Weights,
)
from confer.client.plans import (
    Call,
    Feed,
    KeyFeed,
    LeaderFeed,
    LeaseKeeper,
    Offload,
    Plan,
    Sleep,
    Spawn,
    Stop,
    keep_alive,
    stream,
    unary,
)
from confer.client.policy import Renewal, Retry
from confer.client.transport import Runner
from confer.client.txn import Compare, Condition, Op, txn_call
from confer.v1 import coord_pb2

if TYPE_CHECKING:
    from confer.client.aio import Client as AsyncClient
    from confer.client.aio import Watch as AsyncWatch
    from confer.client.base import ClientBase
    from confer.client.sync import Client as SyncClient
    from confer.client.sync import Watch as SyncWatch

__all__ = ["Election", "Handle", "HandleMethod", "Lease", "Lock", "Registration"]

log = logging.getLogger("confer.client")

R = TypeVar("R")
P = ParamSpec("P")
H = TypeVar("H", bound="Handle[Any]")
ClientT = TypeVar("ClientT", bound="ClientBase[Any, Any, Any, Any, Any, Any]", covariant=True)
"""The client a handle belongs to: ``confer.Client`` or ``confer.aio.Client``."""

STOP_TIMEOUT = 5.0
"""How long closing a handle waits for its background thread or task to end."""
ABANDON_TIMEOUT = 2.0
"""The deadline of the revocation that gives up a lease after a failed (or interrupted) Lock,
Campaign or registration; if it fails, the lease expires on its own."""


class Loss:
    """Tells the application once that something it holds is gone: an event
    (``threading.Event`` or ``asyncio.Event``), the error, and callbacks. It only fires while
    armed (between taking the thing and giving it up)."""

    def __init__(self, io: Any) -> None:
        self._io = io
        self._lock = threading.Lock()  # the keep-alive and the guard may fire at once
        self.event = io.new_event()
        self.error: Lost | None = None
        self.armed = False
        self.callbacks: list[Callable[[Lost], Any]] = []

    def arm(self) -> None:
        with self._lock:
            self.error = None
            self.event.clear()
            self.armed = True

    def disarm(self) -> None:
        self.armed = False

    def fire(self, error: Lost) -> None:
        with self._lock:
            if not self.armed or self.error is not None:
                return
            self.error = error
            callbacks = list(self.callbacks)
        self.event.set()
        for callback in callbacks:
            self._io.dispatch(callback, error)

    def add(self, callback: Callable[[Lost], Any]) -> None:
        with self._lock:
            if callback in self.callbacks:
                return
            self.callbacks.append(callback)
            error = self.error if self.armed else None
        if error is not None:
            self._io.dispatch(callback, error)


class HandleMethod(Generic[P, R]):
    """A handle method made from a plan method: it runs the plan on the handle's client, so
    it returns the plan's value with ``confer.Client`` and a coroutine of it with
    ``confer.aio.Client``. For type checkers, ``__get__`` is overloaded on the handle's
    client type, so ``Lock[confer.Client].acquire`` returns a ``Lock`` and
    ``Lock[confer.aio.Client].acquire`` a coroutine of one (as :class:`ClientMethod
    <confer.client.base.ClientMethod>` does for the clients' methods)."""

    def __init__(self, plan: Callable[Concatenate[Any, P], Plan[R]]) -> None:
        def method(handle: Handle[Any], /, *args: Any, **kwargs: Any) -> Any:
            return handle._run(plan(handle, *args, **kwargs))

        method.__doc__ = self.__doc__ = plan.__doc__
        sig = inspect.signature(plan)
        result = str(sig.return_annotation)  # "Plan[X]": the method gives X (or awaits it)
        if result.startswith("Plan[") and result.endswith("]"):
            sig = sig.replace(return_annotation=result[5:-1])
        method.__signature__ = sig  # type: ignore[attr-defined]  # read by inspect
        self._method = method

    def __set_name__(self, owner: type, name: str) -> None:
        self._method.__name__ = name
        self._method.__qualname__ = f"{owner.__qualname__}.{name}"
        self._method.__module__ = owner.__module__

    @overload
    def __get__(self, obj: None, owner: type) -> Callable[..., Any]: ...

    @overload
    def __get__(self, obj: Handle[SyncClient], owner: type | None = None
                ) -> Callable[P, R]: ...

    @overload
    def __get__(self, obj: Handle[AsyncClient], owner: type | None = None
                ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self._method if obj is None else MethodType(self._method, obj)


class Handle(Generic[ClientT]):
    """What every handle shares: its client, how it runs plans, the (async) context manager
    protocols, and loss notification. Subclasses give ``_enter_plan`` and ``_exit_plan``.

    A handle is generic in its client's type, which decides what its methods return:
    ``Lock[confer.Client]`` blocks and returns values, ``Lock[confer.aio.Client]`` returns
    coroutines. The client's factory methods (``client.lock()``...) return the right one.
    """

    what = "handle"

    def __init__(self, client: ClientT) -> None:
        self._client = client
        self._core = client._core
        self._io = client._io
        self._loss = Loss(self._io)

    def _run(self, plan: Plan[R]) -> Any:
        """Run ``plan``: its value (blocking client), or a coroutine of it (asyncio)."""
        return self._io.run(plan)

    def _enter_plan(self) -> Plan[Any]:
        raise NotImplementedError

    def _exit_plan(self) -> Plan[None]:
        raise NotImplementedError

    # -- loss ----------------------------------------------------------------------------------
    @property
    def lost(self) -> bool:
        """Whether what this handle held was lost (see :attr:`error`): stop acting on it."""
        return bool(self._loss.event.is_set())

    @property
    def error(self) -> Lost | None:
        """Why it was lost (:class:`LeaseLost`, or :class:`Lost` for a deleted key)."""
        return self._loss.error

    def on_lost(self, callback: Callable[[Lost], Any]) -> None:
        """Call ``callback(error)`` once when what this handle holds is lost (at once if it
        is already). It runs in the keep-alive's thread (blocking client) or task (asyncio;
        a coroutine it returns runs as a task); its exceptions are logged."""
        self._loss.add(callback)

    @overload
    def wait_lost(self: Handle[SyncClient], timeout: float | None = None) -> bool: ...

    @overload
    def wait_lost(self: Handle[AsyncClient], timeout: float | None = None
                  ) -> Coroutine[Any, Any, bool]: ...

    def wait_lost(self, timeout: float | None = None) -> Any:
        """Wait until what this handle holds is lost, or ``timeout`` seconds; return whether
        it was lost (a coroutine with the asyncio client)."""
        return self._io.wait(self._loss.event, timeout)

    # -- context managers ------------------------------------------------------------------------
    def _require(self, asynchronous: bool, how: str) -> None:
        if self._io.asynchronous is not asynchronous:
            client = "confer.aio.Client" if self._io.asynchronous else "confer.Client"
            raise TypeError(f"{type(self).__name__} of a {client}: use {how}")

    def __enter__(self: H) -> H:
        self._require(False, "'async with' (or await)")
        self._run(self._enter_plan())
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._run(self._exit_plan())

    async def __aenter__(self: H) -> H:
        self._require(True, "'with'")
        await self._run(self._enter_plan())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._run(self._exit_plan())

    def __await__(self: H) -> Generator[Any, None, H]:
        return self.__aenter__().__await__()


def _quietly(plan: Plan[Any], what: str) -> Plan[None]:
    """Run a clean-up plan; log its failure instead of raising (NOT_FOUND: already gone)."""
    try:
        yield from plan
    except NotFound:
        pass
    except ConferError as e:
        log.warning("%s: %s", what, e)


# -- leases -------------------------------------------------------------------------------------
class Lease(Handle[ClientT]):
    """A lease kept alive in the background: by a thread (``confer.Client``) or a task
    (``confer.aio.Client``) that renews it over a KeepAlive stream every TTL/3, failing over
    to other endpoints, until the lease is closed or lost.

    Made by ``client.lease(ttl)`` (a new lease, revoked when closed) or
    ``client.lease_keep_alive(id)`` (an existing lease, only kept alive). Attach keys to it
    with ``client.put(path, value, lease=lease.id)``.

    Attributes:
        id: the lease id (known once granted).
        ttl: the granted TTL in seconds (known once granted).
        owned: whether closing the handle revokes the lease.
        closed: whether the handle was closed (keep-alive stopped).
    """

    what = "lease"

    def __init__(self, client: ClientT, ttl: int, id: int = 0, *, owned: bool = True) -> None:
        super().__init__(client)
        self.id = id
        self.ttl = ttl
        self.owned = owned
        self.closed = False
        self._keeper: LeaseKeeper | None = None
        self._runner: Runner | None = None

    @property
    def started(self) -> bool:
        """Whether the lease was granted (or found) and is being kept alive."""
        return self._keeper is not None

    @property
    def remaining(self) -> float:
        """Seconds the lease is known to live without another renewal (0 once lost, closed or
        not started)."""
        keeper = self._keeper
        if keeper is None or self.lost or self.closed:
            return 0.0
        return max(0.0, keeper.renewal.deadline - self._core.clock())

    @property
    def renewals(self) -> int:
        """How many renewals were acknowledged."""
        return self._keeper.renewal.renewals if self._keeper is not None else 0

    def _time_to_live(self, keys: bool = False) -> Plan[LeaseTimeToLive | None]:
        """The lease's remaining time from the leader's clock (``lease_time_to_live``):
        ``LeaseTimeToLive`` or None."""
        return unary(self._core, calls.lease_time_to_live(self.id, keys))

    def _revoke(self) -> Plan[LeaseRevokeResult | None]:
        """Stop the keep-alive and revoke the lease (its keys are deleted); None if it was
        never started. Raises like ``lease_revoke`` (NotFound if it is gone already)."""
        return self._close_plan(True)

    def _close(self) -> Plan[None]:
        """Stop the keep-alive; an owned lease is also revoked. A failed revocation is logged,
        not raised: the lease then expires within its TTL."""
        return self._exit_plan()

    time_to_live = HandleMethod(_time_to_live)
    revoke = HandleMethod(_revoke)
    close = HandleMethod(_close)

    def _enter_plan(self) -> Plan[Lease[ClientT]]:
        return self._start_plan()

    def _exit_plan(self) -> Plan[None]:
        return _quietly(self._close_plan(self.owned), f"closing lease {self.id}")

    def _start_plan(self) -> Plan[Lease[ClientT]]:
        """Grant the lease (or look up an existing one), then keep it alive."""
        if self.closed:
            raise FailedPrecondition(f"lease {self.id} was closed")
        if self._keeper is not None:
            return self
        sent = self._core.clock()
        if self.owned:
            grant = yield from unary(self._core, calls.lease_grant(self.ttl, self.id))
            self.id, self.ttl = grant.id, grant.ttl
            renewal = Renewal(grant.ttl, sent)
        else:
            info: LeaseTimeToLive | None = yield from unary(
                self._core, calls.lease_time_to_live(self.id))
            if info is None:
                raise NotFound(f"lease {self.id}: no such lease", code="NOT_FOUND")
            self.ttl = info.granted_ttl  # renew at once; it lives at least `remaining`
            renewal = Renewal(info.granted_ttl, sent - info.granted_ttl, sent + info.remaining)
        keeper = self._keeper = LeaseKeeper(self.id, renewal)
        self._client._feeds.add(keeper)
        self._loss.arm()
        self._runner = yield Spawn(keep_alive(self._core, keeper), keeper, self._deliver,
                                   f"confer {keeper.what}")
        return self

    def _close_plan(self, revoke: bool) -> Plan[LeaseRevokeResult | None]:
        self._loss.disarm()
        self.closed = True
        runner, self._runner = self._runner, None
        if runner is not None:
            yield Stop(runner, STOP_TIMEOUT)
        if not revoke or self._keeper is None:
            return None
        return (yield from unary(self._core, calls.lease_revoke(self.id)))

    def _abandon_plan(self) -> Plan[None]:
        """Give the lease up after a failure: stop renewing, revoke it quickly if possible."""
        self._loss.disarm()
        self.closed = True
        runner, self._runner = self._runner, None
        if runner is not None:
            yield Stop(runner, STOP_TIMEOUT)
        if self._keeper is not None:
            yield from _quietly(unary(self._core, calls.lease_revoke(
                self.id, timeout=ABANDON_TIMEOUT)), f"revoking lease {self.id}")

    def _deliver(self, item: Any) -> None:
        """What the keep-alive emits: its loss, or the exception that ended it."""
        if isinstance(item, LeaseLost):
            self._loss.fire(item)
        elif isinstance(item, BaseException) and not self.closed:
            self._loss.fire(LeaseLost(self.id, f"lease {self.id}: its keep-alive stopped: "
                                               f"{item!r}"))

    def _lost_error(self) -> LeaseLost | None:
        return self.error if isinstance(self.error, LeaseLost) else None

    def __repr__(self) -> str:
        state = ("lost" if self.lost else "closed" if self.closed else
                 "alive" if self.started else "not started")
        return f"<Lease {self.id} ttl={self.ttl}s {state}>"


# -- what holds a key with a lease --------------------------------------------------------------
class Holder(Handle[ClientT]):
    """A handle that holds a key attached to a lease (a lock, a leadership, a registration).

    Attributes:
        lease: its :class:`Lease` (its own, made for it, unless one was given).
        key: the key it holds ("" while it holds none).
        revision: the store revision at which it took the key.
    """

    def __init__(self, client: ClientT, ttl: int, lease: Lease[ClientT] | None) -> None:
        super().__init__(client)
        self.ttl = ttl
        self._own_lease = lease is None
        self.lease: Lease[ClientT] = lease if lease is not None else client._new_lease(ttl)
        self.key = ""
        self.revision = 0
        self._key_rev = 0  # the key's create revision (0: unknown)
        self._guard: Runner | None = None

    @property
    def held(self) -> bool:
        """Whether the key is held and was not lost."""
        return bool(self.key) and not self.lost

    def _ready_lease(self) -> Plan[Lease[ClientT]]:
        """The lease to take the key with, started (a fresh own lease after a closed one)."""
        lease = self.lease
        if self._own_lease and (lease.closed or lease.lost):
            lease = self.lease = self._client._new_lease(self.ttl)
        if lease.lost and lease.error is not None:
            raise lease.error
        yield from lease._start_plan()
        lease._loss.add(self._on_lease_lost)
        return lease

    def _take(self, call: Call[R]) -> Plan[R]:
        """Run the call that takes the key (Lock, Campaign, Put). On failure, give the lease
        up (our own) so that no key of ours is left behind, then raise. NOT_FOUND (the lease
        ended while waiting) is raised as :class:`LeaseLost`; a waiting call that ran out of
        time with its own lease, as :class:`DeadlineExceeded` (its outcome is no longer
        unknown to the caller: without the lease, it holds nothing)."""
        lease = self.lease
        try:
            result: R = yield from unary(self._core, call)
            self._loss.arm()
            if (error := lease._lost_error()) is not None:
                raise error
        except GeneratorExit:
            raise
        except NotFound as e:
            yield from self._abandon()
            raise LeaseLost(lease.id, f"{self.what}: {e}", code=e.code, details=e.details
                            ) from e
        except (OutcomeUnknown, DeadlineExceeded) as e:
            yield from self._abandon()
            if not self._own_lease or call.retry is not Retry.WAIT:
                raise
            raise DeadlineExceeded(f"{self.what}: not acquired within {call.timeout:g}s; its "
                                   f"lease {lease.id} was given up, so no key of this call "
                                   f"holds it ({e})", code=e.code, details=e.details) from e
        except BaseException:
            yield from self._abandon()
            raise
        return result

    def _abandon(self) -> Plan[None]:
        self._loss.disarm()
        if self._own_lease:
            yield from self.lease._abandon_plan()

    def _guard_key(self, key: str, create_revision: int, revision: int) -> Plan[None]:
        """Hold ``key`` from ``revision`` on: watch it, and fire the loss if it is deleted."""
        self.key, self._key_rev, self.revision = key, create_revision, revision
        interval = self._core.options.watch_keepalive
        feed = KeyFeed(key, False, revision + 1, False, max(interval, 0))
        self._client._feeds.add(feed)
        self._guard = yield Spawn(stream(self._core, feed, 2 * interval + 1 if interval > 0
                                         else None), feed, self._on_key_event,
                                  f"confer guard {key}")

    def _let_go(self) -> Plan[str]:
        """Stop holding: disarm the loss, stop the guard; return the key held ("" if none)."""
        self._loss.disarm()
        guard, self._guard = self._guard, None
        if guard is not None:
            yield Stop(guard, STOP_TIMEOUT)
        key, self.key = self.key, ""
        return key

    def _on_lease_lost(self, error: Lost) -> None:
        self._loss.fire(error)

    def _on_key_event(self, item: Any) -> None:
        if isinstance(item, WatchEvent):
            if item.type is EventType.DELETE or (
                    self._key_rev and item.kv.create_revision != self._key_rev):
                self._loss.fire(Lost(f"{self.what}: its key {item.kv.path} was deleted at "
                                     f"revision {item.revision}"))
        elif isinstance(item, BaseException):
            log.warning("%s: the watch of its key %s ended: %r; only the loss of its lease "
                        "will be noticed", self.what, self.key, item)


class Lock(Holder[ClientT]):
    """A distributed lock (``client.lock(name)``): a lease kept alive, and a key under the
    lock's name that holds the lock while it is the oldest there.

    ``with client.lock("/locks/db") as lock:`` (``async with`` for asyncio) acquires it,
    waiting as long as it takes (or ``timeout``), and releases it on exit. While it is held,
    guard every write to the protected resource with :attr:`fencing_token` (or
    :attr:`guard` in a transaction), and stop acting when :attr:`lost` is set.

    Attributes:
        name: the lock's name (a path).
        key: the owner key, ``<name>/<lease hex>`` ("" when not held).
        fencing_token: the owner key's create revision: greater for every new holder.
        lease: its :class:`Lease`.
        timeout: the default of :meth:`acquire` (``None``: wait for ever).
    """

    def __init__(self, client: ClientT, name: str, ttl: int, lease: Lease[ClientT] | None,
                 timeout: float | None) -> None:
        super().__init__(client, ttl, lease)
        self.name = protocol.check_path(name)
        self.what = f"lock {name}"
        self.timeout = timeout
        self.fencing_token = 0

    @property
    def guard(self) -> Condition:
        """``Compare.create_revision(key) == fencing_token``: a transaction condition that
        holds only while this holder's key is the lock's key, e.g.
        ``client.txn().if_(lock.guard).then(Op.put(...)).commit()``."""
        if not self.key:
            raise FailedPrecondition(f"{self.what}: not held")
        return Compare.create_revision(self.key) == self.fencing_token

    def _acquire(self, timeout: float | None = None) -> Plan[Lock[ClientT]]:
        """Wait until the lock is held (at most ``timeout`` seconds, else the lock's
        ``timeout``; ``None``: for ever); return the Lock.

        Raises:
            LeaseLost: the lease ended while waiting. DeadlineExceeded / Unavailable /
            OutcomeUnknown: the lock was not acquired in time; the lock's own lease was
            revoked, so no key of this call is left behind.
        """
        return self._acquire_plan(self.timeout if timeout is None else timeout)

    def _release(self) -> Plan[None]:
        """Release the lock: revoke its own lease (or, with a given lease, delete the owner
        key). Failures are logged: the lock is then released when the lease expires."""
        return self._exit_plan()

    acquire = HandleMethod(_acquire)
    release = HandleMethod(_release)

    def _enter_plan(self) -> Plan[Lock[ClientT]]:
        return self._acquire_plan(self.timeout)

    def _acquire_plan(self, timeout: float | None) -> Plan[Lock[ClientT]]:
        if self.key and not self.lost:
            return self  # held already (the server would say the same: per lease, re-entrant)
        if self.key:
            yield from self._exit_plan()
        lease = yield from self._ready_lease()
        resp: coord_pb2.LockResponse = yield from self._take(
            calls.lock(self.name, lease.id, timeout, lease._lost_error))
        self.fencing_token = resp.fencing_token
        yield from self._guard_key(resp.key, resp.fencing_token, resp.header.revision)
        return self

    def _exit_plan(self) -> Plan[None]:
        key = yield from self._let_go()
        if self._own_lease:  # revoking the lease deletes the key: one round trip
            yield from self.lease._exit_plan()
        elif key:
            yield from _quietly(unary(self._core, calls.unlock(key, self.lease.id)),
                                f"unlocking {key}")

    def __repr__(self) -> str:
        state = f"held by {self.key} (token {self.fencing_token})" if self.key else "not held"
        return f"<Lock {self.name} {state}{' LOST' if self.lost else ''}>"


class Election(Holder[ClientT]):
    """A leader election (``client.election(name)``): campaign to lead, proclaim values,
    resign; observe who leads.

    Use it as a context manager to resign (and revoke its lease) on exit::

        with client.election("/elections/scheduler") as election:
            election.campaign("node-1")        # blocks until elected
            ...                                # lead, until election.lost

    Attributes:
        name: the election's name (a path).
        key: the leader key while this candidate leads ("" otherwise).
        rev: that key's create revision: this term of leadership, a fencing token.
        lease: its :class:`Lease`.
    """

    def __init__(self, client: ClientT, name: str, ttl: int, lease: Lease[ClientT] | None
                 ) -> None:
        super().__init__(client, ttl, lease)
        self.name = protocol.check_path(name)
        self.what = f"election {name}"
        self.rev = 0
        self._leader: coord_pb2.LeaderKey | None = None

    @property
    def is_leader(self) -> bool:
        """Whether this candidate was elected and has not resigned or lost since."""
        return self.held

    @property
    def guard(self) -> Condition:
        """``Compare.create_revision(key) == rev``: a transaction condition that holds only
        while this candidate leads."""
        if not self.key:
            raise FailedPrecondition(f"{self.what}: not the leader")
        return Compare.create_revision(self.key) == self.rev

    def _campaign(self, value: bytes | str, ttl: int | None = None, *,
                  timeout: float | None = None) -> Plan[Election[ClientT]]:
        """Become a candidate with ``value`` and wait until elected (at most ``timeout``
        seconds; ``None``: for ever); the election's lease (TTL ``ttl``, else the
        election's) is kept alive meanwhile. Campaigning again while leading proclaims the
        new value. Returns the Election.

        Raises:
            LeaseLost: the lease ended while waiting. DeadlineExceeded / Unavailable /
            OutcomeUnknown: not elected in time (the election's own lease is revoked).
        """
        return self._campaign_plan(value, ttl, timeout)

    def _leader_plan(self) -> Plan[KeyValue | None]:
        """The current leader's key (``KeyValue``: path, value, create_revision...), or None
        when no one leads."""
        return unary(self._core, calls.election_leader(self.name))

    def _resign(self) -> Plan[None]:
        """Give up leadership (if leading): the next candidate is elected. The election's own
        lease is revoked (which deletes the key); with a given lease, the key is deleted.
        Failures are logged: the key then goes when the lease expires."""
        return self._exit_plan()

    @overload
    def observe(self: Election[SyncClient], *,
                callback: Callable[[KeyValue], Any] | None = None,
                on_error: Callable[[BaseException], Any] | None = None
                ) -> SyncWatch[KeyValue]: ...

    @overload
    def observe(self: Election[AsyncClient], *,
                callback: Callable[[KeyValue], Any] | None = None,
                on_error: Callable[[BaseException], Any] | None = None
                ) -> AsyncWatch[KeyValue]: ...

    def observe(self, *, callback: Callable[[KeyValue], Any] | None = None,
                on_error: Callable[[BaseException], Any] | None = None) -> Any:
        """Follow the leadership: a Watch of the leader's ``KeyValue``, first the current
        leader (if any), then each new leader and each new value, used like
        ``client.watch()`` (iterate, or pass ``callback``). It survives member failures:
        the reconnected stream skips what was already delivered; leaders that came and went
        while disconnected are not reported. Nothing is delivered while no one leads."""
        feed = LeaderFeed(self.name)
        self._client._feeds.add(feed)
        return self._client._watch(feed, None, callback, on_error)

    def _enter_plan(self) -> Plan[Election[ClientT]]:
        return self
        yield  # pragma: no cover - makes this a generator

    def _campaign_plan(self, value: bytes | str, ttl: int | None, timeout: float | None
                       ) -> Plan[Election[ClientT]]:
        if self.key:
            yield from self._proclaim_plan(value)
            return self
        if ttl is not None and self._own_lease and not self.lease.started:
            self.ttl = self.lease.ttl = ttl
        lease = yield from self._ready_lease()
        resp: coord_pb2.CampaignResponse = yield from self._take(
            calls.campaign(self.name, lease.id, value, timeout, lease._lost_error))
        self._leader, self.rev = resp.leader, resp.leader.rev
        yield from self._guard_key(resp.leader.key, resp.leader.rev, resp.header.revision)
        return self

    def _proclaim_plan(self, value: bytes | str) -> Plan[int]:
        """Set the leader's value (while leading); returns the revision.

        Raises:
            Lost: this candidate no longer leads (it is reported as lost too).
            FailedPrecondition: it never campaigned.
        """
        if self._leader is None or not self.key:
            raise FailedPrecondition(f"{self.what}: not the leader (campaign first)")
        try:
            revision: int = yield from unary(self._core, calls.proclaim(self._leader, value))
        except FailedPrecondition as e:
            error = Lost(f"{self.what}: no longer the leader: {e.details}",
                         code=e.code, details=e.details)
            self._loss.fire(error)
            raise error from e
        return revision

    def _exit_plan(self) -> Plan[None]:
        key = yield from self._let_go()
        leader, self._leader, self.rev = self._leader, None, 0
        if self._own_lease:
            yield from self.lease._exit_plan()
        elif key and leader is not None:
            yield from _quietly(unary(self._core, calls.resign(leader)), f"resigning {key}")

    campaign = HandleMethod(_campaign)
    proclaim = HandleMethod(_proclaim_plan)
    leader = HandleMethod(_leader_plan)
    resign = HandleMethod(_resign)

    def __repr__(self) -> str:
        state = f"leading as {self.key} (rev {self.rev})" if self.key else "not leading"
        return f"<Election {self.name} {state}{' LOST' if self.lost else ''}>"


class Registration(Holder[ClientT]):
    """A service instance registered for discovery (``client.register(...)``): the key
    ``/services/<service>/<instance id>`` holding the instance's JSON record
    (:mod:`confer.catalog`: address, tags, metadata, weights, health), attached to a lease
    kept alive in the background. Closing it (or leaving its ``with`` block) revokes the
    lease, which deregisters the instance; if the process dies, the instance disappears when
    the lease expires (within its TTL).

    With an active :class:`~confer.client.checks.Check` (HTTP, TCP, gRPC), the registrant
    probes its instance once before registering (the record starts with that result), then
    every ``check.interval`` in the background (a thread with ``confer.Client``, a task with
    ``confer.aio.Client``), and rewrites the record's status when it changes, after
    ``check.threshold`` consecutive results agree. A status write that fails is retried
    after the next probe; it is guarded by the key's create revision, so it never brings back
    a record someone deleted.

    Attributes:
        service: the service name.
        instance: the registered :class:`Instance` as last written (its ``revision`` once
            registered, its ``status`` as last recorded).
        check: the health check it runs.
        key: the registration key.
        lease: its :class:`Lease`.
    """

    def __init__(self, client: ClientT, service: str, instance_id: str, address: str,
                 metadata: dict[str, Any] | None, ttl: int, *, tags: Sequence[str] = (),
                 weights: Weights | None = None, check: Check | None = None) -> None:
        prefix = protocol.service_prefix(service)
        protocol.check_segment(instance_id, "instance id")
        protocol.check_tags(tags)
        if check is not None and not isinstance(check, Check):
            raise InvalidArgument(f"check must be a confer.Check, not {check!r}")
        self.check = check if check is not None else Check.ttl()
        self._record = Record(address, tuple(tags), dict(metadata or {}), weights or Weights(),
                              check=self.check.describe())
        protocol.instance_value(self._record)  # refuse a bad address or metadata now
        super().__init__(client, ttl, None)
        self.service = service
        self.path = f"{prefix}/{instance_id}"
        self.what = f"registration {self.path}"
        self.instance = protocol.instance_of(instance_id, self._record, 0)
        self._checks: Runner | None = None
        self._status_callbacks: list[Callable[[Instance], Any]] = []

    @property
    def status(self) -> HealthStatus:
        """The instance's health as last recorded in the store."""
        return self._record.status

    def _close(self) -> Plan[None]:
        """Deregister: stop the checks, revoke the lease (failures are logged; the instance
        then disappears when the lease expires)."""
        return self._exit_plan()

    close = HandleMethod(_close)

    def _enter_plan(self) -> Plan[Registration[ClientT]]:
        if self.key:
            return self
        damper = None
        if self.check.active:
            first: Result = yield Offload(self.check.probe)
            damper = Damper(self.check.threshold, first)
            self._record = replace(self._record, status=first.status, output=first.output)
        lease = yield from self._ready_lease()
        result = yield from self._take(calls.put(
            self.path, protocol.instance_value(self._record), lease=lease.id, prev_kv=True))
        created = result.prev_kv.create_revision if result.prev_kv else result.revision
        self.instance = protocol.instance_of(self.instance.id, self._record, result.revision)
        yield from self._guard_key(self.path, created, result.revision)
        if damper is not None:
            feed: Feed[None] = Feed()
            self._checks = yield Spawn(self._check_loop(feed, damper), feed,
                                       self._on_check_ended, f"confer check {self.path}")
        return self

    def _check_loop(self, feed: Feed[None], damper: Damper) -> Plan[None]:
        """Probe every interval; record the damped status whenever it changes."""
        check = self.check
        while not feed.cancelled:
            yield Sleep(check.interval)
            if feed.cancelled or self.lost:  # lost: nothing left to record the status in
                return
            result = damper.observe((yield Offload(check.probe)))
            if not feed.cancelled and (result.status, result.output) != (
                    self._record.status, self._record.output):
                yield from self._record_status(result)

    def _record_status(self, result: Result) -> Plan[None]:
        record = replace(self._record, status=result.status, output=result.output)
        call = txn_call([Compare.create_revision(self.path) == self._key_rev],
                        [Op.put(self.path, protocol.instance_value(record),
                                lease=self.lease.id)], [])
        try:
            done: TxnResult = yield from unary(self._core, call)
        except ConferError as e:
            log.warning("%s: could not record its status %s (%s); trying again after the "
                        "next check", self.what, result.status.value, e)
            return
        if done.succeeded:  # else its key is gone: the guard reports the loss
            changed = result.status is not self._record.status
            self._record = record
            self.instance = protocol.instance_of(self.instance.id, self._record, done.revision)
            if changed:
                log.info("%s: %s (%s)", self.what, result.status.value, result.output)
                for callback in list(self._status_callbacks):
                    self._io.dispatch(callback, self.instance)

    def on_status(self, callback: Callable[[Instance], Any]) -> None:
        """Call ``callback(instance)`` each time the check changes the instance's recorded
        status (``instance.status``, ``instance.output``), in the checks' thread (blocking
        client) or task (asyncio); its exceptions are logged."""
        self._status_callbacks.append(callback)

    def _on_check_ended(self, item: Any) -> None:
        if isinstance(item, BaseException):
            log.warning("%s: its health checks stopped: %r", self.what, item)

    def _exit_plan(self) -> Plan[None]:
        checks, self._checks = self._checks, None
        if checks is not None:
            yield Stop(checks, STOP_TIMEOUT)
        yield from self._let_go()
        yield from self.lease._exit_plan()

    def __repr__(self) -> str:
        state = (f"registered, {self.status.value}" if self.key else "not registered")
        return f"<Registration {self.path} {state}{' LOST' if self.lost else ''}>"
