"""Value types of the store: key-values, events, enums shared with commands, and results.

The enums use etcd's protobuf numbers so the etcd-compatible API can pass them straight through.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from confer.kv.errors import (
    AuthDenied,
    AuthError,
    AuthUserEmpty,
    BadCommand,
    CompactedError,
    DuplicateKey,
    ErrorCode,
    FutureRevisionError,
    InvalidArgument,
    KeyNotFound,
    KVError,
    LeaseExists,
    LeaseNotFound,
    NoSpace,
    TooManyOps,
)

_T = TypeVar("_T")


def fast_constructor(cls: type[_T]) -> Callable[..., _T]:
    """A positional constructor for the frozen slotted dataclass ``cls``, about 3x faster
    than its ``__init__`` (which sets each field through ``object.__setattr__``).

    It builds a non-frozen twin with the same slots, then retypes it to ``cls``: CPython
    allows ``__class__`` assignment between classes with identical slot layouts. The result
    is an ordinary, frozen ``cls`` instance. Used on the store's hot path only.
    """
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]  # _T is any dataclass
    twin: Any = dataclass(slots=True)(
        type(f"_{cls.__name__}Twin", (), {"__annotations__": dict.fromkeys(names, Any)}))

    def new(*args: Any) -> _T:
        obj: _T = twin(*args)
        obj.__class__ = cls
        return obj

    new.__doc__ = f"Build a {cls.__name__} from all its fields, positionally."
    return new


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One version of one key, as etcd's ``mvccpb.KeyValue``.

    A tombstone (the key deleted at ``mod_revision``) has ``version == 0``,
    ``create_revision == 0``, an empty value and no lease: exactly the ``kv`` of a DELETE event.
    """

    key: bytes
    create_revision: int
    mod_revision: int
    version: int
    value: bytes = b""
    lease: int = 0

    @property
    def is_tombstone(self) -> bool:
        return self.version == 0


new_kv = fast_constructor(KeyValue)


class EventType(enum.IntEnum):
    PUT = 0
    DELETE = 1


@dataclass(frozen=True, slots=True)
class Event:
    """One change of one key. ``prev_kv`` is the key's version just before (None if it did not
    exist); watchers that did not ask for it drop it."""

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None


new_event = fast_constructor(Event)


class SortOrder(enum.IntEnum):
    NONE = 0
    ASCEND = 1
    DESCEND = 2


class SortTarget(enum.IntEnum):
    KEY = 0
    VERSION = 1
    CREATE = 2
    MOD = 3
    VALUE = 4


class CompareTarget(enum.IntEnum):
    VERSION = 0
    CREATE = 1
    MOD = 2
    VALUE = 3
    LEASE = 4


class CompareResult(enum.IntEnum):
    EQUAL = 0
    GREATER = 1
    LESS = 2
    NOT_EQUAL = 3


class AlarmType(enum.IntEnum):
    """etcd's ``AlarmType``; Confer raises only NOSPACE."""

    NONE = 0
    NOSPACE = 1
    CORRUPT = 2


class AlarmAction(enum.IntEnum):
    """etcd's ``AlarmRequest.AlarmAction`` (GET is a read, never a command)."""

    GET = 0
    ACTIVATE = 1
    DEACTIVATE = 2


class PermType(enum.IntEnum):
    """What a role's permission allows on its keys (etcd's ``authpb.Permission.Type``)."""

    READ = 0
    WRITE = 1
    READWRITE = 2


class AuthAction(enum.IntEnum):
    """What an :class:`~confer.kv.commands.AuthChange` does."""

    ENABLE = 0
    DISABLE = 1
    USER_ADD = 2
    USER_DELETE = 3
    USER_PASSWORD = 4
    USER_GRANT = 5
    USER_REVOKE = 6
    ROLE_ADD = 7
    ROLE_DELETE = 8
    ROLE_GRANT = 9
    ROLE_REVOKE = 10
    TOKEN = 11
    """A simple token issued to a user (only its digest travels): changes no state."""


# -- results ---------------------------------------------------------------------------------------
# ``revision`` is always the store's revision after the command (etcd's response header
# revision): the new revision for a write, the unchanged one when nothing changed.


