"""The client API, defined once for ``confer.Client`` and ``confer.aio.Client``.

:class:`ClientBase` holds every public method. Each subclass supplies only its I/O: ``_run``
(drive a unary plan: blocking, or as a coroutine), ``_io.iterate`` (drive a streaming plan:
an iterator, or an async iterator) and ``_watch`` (a watch handle, with a thread or a task
for callbacks).

The request/response methods are :class:`ClientMethod` descriptors made from the builders in
:mod:`confer.client.calls`: at run time one function serves both clients (it returns whatever
the client's ``_run`` returns, a value or a coroutine); for type checkers, ``__get__`` is
overloaded so that ``Client.get`` returns ``KeyValue | None`` and ``aio.Client.get`` returns a
coroutine of it. The other methods return a type parameter of :class:`ClientBase`.
"""

from __future__ import annotations

import builtins
import inspect
import logging
import weakref
from collections.abc import Callable, Coroutine, Sequence
from types import MethodType
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Self, TypeVar, overload

from confer.client import auth_calls, calls, coord, plans, protocol
from confer.client.checks import Check
from confer.client.credentials import Credentials
from confer.client.endpoints import default_endpoints
from confer.client.models import ClusterEvent, Instance, ServiceEvent, WatchEvent, Weights
from confer.client.plans import Call, Feed, HealthyFeed, KeyFeed, ServiceFeed
from confer.client.policy import Core, Options
from confer.client.transport import CHANNEL_OPTIONS, tls_credentials
from confer.client.txn import Txn

if TYPE_CHECKING:
    from confer.client.aio import Client as AsyncClient
    from confer.client.sync import Client as SyncClient

__all__ = ["ClientBase", "ClientMethod", "WatchBase"]

log = logging.getLogger("confer.client")

P = ParamSpec("P")
T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 - the item type of a watch
CommitT = TypeVar("CommitT")
ScanT = TypeVar("ScanT")
WatchT = TypeVar("WatchT")
ClusterWatchT = TypeVar("ClusterWatchT")
ServiceWatchT = TypeVar("ServiceWatchT")
HealthyWatchT = TypeVar("HealthyWatchT")
HandleT = TypeVar("HandleT", bound=coord.Handle[Any])


class ClientMethod(Generic[P, T]):
    """A client method made from a call builder of :mod:`confer.client.calls`: it builds the
    call and hands it to the client's ``_run``. Same name, parameters and docstring as the
    builder; the signature shows what each client returns."""

    def __init__(self, build: Callable[P, Call[T]]) -> None:
        self.build = build
        self._functions: dict[type, Callable[..., Any]] = {}

    @overload
    def __get__(self, obj: None, owner: type) -> Callable[..., Any]: ...

    @overload
    def __get__(self, obj: SyncClient, owner: type | None = None) -> Callable[P, T]: ...

    @overload
    def __get__(self, obj: AsyncClient, owner: type | None = None
                ) -> Callable[P, Coroutine[Any, Any, T]]: ...

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        cls = type(obj) if obj is not None else owner
        fn = self._functions.get(cls)  # type: ignore[arg-type]  # owner is set when obj is None
        if fn is None:
            fn = self._functions[cls] = self._function(cls)  # type: ignore[index]  # as above
        return fn if obj is None else MethodType(fn, obj)

    def _function(self, owner: Any) -> Callable[..., Any]:
        build = self.build

        def method(client: Any, /, *args: Any, **kwargs: Any) -> Any:
            return client._run(build(*args, **kwargs))

        sig = inspect.signature(build)
        result = str(sig.return_annotation)
        if result.startswith("Call[") and result.endswith("]"):
            result = result[5:-1]
        method.__signature__ = sig.replace(  # type: ignore[attr-defined]  # read by inspect
            parameters=[inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY),
                        *sig.parameters.values()],
            return_annotation=getattr(owner, "_returns", "{}").format(result))
        method.__name__ = build.__name__
        method.__qualname__ = f"{getattr(owner, '__name__', 'Client')}.{build.__name__}"
        method.__doc__ = build.__doc__
        method.__module__ = getattr(owner, "__module__", __name__)
        return method


