"""The leader's view of each follower: how far it matches, and what is in flight to it."""

from __future__ import annotations

import enum
from collections import deque

from confer.raft.types import Snapshot


class ProgressState(enum.IntEnum):
    PROBE = 0
    """Unsure where the follower's log ends: one append at a time until it answers."""
    REPLICATE = 1
    """Known match: pipeline appends optimistically within the inflight window."""
    SNAPSHOT = 2
    """Sending a snapshot, chunk by chunk; appends wait until it is installed."""


class Inflights:
    """A window of unacknowledged appends, bounded by count and by bytes."""

    __slots__ = ("_queue", "bytes", "max_bytes", "max_count")

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._queue: deque[tuple[int, int]] = deque()  # (last index, bytes)
        self.bytes = 0

    def add(self, last_index: int, nbytes: int) -> None:
        self._queue.append((last_index, nbytes))
        self.bytes += nbytes

    def free_le(self, index: int) -> None:
        """Acknowledge every in-flight append whose last index is <= ``index``."""
        q = self._queue
        while q and q[0][0] <= index:
            self.bytes -= q.popleft()[1]

    def free_first_one(self) -> None:
        if self._queue:
            self.bytes -= self._queue.popleft()[1]

    def full(self) -> bool:
        return len(self._queue) >= self.max_count or self.bytes >= self.max_bytes

    def count(self) -> int:
        return len(self._queue)

    def reset(self) -> None:
        self._queue.clear()
        self.bytes = 0


class Progress:
    __slots__ = (
        "active_before",
        "inflights",
        "is_learner",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "snap_offset",
        "snap_stall_ticks",
        "snapshot",
        "state",
    )

    def __init__(self, next_index: int, max_inflight: int, max_inflight_bytes: int,
                 is_learner: bool = False) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.recent_active = False
        # recent_active of the previous CheckQuorum period: recent_active alone is False for
        # every follower just after each check, until it answers again.
        self.active_before = False
        self.is_learner = is_learner
        self.inflights = Inflights(max_inflight, max_inflight_bytes)
        self.pending_snapshot = 0
        # The snapshot being sent (kept even if a newer one is taken meanwhile), the bytes of
        # it acknowledged so far, and ticks since the last ack.
        self.snapshot: Snapshot | None = None
        self.snap_offset = 0
        self.snap_stall_ticks = 0

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot = None
        self.snap_offset = 0
        self.snap_stall_ticks = 0
        self.state = state
        self.inflights.reset()

    def is_live(self) -> bool:
        """Heard from within the last one or two election timeouts (CheckQuorum periods)."""
        return self.recent_active or self.active_before

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, index: int) -> bool:
        """The follower matches up to ``index``. Returns True if that is news."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """An append at ``rejected`` failed; back off to the follower's hint.

        Returns False if the rejection is stale (for an append already superseded).
        """
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def sent_entries(self, last_index: int, nbytes: int) -> None:
        """Record an append of entries up to ``last_index`` (``nbytes`` of payload)."""
        if self.state == ProgressState.REPLICATE:
            self.next = last_index + 1
            self.inflights.add(last_index, nbytes)
        elif self.state == ProgressState.PROBE:
            self.probe_sent = True
