"""``confer.Client``: the blocking client. Thread-safe: one client may serve many threads.

Every method is defined once in :class:`~confer.client.base.ClientBase`; this module only
performs the plans' actions with blocking gRPC. See ``docs/client.md``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, TypeVar, cast

import grpc

from confer.client import plans, transport
from confer.client.base import ClientBase, WatchBase
from confer.client.models import (
    ClusterEvent,
    Instance,
    KeyValue,
    ServiceEvent,
    TxnResult,
    WatchEvent,
)
from confer.client.plans import END, Call, Done, Emit, Feed, Open, Plan, Recv, Sleep, Unary
from confer.client.transport import Connection, IOBase, StreamBase, failure_of, not_connected

__all__ = ["Client", "Watch"]

log = logging.getLogger("confer.client")

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 - the item type of a watch


class _Watchdog:
    """One thread per client that expires streams idle beyond their idle timeout (or not
    answering in time: a :class:`Recv` timeout). It wakes at the earliest deadline (at least
    every 0.2 s), and when a stream's deadline is set (:meth:`add`)."""

    def __init__(self) -> None:
        self.streams: weakref.WeakSet[StreamBase] = weakref.WeakSet()
        self.stopped = threading.Event()
        self.changed = threading.Event()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def add(self, stream: StreamBase) -> None:
        with self.lock:
            self.streams.add(stream)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="confer-watchdog",
                                               daemon=True)
                self.thread.start()
        self.changed.set()

    def _run(self) -> None:
        while not self.stopped.is_set():
            now = time.monotonic()
            with self.lock:
                deadlines = [(s.deadline, s) for s in self.streams
                             if not (s.cancelled or s.expired)]
            for deadline, s in deadlines:
                if deadline < now:
                    s.expire()
            pending = [d for d, _ in deadlines if d >= now]
            self.changed.wait(min([0.2, *(d - now + 0.001 for d in pending)]))
            self.changed.clear()


_READY = grpc.ChannelConnectivity.READY
_FAILING = grpc.ChannelConnectivity.TRANSIENT_FAILURE
_CLOSED = object()


class _Requests:
    """The requests of a blocking bidirectional stream: :class:`Send` queues them, gRPC's
    sending thread takes them, until the stream is cancelled."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def __iter__(self) -> Iterator[Any]:
        while (message := self.queue.get()) is not _CLOSED:
            yield message


class _BidiStream(StreamBase):
    __slots__ = ("requests",)

    def __init__(self, call: Any, idle: float | None, requests: _Requests) -> None:
        super().__init__(call, idle)
        self.requests = requests

    def cancel(self) -> None:
        super().cancel()
        self.requests.queue.put(_CLOSED)


class _Connection(Connection):
    """A blocking channel whose connectivity state is followed once a write needs it."""

    __slots__ = ("changed", "following", "state")

    def __init__(self, endpoint: str, channel: grpc.Channel) -> None:
        super().__init__(endpoint, channel)
        self.state: grpc.ChannelConnectivity | None = None
        self.changed = threading.Condition()
        self.following = False

    def _on_state(self, state: grpc.ChannelConnectivity) -> None:
        with self.changed:
            self.state = state
            self.changed.notify_all()

    def connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the channel to be connected; give up at once if it is
        failing to connect (the caller tries another endpoint)."""
        if self.state is _READY:
            return True
        deadline = time.monotonic() + timeout
        with self.changed:
            if not self.following:  # from now on, gRPC tells us every state change
                self.following = True
                self.channel.subscribe(self._on_state, try_to_connect=True)
            while self.state is not _READY:
                remaining = deadline - time.monotonic()
                if self.state is _FAILING or remaining <= 0:
                    return False
                self.changed.wait(remaining)
        return True