class ClientBase(Generic[CommitT, ScanT, WatchT, ClusterWatchT, ServiceWatchT, HealthyWatchT]):
    """Every method of ``confer.Client`` and ``confer.aio.Client``.

    Args:
        endpoints: client addresses (``"host:port"``, or ``http://host:port`` /
            ``https://host:port`` URLs) of some or all members, as a list or a
            comma-separated string. They are tried in this order. Default: the environment's
            ``CONFER_ENDPOINTS``, else ``127.0.0.1:7379``.
        timeout: the default deadline of each call, in seconds, retries included.
        connect_timeout: how long a non-retryable write (txn, compact, member changes) waits
            for a connection to an endpoint before trying the next one.
        min_attempt_timeout: the shortest timeout of one attempt of a retryable call.
        backoff_base: the first retry delay (seconds); it doubles per attempt, with jitter.
        backoff_max: the largest retry delay.
        watch_keepalive: idle seconds after which a watch asks for a progress message; a
            watch that receives nothing for about twice as long reconnects (0: never).
        prefer_leader: send writes straight to the leader's endpoint when it is known.
        shuffle: shuffle the endpoints once (spreads many clients over the members).
        seed: seed the jitter (and shuffle), for reproducible tests.
        grpc_options: extra gRPC channel options, e.g. ``[("grpc.primary_user_agent", "x")]``.
        fail_fast: a request, or a watch being created, gives up at once (Unavailable,
            naming the endpoints) when every endpoint refused the connection, instead of
            retrying until ``timeout`` (the ``confer`` command line's choice). A watch that
            was connected, and lease renewals, keep retrying.
        cacert: TLS: the CA file that signed the members' certificates (default: the
            system's CAs). TLS is on when any of ``cacert``, ``cert``, ``key`` is given
            (or ``CONFER_CACERT``, ``CONFER_CERT``, ``CONFER_KEY`` is set) or an endpoint
            is an ``https://`` URL.
        cert: a client certificate file (PEM), for members that require one.
        key: the client certificate's private key file (PEM).
        user: authenticate as this user (when the cluster has authentication enabled): the
            client exchanges ``password`` for a token, sends it on every call, and
            authenticates again when a member no longer accepts it (docs/security.md).
        password: ``user``'s password.
    """

    _returns = "{}"
    """How the signature of a request/response method shows its result."""
    _io_class: Callable[[tuple[tuple[str, int | str], ...], Any], Any]
    """The I/O layer: made with the channel options and TLS credentials (or None); has
    ``iterate(plan)``."""
    _io: Any

    def __init__(self, endpoints: Sequence[str] | str | None = None, timeout: float = 10.0, *,
                 connect_timeout: float = 2.0, min_attempt_timeout: float = 1.0,
                 backoff_base: float = 0.025, backoff_max: float = 1.0,
                 watch_keepalive: float = 5.0, prefer_leader: bool = True,
                 shuffle: bool = False, seed: int | None = None,
                 grpc_options: Sequence[tuple[str, int | str]] = (),
                 fail_fast: bool = False, cacert: str | None = None,
                 cert: str | None = None, key: str | None = None,
                 user: str | None = None, password: str = "") -> None:
        if endpoints is None:
            endpoints = default_endpoints()
        targets, credentials = tls_credentials(endpoints, cacert, cert, key)
        options = Options(targets, timeout, connect_timeout, min_attempt_timeout,
                          backoff_base, backoff_max, watch_keepalive, prefer_leader, shuffle,
                          seed, tuple(grpc_options), fail_fast)
        self._core = Core(options)
        self._channel_options = CHANNEL_OPTIONS + options.grpc_options
        self._io = self._io_class(self._channel_options, credentials)
        if user:
            self._io.credentials = Credentials(user, password)
        self._feeds: weakref.WeakSet[Feed[Any]] = weakref.WeakSet()

    # -- what a subclass provides ---------------------------------------------------------------
    def _run(self, call: Call[T]) -> Any:
        """Make a call: its result, or a coroutine of it."""
        raise NotImplementedError

    def _watch(self, feed: Feed[Any], idle: float | None, callback: Callable[[Any], Any] | None,
               on_error: Callable[[BaseException], Any] | None) -> Any:
        """A watch handle on ``feed``'s stream; with ``callback``, being delivered already."""
        raise NotImplementedError

    # -- request/response methods -----------------------------------------------------------------
    get = ClientMethod(calls.get)
    put = ClientMethod(calls.put)
    delete = ClientMethod(calls.delete)
    list = ClientMethod(calls.list)
    children = ClientMethod(calls.children)
    compact = ClientMethod(calls.compact)
    status = ClientMethod(calls.status)
    member_list = ClientMethod(calls.member_list)
    member_add = ClientMethod(calls.member_add)
    member_remove = ClientMethod(calls.member_remove)
    member_promote = ClientMethod(calls.member_promote)
    transfer_leadership = ClientMethod(calls.transfer_leadership)
    lease_grant = ClientMethod(calls.lease_grant)
    lease_revoke = ClientMethod(calls.lease_revoke)
    lease_time_to_live = ClientMethod(calls.lease_time_to_live)
    lease_list = ClientMethod(calls.lease_list)
    discover = ClientMethod(calls.discover)
    # users, roles and authentication (etcd's Auth service)
    auth_status = ClientMethod(auth_calls.auth_status)
    auth_enable = ClientMethod(auth_calls.auth_enable)
    auth_disable = ClientMethod(auth_calls.auth_disable)
    user_add = ClientMethod(auth_calls.user_add)
    user_get = ClientMethod(auth_calls.user_get)
    user_list = ClientMethod(auth_calls.user_list)
    user_delete = ClientMethod(auth_calls.user_delete)
    user_change_password = ClientMethod(auth_calls.user_change_password)
    user_grant_role = ClientMethod(auth_calls.user_grant_role)
    user_revoke_role = ClientMethod(auth_calls.user_revoke_role)
    role_add = ClientMethod(auth_calls.role_add)
    role_get = ClientMethod(auth_calls.role_get)
    role_list = ClientMethod(auth_calls.role_list)
    role_delete = ClientMethod(auth_calls.role_delete)
    role_grant_permission = ClientMethod(auth_calls.role_grant_permission)
    role_revoke_permission = ClientMethod(auth_calls.role_revoke_permission)

    # -- builders and streams ---------------------------------------------------------------------
    def txn(self, *, timeout: float | None = None) -> Txn[CommitT]:
        """Start a transaction::

            client.txn().if_(Compare.version("/a") == 0).then(Op.put("/a", b"1")).commit()

        ``commit()`` returns a TxnResult (with ``confer.aio.Client``: a coroutine of one). A
        transaction whose outcome is unknown raises OutcomeUnknown and is never retried. See
        :mod:`confer.client.txn`.
        """
        return Txn(self._run, timeout)

    def scan(self, path: str, recursive: bool = True, page_size: int = 500, revision: int = 0,
             keys_only: bool = False, serializable: bool = False, *,
             timeout: float | None = None) -> ScanT:
        """Every key of :meth:`list`, fetched ``page_size`` keys per request: an iterator
        (``for kv in client.scan(p)``), or with ``confer.aio.Client`` an async iterator.

        All pages are read at the first page's revision: one consistent snapshot. If that
        revision is compacted during the scan, the iteration raises Compacted. ``timeout``
        applies to each page.
        """
        page = calls.list_page(path, recursive, page_size, revision, keys_only, serializable,
                               timeout)
        return self._io.iterate(plans.scan(self._core, page))

    def watch(self, path: str, recursive: bool = False, start_revision: int = 0,
              prev_kv: bool = False, progress_interval: float = 0, *,
              callback: Callable[[WatchEvent], Any] | None = None,
              on_error: Callable[[BaseException], Any] | None = None) -> WatchT:
        """Watch a key (or with ``recursive`` a subtree) for changes.

        Returns a Watch once the server has confirmed it, so every change made after
        ``watch()`` returns is delivered. With the asyncio client, ``watch()`` returns the
        Watch at once: ``w = await client.watch(...)`` (or ``async with client.watch(...) as
        w``) waits for that confirmation, while ``async for e in client.watch(...)`` starts
        the watch at its first iteration. Iterate over the Watch for :class:`WatchEvent` s,
        or pass ``callback`` to have a thread (with the asyncio client, a task) call it for
        each event, and ``on_error`` with the exception that ends the watch; with the asyncio
        client both may be coroutine functions.

        The watch survives member failures: it reconnects to another endpoint and resumes
        after the last event it delivered, with no event lost or repeated.

        Args:
            path: the key, or the subtree's root (``/`` for everything, with recursive).
            recursive: watch the key and every key below it.
            start_revision: replay every change since this revision first (0: only changes
                after the watch starts).
            prev_kv: include each key's previous state in events.
            progress_interval: ask the server for a progress message after this many idle
                seconds (it updates ``Watch.revision``); 0: the client's ``watch_keepalive``.

        Raises (``watch()`` itself, or later the iteration or ``on_error``):
            Compacted: ``start_revision``, or the revision to resume from after a failure,
                was compacted. Unavailable: no endpoint accepted the watch within the
                client's timeout. InvalidArgument: a malformed path.
        """
        keepalive = self._core.options.watch_keepalive
        interval = progress_interval or keepalive
        idle = 2 * interval + 1.0 if interval > 0 else None
        feed = KeyFeed(path, recursive, start_revision, prev_kv, max(interval, 0))
        self._feeds.add(feed)
        return self._watch(feed, idle, callback, on_error)

    def watch_cluster(self, *, callback: Callable[[ClusterEvent], Any] | None = None,
                      on_error: Callable[[BaseException], Any] | None = None) -> ClusterWatchT:
        """Watch membership and leadership changes: a Watch of :class:`ClusterEvent` s, used
        as with :meth:`watch`.

        The current members and the leader come first. Across reconnects, facts already
        reported are not repeated, and members removed meanwhile are reported as removed.
        """
        feed = plans.ClusterFeed()
        self._feeds.add(feed)
        return self._watch(feed, None, callback, on_error)

    # -- coordination -----------------------------------------------------------------------------
    def lease(self, ttl: int = 10, *, id: int = 0) -> coord.Lease[Self]:
        """Grant a lease and keep it alive in the background (a thread; with
        ``confer.aio.Client``, a task) until it is closed or lost. See :class:`Lease`.

        ``confer.Client`` grants it before returning; with ``confer.aio.Client``, ``await``
        the Lease (or enter it with ``async with``). As a context manager, it is revoked on
        exit::

            with client.lease(10) as lease:
                client.put("/workers/w1", b"busy", lease=lease.id)
                lease.on_lost(lambda error: print("lost:", error))

        Args:
            ttl: the TTL in seconds (raised to the cluster's minimum).
            id: the lease id to use (0: the cluster chooses).
        """
        return self._begin(coord.Lease(self, ttl, id))

    def lease_keep_alive(self, id: int) -> coord.Lease[Self]:
        """Keep an existing lease alive in the background (as :meth:`lease`); closing the
        handle stops the keep-alive but does not revoke the lease (``revoke()`` does).

        Raises:
            NotFound: there is no such lease (raised when the handle starts).
        """
        return self._begin(coord.Lease(self, 0, id, owned=False))

    def lock(self, name: str, ttl: int = 10, *, lease: coord.Lease[Self] | None = None,
             timeout: float | None = None) -> coord.Lock[Self]:
        """A distributed lock named ``name`` (a path, e.g. ``/locks/db``); acquired by
        ``with`` (``async with``) or ``acquire()``, released on exit. See :class:`Lock`::

            with client.lock("/locks/db", ttl=10) as lock:
                client.txn().if_(lock.guard).then(Op.put("/db/x", b"1")).commit()

        Args:
            name: the lock's name.
            ttl: the TTL of the lock's own lease, kept alive while held: if the holder dies,
                the lock is released within about this long.
            lease: hold the lock with this (started) Lease instead of an own one.
            timeout: how long acquiring may wait (``None``: for ever).
        """
        return coord.Lock(self, name, ttl, lease, timeout)

    def election(self, name: str, ttl: int = 10, *, lease: coord.Lease[Self] | None = None
                 ) -> coord.Election[Self]:
        """A leader election named ``name`` (a path): ``campaign(value)``,
        ``proclaim(value)``, ``leader()``, ``observe()``, ``resign()``. See
        :class:`Election`.

        Args:
            name: the election's name.
            ttl: the TTL of the candidate's own lease (kept alive while campaigning and
                leading).
            lease: campaign with this (started) Lease instead of an own one.
        """
        return coord.Election(self, name, ttl, lease)

    def register(self, service: str, instance_id: str, address: str,
                 metadata: dict[str, Any] | None = None, ttl: int = 10, *,
                 tags: Sequence[str] = (), weights: Weights | None = None,
                 check: Check | None = None) -> coord.Registration[Self]:
        """Register an instance of ``service`` for discovery: put
        ``/services/<service>/<instance_id>`` = its JSON record (address, tags, metadata,
        weights, health: :mod:`confer.catalog`) with a lease kept alive in the background.
        Close the Registration (or leave its ``with`` block) to deregister; if the process
        dies, the instance disappears within ``ttl`` seconds. ``confer.Client`` registers
        before returning; with ``confer.aio.Client``, ``await`` it (or use ``async with``)::

            with client.register("api", "api-1", "10.0.0.7:8080", ttl=10,
                                 check=Check.http("http://10.0.0.7:8080/health",
                                                  interval=5, timeout=1)):
                serve()

        Args:
            service: the service name (one path segment).
            instance_id: unique within the service (one path segment), e.g. ``host:port``.
            address: where clients reach the instance, ``HOST:PORT`` (the DNS interface
                answers for IP addresses).
            metadata: JSON-serializable details (version, zone...).
            ttl: the lease's TTL in seconds.
            tags: labels to select instances by.
            weights: its share of the traffic while passing and while warning (SRV
                weights); default 1 and 1.
            check: a health check the registrant runs against the instance (HTTP, TCP,
                gRPC; see :class:`~confer.client.checks.Check`), recording its status in
                the catalog. Default: none (passing while the lease lives).
        """
        return self._begin(coord.Registration(self, service, instance_id, address, metadata,
                                              ttl, tags=tags, weights=weights, check=check))

    def watch_service(self, service: str, *, current: bool = True,
                      callback: Callable[[ServiceEvent], Any] | None = None,
                      on_error: Callable[[BaseException], Any] | None = None
                      ) -> ServiceWatchT:
        """Watch the instances of ``service``: a Watch of :class:`ServiceEvent` s (JOIN,
        UPDATE, LEAVE with the :class:`Instance`), used like :meth:`watch`. With ``current``,
        a JOIN for every live instance comes first. Like any watch, it survives member
        failures with nothing lost or repeated."""
        keepalive = max(self._core.options.watch_keepalive, 0)
        return self._keyed_watch(ServiceFeed(service, current, keepalive), callback, on_error)

    def watch_healthy(self, service: str, *, tags: Sequence[str] = (),
                      callback: Callable[[builtins.list[Instance]], Any] | None = None,
                      on_error: Callable[[BaseException], Any] | None = None
                      ) -> HealthyWatchT:
        """Watch the healthy set of ``service``: a Watch of lists of :class:`Instance`
        (by id), the current healthy instances first, then the whole set again each time
        it changes (an instance joins, leaves, turns critical or recovers...), used like
        :meth:`watch`. Only instances carrying every tag of ``tags`` count. It survives
        member failures like any watch."""
        keepalive = max(self._core.options.watch_keepalive, 0)
        return self._keyed_watch(HealthyFeed(service, protocol.check_tags(tags), keepalive),
                                 callback, on_error)

    def _keyed_watch(self, feed: KeyFeed, callback: Callable[[Any], Any] | None,
                     on_error: Callable[[BaseException], Any] | None) -> Any:
        """A watch on a key feed that asks for progress every ``watch_keepalive`` seconds,
        so it reconnects after twice as long without a message."""
        keepalive = self._core.options.watch_keepalive
        self._feeds.add(feed)
        return self._watch(feed, 2 * keepalive + 1.0 if keepalive > 0 else None, callback,
                           on_error)

    def _new_lease(self, ttl: int) -> coord.Lease[Self]:
        """A Lease handle, not started yet."""
        return coord.Lease(self, ttl)

    def _begin(self, handle: HandleT) -> HandleT:
        """Enter a handle now with the blocking client; the asyncio client's caller awaits
        it (or enters it with ``async with``)."""
        if not self._io.asynchronous:
            self._io.run(handle._enter_plan())
        return handle

    def _closing(self) -> None:
        """Refuse new calls and end the client's watches (quietly), before the channels
        close."""
        self._core.closed = True
        for feed in list(self._feeds):
            feed.cancel()

    # -- state ------------------------------------------------------------------------------------
    @property
    def options(self) -> Options:
        """The client's configuration."""
        return self._core.options

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The endpoints, in the order they are tried."""
        return self._core.router.endpoints

    @property
    def closed(self) -> bool:
        """Whether the client was closed."""
        return self._core.closed

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<{type(self).__module__}.{type(self).__name__} {','.join(self.endpoints)}{state}>"


class WatchBase(Generic[I]):
    """What both clients' watch handles share: cancelling, and the stream's state."""

    def __init__(self, feed: Feed[I]) -> None:
        self._feed = feed

    def cancel(self) -> None:
        """Stop watching. An iteration in progress ends (without an error); a callback is not
        called again. Safe from any thread, more than once."""
        self._feed.cancel()

    @property
    def cancelled(self) -> bool:
        """Whether the watch was cancelled (or ended with an error)."""
        return self._feed.cancelled

    @property
    def error(self) -> BaseException | None:
        """The exception that ended the watch (e.g. :class:`Compacted`), if any."""
        return self._feed.error

    @property
    def revision(self) -> int:
        """The newest store revision the watch knows of (events, progress messages); 0 for a
        cluster watch."""
        return getattr(self._feed, "revision", 0)

    def _ended(self, error: BaseException) -> None:
        """Record the error that ended the watch."""
        self._feed.error = error
        self._feed.cancelled = True

    def _failed(self, error: BaseException, on_error: Callable[[BaseException], Any] | None
                ) -> Any:
        """A callback watch ended with ``error``: record it and return what ``on_error``
        returned (log it when there is no ``on_error``)."""
        self._ended(error)
        if on_error is None:
            log.error("%s ended with %r and no on_error callback", self._feed.what, error)
            return None
        return on_error(error)
