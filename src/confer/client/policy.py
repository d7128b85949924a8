"""Retry, failover and backoff decisions: the one place they are made, for both clients.

Nothing here does I/O. The plans (:mod:`confer.client.plans`) ask these objects what to do
after each attempt, and the sync and asyncio I/O layers carry it out.

The rules:

* **Which endpoint.** Calls stick to one endpoint (the first given, until it fails). Writes go
  to the leader's endpoint when the client knows it (learned from response headers and from
  one serializable MemberList); a follower forwards writes anyway, so this is only a shortcut.
  A failed endpoint is left for the next one in the list (round robin).
* **Which failures are retried.** A failure is classified (:func:`classify`) as an *answer*
  (raise it), *not applied* (UNAVAILABLE from the server, a connection that could not be
  made, a leader refusing proposals during a leadership transfer, or a saturated member
  refusing a write with "too many requests": the request never ran)
  or *unknown* (the connection broke after the request was sent,
  the attempt timed out, UNKNOWN). Reads retry both kinds; ``put`` and ``delete`` too, since
  repeating them converges to the same key state; a transaction, a compaction or a membership
  change retries only *not applied* failures and raises :class:`OutcomeUnknown` at once on an
  unknown one. Calls that wait on the server (``Lock``, ``Campaign``) converge too when
  repeated with the same lease, and each attempt gets all the remaining time.
* **When.** Exponential backoff with jitter between attempts, all within the call's deadline;
  when the next attempt could not start before the deadline, the call gives up.
* **Keeping a lease alive** (:class:`Renewal`): renew every TTL/3, counted from when the last
  acknowledged renewal was sent; presume the lease lost once TTL has passed since then.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from confer.client.endpoints import parse_endpoints
from confer.client.errors import (
    ClientClosed,
    ConferError,
    DeadlineExceeded,
    InvalidArgument,
    OutcomeUnknown,
    Unavailable,
    error_from_status,
)

__all__ = [
    "Attempts",
    "Backoff",
    "Core",
    "Failure",
    "Options",
    "Outcome",
    "Renewal",
    "Retry",
    "Router",
    "classify",
]


class Retry(enum.Enum):
    """How a call may be retried."""

    READ = "read"
    """No side effect: retry on any transient failure."""
    CONVERGENT = "convergent"
    """``put``/``delete``: retry even when the outcome is unknown; repeating converges."""
    ONCE = "once"
    """Txn, compact, member changes: retry only when the failure proves nothing was applied."""
    WAIT = "wait"
    """``Lock``, ``Campaign``: the server holds the call until its turn comes. Retried like
    CONVERGENT (the same lease reuses its key), but each attempt gets all the remaining time:
    giving up an attempt early would give up the caller's place in the queue."""


