"""The virtual clock's event queue.

Time is an integer number of *units*; one Raft tick is :data:`TICK_UNITS` units, so messages can
arrive between ticks. Events at the same time run in the order they were scheduled (a sequence
number breaks ties), which keeps every run of a seed identical.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Callable
from typing import Any

TICK_UNITS = 10
"""Time units per Raft tick."""


class EventKind(enum.IntEnum):
    DELIVER = 0
    """A message reaches its destination: ``(sender, message)``."""
    TICK = 1
    """Every live node ticks once."""
    CALL = 2
    """A scheduled callback (heal a partition, restart a node, ...)."""
    DELIVER_HELD = 3
    """A held message reaches its destination: ``(sender, message)``. It left before any
    partition that is in place now (it was stuck in a buffer), so no partition stops it."""


class EventQueue:
    """A heap of ``(time, seq, kind, a, b)`` tuples."""

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, EventKind, Any, Any]] = []
        self._seq = 0

    def push(self, time: int, kind: EventKind, a: Any = None, b: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (time, self._seq, kind, a, b))

    def call_at(self, time: int, fn: Callable[[], None]) -> None:
        self.push(time, EventKind.CALL, fn)

    def next_time(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def pop(self) -> tuple[int, int, EventKind, Any, Any]:
        return heapq.heappop(self._heap)

    def __len__(self) -> int:
        return len(self._heap)
