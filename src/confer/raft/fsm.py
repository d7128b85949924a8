"""The seam between consensus and the application: a replicated state machine.

In the style of hashicorp/raft's FSM. Entries arrive in log order, exactly once per
incarnation; after a restart the driver restores the latest snapshot and replays from there.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgpack

from confer.raft.types import ConfChange, ConfState, Entry


class StateMachine(Protocol):
    def apply(self, entry: Entry) -> Any:
        """Apply one committed NORMAL entry; the result goes back to the proposer."""
        ...

    def apply_conf_change(self, index: int, cc: ConfChange, conf: ConfState) -> None:
        """A committed membership change at ``index``; ``conf`` is the membership after it."""
        ...

    def snapshot(self) -> bytes:
        """Serialise the state as of the last applied entry."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot's."""
        ...


class ListStateMachine:
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
