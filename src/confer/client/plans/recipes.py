"""The streams behind the coordination recipes: a lease's keep-alive (:class:`LeaseKeeper`,
:func:`keep_alive`), an election's leaders (:class:`LeaderFeed`) and a service's instances
(:class:`ServiceFeed`). The handles of :mod:`confer.client.coord` run them."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from functools import partial
from typing import Any

from confer.client import protocol
from confer.client.errors import ConferError, LeaseLost
from confer.client.models import (
    EventType,
    Instance,
    KeyValue,
    ServiceEvent,
    ServiceEventType,
    WatchEvent,
)
from confer.client.plans.actions import STARTED, Action, Emit, Open, Plan, Send, Sleep, StreamHandle
from confer.client.plans.feeds import Feed, KeyFeed, over, receive
from confer.client.plans.unary_calls import Call, unary
from confer.client.policy import Core, Failure, Renewal, Retry
from confer.v1 import coord_pb2, kv_pb2


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
        outcome = yield from over(keeper, Open(endpoint, keeper.rpc, None),
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
        failure: Failure | None = yield Send(handle, keeper.request())
        if failure is not None:
            return failure
        message = yield from receive(keeper, handle, endpoint, renewal.answer_timeout(
            sent, core.options.min_attempt_timeout))
        if message is None or type(message) is Failure:
            return message
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

    # The feed emits service events, not KeyFeed's key events: Feed is generic in its item
    # type but KeyFeed is not, so these overrides narrow what the base class declares.
    def resync(self, core: Core, endpoint: str  # type: ignore[override]
               ) -> Plan[Sequence[ServiceEvent]]:
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

    def accept(self, message: kv_pb2.WatchResponse, endpoint: str,  # type: ignore[override]
               core: Core) -> list[ServiceEvent]:
        out: list[ServiceEvent] = []
        for item in super().accept(message, endpoint, core):
            if item is STARTED:
                out += [STARTED, *self._pending]  # type: ignore[list-item]  # the sentinel
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


class HealthyFeed(ServiceFeed):
    """The healthy instances of a service, as a whole: the current set first (possibly
    empty), then the new set each time it changes (an instance joins healthy, leaves, turns
    critical or back, or changes address, tags, metadata, weights or status). Items are
    lists of :class:`Instance`, by id; a change of health output alone, or a record
    rewritten as it was, yields nothing.

    Attributes:
        tags: only instances that carry every one of these tags count.
    """

    def __init__(self, service: str, tags: frozenset[str], progress_interval: float) -> None:
        super().__init__(service, False, progress_interval)
        self.what = f"WatchHealthy {service}"
        self.tags = tags
        self._last: tuple[tuple[Any, ...], ...] | None = None

    def accept(self, message: kv_pb2.WatchResponse, endpoint: str, core: Core) -> list[Any]:
        started = False
        for item in super().accept(message, endpoint, core):
            started = started or item is STARTED
        healthy = protocol.select(sorted(self.instances.values(), key=lambda i: i.id), True,
                                  self.tags)
        shape = tuple((i.id, i.address, i.tags, repr(i.metadata), i.weights, i.status)
                      for i in healthy)
        out: list[Any] = [STARTED] if started else []
        if shape != self._last and (started or self._last is not None):
            self._last = shape
            out.append(healthy)
        return out

