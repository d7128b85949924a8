"""Watch requests: register a watcher on a key, a key range or a path subtree, then stream
its event batches (:mod:`confer.server.watch` feeds them from applied state)."""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Generic, TypeVar

from confer.kv import Event
from confer.server.api.context import Access, AccessKind, RequestContext
from confer.server.api.core import Core
from confer.server.api.kv import tree_span
from confer.server.watch import Watcher

T = TypeVar("T")

MAX_WATCHES_PER_STREAM = 1_000
"""Watches one etcd Watch stream may hold; more are refused (etcd has no bound)."""
STREAM_QUEUE_BYTES = 4 << 20
"""Bytes of responses one stream may hold for a client that does not read them: beyond
that its watches wait, and the hub lets each fall back to reading history."""
STREAM_QUEUE_RESPONSES = 1_024
"""Responses one stream may hold, whatever their size."""


class ResponseQueue(Generic[T]):
    """The responses of one stream on their way to its client, bounded in bytes and count.

    Producers wait in :meth:`put` while it is full, so a client that stops reading stops
    its watches (their events wait in the hub, which falls back to history) instead of
    growing the server. One response is always admitted, whatever its size.
    """

    def __init__(self, max_bytes: int = STREAM_QUEUE_BYTES,
                 max_items: int = STREAM_QUEUE_RESPONSES) -> None:
        self.max_bytes = max_bytes
        self.max_items = max_items
        self.bytes = 0
        self.peak_bytes = 0
        """The most bytes it ever held (for tests and metrics)."""
        self._items: deque[tuple[T, int]] = deque()
        self._not_empty = asyncio.Event()
        self._room = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def _has_room(self, size: int) -> bool:
        items = self._items
        return not items or (len(items) < self.max_items and self.bytes + size <= self.max_bytes)

    async def put(self, item: T, size: int) -> None:
        """Queue ``item`` (``size`` bytes), waiting for room."""
        await self.room(size)
        self.append(item, size)

    async def room(self, size: int) -> None:
        """Wait until ``size`` bytes fit: an :meth:`append` with no await between them
        queues without exceeding the bounds (the caller may check meanwhile that the item is
        still wanted)."""
        while not self._has_room(size):
            self._room.clear()
            await self._room.wait()

    def put_nowait(self, item: T) -> None:
        """Queue a marker of no size at once (the end of the stream), bound or not."""
        self.append(item, 0)

    def append(self, item: T, size: int) -> None:
        """Queue ``item`` now, bound or not (after :meth:`room`)."""
        self._items.append((item, size))
        self.bytes += size
        self.peak_bytes = max(self.peak_bytes, self.bytes)
        self._not_empty.set()

    async def get(self) -> T:
        """The oldest response, waiting for one."""
        while not self._items:
            self._not_empty.clear()
            await self._not_empty.wait()
        item, size = self._items.popleft()
        self.bytes -= size
        self._room.set()
        return item


class WatchRequests:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.hub = core.host.hub
        self.queues: weakref.WeakSet[ResponseQueue[object]] = weakref.WeakSet()
        """The response queue of every open multiplexed (etcd) stream."""

    def queue(self) -> ResponseQueue[T]:
        """A new stream's bounded response queue (see :class:`ResponseQueue`)."""
        q: ResponseQueue[T] = ResponseQueue()
        self.queues.add(q)  # type: ignore[arg-type]  # tracked whatever it holds
        return q

    def watch(self, ctx: RequestContext, key: bytes, range_end: bytes, start_revision: int,
              notify: Callable[[], None] | None = None) -> Watcher:
        """Register a watcher of ``key`` (or the range to ``range_end``) from
        ``start_revision`` (0: changes after now). No event after it is registered can be
        missed, so register before answering "created". With ``notify``, consume it with
        :meth:`take` each time ``notify`` is called (a stream serving many watchers with
        one task), else with :meth:`events`."""
        self.core.check(ctx, Access(AccessKind.READ, key, range_end))
        self.core.consensus.require_node()
        return self.hub.watcher(key, range_end, max(start_revision, 0), notify=notify)

    def watch_tree(self, ctx: RequestContext, path: bytes, recursive: bool,
                   start_revision: int) -> Watcher:
        """A watcher of one path, or (``recursive``) of the path and its subtree."""
        if not recursive:
            return self.watch(ctx, path, b"", start_revision)
        key, end = tree_span(path)
        self.core.check(ctx, Access(AccessKind.READ, key, end))
        self.core.consensus.require_node()
        return self.hub.tree_watcher(path, (key, end), start_revision)

    def events(self, watcher: Watcher) -> AsyncGenerator[list[Event], None]:
        """The watcher's event batches in revision order; CompactedError if its next
        revision was compacted away, WatchClosed when the member shuts down."""
        return self.hub.events(watcher)

    def take(self, watcher: Watcher) -> list[Event]:
        """The watcher's events available now, in revision order ([] if none); call again
        while :meth:`pending`. CompactedError if its next revision was compacted away."""
        return self.hub.take(watcher)

    def pending(self, watcher: Watcher) -> bool:
        """Has :meth:`take` more for ``watcher`` right now?"""
        return self.hub.pending(watcher)

    def cancel(self, watcher: Watcher) -> None:
        self.hub.cancel(watcher)


async def with_progress(batches: AsyncIterator[list[Event]], interval: float | None
                        ) -> AsyncIterator[list[Event] | None]:
    """Yield from ``batches``; when idle for ``interval`` seconds, yield None (a progress
    tick). None as ``interval``: no ticks."""
    if interval is None:
        async for item in batches:
            yield item
        return
    nxt = asyncio.ensure_future(anext(batches))
    try:
        while True:
            done, _ = await asyncio.wait({nxt}, timeout=interval)
            if not done:
                yield None
                continue
            try:
                item = nxt.result()
            except StopAsyncIteration:
                return
            yield item
            nxt = asyncio.ensure_future(anext(batches))
    finally:
        nxt.cancel()
