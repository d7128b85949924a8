"""One member's copy of a user's state machine: applies its log entries, answers its queries,
snapshots and restores it.

An entry (an APP_COMMAND, see :mod:`confer.envelope`) is the kind byte, then msgpack of
``[version, method, time_ns, arguments]``: the proposer's code version (``write_version``),
the command's name, the proposer's clock (nanoseconds since the epoch), and the arguments
as the caller encoded them (msgpack of ``[args, kwargs]``).

Everything here must come out the same on every member: a command's result and error are
computed from the entry and the state only (the replicated time is the largest entry time
seen so far, the random generator is seeded from the entry's position), and whatever the
command raises is its result, never the member's failure.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgpack

from confer.envelope import EntryKind
from confer.raft.fsm import SnapshotSteps
from confer.raft.types import Entry
from confer.replicated.machine import (
    SERIALISABLE,
    Method,
    StateMachine,
    VersionTooNew,
    command_error,
    methods_of,
    pack,
    unpack,
)
from confer.server.fsm import bin_header

M = TypeVar("M", bound=StateMachine)

_PREFIX = bytes((EntryKind.APP_COMMAND,))
SNAPSHOT_FORMAT = 2
"""2: the state as a list of chunks (:meth:`StateMachine.snapshot_chunks`); 1 (still read):
the state as one bytes (:meth:`StateMachine.snapshot`)."""


@dataclass(frozen=True, slots=True)
class Result:
    """What a command or query came to: its value (msgpack) or the error it raised."""

    value: bytes = b""
    error_type: str = ""
    error_message: str = ""

    def unwrap(self) -> Any:
        """The value, or the error raised as a :class:`~confer.replicated.CommandError`."""
        if self.error_type:
            raise command_error(self.error_type, self.error_message)
        return unpack(self.value)


def encode_entry(version: int, method: str, arguments: bytes, now_ns: int | None = None
                 ) -> bytes:
    """The log entry of a call of command ``method`` (``arguments`` already encoded)."""
    return _PREFIX + pack([version, method, time.time_ns() if now_ns is None else now_ns,
                           arguments])


class Replica(Generic[M]):
    """A state machine instance, driven by the log (the server's ``AppStateMachine``)."""

    def __init__(self, cls: type[M]) -> None:
        self.cls = cls
        self.methods: dict[str, Method] = methods_of(cls)
        self.machine: M = cls()
        self.last_time_ns = 0
        """The replicated clock: the largest entry time applied."""

    @property
    def name(self) -> str:
        return self.cls.__name__

    def apply(self, entry: Entry) -> Result:
        try:
            version, name, time_ns, arguments = unpack(entry.data[1:])
            version, time_ns = int(version), int(time_ns)
        except Exception as e:  # a malformed entry (only a faulty peer writes one)
            return _error("BadEntry", f"entry {entry.index} does not decode: {e}")
        if version > self.cls.version:
            raise VersionTooNew(
                f"entry {entry.index} was written by {self.name} version {version}; this "
                f"member runs version {self.cls.version}: upgrade its code, then start it "
                "again (docs/platform.md, 'Upgrades')")
        self.last_time_ns = max(self.last_time_ns, time_ns)
        machine = self.machine
        machine._now_ns = self.last_time_ns
        machine._index = entry.index
        machine._term = entry.term
        machine._entry_version = version
        machine._random = None
        method = self.methods.get(name) if isinstance(name, str) else None
        if method is None or not method.is_command:
            return _error("AttributeError", f"{self.name} has no command {name!r}")
        try:
            args, kwargs = method.decode_arguments(arguments)
        except (TypeError, ValueError) as e:
            return _error(type(e).__name__, str(e))
        return self._call(method, args, kwargs)

    def query(self, method: Method, args: list[Any], kwargs: dict[str, Any]) -> Result:
        """Run a query on the state as it is (the caller waited for the read point)."""
        return self._call(method, args, kwargs)

    def _call(self, method: Method, args: list[Any], kwargs: dict[str, Any]) -> Result:
        try:
            value = getattr(self.machine, method.name)(*args, **kwargs)
        except Exception as e:  # the command's own failure: its result, on every member
            return _error(type(e).__name__, str(e))
        try:
            return Result(pack(value))
        except (TypeError, ValueError, OverflowError):
            return _error("TypeError", f"{self.name}.{method.name}() returned a "
                                       f"{type(value).__name__}: results must be {SERIALISABLE}")

    def snapshot(self) -> bytes:
        """The replica's snapshot, whole (what :meth:`snapshot_steps` makes, at once)."""
        for parts in self.snapshot_steps():
            if parts is not None:
                return b"".join(parts)
        raise AssertionError("unreachable")

    def snapshot_steps(self) -> SnapshotSteps:
        """The snapshot, a chunk of the state machine's :meth:`~StateMachine.snapshot_chunks`
        per step (see ``confer.raft.fsm.SnapshotSteps``): the state is captured now (the
        user's code up to its first chunk runs here); each ``next()`` makes one more chunk
        and yields None; the last yields the snapshot as parts to concatenate: msgpack of
        ``[2, name, version, last_time_ns, [chunk, ...]]``."""
        chunks = iter(self.machine.snapshot_chunks())
        first = next(chunks, None)
        head = [self.name, self.cls.version, self.last_time_ns]
        return self._steps(head, first, chunks)

    @staticmethod
    def _steps(head: list[Any], first: bytes | None, chunks: Iterator[bytes]
               ) -> SnapshotSteps:
        packer = msgpack.Packer()
        parts: list[bytes] = []
        n = 0
        for chunk in itertools.chain(() if first is None else (first,), chunks):
            if not isinstance(chunk, (bytes, bytearray)):
                raise TypeError(f"snapshot_chunks() yielded a {type(chunk).__name__}: chunks "
                                "must be bytes")
            parts += (bin_header(len(chunk)), bytes(chunk))
            n += 1
            yield None
        # msgpack of [format, *head, chunks], the chunks packed as bin without copying them.
        yield [packer.pack_array_header(5), packer.pack(SNAPSHOT_FORMAT),
               *map(packer.pack, head), packer.pack_array_header(n), *parts]

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot's (empty: the state before any command);
        raises (the member stops) if it was taken of another app, by newer code, or does
        not restore. Reads format 2 (chunks) and 1 (one state, before incremental
        snapshots)."""
        if not data:
            self.machine, self.last_time_ns = self.cls(), 0
            return
        fmt, name, version, last_time_ns, state = unpack(data)
        if fmt not in (1, SNAPSHOT_FORMAT):
            raise ValueError(f"unsupported app snapshot format {fmt}")
        if name != self.name:
            raise ValueError(f"the snapshot is of app {name!r}, this member runs {self.name!r}")
        if version > self.cls.version:
            raise VersionTooNew(f"the snapshot was taken by {name} version {version}; this "
                                f"member runs version {self.cls.version}: upgrade its code")
        if not (isinstance(state, bytes) if fmt == 1 else
                isinstance(state, list) and all(isinstance(c, bytes) for c in state)):
            raise ValueError(f"a malformed {name} snapshot (format {fmt})")
        machine = self.cls()
        try:
            if fmt == 1:
                machine.restore(state)
            else:
                machine.restore_chunks(state)
        except Exception as e:
            size = len(state) if fmt == 1 else sum(map(len, state))
            raise ValueError(f"{name}.restore() failed on a snapshot of {size} bytes: "
                             f"{type(e).__name__}: {e}") from e
        self.machine = machine
        self.last_time_ns = last_time_ns


def _error(type_name: str, message: str) -> Result:
    return Result(b"", type_name, message)

