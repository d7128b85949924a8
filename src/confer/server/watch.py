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
import itertools
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from confer.kv import CompactedError, Event, KVStore, WatchIndex

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


def boundary_match(path: bytes) -> Callable[[bytes], bool]:
    """Does a key lie at ``path`` or below it (``/app`` does not cover ``/application``)?"""
    if path == b"/":
        return lambda k: k.startswith(b"/")
    under = path + b"/"
    return lambda k: k == path or k.startswith(under)


class WatchClosed(Exception):
    """The server is shutting down or the watch was cancelled."""


@dataclass(eq=False)
class Watcher:
    key: bytes
    range_end: bytes
    next_revision: int
    id: int = 0
    """The hub's number for it (its key in the hub's :class:`~confer.kv.WatchIndex`)."""
    synced: bool = False
    buffered: list[Event] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    notify: Callable[[], None] | None = None
    """Called instead of ``wake.set()`` when the watcher has something to take: a stream
    that serves many watchers with one task (etcd's Watch) learns which."""
    cancelled: bool = False
    accept_key: Callable[[bytes], bool] | None = None
    """A finer filter inside the range when reading history: the path boundary of a
    subtree watch (live events come matched exactly by the index)."""


class WatchHub:
    """Feeds watchers from the store. An applied revision costs the watchers its keys match
    (found through a :class:`~confer.kv.WatchIndex`, path subtrees included), not all of
    them."""

    def __init__(self, kv: KVStore) -> None:
        self.kv = kv
        self.watchers: dict[int, Watcher] = {}
        self.index = WatchIndex()
        self._ids = itertools.count(1)
        self.events_sent = 0
        """Events handed to watchers since start (:meth:`take`; for the metrics)."""
        self._closed = False
        kv.add_listener(self._on_events)
        kv.add_restore_listener(lambda _revision: self.on_restore())

    @staticmethod
    def _wake(w: Watcher) -> None:
        if w.notify is None:
            w.wake.set()
        else:
            w.notify()

    def _on_events(self, events: tuple[Event, ...]) -> None:
        watchers = self.watchers
        if len(events) == 1:  # most revisions: one event, shared by every watcher it matches
            groups: Iterable[tuple[int, Sequence[Event]]] = (
                (wid, events) for wid in self.index.match(events[0].kv.key))
        else:
            groups = self.index.match_events(events).items()
        for wid, matched in groups:
            w = watchers[wid]
            if not w.synced:
                continue
            if len(w.buffered) + len(matched) > MAX_BUFFERED_EVENTS:
                # Too slow to keep up live: fall back to reading the history.
                w.synced = False
                w.buffered.clear()
            else:
                w.buffered.extend(matched)
            self._wake(w)

    def on_restore(self) -> None:
        """The store was replaced by a snapshot: every watcher re-reads from history."""
        for w in self.watchers.values():
            w.synced = False
            w.buffered.clear()
            self._wake(w)

    def close(self) -> None:
        self._closed = True
        for w in list(self.watchers.values()):
            self.cancel(w)

    def cancel(self, watcher: Watcher) -> None:
        """Stop feeding ``watcher``; its consumer sees it cancelled."""
        watcher.cancelled = True
        self._remove(watcher)
        self._wake(watcher)

    def _remove(self, w: Watcher) -> None:
        if self.watchers.pop(w.id, None) is not None:
            self.index.remove(w.id)

    def watcher(self, key: bytes, range_end: bytes, start_revision: int,
                notify: Callable[[], None] | None = None) -> Watcher:
        """Register a watcher of ``key``, or of the range to ``range_end`` (etcd's forms);
        ``start_revision`` 0 means "changes after now". Consume it with :meth:`events`, or
        with :meth:`take` each time ``notify`` is called."""
        if self._closed:
            raise WatchClosed("server shutting down")
        start = start_revision or self.kv.revision + 1
        w = Watcher(key, range_end, start, next(self._ids), notify=notify)
        self.watchers[w.id] = w
        self.index.add(w.id, key, range_end)
        return w

    def tree_watcher(self, path: bytes, span: tuple[bytes, bytes], start_revision: int,
                     notify: Callable[[], None] | None = None) -> Watcher:
        """Register a watcher of ``path`` and its subtree, at path boundaries (``/app``
        does not cover ``/application``); ``span`` is the key range that holds them (read
        from the history, then filtered). Otherwise as :meth:`watcher`."""
        if self._closed:
            raise WatchClosed("server shutting down")
        key, end = span
        w = Watcher(key, end, start_revision or self.kv.revision + 1, next(self._ids),
                    accept_key=boundary_match(path), notify=notify)
        self.watchers[w.id] = w
        self.index.add_tree(w.id, path)
        return w

    def take(self, w: Watcher) -> list[Event]:
        """The watcher's next events in revision order: live ones buffered, or a chunk of
        history while it catches up; [] if none now. Raises CompactedError if its next
        revision is no longer in the history. Call it again while :meth:`pending`."""
        if w.cancelled:
            return []
        if not w.synced:
            batch = self._catch_up(w)
        elif not w.buffered:
            return []
        else:
            batch, w.buffered = w.buffered, []
            batch = [e for e in batch if e.kv.mod_revision >= w.next_revision]
            if batch:
                w.next_revision = batch[-1].kv.mod_revision + 1
        self.events_sent += len(batch)
        return batch

    @staticmethod
    def pending(w: Watcher) -> bool:
        """Has :meth:`take` more for ``w`` right now (live events, or history to read)?"""
        return not w.cancelled and (not w.synced or bool(w.buffered))

    async def events(self, w: Watcher) -> AsyncGenerator[list[Event], None]:
        """Yield batches of events in revision order, in runs of about ``BATCH_BYTES``.
        Raises CompactedError if the watcher's next revision is no longer in the history."""
        try:
            while not w.cancelled:
                batch = self.take(w)
                if batch:
                    for run in split_batch(batch):
                        yield run
                elif not self.pending(w):
                    w.wake.clear()
                    await w.wake.wait()
        finally:
            self._remove(w)
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


__all__ = ["CompactedError", "WatchClosed", "WatchHub", "Watcher", "boundary_match",
           "event_bytes", "split_batch"]
