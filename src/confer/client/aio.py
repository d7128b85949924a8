"""``confer.aio.Client``: the asyncio client, with the same methods and exceptions as
``confer.Client``; its request methods are coroutines and its watches async iterators.

Every method is defined once in :class:`~confer.client.base.ClientBase`; this module only
performs the plans' actions with ``grpc.aio``. Create and use a client inside one event
loop. See ``docs/client.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Generator
from types import TracebackType
from typing import Any, TypeVar, cast

import grpc

from confer.client import plans, transport
from confer.client.base import ClientBase, WatchBase
from confer.client.credentials import Credentials
from confer.client.models import (
    ClusterEvent,
    Instance,
    KeyValue,
    ServiceEvent,
    TxnResult,
    WatchEvent,
)
from confer.client.plans import END, Call, Done, Emit, Feed, Open, Plan, Recv, Sleep, Unary
from confer.client.policy import Failure
from confer.client.transport import Connection, IOBase, StreamBase, failure_of, not_connected

__all__ = ["Client", "Watch"]

log = logging.getLogger("confer.client")

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 - the item type of a watch

_READY = grpc.ChannelConnectivity.READY
_FAILING = grpc.ChannelConnectivity.TRANSIENT_FAILURE


def new_channel(address: str, tls: grpc.ChannelCredentials | None,
                credentials: Credentials | None,
                options: tuple[tuple[str, int | str], ...] = ()) -> grpc.aio.Channel:
    """A ``grpc.aio`` channel to ``address``: TLS with ``tls`` (None: plaintext), and with
    ``credentials`` every call carries the user's token."""
    channel: grpc.aio.Channel | None = None

    def channel_of() -> grpc.aio.Channel:
        assert channel is not None  # calls begin once the channel exists
        return channel

    interceptors = None if credentials is None else credentials.aio_interceptors(channel_of)
    if tls is not None:
        channel = grpc.aio.secure_channel(address, tls, options=options,
                                          interceptors=interceptors)
    else:
        channel = grpc.aio.insecure_channel(address, options=options,
                                            interceptors=interceptors)
    return channel


