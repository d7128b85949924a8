"""Every client operation as a *plan*: a generator that yields I/O actions and receives their
results, with no I/O of its own (sans-I/O).

A plan decides everything (which endpoint, what timeout, whether to retry, how to resume a
watch) with :mod:`confer.client.policy`; an I/O layer (:mod:`confer.client.sync` with
blocking gRPC, :mod:`confer.client.aio` with ``grpc.aio``) performs each action and sends
the outcome back. That is how the two clients share one implementation: they differ only in
how they perform these actions:

==============  ====================================================  =======================
action          what the I/O layer does                               sends back
==============  ====================================================  =======================
:class:`Unary`  one unary RPC (optionally: connect first)             the response, or a
                                                                      :class:`Failure`
:class:`Sleep`  sleep                                                 ``None``
:class:`Open`   open a server stream (or a bidirectional one)         a :class:`StreamHandle`
:class:`Send`   send a request on a bidirectional stream              ``None`` or a
                                                                      :class:`Failure`
:class:`Recv`   read the next message of a stream (optionally: give   the message,
                up after a timeout)                                   :data:`END` or a
                                                                      :class:`Failure`
:class:`Emit`   hand items to the caller (iterators only)             ``None``
:class:`Spawn`  run another plan in the background (a thread, or a    a runner, for
                task), handing what it emits to a function            :class:`Stop`
:class:`Stop`   cancel a spawned plan and wait for it to end          ``None``
==============  ====================================================  =======================

A plan that returns a value (a unary call) ends with ``StopIteration(value)``; a plan raises
:class:`~confer.client.errors.ConferError` to fail the operation. When performing an action
is interrupted (``KeyboardInterrupt``, asyncio cancellation), the I/O layer throws the
exception into the plan (:func:`interrupt`), which may yield clean-up actions before it lets
the exception through.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

from confer.client import protocol
from confer.client.errors import Compacted, ConferError, LeaseLost
from confer.client.models import (
    ClusterEvent,
    ClusterEventType,
    EventType,
    Instance,
    KeyValue,
    ListResult,
    ServiceEvent,
    ServiceEventType,
    WatchEvent,
)
from confer.client.policy import Core, Failure, Outcome, Renewal, Retry
from confer.client.protocol import Rpc
from confer.v1 import confer_pb2, coord_pb2, kv_pb2

__all__ = [
    "END",
    "STARTED",
    "Call",
    "ClusterFeed",
    "Done",
    "Emit",
    "Feed",
    "KeyFeed",
    "LeaderFeed",
    "LeaseKeeper",
    "Open",
    "Plan",
    "Recv",
    "Send",
    "ServiceFeed",
    "Sleep",
    "Spawn",
    "Stop",
    "StreamHandle",
    "Unary",
    "advance",
    "interrupt",
    "keep_alive",
    "scan",
    "stream",
    "unary",
]

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 - the item type of a feed


# -- actions ----------------------------------------------------------------------------------
@dataclass(slots=True)
class Unary:
    """Call ``rpc`` on ``endpoint``. With ``connect_timeout`` set, first wait that long for
    the channel to connect, and report ``UNAVAILABLE: could not connect`` (nothing was sent)
    if it does not."""

    endpoint: str
    rpc: Rpc
    request: Any
    timeout: float
    connect_timeout: float | None = None


@dataclass(slots=True)
class Sleep:
    """Wait ``seconds`` (a retry's backoff)."""

    seconds: float


@dataclass(slots=True)
class Open:
    """Open a server stream. ``idle_timeout``: fail the stream (``UNAVAILABLE``) when no
    message arrives for that long (``None``: never). For a bidirectional ``rpc``, ``request``
    is ``None``: the requests go out with :class:`Send`."""

    endpoint: str
    rpc: Rpc
    request: Any
    idle_timeout: float | None = None


@dataclass(slots=True)
class Send:
    """Send ``message`` on an open bidirectional stream."""

    stream: StreamHandle
    message: Any


@dataclass(slots=True)
class Recv:
    """Read the next message of an open stream. ``timeout``: give up after that long, failing
    the stream (``UNAVAILABLE``); ``None``: the stream's idle timeout applies."""

    stream: StreamHandle
    timeout: float | None = None


@dataclass(slots=True)
class Emit:
    """Hand ``items`` to the caller of an iterating plan (a scan page, watch events)."""

    items: Sequence[Any]


@dataclass(slots=True)
class Spawn:
    """Run ``plan`` in the background: with a thread (blocking client) or a task (asyncio).
    Each item it emits, and then the exception that ended it if any, goes to ``deliver``
    (called in that thread or task). ``feed`` is the plan's state: cancelling it must end the
    plan; the runner also makes it interrupt the plan's sleeps (:attr:`Feed.wakeup`). Sends
    back a runner to :class:`Stop`."""

    plan: Plan[None]
    feed: Feed[Any]
    deliver: Callable[[Any], None]
    name: str


@dataclass(slots=True)
class Stop:
    """Cancel a :class:`Spawn` ed plan (through its feed) and wait up to ``timeout`` seconds
    for it to end. From inside the plan's own thread or task it only cancels."""

    runner: Any
    timeout: float


@dataclass(slots=True)
class Done:
    """Not yielded by plans: :func:`advance` wraps a finished plan's value in it."""

    value: Any


class _End:
    def __repr__(self) -> str:
        return "END"


END = _End()
"""What :class:`Recv` returns when the server ended the stream normally."""


class _Started:
    def __repr__(self) -> str:
        return "STARTED"


STARTED = _Started()
"""Emitted once by a key watch when its first stream is established: every change after
that point will be delivered. The watch handles consume it before returning."""

Action = Unary | Sleep | Open | Send | Recv | Emit | Spawn | Stop
Plan = Generator[Action, Any, T]


class StreamHandle(Protocol):
    """An open stream, as an I/O layer represents it."""

    def cancel(self) -> None:
        """Cancel the stream; a blocked or later :class:`Recv` then returns a ``CANCELLED``
        failure. Safe to call from any thread, more than once."""


def advance(plan: Plan[Any], value: Any) -> Action | Done:
    """Send ``value`` into ``plan``; return its next action, or :class:`Done` when it ended."""
    try:
        return plan.send(value)
    except StopIteration as stop:
        return Done(stop.value)


def interrupt(plan: Plan[Any], error: BaseException) -> Action | Done:
    """Performing the plan's last action was interrupted by ``error`` (``KeyboardInterrupt``,
    asyncio cancellation...): throw it into the plan. The plan may yield clean-up actions
    (return them) before it lets the error through (raised here)."""
    try:
        return plan.throw(error)
    except StopIteration as stop:
        return Done(stop.value)


# -- unary calls ------------------------------------------------------------------------------
@dataclass(slots=True)
class Call(Generic[T]):
    """One unary request, fully described: what to send, how to retry, how to read the answer.

    Attributes:
        what: names the operation in error messages, e.g. ``"Put /app/x"``.
        rpc: the method.
        request: the protobuf request.
        retry: how it may be retried.
        convert: turns the response (and the endpoint that answered) into the result.
        timeout: the call's deadline in seconds (``None``: the client's default; ``inf``: no
            deadline, for calls that wait on the server).
        endpoint: pin the call to this endpoint (no failover).
        settle: reads an error answer as a result: called with the error the answer would
            raise and whether an earlier attempt's outcome was unknown (so the answer may be
            that attempt's effect, e.g. NOT_FOUND for a revocation that did happen); returns
            the result, or raises.
        abort: asked before each retry; an error it returns ends the call (e.g. the lease a
            waiting Lock call needs was lost meanwhile).
    """

    what: str
    rpc: Rpc
    request: Any
    retry: Retry
    convert: Callable[[Any, str], T]
    timeout: float | None = None
    endpoint: str | None = None
    settle: Callable[[ConferError, bool], T] | None = None
    abort: Callable[[], ConferError | None] | None = None


def unary(core: Core, call: Call[T]) -> Plan[T]:
    """Make ``call``, failing over and retrying as :class:`~confer.client.policy.Attempts`
    decides."""
    attempts = core.attempts(call.retry, call.timeout, call.what, call.endpoint)
    write = call.retry is not Retry.READ
    if write and call.endpoint is None and core.router.wants_topology(core.clock()):
        yield from refresh_topology(core, attempts.attempt_timeout())
        attempts.endpoint = core.router.pick(True)
    while True:
        endpoint = attempts.endpoint
        connect = attempts.connect_timeout() if call.retry is Retry.ONCE else None
        result = yield Unary(endpoint, call.rpc, call.request, attempts.attempt_timeout(),
                             connect)
        if type(result) is not Failure:
            header = result.header
            core.router.learn(endpoint, header.member_id, header.leader_id, not write)
            return call.convert(result, endpoint)
        try:
            delay = attempts.failed(result)
        except ConferError as e:
            if call.settle is None or result.outcome is not Outcome.ANSWER:
                raise
            return call.settle(e, attempts.unknown is not None)
        if call.abort is not None and (error := call.abort()) is not None:
            raise error
        if delay > 0:
            yield Sleep(delay)


def refresh_topology(core: Core, timeout: float) -> Plan[None]:
    """Learn which endpoint is the leader's from one serializable MemberList (best effort)."""
    router = core.router
    router.mark_topology_attempt(core.clock())
    result = yield Unary(router.current, protocol.MEMBER_LIST,
                         kv_pb2.MemberListRequest(serializable=True),
                         min(timeout, core.options.connect_timeout))
    if type(result) is not Failure:
        router.learn_members(((m.id, m.client_addr) for m in result.members),
                             result.header.leader_id, core.clock())


def scan(core: Core, page: Callable[[str, int], Call[ListResult]]) -> Plan[None]:
    """Emit every key of a listing, page by page; ``page(start_after, revision)`` makes the
    call for one page. Pages after the first are read at the first page's revision, so the
    whole scan sees one snapshot."""
    start_after, revision = "", 0
    while True:
        result: ListResult = yield from unary(core, page(start_after, revision))
        if result.kvs:
            yield Emit(result.kvs)
        if not result.more or not result.kvs:
            return
        start_after, revision = result.kvs[-1].path, revision or result.revision


# -- streams ----------------------------------------------------------------------------------
class Feed(Generic[I]):
    """The state of one resilient stream (a watch): what to (re)open, and what to make of
    each message. Shared by the plan (:func:`stream`) and the caller's handle.

    Attributes:
        cancelled: the caller cancelled the stream.
        connected: the current connection has delivered its first message.
        error: the exception that ended the stream, if any.
        wakeup: called by :meth:`cancel`, to interrupt a background plan's sleep.
    """

    rpc: Rpc
    what: str = "stream"
    announces_start = False
    """Whether the feed emits :data:`STARTED` once its first stream is established."""
    syncs_first = False
    """Whether :meth:`resync` runs before the first stream is opened too (not only before a
    stream is reopened after a failure)."""

    def __init__(self) -> None:
        self.cancelled = False
        self.connected = False
        self.error: BaseException | None = None
        self.handle: StreamHandle | None = None
        self.wakeup: Callable[[], None] | None = None

    def cancel(self) -> None:
        """Stop the stream: the caller's iteration ends (it does not raise)."""
        self.cancelled = True
        handle = self.handle
        if handle is not None:
            handle.cancel()
        wakeup = self.wakeup
        if wakeup is not None:
            wakeup()

    def request(self) -> Any:
        """The request that opens (or reopens) the stream."""
        raise NotImplementedError

    def accept(self, message: Any, endpoint: str, core: Core) -> Sequence[I]:
        """The items a message carries for the caller (possibly none)."""
        raise NotImplementedError

    def resync(self, core: Core, endpoint: str) -> Plan[Sequence[I]]:
        """Before reopening after a failure: catch up on what the stream cannot replay."""
        return ()
        yield  # pragma: no cover - makes this a generator


def stream(core: Core, feed: Feed[Any], idle_timeout: float | None) -> Plan[None]:
    """Keep ``feed``'s stream open until it is cancelled, reconnecting after failures.

    A connection that failed before delivering anything is retried like a read (other
    endpoints, backoff); when no endpoint accepts the stream within the client's timeout,
    the stream fails with :class:`~confer.client.errors.Unavailable`. A connection that
    worked and then broke starts a fresh budget, at the next endpoint.
    """
    attempts = core.attempts(Retry.READ, None, feed.what)
    reopening = False
    while not feed.cancelled:
        endpoint = attempts.endpoint
        if reopening or feed.syncs_first:
            missed = yield from feed.resync(core, endpoint)
            if missed:
                yield Emit(missed)
        failure = yield from _over(feed, Open(endpoint, feed.rpc, feed.request(), idle_timeout),
                                   partial(_pump, core, feed, endpoint=endpoint))
        if failure is None or feed.cancelled:
            return
        if feed.connected:
            feed.connected = False
            attempts = core.attempts(Retry.READ, None, feed.what, None)
            attempts.endpoint = endpoint
        delay = attempts.failed(failure)
        if delay > 0:
            yield Sleep(delay)
        reopening = True


def _over(feed: Feed[Any], open_: Open,
          session: Callable[[StreamHandle], Generator[Action, Any, T]]
          ) -> Generator[Action, Any, T]:
    """Open a stream for ``feed`` and run ``session`` over it; the stream is cancelled when
    the session ends, however it ends."""
    handle = feed.handle = yield open_
    if feed.cancelled:  # cancelled while opening: the handle missed the cancel()
        handle.cancel()
    try:
        return (yield from session(handle))
    finally:
        feed.handle = None
        handle.cancel()


def _receive(feed: Feed[Any], handle: StreamHandle, endpoint: str,
             timeout: float | None = None) -> Generator[Action, Any, Any]:
    """The next message of a stream, or a :class:`Failure` (it failed or ended), or None (the
    feed was cancelled meanwhile)."""
    message = yield Recv(handle, timeout)
    if feed.cancelled:
        return None
    if message is END:
        return Failure("UNAVAILABLE", f"{endpoint} ended the stream")
    return message


def _pump(core: Core, feed: Feed[Any], handle: StreamHandle, endpoint: str
          ) -> Generator[Action, Any, Failure | None]:
    """Read one connection's messages until it fails (return the failure) or the feed is
    cancelled (return None)."""
    while True:
        message = yield from _receive(feed, handle, endpoint)
        if message is None or type(message) is Failure:
            return message  # type: ignore[no-any-return]
        feed.connected = True
        items = feed.accept(message, endpoint, core)
        if items:
            yield Emit(items)
            if feed.cancelled:
                return None


class KeyFeed(Feed[WatchEvent]):
    """A watch on a key or a subtree that survives failures without losing or repeating an
    event.

    It resumes from the revision after the last event it delivered (or, before any event,
    after the revision at which the first stream was created). Events at or below the
    resume point are dropped if a server sends them anyway (a safety net), as is any event
    older than the last one delivered.

    It emits :data:`STARTED` when the first stream is created, so that the caller can wait
    until changes are certain to be seen.

    Attributes:
        revision: the newest store revision this watch knows of (from events, progress
            messages and stream creation).
        last_revision: the revision of the last event delivered (0: none yet).
        next_revision: where the stream (re)starts (0: "from now", until known).
        dropped: how many duplicate events the safety net dropped.
    """

    rpc = protocol.WATCH
    announces_start = True

    def __init__(self, path: str, recursive: bool, start_revision: int, prev_kv: bool,
                 progress_interval: float) -> None:
        super().__init__()
        self.what = f"Watch {path}"
        self._template = (path, recursive, prev_kv, progress_interval)
        self.revision = 0
        self.started = False
        self.last_revision = 0
        self.next_revision = start_revision
        self._floor = start_revision - 1 if start_revision > 0 else 0
        self.dropped = 0

    def request(self) -> kv_pb2.WatchRequest:
        path, recursive, prev_kv, progress = self._template
        self._floor = max(self._floor, self.next_revision - 1, 0)
        return kv_pb2.WatchRequest(path=path, recursive=recursive,
                                   start_revision=self.next_revision, prev_kv=prev_kv,
                                   progress_interval=progress)

    def accept(self, message: kv_pb2.WatchResponse, endpoint: str, core: Core
               ) -> list[WatchEvent]:
        header_revision = message.header.revision
        if message.canceled:
            self.cancelled = True
            reason = message.cancel_reason or "the server cancelled the watch"
            if message.compact_revision:
                raise Compacted(message.compact_revision,
                                f"{self.what}: cannot resume from revision "
                                f"{self.next_revision}: {reason}", code="OUT_OF_RANGE",
                                details=reason)
            raise ConferError(f"{self.what}: {reason}", details=reason)
        if message.created:
            core.router.learn(endpoint, message.header.member_id, message.header.leader_id,
                              True)
            if self.next_revision == 0:
                self.next_revision = header_revision + 1
                self._floor = header_revision
        if header_revision > self.revision:
            self.revision = header_revision
        if not message.events:
            if message.created and not self.started:
                self.started = True
                return [STARTED]  # type: ignore[list-item]
            return []
        floor, last = self._floor, self.last_revision
        out = []
        for e in message.events:
            rev = e.kv.mod_revision
            if rev <= floor or rev < last:
                self.dropped += 1
                continue
            out.append(protocol.watch_event(e))
            last = rev
        if out:
            self.last_revision = last
            self.next_revision = last + 1
            if last > self.revision:
                self.revision = last
        return out


class ClusterFeed(Feed[ClusterEvent]):
    """Membership and leadership changes, deduplicated against a local view of the cluster.

    The server replays the current members and leader when a stream opens; replayed facts
    the view already holds are not repeated to the caller. After a reconnect, a member list
    from the new endpoint reveals members removed while disconnected.

    Attributes:
        members: member id -> (client address, is learner), as last seen.
        leader_id: the leader as last seen (0: none).
    """

    rpc = protocol.WATCH_CLUSTER
    what = "WatchCluster"

    def __init__(self) -> None:
        super().__init__()
        self.members: dict[int, tuple[str, bool]] = {}
        self.leader_id = 0

    def request(self) -> confer_pb2.Empty:
        return confer_pb2.Empty()

    def accept(self, message: confer_pb2.ClusterUpdate, endpoint: str, core: Core
               ) -> list[ClusterEvent]:
        event = protocol.cluster_event(message)
        return [event] if event is not None and self.apply(event) else []

    def apply(self, event: ClusterEvent) -> bool:
        """Update the view; return whether ``event`` changed it."""
        kind, node = event.type, event.node_id
        if kind is ClusterEventType.LEADER_CHANGED:
            changed = node != self.leader_id
            self.leader_id = node
            return changed
        if kind is ClusterEventType.MEMBER_REMOVED:
            return self.members.pop(node, None) is not None
        if kind is ClusterEventType.MEMBER_PROMOTED:
            addr, learner = self.members.get(node, (event.addr, True))
            self.members[node] = (addr, False)
            return learner
        learner = kind is ClusterEventType.LEARNER_ADDED
        before = self.members.get(node)
        addr = event.addr or (before[0] if before else "")
        self.members[node] = (addr, learner)
        return before != (addr, learner)

    def resync(self, core: Core, endpoint: str) -> Plan[Sequence[ClusterEvent]]:
        call = Call("MemberList", protocol.MEMBER_LIST, kv_pb2.MemberListRequest(
            serializable=True), Retry.READ, _member_ids, core.options.connect_timeout,
            endpoint)
        try:
            current: set[int] = yield from unary(core, call)
        except ConferError:
            return ()
        gone = [ClusterEvent(ClusterEventType.MEMBER_REMOVED, i) for i in sorted(self.members)
                if i not in current]
        for e in gone:
            self.apply(e)
        return gone


def _member_ids(resp: kv_pb2.MemberListResponse, endpoint: str) -> set[int]:
    return {m.id for m in resp.members}



# -- coordination -----------------------------------------------------------------------------
class LeaseKeeper(Feed[LeaseLost]):
    """The state of one lease's keep-alive (:func:`keep_alive`): the lease, the timing of its
    renewals, and how it ended. It emits one :class:`LeaseLost` if the lease is lost.

    Attributes:
        lease_id: the lease.
        renewal: when to renew, and until when the lease surely lives.
        lost: why the lease was lost, once it was.
        last_failure: the last failure of a renewal stream (for the loss message).
    """

    rpc = protocol.LEASE_KEEP_ALIVE

    def __init__(self, lease_id: int, renewal: Renewal) -> None:
        super().__init__()
        self.lease_id = lease_id
        self.renewal = renewal
        self.what = f"KeepAlive {lease_id}"
        self.lost: LeaseLost | None = None
        self.last_failure: Failure | None = None

    def request(self) -> coord_pb2.LeaseKeepAliveRequest:
        return coord_pb2.LeaseKeepAliveRequest(id=self.lease_id)

    def ended(self) -> LeaseLost:
        """The error for a lease the cluster says is gone (TTL 0)."""
        return LeaseLost(self.lease_id, f"lease {self.lease_id} ({self.lease_id:#x}) was "
                         "revoked or expired (the cluster answered TTL 0)")

    def expired(self, cause: object) -> LeaseLost:
        """The error for a lease that could not be renewed before its deadline."""
        return LeaseLost(self.lease_id, f"lease {self.lease_id} ({self.lease_id:#x}): no "
                         f"renewal acknowledged within its TTL of {self.renewal.ttl:g}s, so it "
                         f"may have expired (last error: {cause})")


def keep_alive(core: Core, keeper: LeaseKeeper) -> Plan[None]:
    """Renew ``keeper``'s lease over a KeepAlive stream until the keeper is cancelled or the
    lease is lost, as :class:`~confer.client.policy.Renewal` times it.

    Renewals go to the leader's endpoint when it is known (any member proxies them to the
    leader). A stream that fails, or does not answer a renewal in time, is replaced by one to
    the next endpoint after a backoff; a renewal is idempotent, so one whose outcome is
    unknown is simply sent again. The lease is lost when an answer says TTL 0 (revoked or
    expired), when the server refuses the stream with an answer (e.g. NOT_FOUND), or when no
    renewal could be acknowledged before the deadline; the plan then emits one
    :class:`LeaseLost` and ends.
    """
    renewal = keeper.renewal
    attempts = core.attempts(Retry.READ, renewal.budget(core.clock()), keeper.what)
    attempts.endpoint = core.router.pick(True)
    while not keeper.cancelled:
        endpoint = attempts.endpoint
        acknowledged = renewal.renewals
        outcome = yield from _over(keeper, Open(endpoint, keeper.rpc, None),
                                   partial(_renew, core, keeper, endpoint=endpoint))
        if outcome is None or keeper.cancelled:
            return
        if isinstance(outcome, LeaseLost):
            yield from _lose(keeper, outcome)
            return
        keeper.last_failure = outcome
        if renewal.renewals > acknowledged:  # this stream worked: a fresh budget
            attempts = core.attempts(Retry.READ, renewal.budget(core.clock()), keeper.what)
            attempts.endpoint = endpoint
        try:
            delay = attempts.failed(outcome)
        except ConferError as e:  # an answer, or no time left to renew before the deadline
            if not keeper.cancelled:
                yield from _lose(keeper, keeper.expired(e))
            return
        yield Sleep(delay)


def _renew(core: Core, keeper: LeaseKeeper, handle: StreamHandle, endpoint: str
           ) -> Generator[Action, Any, Failure | LeaseLost | None]:
    """Renew over one stream until it fails (return the failure), the lease is lost (return
    why) or the keeper is cancelled (return None)."""
    renewal = keeper.renewal
    while True:
        wait = renewal.due() - core.clock()
        if wait > 0:
            yield Sleep(wait)
            if keeper.cancelled:
                return None
        sent = core.clock()
        if renewal.expired(sent):
            return keeper.expired(keeper.last_failure or "none")
        failure = yield Send(handle, keeper.request())
        if failure is not None:
            return failure  # type: ignore[no-any-return]
        message = yield from _receive(keeper, handle, endpoint, renewal.answer_timeout(
            sent, core.options.min_attempt_timeout))
        if message is None or type(message) is Failure:
            return message  # type: ignore[no-any-return]
        if message.ttl <= 0:
            return keeper.ended()
        core.router.learn(endpoint, message.header.member_id, message.header.leader_id, False)
        renewal.acknowledged(sent, message.ttl)


def _lose(keeper: LeaseKeeper, error: LeaseLost) -> Plan[None]:
    keeper.lost = error
    yield Emit([error])


class LeaderFeed(Feed[KeyValue]):
    """The leaders of an election (``Observe``): each new leader, and each new value of the
    leader, as the leader's :class:`KeyValue` (``create_revision`` identifies the term).

    A stream opened again after a failure starts with the current leader: it is dropped if it
    was the last one delivered, as is anything observed at an older revision. Leaders that
    came and went while no stream was open are not seen (only the current one is).

    Attributes:
        revision: the store revision of the last leader delivered.
    """

    rpc = protocol.OBSERVE

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = protocol.check_path(name)
        self.what = f"Observe {name}"
        self.revision = 0
        self._last: tuple[str, int, int] | None = None

    def request(self) -> coord_pb2.LeaderRequest:
        return coord_pb2.LeaderRequest(name=self.name)

    def accept(self, message: coord_pb2.LeaderResponse, endpoint: str, core: Core
               ) -> list[KeyValue]:
        kv = protocol.key_value(message.kv)
        term = (kv.path, kv.create_revision, kv.mod_revision)
        if term == self._last or message.header.revision < self.revision:
            return []
        self._last = term
        self.revision = message.header.revision
        return [kv]


class ServiceFeed(KeyFeed):
    """The instances of a service joining, changing and leaving (:class:`ServiceEvent` s).

    Before its first stream it lists ``/services/<service>`` (one read, which gives the
    view of the live instances and the revision to watch from); with ``current``, JOIN events
    for those instances come first. Then it watches the subtree from the revision after the
    listing, resuming like any watch: nothing is lost or repeated.

    Attributes:
        instances: the live instances as last seen, by id.
    """

    announces_start = True
    syncs_first = True

    def __init__(self, service: str, current: bool, progress_interval: float) -> None:
        self.prefix = protocol.service_prefix(service)
        super().__init__(self.prefix, True, 0, False, progress_interval)
        self.what = f"WatchService {service}"
        self.current = current
        self.instances: dict[str, Instance] = {}
        self._pending: list[ServiceEvent] = []
        self._listed = False

    def resync(self, core: Core, endpoint: str) -> Plan[Sequence[ServiceEvent]]:
        if self._listed:
            return ()  # a reopened stream resumes after the last event
        call = Call(f"List {self.prefix}", protocol.RANGE,
                    kv_pb2.RangeRequest(path=self.prefix, recursive=True), Retry.READ,
                    lambda resp, _: resp)
        resp: kv_pb2.RangeResponse = yield from unary(core, call)
        revision = resp.header.revision
        for instance in protocol.instances_result(resp, self.prefix):
            self.instances[instance.id] = instance
        if self.current:
            self._pending = [ServiceEvent(ServiceEventType.JOIN, i, revision)
                             for i in self.instances.values()]
        self.next_revision = revision + 1
        self._listed = True
        return ()

    def accept(self, message: kv_pb2.WatchResponse, endpoint: str, core: Core
               ) -> list[ServiceEvent]:
        out: list[ServiceEvent] = []
        for item in super().accept(message, endpoint, core):
            if item is STARTED:
                out += [STARTED, *self._pending]  # type: ignore[list-item]
                self._pending = []
            elif (event := self.apply(item)) is not None:
                out.append(event)
        return out

    def apply(self, event: WatchEvent) -> ServiceEvent | None:
        """Update the view with a key event; return the service event it makes, if any."""
        if event.type is EventType.PUT:
            instance = protocol.instance(event.kv, self.prefix)
            if instance is None:
                return None
            before = self.instances.get(instance.id)
            self.instances[instance.id] = instance
            if before is None:
                return ServiceEvent(ServiceEventType.JOIN, instance, event.revision)
            if (before.address, before.metadata) == (instance.address, instance.metadata):
                return None
            return ServiceEvent(ServiceEventType.UPDATE, instance, event.revision)
        instance_id = event.kv.path[len(self.prefix) + 1:]
        gone = self.instances.pop(instance_id, None)
        return None if gone is None else ServiceEvent(ServiceEventType.LEAVE, gone,
                                                      event.revision)
