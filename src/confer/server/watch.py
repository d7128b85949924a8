"""Watch streams fed from applied state, on every node.

A watcher first catches up from the store's event history (from its start revision), then
receives new events as the local state machine applies them. A watcher that falls behind
is never dropped: when its buffer is full it stops being fed and catches up from the
history again, and only if that history was compacted meanwhile does it end, with an
explicit "compacted" error naming the oldest revision still available. Batches are handed
over in runs of about ``BATCH_BYTES`` (a revision is never split), so that one response
never carries a catch-up of large values whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field

from confer.kv import CompactedError, Event, KVStore

MAX_BUFFERED_EVENTS = 10_000
CATCH_UP_BATCH = 1_000
BATCH_BYTES = 1 << 20
"""A batch handed to a watch stream holds about this many bytes of events at most: 1,000
events of 1 MiB would otherwise be one response of a gigabyte (over gRPC's limit)."""
EVENT_OVERHEAD = 32
"""Bytes counted per event besides its keys and values (an estimate, not the wire size)."""


def event_bytes(e: Event) -> int:
    """An event's approximate size in a response: keys, values (``prev_kv`` included) and
    :data:`EVENT_OVERHEAD`."""
    size = len(e.kv.key) + len(e.kv.value) + EVENT_OVERHEAD
    if e.prev_kv is not None:
        size += len(e.prev_kv.key) + len(e.prev_kv.value)
    return size


def split_batch(batch: list[Event], limit: int = BATCH_BYTES) -> list[list[Event]]:
    """``batch`` cut into runs of about ``limit`` bytes; a cut falls only between two
    revisions (etcd's watch guarantee: a revision's events are never split)."""
    out: list[list[Event]] = []
    run: list[Event] = []
    size = 0
    for e in batch:
        if size >= limit and e.kv.mod_revision != run[-1].kv.mod_revision:
            out.append(run)
            run, size = [], 0
        run.append(e)
        size += event_bytes(e)
    if run:
        out.append(run)
    return out


class WatchClosed(Exception):
    """The server is shutting down or the watch was cancelled."""


@dataclass(eq=False)
class Watcher:
    key: bytes
    range_end: bytes
    next_revision: int
    synced: bool = False
    buffered: list[Event] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: bool = False
    accept_key: Callable[[bytes], bool] | None = None
    """A finer filter inside the range (e.g. the path boundary of a subtree watch)."""

    def matches(self, key: bytes) -> bool:
        if not self.range_end:
            return key == self.key
        if key < self.key or (self.range_end != b"\0" and key >= self.range_end):
            return False
        return self.accept_key is None or self.accept_key(key)


class WatchHub:
    def __init__(self, kv: KVStore) -> None:
        self.kv = kv
        self.watchers: set[Watcher] = set()
        self.events_sent = 0
        """Events handed to watch streams since start (for the metrics)."""
        self._closed = False
        kv.add_listener(self._on_events)
        kv.add_restore_listener(lambda _revision: self.on_restore())

    def _on_events(self, events: tuple[Event, ...]) -> None:
        for w in self.watchers:
            if not w.synced:
                continue
            matched = [e for e in events if w.matches(e.kv.key)]
            if not matched:
                continue
            if len(w.buffered) + len(matched) > MAX_BUFFERED_EVENTS:
                # Too slow to keep up live: fall back to reading the history.
                w.synced = False
                w.buffered.clear()
            else:
                w.buffered.extend(matched)
            w.wake.set()

    def on_restore(self) -> None:
        """The store was replaced by a snapshot: every watcher re-reads from history."""
        for w in self.watchers:
            w.synced = False
            w.buffered.clear()
            w.wake.set()

    def close(self) -> None:
        self._closed = True
        for w in self.watchers:
            w.cancelled = True
            w.wake.set()

    def cancel(self, watcher: Watcher) -> None:
        watcher.cancelled = True
        watcher.wake.set()

    def watcher(self, key: bytes, range_end: bytes, start_revision: int,
                accept_key: Callable[[bytes], bool] | None = None) -> Watcher:
        """Register a watcher; ``start_revision`` 0 means "changes after now"."""
        if self._closed:
            raise WatchClosed("server shutting down")
        start = start_revision or self.kv.revision + 1
        w = Watcher(key, range_end, start, accept_key=accept_key)
        self.watchers.add(w)
        return w

    async def events(self, w: Watcher) -> AsyncGenerator[list[Event], None]:
        """Yield batches of events in revision order. Raises CompactedError if the watcher's
        next revision is no longer in the history."""
        try:
            while not w.cancelled:
                if not w.synced:
                    for run in split_batch(self._catch_up(w)):
                        self.events_sent += len(run)
                        yield run
                    continue
                if not w.buffered:
                    w.wake.clear()
                    await w.wake.wait()
                    continue
                batch, w.buffered = w.buffered, []
                batch = [e for e in batch if e.kv.mod_revision >= w.next_revision]
                if batch:
                    w.next_revision = batch[-1].kv.mod_revision + 1
                    self.events_sent += len(batch)
                    for run in split_batch(batch):
                        yield run
        finally:
            self.watchers.discard(w)
        if self._closed:
            raise WatchClosed("server shutting down")

    def _catch_up(self, w: Watcher) -> list[Event]:
        kv = self.kv
        if w.next_revision > kv.revision:
            w.synced = True  # nothing to read: go live (no await since the check)
            return []
        events, next_revision = kv.events_since(w.next_revision, w.key, w.range_end,
                                                CATCH_UP_BATCH)
        w.next_revision = next_revision
        if next_revision > kv.revision:
            w.synced = True
        if w.accept_key is not None:
            events = [e for e in events if w.accept_key(e.kv.key)]
        return events


__all__ = ["CompactedError", "WatchClosed", "WatchHub", "Watcher", "event_bytes",
           "split_batch"]
