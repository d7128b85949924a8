"""Feeds: resilient server streams as plans. A :class:`Feed` says what to (re)open and what
to make of each message; :func:`stream` keeps it open across failures. :class:`KeyFeed` (a
key watch) and :class:`ClusterFeed` (membership and leadership) are the client's watches."""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from functools import partial
from typing import Any, Generic, TypeVar

from confer.client import protocol
from confer.client.errors import Compacted, ConferError
from confer.client.models import ClusterEvent, ClusterEventType, WatchEvent
from confer.client.plans.actions import (
    END,
    STARTED,
    Action,
    Emit,
    Open,
    Plan,
    Recv,
    Sleep,
    StreamHandle,
)
from confer.client.plans.unary_calls import Call, unary
from confer.client.policy import Core, Failure, Retry
from confer.client.protocol import Rpc
from confer.v1 import confer_pb2, kv_pb2

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 - the item type of a feed


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
        self.wakeup: Callable[[], object] | None = None

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
    the stream fails with :class:`~confer.client.errors.Unavailable` (at once, with the
    ``fail_fast`` option, when every endpoint refused the connection). A connection that
    worked and then broke starts a fresh budget, at the next endpoint.
    """
    attempts = core.attempts(Retry.READ, None, feed.what, may_fail_fast=True)
    reopening = False
    while not feed.cancelled:
        endpoint = attempts.endpoint
        if reopening or feed.syncs_first:
            missed = yield from feed.resync(core, endpoint)
            if missed:
                yield Emit(missed)
        failure = yield from over(feed, Open(endpoint, feed.rpc, feed.request(), idle_timeout),
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


def over(feed: Feed[Any], open_: Open,
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


def receive(feed: Feed[Any], handle: StreamHandle, endpoint: str,
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
        message = yield from receive(feed, handle, endpoint)
        if message is None or type(message) is Failure:
            return message
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
                return [STARTED]  # type: ignore[list-item]  # the sentinel among the events
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