class _IO(IOBase):
    """Performs plan actions with ``grpc.aio``."""

    asynchronous = True

    def __init__(self, channel_options: tuple[tuple[str, int | str], ...],
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        super().__init__(channel_options, credentials)
        self._callbacks: set[asyncio.Future[Any]] = set()

    def _new_channel(self, endpoint: str) -> grpc.aio.Channel:
        return new_channel(endpoint, self._tls, self.credentials, self._options)

    async def run(self, plan: Plan[T]) -> T:
        """Drive a plan to its value. A cancellation is thrown into the plan, which may clean
        up first."""
        perform = self._perform
        action = plans.advance(plan, None)
        while type(action) is not Done:
            try:
                result = await perform[type(action)](action)
            except BaseException as e:
                action = plans.interrupt(plan, e)
            else:
                action = plans.advance(plan, result)
        value: T = action.value  # the plan's result: Done carries Any
        return value

    async def iterate(self, plan: Plan[None]) -> AsyncIterator[Any]:
        """Drive a plan, yielding what it emits."""
        try:
            result = None
            while type(action := plans.advance(plan, result)) is not Done:
                if type(action) is not Emit:
                    result = await self._perform[type(action)](action)
                    continue
                for item in action.items:
                    yield item
                result = None
        finally:
            plan.close()

    async def _unary(self, a: Unary) -> Any:
        conn = self.connection(a.endpoint)
        if a.connect_timeout is not None and not await self._connected(conn, a.connect_timeout):
            return not_connected(a)
        try:
            return await conn.callable(a.rpc)(a.request, timeout=transport.grpc_timeout(a.timeout))
        except grpc.RpcError as e:
            return failure_of(e)

    @staticmethod
    async def _connected(conn: Connection, timeout: float) -> bool:
        """Wait up to ``timeout`` for the channel to be connected; give up at once if it is
        failing to connect (the caller tries another endpoint)."""
        channel = conn.channel
        state = channel.get_state(try_to_connect=True)
        deadline = asyncio.get_running_loop().time() + timeout
        while state is not _READY:
            remaining = deadline - asyncio.get_running_loop().time()
            if state is _FAILING or remaining <= 0:
                return False
            try:
                await asyncio.wait_for(channel.wait_for_state_change(state), remaining)
            except TimeoutError:
                return False
            state = channel.get_state()
        return True

    async def _sleep(self, a: Sleep) -> None:
        await asyncio.sleep(a.seconds)

    async def _open(self, a: Open) -> StreamBase:
        fn = self.connection(a.endpoint).callable(a.rpc)
        return StreamBase(fn() if a.rpc.bidi else fn(a.request), a.idle_timeout)

    async def _send(self, a: plans.Send) -> Any:
        stream = cast(StreamBase, a.stream)  # this IO's streams
        try:
            await stream.call.write(a.message)
        except asyncio.InvalidStateError:
            return Failure("UNAVAILABLE", "the stream has ended")
        except asyncio.CancelledError:
            return _own_cancel(stream)
        except grpc.RpcError as e:
            return stream.failure(e)
        return None

    async def _recv(self, a: Recv) -> Any:
        stream = cast(StreamBase, a.stream)  # this IO's streams
        timeout = stream.idle if a.timeout is None else a.timeout
        try:
            if timeout is None:
                message = await stream.call.read()
            else:
                message = await asyncio.wait_for(stream.call.read(), timeout)
        except TimeoutError:
            stream.idle = timeout
            stream.expire()
            return stream.failure(None)
        except asyncio.CancelledError:
            return _own_cancel(stream)
        except grpc.RpcError as e:
            return stream.failure(e)
        return END if message is grpc.aio.EOF else message

    async def _spawn(self, a: plans.Spawn) -> transport.Runner:
        task = asyncio.get_running_loop().create_task(self._background(a), name=a.name)
        a.feed.wakeup = task.cancel
        return transport.Runner(a.feed, task)

    async def _background(self, a: plans.Spawn) -> None:
        try:
            async for item in self.iterate(a.plan):
                a.deliver(item)
        except asyncio.CancelledError:
            if not a.feed.cancelled:
                raise
        except Exception as e:
            a.deliver(e)

    async def _stop(self, a: plans.Stop) -> None:
        runner: transport.Runner = a.runner
        runner.feed.cancel()
        if runner.worker is not asyncio.current_task():
            await asyncio.wait({runner.worker}, timeout=a.timeout)

    async def _offload(self, a: plans.Offload) -> Any:
        return await asyncio.to_thread(a.fn)

    def new_event(self) -> asyncio.Event:
        return asyncio.Event()

    async def wait(self, event: asyncio.Event, timeout: float | None) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        return event.is_set()

    def dispatch(self, callback: Callable[[Any], Any], arg: Any) -> None:
        try:
            result = callback(arg)
        except Exception:
            log.exception("callback %r failed", callback)
            return
        if inspect.isawaitable(result):
            future = asyncio.ensure_future(result)
            self._callbacks.add(future)
            future.add_done_callback(self._callback_done)

    def _callback_done(self, future: asyncio.Future[Any]) -> None:
        self._callbacks.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.error("callback failed", exc_info=future.exception())

    async def close(self) -> None:
        for conn in self._take_connections():
            await conn.channel.close()


def _own_cancel(stream: StreamBase) -> Failure:
    """grpc.aio reports our own ``cancel()`` of a stream as a CancelledError: a failure of the
    stream, unless the task itself is being cancelled (then re-raise)."""
    task = asyncio.current_task()
    if not stream.cancelled or (task is not None and task.cancelling()):
        raise  # the CancelledError the caller is handling
    return stream.failure(None)


async def _maybe_await(result: Any) -> None:
    if inspect.isawaitable(result):
        await result


class Watch(WatchBase[I]):
    """A running watch: an async iterator of events (:class:`WatchEvent` or
    :class:`ClusterEvent`), or with a callback, a handle on the task that delivers them.

    ``await`` it to wait until the server has confirmed the watch (from then on every change
    is delivered); iterating or ``async with`` does that too. Use it as an async context
    manager, or call :meth:`cancel` or await :meth:`close`, to stop it.
    """

    def __init__(self, feed: Feed[I], items: AsyncIterator[I]) -> None:
        super().__init__(feed)
        self._items = items
        self._started = not feed.announces_start
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _start(self) -> None:
        """Read up to the feed's STARTED marker."""
        if not self._started:
            if await anext(self._items) is not plans.STARTED:
                raise AssertionError("a key watch starts with STARTED")
            self._started = True
        self._ready.set()

    def __await__(self) -> Generator[Any, None, Watch[I]]:
        return self._established().__await__()

    async def _established(self) -> Watch[I]:
        if self._task is None:
            try:
                await self._start()
            except Exception as e:
                self._ended(e)
                raise
            return self
        ready = asyncio.ensure_future(self._ready.wait())  # the callback task starts it
        await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if not self._ready.is_set() and self.error is not None:
            raise self.error
        return self

    def __aiter__(self) -> Watch[I]:
        return self

    async def __anext__(self) -> I:
        try:
            if not self._ready.is_set():
                await self._start()
            return await anext(self._items)
        except StopAsyncIteration:
            raise
        except Exception as e:
            self._ended(e)
            raise

    async def _pump(self, callback: Callable[[I], Any],
                    on_error: Callable[[BaseException], Any] | None) -> None:
        try:
            async for item in self:
                await _maybe_await(callback(item))
        except Exception as e:
            await _maybe_await(self._failed(e, on_error))
        finally:
            self._ready.set()

    async def wait(self, timeout: float | None = None) -> bool:
        """With a callback: wait until the watch ended (cancelled, or failed: see
        :attr:`error`); return whether it did within ``timeout``."""
        if self._task is None:
            return self.cancelled
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        return bool(done)

    async def close(self) -> None:
        """Cancel the watch and release its stream."""
        self.cancel()
        if self._task is not None:
            await self.wait()
        with contextlib.suppress(RuntimeError):  # being iterated by another task: it ends
            await self._items.aclose()  # type: ignore[attr-defined]  # an async generator

    async def __aenter__(self) -> Watch[I]:
        return await self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


class Client(ClientBase[Coroutine[Any, Any, TxnResult], AsyncIterator[KeyValue],
                        Watch[WatchEvent], Watch[ClusterEvent], Watch[ServiceEvent],
                        Watch[list[Instance]]]):
    """An asyncio Confer client. Use it as an async context manager, or await
    :meth:`close`::

        async with confer.aio.Client(["127.0.0.1:7379", "127.0.0.1:7479"]) as client:
            await client.put("/app/db", b"postgres://...")
            print((await client.get("/app/db")).value)
    """

    __doc__ = (__doc__ or "") + (ClientBase.__doc__ or "").split("\n", 1)[1]
    _returns = "Awaitable[{}]"

    _io: _IO
    _io_class = _IO

    async def _run(self, call: Call[T]) -> T:
        return await self._io.run(plans.unary(self._core, call))

    def _watch(self, feed: Feed[I], idle: float | None, callback: Callable[[I], Any] | None,
               on_error: Callable[[BaseException], Any] | None) -> Watch[I]:
        watch = Watch(feed, self._io.iterate(plans.stream(self._core, feed, idle)))
        if callback is not None:
            watch._task = asyncio.get_running_loop().create_task(
                watch._pump(callback, on_error), name=f"confer {feed.what}")
        return watch

    async def close(self) -> None:
        """Close the channels. Watches end; later calls raise ClientClosed."""
        self._closing()
        await self._io.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