class _IO(IOBase):
    """Performs plan actions with blocking gRPC."""

    connection_class = _Connection

    def __init__(self, channel_options: tuple[tuple[str, int | str], ...],
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        super().__init__(channel_options, credentials)
        self._watchdog = _Watchdog()

    def _new_channel(self, endpoint: str) -> grpc.Channel:
        channel = (grpc.secure_channel(endpoint, self._tls, options=self._options)
                   if self._tls is not None
                   else grpc.insecure_channel(endpoint, options=self._options))
        return channel if self.credentials is None else self.credentials.intercept(channel)

    def run(self, plan: Plan[T]) -> T:
        """Drive a plan to its value. An interruption (``KeyboardInterrupt``...) is thrown
        into the plan, which may clean up first."""
        perform = self._perform
        action = plans.advance(plan, None)
        while type(action) is not Done:
            try:
                result = perform[type(action)](action)
            except BaseException as e:
                action = plans.interrupt(plan, e)
            else:
                action = plans.advance(plan, result)
        value: T = action.value  # the plan's result: Done carries Any
        return value

    def iterate(self, plan: Plan[None], stop: threading.Event | None = None) -> Iterator[Any]:
        """Drive a plan, yielding what it emits. ``stop``: its sleeps end when it is set."""
        perform = self._perform
        if stop is not None:
            perform = {**perform, Sleep: lambda a: stop.wait(a.seconds)}
        with contextlib.closing(plan):
            result = None
            while type(action := plans.advance(plan, result)) is not Done:
                if type(action) is Emit:
                    yield from action.items
                    result = None
                else:
                    result = perform[type(action)](action)

    def _unary(self, a: Unary) -> Any:
        conn = cast(_Connection, self.connection(a.endpoint))  # this IO's connections
        if a.connect_timeout is not None and not conn.connected(a.connect_timeout):
            return not_connected(a)
        try:
            return conn.callable(a.rpc)(a.request, timeout=transport.grpc_timeout(a.timeout))
        except grpc.RpcError as e:
            return failure_of(e)

    def _sleep(self, a: Sleep) -> None:
        time.sleep(a.seconds)

    def _open(self, a: Open) -> StreamBase:
        fn = self.connection(a.endpoint).callable(a.rpc)
        if a.rpc.bidi:
            requests = _Requests()
            stream: StreamBase = _BidiStream(fn(iter(requests)), a.idle_timeout, requests)
        else:
            stream = StreamBase(fn(a.request), a.idle_timeout)
        if a.idle_timeout is not None:
            stream.deadline = time.monotonic() + a.idle_timeout
            self._watchdog.add(stream)
        return stream

    def _send(self, a: plans.Send) -> None:
        cast(_BidiStream, a.stream).requests.queue.put(a.message)  # Send: only on bidi streams

    def _recv(self, a: Recv) -> Any:
        stream = cast(StreamBase, a.stream)  # this IO's streams
        if a.timeout is not None:  # this answer is due within the timeout
            stream.idle = a.timeout
            stream.deadline = time.monotonic() + a.timeout
            self._watchdog.add(stream)
        try:
            message = next(stream.call)
        except StopIteration:
            return END
        except grpc.RpcError as e:
            return stream.failure(e)
        if a.timeout is not None:
            stream.deadline = math.inf
        elif stream.idle is not None:
            stream.deadline = time.monotonic() + stream.idle
        return message

    def _spawn(self, a: plans.Spawn) -> transport.Runner:
        stop = threading.Event()
        a.feed.wakeup = stop.set
        thread = threading.Thread(target=self._background, args=(a, stop), name=a.name,
                                  daemon=True)
        thread.start()
        return transport.Runner(a.feed, thread)

    def _background(self, a: plans.Spawn, stop: threading.Event) -> None:
        try:
            for item in self.iterate(a.plan, stop):
                a.deliver(item)
        except Exception as e:
            a.deliver(e)

    def _stop(self, a: plans.Stop) -> None:
        runner: transport.Runner = a.runner
        runner.feed.cancel()
        if runner.worker is not threading.current_thread():
            runner.worker.join(a.timeout)

    def _offload(self, a: plans.Offload) -> Any:
        return a.fn()

    def new_event(self) -> threading.Event:
        return threading.Event()

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        return event.wait(timeout)

    def dispatch(self, callback: Callable[[Any], Any], arg: Any) -> None:
        try:
            callback(arg)
        except Exception:
            log.exception("callback %r failed", callback)

    def close(self) -> None:
        self._watchdog.stopped.set()
        self._watchdog.changed.set()
        for conn in self._take_connections():
            conn.channel.close()


class Watch(WatchBase[I]):
    """A running watch: an iterator of events (:class:`WatchEvent` or :class:`ClusterEvent`),
    or with a callback, a handle on the thread that delivers them.

    Use it as a context manager, or call :meth:`cancel` or :meth:`close`, to stop it.
    """

    def __init__(self, feed: Feed[I], items: Iterator[I]) -> None:
        super().__init__(feed)
        self._items = items
        self._thread: threading.Thread | None = None

    def __iter__(self) -> Watch[I]:
        return self

    def __next__(self) -> I:
        try:
            return next(self._items)
        except StopIteration:
            raise
        except Exception as e:
            self._ended(e)
            raise

    def _pump(self, callback: Callable[[I], Any],
              on_error: Callable[[BaseException], Any] | None) -> None:
        try:
            for item in self:
                callback(item)
        except Exception as e:
            self._failed(e, on_error)

    def wait(self, timeout: float | None = None) -> bool:
        """With a callback: wait until the watch ended (cancelled, or failed: see
        :attr:`error`); return whether it did within ``timeout``."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return self.cancelled

    def close(self) -> None:
        """Cancel the watch and release its stream."""
        self.cancel()
        with contextlib.suppress(ValueError):  # being iterated in another thread: it ends
            self._items.close()  # type: ignore[attr-defined]  # a generator, typed Iterator

    def __enter__(self) -> Watch[I]:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class Client(ClientBase[TxnResult, Iterator[KeyValue], Watch[WatchEvent],
                        Watch[ClusterEvent], Watch[ServiceEvent],
                        Watch[list[Instance]]]):
    """A blocking Confer client. Use it as a context manager, or call :meth:`close`::

        with confer.Client(["127.0.0.1:7379", "127.0.0.1:7479"]) as client:
            client.put("/app/db", b"postgres://...")
            print(client.get("/app/db").value)
    """

    __doc__ = (__doc__ or "") + (ClientBase.__doc__ or "").split("\n", 1)[1]

    _io: _IO
    _io_class = _IO

    def _run(self, call: Call[T]) -> T:
        return self._io.run(plans.unary(self._core, call))

    def _watch(self, feed: Feed[I], idle: float | None, callback: Callable[[I], Any] | None,
               on_error: Callable[[BaseException], Any] | None) -> Watch[I]:
        watch = Watch(feed, self._io.iterate(plans.stream(self._core, feed, idle)))
        if feed.announces_start and next(watch) is not plans.STARTED:
            raise AssertionError("a key watch starts with STARTED")
        if callback is not None:
            watch._thread = threading.Thread(target=watch._pump, args=(callback, on_error),
                                             name=f"confer {feed.what}", daemon=True)
            watch._thread.start()
        return watch

    def close(self) -> None:
        """Close the channels. Watches end; later calls raise ClientClosed."""
        self._closing()
        self._io.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
