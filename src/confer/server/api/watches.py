"""Watch requests: register a watcher on a key, a key range or a path subtree, then stream
its event batches (:mod:`confer.server.watch` feeds them from applied state)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from confer.kv import Event
from confer.server.api.context import Access, AccessKind, RequestContext
from confer.server.api.core import Core
from confer.server.api.kv import tree_span
from confer.server.watch import Watcher


def boundary_match(path: bytes) -> Callable[[bytes], bool]:
    """Does a key lie at ``path`` or below it (``/app`` does not cover ``/application``)?"""
    if path == b"/":
        return lambda k: k.startswith(b"/")
    under = path + b"/"
    return lambda k: k == path or k.startswith(under)


class WatchRequests:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.hub = core.host.hub

    def watch(self, ctx: RequestContext, key: bytes, range_end: bytes, start_revision: int
              ) -> Watcher:
        """Register a watcher of ``key`` (or the range to ``range_end``) from
        ``start_revision`` (0: changes after now). No event after it is registered can be
        missed, so register before answering "created"."""
        self.core.check(ctx, Access(AccessKind.READ, key, range_end))
        self.core.consensus.require_node()
        return self.hub.watcher(key, range_end, max(start_revision, 0))

    def watch_tree(self, ctx: RequestContext, path: bytes, recursive: bool,
                   start_revision: int) -> Watcher:
        """A watcher of one path, or (``recursive``) of the path and its subtree."""
        if not recursive:
            return self.watch(ctx, path, b"", start_revision)
        key, end = tree_span(path)
        self.core.check(ctx, Access(AccessKind.READ, key, end))
        self.core.consensus.require_node()
        return self.hub.watcher(key, end, start_revision, boundary_match(path))

    def events(self, watcher: Watcher) -> AsyncGenerator[list[Event], None]:
        """The watcher's event batches in revision order; CompactedError if its next
        revision was compacted away, WatchClosed when the member shuts down."""
        return self.hub.events(watcher)

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
