"""The actions a plan yields to its I/O layer, and how an I/O layer drives a plan (see
:mod:`confer.client.plans` for the table of actions and what each sends back)."""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from confer.client.protocol import Rpc

T = TypeVar("T")


class Cancellable(Protocol):
    """The state of a :class:`Spawn` ed plan (a :class:`~confer.client.plans.feeds.Feed`), as
    its runner sees it."""

    cancelled: bool
    """Whether :meth:`cancel` was called."""
    wakeup: Callable[[], object] | None
    """Set by the runner: interrupts the plan's sleeps."""

    def cancel(self) -> None:
        """End the plan."""


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
    plan; the runner also makes it interrupt the plan's sleeps (:attr:`Cancellable.wakeup`). Sends
    back a runner to :class:`Stop`."""

    plan: Plan[None]
    feed: Cancellable
    deliver: Callable[[Any], None]
    name: str


@dataclass(slots=True)
class Stop:
    """Cancel a :class:`Spawn` ed plan (through its feed) and wait up to ``timeout`` seconds
    for it to end. From inside the plan's own thread or task it only cancels."""

    runner: Any
    timeout: float


@dataclass(slots=True)
class Offload:
    """Call ``fn()``, a blocking function (a health check's probe), and send back what it
    returns: the blocking client calls it in place, the asyncio client in a worker thread,
    so that the event loop never waits on it."""

    fn: Callable[[], Any]


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

Action = Unary | Sleep | Open | Send | Recv | Emit | Spawn | Stop | Offload
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
