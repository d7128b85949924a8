"""The server's replicated state machine: the KV store plus the member table, and a user's
state machine when the member runs one (``confer serve --app``, :mod:`confer.replicated`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator
from typing import Any, Protocol

import msgpack

from confer.envelope import EntryKind, MalformedEntry, kind_of
from confer.kv import KVStore
from confer.raft.fsm import SnapshotSteps, StateMachine
from confer.raft.types import ConfChange, ConfState, Entry
from confer.server.members import Membership, MembershipEvent, decode_publish

SNAPSHOT_FORMAT = 1
_KV_PREFIX = bytes((EntryKind.KV_COMMAND,))
_KV_PREFIXES = (bytes((EntryKind.KV_COMMAND_AS,)), _KV_PREFIX)  # stamped first: the most frequent


class AppStateMachine(Protocol):
    """A user's state machine beside the KV store: it applies the APP_COMMAND entries, and
    its state travels in the server's snapshots (as one more part)."""

    def apply(self, entry: Entry) -> Any:
        """Apply one APP_COMMAND entry; the result goes back to the proposer. Raises only
        to stop the member (an entry this code must not apply)."""
        ...

    def snapshot(self) -> bytes: ...

    def snapshot_steps(self) -> SnapshotSteps:
        """:meth:`snapshot` a slice at a time (``confer.raft.fsm.StateMachine``'s rule: the
        state is captured when this is called)."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot's (empty: the state before the app's first
        entry); raises if it cannot (the member stops)."""
        ...


class AppliedTwice(RuntimeError):
    """An entry at or below the applied index reached the state machine: applying it would
    make this node's state diverge from the others', so the node must stop instead."""


