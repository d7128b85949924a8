"""The seam between consensus and the application: a replicated state machine.

In the style of hashicorp/raft's FSM. Entries arrive in log order, exactly once per
incarnation; after a restart the driver restores the latest snapshot and replays from there.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import msgpack

from confer.raft.types import ConfChange, ConfState, Entry

SnapshotSteps = Iterator[list[bytes] | None]
"""An incremental snapshot: each ``next()`` does a slice of the work and yields None, the last
yields the snapshot as parts to concatenate."""


class StateMachine(Protocol):
    """What the driver applies committed entries to. Subclass it to inherit the default
    :meth:`snapshot_steps` (one step)."""

    def apply(self, entry: Entry) -> Any:
        """Apply one committed NORMAL entry; the result goes back to the proposer."""
        ...

    def apply_conf_change(self, index: int, cc: ConfChange, conf: ConfState) -> None:
        """A committed membership change at ``index``; ``conf`` is the membership after it."""
        ...

    def snapshot(self) -> bytes:
        """Serialise the state as of the last applied entry."""
        ...

    def snapshot_steps(self) -> SnapshotSteps:
        """:meth:`snapshot` a slice at a time, so that the driver can go on applying entries
        between slices. The state is captured when this is called (not at the first
        ``next()``): the result must be the snapshot as of the entry last applied then,
        whatever is applied meanwhile. It may raise (at any ``next()``) to abandon the
        snapshot; the driver retries later.

        This default does all the work at once: one step, the whole :meth:`snapshot`.
        """
        return iter(([self.snapshot()],))

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot's."""
        ...


class ListStateMachine(StateMachine):
    """The in-memory twin: remembers every applied payload, in order."""

    def __init__(self) -> None:
        self.applied: list[bytes] = []

    def apply(self, entry: Entry) -> int:
        self.applied.append(entry.data)
        return len(self.applied)

    def apply_conf_change(self, index: int, cc: ConfChange, conf: ConfState) -> None:
        """Membership is the core's business; this twin keeps no state for it."""

    def snapshot(self) -> bytes:
        return msgpack.packb(self.applied)

    def restore(self, data: bytes) -> None:
        self.applied = list(msgpack.unpackb(data)) if data else []