class Outcome(enum.Enum):
    """What a failed attempt means for the request."""

    ANSWER = "answer"
    """The server decided (bad input, not found...): raise it, do not retry."""
    NOT_APPLIED = "not_applied"
    """The request certainly did not take effect."""
    UNKNOWN = "unknown"
    """The request may or may not have taken effect."""


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed attempt, as the I/O layer reports it: a gRPC status name and its message."""

    code: str
    details: str = ""

    @property
    def outcome(self) -> Outcome:
        """What the failure means for the request (see :func:`classify`)."""
        return classify(self.code, self.details)

    @property
    def never_connected(self) -> bool:
        """The connection to the endpoint could not be made (refused, unresolvable...)."""
        return self.code == "UNAVAILABLE" and _never_connected(self.details)


NOT_CONNECTED = "could not connect"
"""Prefix of the details of a :class:`Failure` the I/O layer makes when a channel did not
connect in time: nothing was sent."""

# gRPC reports a connection that broke while a call was in flight as UNAVAILABLE too; these
# phrases tell it apart from a server's UNAVAILABLE (no leader, not leader, dropped), and
# from a connection that never came up ("failed to connect to all addresses", checked first).
_NEVER_CONNECTED = ("failed to connect", "dns resolution failed", NOT_CONNECTED,
                    "name resolution")
_BROKEN_IN_FLIGHT = ("stream removed", "socket closed", "connection reset", "broken pipe",
                     "goaway", "keepalive", "rst_stream", "end of tcp stream",
                     "connection aborted", "transport closed", "endpoint closing",
                     "fd shutdown", "cancelling all calls")
_TRANSFERRING = "leadership transfer in progress"
_INVALID_TOKEN = "invalid auth token"
_TOO_MANY_REQUESTS = "too many requests"
_UNKNOWN_CODES = frozenset({"UNKNOWN", "DEADLINE_EXCEEDED", "CANCELLED", "ABORTED"})


def _never_connected(details: str) -> bool:
    text = details.lower()
    return any(p in text for p in _NEVER_CONNECTED)


def classify(code: str, details: str) -> Outcome:
    """Classify a failed attempt by its gRPC status name and message."""
    if code == "UNAVAILABLE":
        if _never_connected(details):
            return Outcome.NOT_APPLIED
        if any(p in details.lower() for p in _BROKEN_IN_FLIGHT):
            return Outcome.UNKNOWN
        return Outcome.NOT_APPLIED
    if code in _UNKNOWN_CODES:
        return Outcome.UNKNOWN
    if code == "UNAUTHENTICATED" and _INVALID_TOKEN in details:
        return Outcome.NOT_APPLIED  # refused before anything ran; the retry authenticates again
    if code == "FAILED_PRECONDITION" and _TRANSFERRING in details:
        return Outcome.NOT_APPLIED  # the leader refuses proposals while handing over: transient
    if code == "RESOURCE_EXHAUSTED" and _TOO_MANY_REQUESTS in details:
        return Outcome.NOT_APPLIED  # a saturated member pushed back before the log: back off
    return Outcome.ANSWER


@dataclass(frozen=True)
class Options:
    """Client configuration, shared by ``confer.Client`` and ``confer.aio.Client``.

    Attributes:
        endpoints: client addresses (``host:port``) of some or all members.
        timeout: default deadline of a call, in seconds, retries included.
        connect_timeout: how long a transaction, compaction or membership change waits for
            a connection before trying the next endpoint (nothing is sent until connected).
        min_attempt_timeout: a retryable call gives each attempt half of its remaining time,
            but at least this much, so that one stuck endpoint cannot use up the deadline.
        backoff_base: the first retry delay, in seconds; it doubles per attempt.
        backoff_max: the largest retry delay.
        watch_keepalive: watches ask the server for a progress message after this many idle
            seconds, and reconnect when nothing at all arrived for about twice as long
            (0 disables both).
        prefer_leader: send writes to the leader's endpoint when it is known.
        shuffle: shuffle the endpoints once, to spread many clients over the members.
        seed: seed of the backoff jitter (and of ``shuffle``), for reproducible tests.
        grpc_options: extra gRPC channel options.
        fail_fast: a request (or a stream's first connection) gives up (Unavailable) as soon
            as every endpoint refused the connection, instead of retrying until its deadline.
            Streams that were connected, and lease renewals, keep retrying.
    """

    endpoints: tuple[str, ...]
    timeout: float = 10.0
    connect_timeout: float = 2.0
    min_attempt_timeout: float = 1.0
    backoff_base: float = 0.025
    backoff_max: float = 1.0
    watch_keepalive: float = 5.0
    prefer_leader: bool = True
    shuffle: bool = False
    seed: int | None = None
    grpc_options: tuple[tuple[str, int | str], ...] = ()
    fail_fast: bool = False

    def __post_init__(self) -> None:
        # URLs keep only their host:port (the client chose TLS from their scheme already).
        endpoints = parse_endpoints(self.endpoints)
        object.__setattr__(self, "endpoints", tuple(e.address for e in endpoints))
        if self.timeout <= 0:
            raise InvalidArgument(f"timeout must be positive, got {self.timeout}")


class Backoff:
    """Exponential backoff with "equal jitter": the n-th delay is drawn from
    ``[d/2, d]`` where ``d = min(max_delay, base * 2**(n-1))``."""

    def __init__(self, base: float, max_delay: float, rng: random.Random) -> None:
        self.base = base
        self.max_delay = max_delay
        self.rng = rng

    def delay(self, attempt: int) -> float:
        """The delay before retry number ``attempt`` (1 for the first retry)."""
        d: float = min(self.max_delay, self.base * 2.0 ** min(attempt - 1, 30))
        return d / 2 + self.rng.uniform(0, d / 2)


@dataclass
class Router:
    """Which endpoint a call goes to: one per client, shared by all its calls.

    Attributes:
        endpoints: the endpoints, in the order they are tried.
        prefer_leader: route writes to the leader's endpoint when known.
        leader_id: the leader the cluster last reported (0 = unknown).
    """

    endpoints: tuple[str, ...]
    prefer_leader: bool = True
    leader_id: int = 0
    _current: int = 0
    _by_id: dict[int, str] = field(default_factory=dict)
    _topology_at: float = float("-inf")

    @property
    def current(self) -> str:
        """The endpoint calls stick to."""
        return self.endpoints[self._current]

    def pick(self, write: bool) -> str:
        """The endpoint for a call's first attempt."""
        if write and self.prefer_leader and self.leader_id:
            leader = self._by_id.get(self.leader_id)
            if leader is not None:
                return leader
        return self.endpoints[self._current]

    def next(self, endpoint: str) -> str:
        """The endpoint after ``endpoint`` in the rotation."""
        try:
            i = self.endpoints.index(endpoint)
        except ValueError:
            return self.current
        return self.endpoints[(i + 1) % len(self.endpoints)]

    def failed(self, endpoint: str) -> None:
        """``endpoint`` failed: stop sticking to it, and forget it as the leader's."""
        if self.endpoints[self._current] == endpoint:
            self._current = (self._current + 1) % len(self.endpoints)
        if self.leader_id and self._by_id.get(self.leader_id) == endpoint:
            self.leader_id = 0

    def learn(self, endpoint: str, member_id: int, leader_id: int, served_locally: bool) -> None:
        """Note a response header. ``member_id`` names ``endpoint`` only when the request was
        served by that node itself (a forwarded write carries the leader's header)."""
        if leader_id:
            self.leader_id = leader_id
        if served_locally and member_id and self._by_id.get(member_id) != endpoint:
            self._by_id[member_id] = endpoint

    def learn_members(self, members: Iterable[tuple[int, str]], leader_id: int,
                      now: float) -> None:
        """Note a member list: ``(id, client address)`` pairs and the leader's id."""
        known = set(self.endpoints)
        for member_id, addr in members:
            if addr in known:
                self._by_id[member_id] = addr
        if leader_id:
            self.leader_id = leader_id
        self._topology_at = now

    def wants_topology(self, now: float, interval: float = 5.0) -> bool:
        """Should a write first look up which endpoint is the leader's (at most once per
        ``interval`` seconds, and only when it would change something)?"""
        if not self.prefer_leader or len(self.endpoints) < 2:
            return False
        if self.leader_id and self.leader_id in self._by_id:
            return False
        return now - self._topology_at >= interval

    def mark_topology_attempt(self, now: float) -> None:
        """A member-list lookup starts now (whether or not it will succeed)."""
        self._topology_at = now


class Core:
    """The state one client shares between its calls: options, router, backoff, clock.

    Both ``confer.Client`` and ``confer.aio.Client`` own one ``Core``; it decides, they do I/O.
    """

    def __init__(self, options: Options, clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options
        self.clock = clock
        self.rng = random.Random(options.seed)
        endpoints = list(options.endpoints)
        if options.shuffle:
            self.rng.shuffle(endpoints)
        self.router = Router(tuple(endpoints), options.prefer_leader)
        self.backoff = Backoff(options.backoff_base, options.backoff_max, self.rng)
        self.closed = False

    def attempts(self, retry: Retry, timeout: float | None, what: str,
                 endpoint: str | None = None, *, may_fail_fast: bool = False) -> Attempts:
        """Start the attempts of one call; ``endpoint`` pins it to that endpoint. With
        ``may_fail_fast`` (a request, or a stream's first connection: not a reconnection or
        a lease renewal), the call fails fast if the options say so."""
        if self.closed:
            raise ClientClosed(f"{what}: the client is closed")
        return Attempts(self, retry, self.options.timeout if timeout is None else timeout,
                        what, endpoint, may_fail_fast and self.options.fail_fast)


class Attempts:
    """The attempts of one call: where the next goes, with what timeout, after what delay.

    Attributes:
        endpoint: where the next attempt goes.
        count: how many attempts have failed so far.
    """

    __slots__ = ("core", "count", "deadline", "endpoint", "fail_fast", "pinned", "retry",
                 "timeout", "tried", "unknown", "unreachable", "what")

    def __init__(self, core: Core, retry: Retry, timeout: float, what: str,
                 endpoint: str | None, fail_fast: bool = False) -> None:
        self.core = core
        self.retry = retry
        self.what = what
        self.timeout = timeout
        self.deadline = core.clock() + timeout
        self.pinned = endpoint
        self.endpoint = endpoint or core.router.pick(retry is not Retry.READ)
        self.count = 0
        self.tried: list[str] = []
        self.unknown: Failure | None = None
        self.fail_fast = fail_fast
        self.unreachable: set[str] = set()
        """The endpoints that could not be connected to (with ``fail_fast``)."""

    def attempt_timeout(self) -> float:
        """The timeout of the next attempt: the remaining time, or for calls that may be
        retried after a timeout, half of it (at least ``min_attempt_timeout``)."""
        remaining = self.deadline - self.core.clock()
        if (self.retry in (Retry.ONCE, Retry.WAIT) or len(self.core.router.endpoints) == 1
                or self.pinned):
            return max(remaining, 0.001)
        return max(min(remaining, max(self.core.options.min_attempt_timeout, remaining / 2)),
                   0.001)

    def connect_timeout(self) -> float:
        """How long to wait for a connection before sending a non-retryable write."""
        return min(self.core.options.connect_timeout, self.attempt_timeout())

    def failed(self, failure: Failure) -> float:
        """Record a failed attempt; return the delay before the next one.

        Raises:
            ConferError: the failure is the answer, or may not be retried, or the deadline
                leaves no room for another attempt.
        """
        outcome = failure.outcome
        if outcome is Outcome.ANSWER:
            raise error_from_status(failure.code, failure.details, self.what)
        if self.core.closed:
            raise ClientClosed(f"{self.what}: the client is closed")
        if outcome is Outcome.UNKNOWN and self.retry is not Retry.READ:
            if self.retry is Retry.ONCE:
                raise OutcomeUnknown(
                    f"{self.what}: outcome unknown ({failure.code} from {self.endpoint}: "
                    f"{failure.details}); it may or may not have been applied, and is not "
                    "retried", code=failure.code, details=failure.details)
            self.unknown = self.unknown or failure
        self.count += 1
        self.tried.append(self.endpoint)
        router = self.core.router
        if self.fail_fast and failure.never_connected:
            self.unreachable.add(self.endpoint)
            if self.unreachable >= ({self.pinned} if self.pinned else set(router.endpoints)):
                raise self.unreachable_error(failure)
        if self.pinned is None:
            router.failed(self.endpoint)
            nxt = router.pick(self.retry is not Retry.READ)
            self.endpoint = nxt if nxt != self.endpoint else router.next(self.endpoint)
        delay = self.core.backoff.delay(self.count)
        if self.core.clock() + delay >= self.deadline:
            raise self.exhausted(failure)
        return delay

    def unreachable_error(self, last: Failure) -> Unavailable:
        """The error of a fail-fast call that could connect to none of its endpoints."""
        where = ", ".join(e for e in self.core.router.endpoints if e in self.unreachable)
        why = " (connection refused)" if "refused" in last.details.lower() else ""
        return Unavailable(f"{self.what}: could not connect to {where}{why}", code=last.code,
                           details=last.details)

    def exhausted(self, last: Failure) -> ConferError:
        """The error for a call that ran out of time; ``last`` is its last failure."""
        where = ", ".join(dict.fromkeys(self.tried)) or self.endpoint
        message = (f"{self.what}: gave up after {self.count} attempt(s) in {self.timeout:g}s "
                   f"(tried {where}); last error: {last.code}: {last.details}")
        if self.unknown is not None:
            return OutcomeUnknown(message + "; an earlier attempt's outcome is unknown: "
                                  f"{self.unknown.code}: {self.unknown.details}",
                                  code=last.code, details=last.details)
        if self.retry is Retry.READ and last.outcome is Outcome.UNKNOWN:
            return DeadlineExceeded(message, code=last.code, details=last.details)
        return Unavailable(message, code=last.code, details=last.details)



class Renewal:
    """When to renew one lease, how long to wait for each answer, and when to presume the lease
    lost. Times are the client's monotonic clock.

    The cluster guarantees that a lease lives at least TTL seconds after the leader received
    the last renewal it acknowledged, so at least TTL after the client *sent* it: that is the
    :attr:`deadline` until which the client knows the lease lives. Renewals go out every TTL/3
    after that send time; a renewal that fails is retried (another endpoint, backoff) until
    the deadline, when the lease is presumed lost.

    Attributes:
        ttl: the granted TTL, in seconds.
        last_sent: when the last acknowledged renewal (or the grant) was sent.
        deadline: until when the lease surely lives (``last_sent + ttl`` after a renewal).
        renewals: how many renewals were acknowledged.
    """

    __slots__ = ("deadline", "last_sent", "renewals", "ttl")

    def __init__(self, ttl: float, sent: float, deadline: float | None = None) -> None:
        self.ttl = ttl
        self.last_sent = sent
        self.deadline = sent + ttl if deadline is None else deadline
        self.renewals = 0

    def due(self) -> float:
        """When the next renewal should be sent."""
        return min(self.last_sent + self.ttl / 3, self.deadline)

    def acknowledged(self, sent: float, ttl: float) -> None:
        """A renewal sent at ``sent`` was acknowledged with ``ttl``."""
        self.ttl = ttl
        if sent >= self.last_sent:
            self.last_sent = sent
            self.deadline = max(self.deadline, sent + ttl)
        self.renewals += 1

    def expired(self, now: float) -> bool:
        """Whether the lease may have expired: the deadline passed with no renewal."""
        return now >= self.deadline

    def answer_timeout(self, now: float, min_timeout: float) -> float:
        """How long to wait for the answer to a renewal sent now before trying another
        endpoint: TTL/3 (at least ``min_timeout``), but never past the deadline."""
        return max(0.001, min(max(min_timeout, self.ttl / 3), self.deadline - now))

    def budget(self, now: float) -> float:
        """The time left to renew (for the retry :class:`Attempts` of a broken stream)."""
        return max(self.deadline - now, 0.001)