class ServerStateMachine(StateMachine):
    def __init__(self, app: AppStateMachine | None = None) -> None:
        self.kv = KVStore()
        self.app = app
        self.membership = Membership()
        self.membership_listeners: list[Callable[[MembershipEvent], None]] = []
        self.applied_index = 0
        """The last entry applied (normal or membership); restored with the KV store's."""

    def _advance(self, index: int) -> None:
        if index <= self.applied_index:
            raise AppliedTwice(f"entry {index} applied again (applied index {self.applied_index})")
        self.applied_index = index

    def apply(self, entry: Entry) -> Any:
        """Apply a KV command or a member's publication (a FORWARDED entry arrives
        unwrapped by the driver). Raises :class:`~confer.envelope.MalformedEntry` for any
        other kind, before anything changes: the node must stop rather than skip it."""
        first = entry.data[:1]
        if first in _KV_PREFIXES:  # the hot path: no enum lookup
            self._advance(entry.index)
            return self.kv.apply(entry)
        kind = kind_of(entry.data)
        if kind is EntryKind.MEMBER_PUBLISH:
            self._advance(entry.index)
            # A malformed body changes nothing: a bad command must never fail to apply.
            with contextlib.suppress(ValueError, TypeError):
                self.membership.publish(*decode_publish(entry.data))
            return None
        if kind is EntryKind.APP_COMMAND:
            if self.app is None:
                raise MalformedEntry(f"entry {entry.index} is a command of an app's state "
                                     "machine, and this member runs none (confer serve --app)")
            if entry.index <= self.applied_index:
                self._advance(entry.index)  # raises AppliedTwice
            result = self.app.apply(entry)  # first: an entry it refuses changes nothing
            self.applied_index = entry.index
            return result
        raise MalformedEntry(f"entry {entry.index}: a {kind.name} entry does not reach the "
                             "state machine (the driver applies its contents)")

    def apply_conf_change(self, index: int, cc: ConfChange, conf: ConfState) -> None:
        self._advance(index)
        event = self.membership.apply(cc, conf)
        if event is not None:
            for listener in self.membership_listeners:
                listener(event)

    def snapshot(self) -> bytes:
        parts = [SNAPSHOT_FORMAT, self.kv.snapshot(), self.membership.snapshot()]
        if self.app is not None:
            parts.append(self.app.snapshot())
        return msgpack.packb(parts)

    def snapshot_steps(self) -> SnapshotSteps:
        """:meth:`snapshot` a slice at a time (see :meth:`KVStore.snapshot_steps`): the state
        is captured at creation, each ``next()`` does a few milliseconds' work and yields
        None, the last yields the snapshot as parts to concatenate. Raises
        ``SnapshotAborted`` if a compaction or a restore overtakes it."""
        kv_steps = self.kv.snapshot_steps()
        next(kv_steps)  # captured now, with the member table and the app's state
        members = msgpack.packb(self.membership.snapshot())
        app_steps = None if self.app is None else self.app.snapshot_steps()
        return self._wrap(kv_steps, members, app_steps)

    @staticmethod
    def _wrap(kv_steps: SnapshotSteps, members: bytes, app_steps: SnapshotSteps | None
              ) -> SnapshotSteps:
        yield None
        kv = yield from _steps_until_done(kv_steps)
        tail = [members]
        if app_steps is not None:
            app = yield from _steps_until_done(app_steps)
            tail += (bin_header(sum(map(len, app))), *app)
        # msgpack.packb([SNAPSHOT_FORMAT, kv, members(, app)]), without joining the parts.
        head = msgpack.Packer()
        yield [head.pack_array_header(3 if app_steps is None else 4), head.pack(SNAPSHOT_FORMAT),
               bin_header(sum(map(len, kv))), *kv, *tail]

    def backup_steps(self) -> Iterator[tuple[list[bytes], list[bytes]] | None]:
        """What a backup file holds (``confer snapshot save``), as :meth:`snapshot_steps`
        makes a snapshot: the KV store's snapshot and the app's (no parts: no app), both
        captured now, at one entry; each ``next()`` does a slice and yields None, the last
        yields the two as parts to concatenate."""
        kv_steps = self.kv.snapshot_steps()
        next(kv_steps)
        app_steps = None if self.app is None else self.app.snapshot_steps()
        return self._backup(kv_steps, app_steps)

    @staticmethod
    def _backup(kv_steps: SnapshotSteps, app_steps: SnapshotSteps | None
                ) -> Iterator[tuple[list[bytes], list[bytes]] | None]:
        yield None
        kv = yield from _steps_until_done(kv_steps)
        app = [] if app_steps is None else (yield from _steps_until_done(app_steps))
        yield kv, app

    @staticmethod
    def snapshot_is_valid(data: bytes) -> bool:
        """Whether ``data`` restores as a snapshot of this state machine (checked before a
        snapshot received from a peer is persisted: a garbage one once made every restart
        fail). Restores into a scratch instance: snapshots arrive rarely, and only a full
        restore proves that every part decodes. (An app's part is restored for real only:
        one that fails then stops the member, with its own reason.)"""
        try:
            ServerStateMachine().restore(data, app_part=False)
        except Exception:  # whatever a malformed snapshot makes the decoders raise
            return False
        return bool(data)

    def restore(self, data: bytes, *, app_part: bool = True) -> None:
        if not data:
            return
        fmt, kv, members, *app = msgpack.unpackb(data)
        if fmt != SNAPSHOT_FORMAT:
            raise ValueError(f"unsupported snapshot format {fmt}")
        if app_part and (self.app is not None or app):
            if self.app is None:
                raise MalformedEntry("the snapshot holds an app's state machine, and this "
                                     "member runs none (confer serve --app)")
            # First: if it fails, nothing else changed. A snapshot with no app part was
            # taken before any app entry (a member without an app cannot apply one).
            self.app.restore(app[0] if app else b"")
        self.kv.restore(kv)
        self.membership.restore(members)
        self.applied_index = self.kv.applied_index


def _steps_until_done(steps: SnapshotSteps) -> Generator[None, None, list[bytes]]:
    """Yield None for each of ``steps``' slices; return its parts."""
    for parts in steps:
        if parts is not None:
            return parts
        yield None
    raise AssertionError("snapshot steps that end without the snapshot")


def bin_header(n: int) -> bytes:
    """msgpack's header of a ``bin`` of ``n`` bytes (what packb writes before bytes)."""
    if n < 1 << 8:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 1 << 16:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")