@dataclass(frozen=True, slots=True)
class RangeResult:
    """``count`` is the number of keys in the range (before min/max filters, as etcd);
    ``more`` says ``limit`` cut the answer short."""

    kvs: list[KeyValue]
    count: int
    more: bool
    revision: int


new_range_result = fast_constructor(RangeResult)


@dataclass(frozen=True, slots=True)
class PutResult:
    revision: int
    prev_kv: KeyValue | None = None


new_put_result = fast_constructor(PutResult)


@dataclass(frozen=True, slots=True)
class DeleteResult:
    revision: int
    deleted: int
    prev_kvs: list[KeyValue] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class TxnResult:
    """``responses`` holds one result per operation of the branch taken, in order."""

    revision: int
    succeeded: bool
    responses: list[OpResult]


@dataclass(frozen=True, slots=True)
class CompactResult:
    revision: int


@dataclass(frozen=True, slots=True)
class LeaseGrantResult:
    """A lease was granted: ``id`` (the store's choice when the grant asked for 0) and its
    ``ttl`` in seconds. A grant changes no key, so ``revision`` is unchanged."""

    revision: int
    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class LeaseRevokeResult:
    """A lease was revoked (by a client, or by the leader when it expired). ``deleted`` lists
    the keys it deleted, in key order, all at ``revision`` (unchanged when there were none)."""

    revision: int
    deleted: list[bytes]


@dataclass(frozen=True, slots=True)
class AlarmResult:
    """The alarms an :class:`~confer.kv.commands.Alarm` command raised or cleared, as
    ``(member id, alarm type)`` pairs (empty when it changed nothing). Takes no revision."""

    revision: int
    changed: list[tuple[int, int]]


@dataclass(frozen=True, slots=True)
class AuthResult:
    """An auth change was applied; ``auth_revision`` is the auth state's revision after it
    (bumped by every change, unchanged by a no-op or a token)."""

    revision: int
    auth_revision: int


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A granted lease: its id and its time-to-live in seconds. Deadlines are not replicated
    state: only the leader keeps them (see ``confer.server.leases``)."""

    id: int
    ttl: int


_ERRORS: dict[ErrorCode, type[KVError]] = {
    ErrorCode.INVALID_ARGUMENT: InvalidArgument,
    ErrorCode.KEY_NOT_FOUND: KeyNotFound,
    ErrorCode.DUPLICATE_KEY: DuplicateKey,
    ErrorCode.TOO_MANY_OPS: TooManyOps,
    ErrorCode.BAD_COMMAND: BadCommand,
    ErrorCode.LEASE_NOT_FOUND: LeaseNotFound,
    ErrorCode.LEASE_EXISTS: LeaseExists,
    ErrorCode.NO_SPACE: NoSpace,
    ErrorCode.AUTH: AuthError,
    ErrorCode.PERMISSION_DENIED: AuthDenied,
    ErrorCode.USER_EMPTY: AuthUserEmpty,
}


@dataclass(frozen=True, slots=True)
class ErrorResult:
    """A command that failed; the store is unchanged by it. ``revision`` is the store's."""

    code: ErrorCode
    message: str
    revision: int
    compact_revision: int = 0

    @property
    def error(self) -> str:
        return self.message

    def to_exception(self) -> KVError:
        """The exception a client-facing API should raise for this result."""
        if self.code == ErrorCode.COMPACTED:
            return CompactedError(self.compact_revision, self.message)
        if self.code == ErrorCode.FUTURE_REVISION:
            return FutureRevisionError(0, self.revision, self.message)
        return _ERRORS[self.code](self.message)

    @classmethod
    def of(cls, exc: KVError, revision: int) -> ErrorResult:
        compact = exc.compact_revision if isinstance(exc, CompactedError) else 0
        return cls(exc.code, str(exc), revision, compact)


OpResult = RangeResult | PutResult | DeleteResult | TxnResult
"""The result of one operation inside a transaction."""

Result = (PutResult | DeleteResult | TxnResult | CompactResult | LeaseGrantResult
          | LeaseRevokeResult | AlarmResult | AuthResult | ErrorResult)
"""What :meth:`KVStore.apply` returns."""
