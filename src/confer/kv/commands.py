"""The commands carried in Raft entries, their wire encoding and their stateless validation.

Encoding (hot path, so no dicts of field names): the KV_COMMAND kind byte of the log-entry
envelope (:mod:`confer.envelope`), then one msgpack array whose first element is the command
tag::

    Put          [0, key, value, lease, flags]        flags: 1 prev_kv, 2 ignore_value,
                                                             4 ignore_lease
    DeleteRange  [1, key, range_end, prev_kv]
    RangeOp      [2, key, range_end, revision, limit, flags, sort_order, sort_target,
                  min_mod, max_mod, min_create, max_create]   flags: 1 keys_only, 2 count_only
    Txn          [3, [[key, range_end, target, result, value], ...], [op...], [op...]]
    Compact      [4, revision]
    LeaseGrant   [5, id, ttl]                        id 0: the store picks one
    LeaseRevoke  [6, id]
    Alarm        [7, action, member_id, alarm]     etcd's numbers (AlarmAction, AlarmType)
    AuthChange   [8, action, name, role, secret, perm, key, range_end]   (AuthAction, PermType)

A RangeOp is only valid inside a Txn (a plain read is not replicated); Compact, LeaseGrant,
LeaseRevoke, Alarm and AuthChange only at the top level. Decoding is strict about types, so
a decoded command never makes ``apply`` raise.

**Who sent it.** A command a client's request proposes is stamped (etcd's request header
``Username`` and ``AuthRevision``): the KV_COMMAND_AS kind byte, then the same array with
two more elements, the user whose permissions were checked ("" for none: authentication
was off, or the request needs no user) and the auth revision the check saw, e.g.
``[0, key, value, lease, flags, "alice", 7]``. The store checks the command again when it
applies it if the auth revision moved since (:func:`confer.kv.auth.stale_refusal`).
Commands a member proposes on its own (a lease expiring, the NOSPACE alarm, an automatic
compaction) and entries written before stamps existed carry none and are applied as they
are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import msgpack

from confer.envelope import EntryKind
from confer.kv import keyrange
from confer.kv.errors import BadCommand, DuplicateKey, InvalidArgument, TooManyOps
from confer.kv.types import (
    AlarmAction,
    AlarmType,
    AuthAction,
    CompareResult,
    CompareTarget,
    PermType,
    SortOrder,
    SortTarget,
)

MAX_TXN_OPS = 128
"""etcd's default ``--max-txn-ops``: checked when a command is proposed, not when applied."""
MAX_TXN_DEPTH = 16
"""Deepest nesting of transactions that decodes (bounds recursion in apply)."""
MAX_LEASE_TTL = 9_000_000_000
"""etcd's ``MaxLeaseTTL``, in seconds."""
MAX_LEASE_ID = (1 << 63) - 1
"""Lease ids are positive int64s (etcd's ``LeaseID``)."""

_PUT, _DELETE, _RANGE, _TXN, _COMPACT, _LEASE_GRANT, _LEASE_REVOKE, _ALARM, _AUTH = range(9)
MAX_AUTH_NAME_BYTES = 256
"""Longest user or role name, in UTF-8 bytes."""
MAX_AUTH_SECRET_BYTES = 128
"""Longest secret: a bcrypt hash is 60 bytes, a token's record 40."""
MAX_MEMBER_ID = (1 << 64) - 1
_SORT_ORDERS = frozenset(SortOrder)
_SORT_TARGETS = frozenset(SortTarget)
_COMPARE_TARGETS = frozenset(CompareTarget)
_COMPARE_RESULTS = frozenset(CompareResult)
_KV = int(EntryKind.KV_COMMAND)  # a plain int: compared on every apply
_KV_AS = int(EntryKind.KV_COMMAND_AS)
_KIND_PREFIX = bytes((_KV,))
_AS_PREFIX = bytes((_KV_AS,))


@dataclass(frozen=True, slots=True)
class Put:
    """Write ``value`` to ``key`` (etcd ``PutRequest``). ``ignore_value``/``ignore_lease`` keep
    the key's current value/lease and require the key to exist."""

    key: bytes
    value: bytes = b""
    lease: int = 0
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False


@dataclass(frozen=True, slots=True)
class DeleteRange:
    """Delete the keys named by ``(key, range_end)`` (see :mod:`confer.kv.keyrange`)."""

    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False


@dataclass(frozen=True, slots=True)
class RangeOp:
    """A read inside a transaction, with etcd ``RangeRequest``'s arguments."""

    key: bytes
    range_end: bytes = b""
    revision: int = 0
    limit: int = 0
    keys_only: bool = False
    count_only: bool = False
    sort_order: SortOrder = SortOrder.NONE
    sort_target: SortTarget = SortTarget.KEY
    min_mod_revision: int = 0
    max_mod_revision: int = 0
    min_create_revision: int = 0
    max_create_revision: int = 0


@dataclass(frozen=True, slots=True)
class Compare:
    """One guard of a transaction: ``<target of every key in range> <result> value``.

    ``value`` is bytes for ``CompareTarget.VALUE`` and an int for the other targets.
    """

    key: bytes
    range_end: bytes = b""
    target: CompareTarget = CompareTarget.VALUE
    result: CompareResult = CompareResult.EQUAL
    value: bytes | int = b""


@dataclass(frozen=True, slots=True)
class Txn:
    """If every compare holds, run ``success``, else ``failure``; atomically, as one revision."""

    compare: list[Compare] = field(default_factory=list)
    success: list[Op] = field(default_factory=list)
    failure: list[Op] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Compact:
    """Drop history at and below ``revision`` (see :meth:`KVStore.compact_revision`)."""

    revision: int


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """Create a lease of ``ttl`` seconds with id ``id``, or with an id the store picks when
    ``id`` is 0: 1, 2, 3, ... skipping ids in use, never the same one twice. A grant changes no
    key and takes no revision. The server raises ``ttl`` to its minimum before proposing (the
    store has no notion of time: the TTL is only stored)."""

    ttl: int
    id: int = 0


@dataclass(frozen=True, slots=True)
class LeaseRevoke:
    """Delete lease ``id`` and, in one revision, every key attached to it. The leader proposes
    this when a lease expires; clients propose it to revoke."""

    id: int


@dataclass(frozen=True, slots=True)
class Alarm:
    """Raise (ACTIVATE) or clear (DEACTIVATE) ``alarm`` for member ``member_id`` (etcd's
    replicated alarm store). While any NOSPACE alarm is active the store refuses every
    write that needs space: puts, transactions that hold a put, lease grants."""

    action: AlarmAction
    member_id: int
    alarm: AlarmType = AlarmType.NOSPACE


@dataclass(frozen=True, slots=True)
class AuthChange:
    """A change of the replicated auth state (users, roles, permissions, the enabled flag;
    :mod:`confer.kv.auth`), as etcd's Auth API requests it.

    ``name`` is the user (USER_*, TOKEN) or role (ROLE_*) changed; ``role`` the role granted
    or revoked (USER_GRANT, USER_REVOKE). ``secret`` is never a password: a bcrypt hash
    (USER_ADD, USER_PASSWORD; empty: a user without a password, who can only authenticate
    with a client certificate), or what the server records of a simple token it issued
    (TOKEN: its SHA-256 digest and issue time, never the token).
    ``perm``, ``key`` and ``range_end`` name a permission (ROLE_GRANT; ROLE_REVOKE uses the
    key range only), with etcd's ``(key, range_end)`` rules (:mod:`confer.kv.keyrange`).
    """

    action: AuthAction
    name: str = ""
    role: str = ""
    secret: bytes = b""
    perm: PermType = PermType.READ
    key: bytes = b""
    range_end: bytes = b""


Op = Put | DeleteRange | RangeOp | Txn
"""An operation inside a transaction."""
Command = Put | DeleteRange | Txn | Compact | LeaseGrant | LeaseRevoke | Alarm | AuthChange
"""What a Raft entry carries."""


# -- encoding --------------------------------------------------------------------------------------
def encode_command(cmd: Command) -> bytes:
    """Serialise a command for a Raft entry (see the module docstring for the format)."""
    if type(cmd) is Put:  # the hot path first
        flags = cmd.prev_kv | (cmd.ignore_value << 1) | (cmd.ignore_lease << 2)
        return _KIND_PREFIX + msgpack.packb([_PUT, cmd.key, cmd.value, cmd.lease, flags])
    return _KIND_PREFIX + msgpack.packb(_encode_command(cmd))


def encode_command_as(cmd: Command, user: str, auth_revision: int) -> bytes:
    """Serialise a command stamped with the user it was checked for and the auth revision
    of that check (see the module docstring)."""
    if type(cmd) is Put:  # the hot path first
        flags = cmd.prev_kv | (cmd.ignore_value << 1) | (cmd.ignore_lease << 2)
        return _AS_PREFIX + msgpack.packb([_PUT, cmd.key, cmd.value, cmd.lease, flags, user,
                                           auth_revision])
    raw = _encode_command(cmd)
    raw += (user, auth_revision)
    return _AS_PREFIX + msgpack.packb(raw)


def _encode_command(cmd: Command) -> list[object]:
    if type(cmd) is Compact:
        return [_COMPACT, cmd.revision]
    if type(cmd) is LeaseGrant:
        return [_LEASE_GRANT, cmd.id, cmd.ttl]
    if type(cmd) is LeaseRevoke:
        return [_LEASE_REVOKE, cmd.id]
    if type(cmd) is Alarm:
        return [_ALARM, int(cmd.action), cmd.member_id, int(cmd.alarm)]
    if type(cmd) is Put or type(cmd) is DeleteRange or type(cmd) is Txn:
        return _encode_op(cmd)
    if type(cmd) is AuthChange:
        return [_AUTH, int(cmd.action), cmd.name, cmd.role, cmd.secret, int(cmd.perm),
                cmd.key, cmd.range_end]
    raise TypeError(f"not a command: {cmd!r}")


def _encode_op(op: Op) -> list[object]:
    if type(op) is Put:
        flags = op.prev_kv | (op.ignore_value << 1) | (op.ignore_lease << 2)
        return [_PUT, op.key, op.value, op.lease, flags]
    if type(op) is DeleteRange:
        return [_DELETE, op.key, op.range_end, int(op.prev_kv)]
    if type(op) is RangeOp:
        return [_RANGE, op.key, op.range_end, op.revision, op.limit,
                op.keys_only | (op.count_only << 1), int(op.sort_order), int(op.sort_target),
                op.min_mod_revision, op.max_mod_revision, op.min_create_revision,
                op.max_create_revision]
    if type(op) is Txn:
        return [_TXN,
                [[c.key, c.range_end, int(c.target), int(c.result), c.value] for c in op.compare],
                [_encode_op(o) for o in op.success], [_encode_op(o) for o in op.failure]]
    raise TypeError(f"not a transaction operation: {op!r}")


def decode_command(data: bytes) -> Command:
    """Parse an entry payload (a stamp, if any, is checked and dropped: see
    :func:`decode_command_as`). Raises :class:`BadCommand` for anything that is not exactly
    a KV command (another kind byte, bad msgpack, wrong shape or types)."""
    return decode_command_as(data)[0]


def decode_command_as(data: bytes) -> tuple[Command, Stamp | None]:
    """Parse an entry payload: the command and its stamp (None: unstamped)."""
    raw = unpack_command(data)
    stamp = take_stamp(raw) if data[0] == _KV_AS else None
    fields = put_fields(raw)
    if fields is not None:
        key, value, lease, flags = fields
        return Put(key, value, lease, bool(flags & 1), bool(flags & 2), bool(flags & 4)), stamp
    return command_from_raw(raw), stamp


Stamp = tuple[str, int]
"""Who a command was checked for and at which auth revision (see the module docstring)."""


def unpack_command(data: bytes) -> list[object]:
    """First half of :func:`decode_command`: check the kind byte and unpack the array (a
    stamped command's array still ends with its stamp: :func:`take_stamp`)."""
    if not data:
        raise BadCommand("empty command")
    if data[0] != _KV and data[0] != _KV_AS:
        raise BadCommand(f"not a KV command: entry kind byte {data[0]:#04x}")
    try:
        raw = msgpack.unpackb(memoryview(data)[1:])
    except Exception as e:  # malformed msgpack of any kind is just a bad command
        raise BadCommand(f"undecodable command: {type(e).__name__}: {e}") from e
    if type(raw) is not list or not raw:
        raise BadCommand("a command must be a non-empty array")
    return raw


def is_stamped(data: bytes) -> bool:
    """Whether an entry payload is a stamped KV command (KV_COMMAND_AS)."""
    return data[0] == _KV_AS


def take_stamp(raw: list[object]) -> Stamp:
    """Remove a stamped command's two last elements from ``raw`` and return them."""
    if len(raw) < 3:
        raise BadCommand("a stamped command needs a user and an auth revision")
    revision = raw.pop()
    user = raw.pop()
    if type(user) is not str or type(revision) is not int:
        raise BadCommand("malformed command stamp: a user name and an auth revision")
    return user, revision


def put_fields(raw: list[object]) -> tuple[bytes, bytes, int, int] | None:
    """``(key, value, lease, flags)`` if ``raw`` is a well-formed Put, else None.

    The store's hot path applies a Put straight from these fields, without building a
    :class:`Put` (constructing a frozen dataclass costs about as much as the write itself).
    """
    if len(raw) != 5 or raw[0] != _PUT:
        return None
    _, key, value, lease, flags = raw
    if (type(key) is not bytes or type(value) is not bytes or type(lease) is not int
            or type(flags) is not int or flags & ~7):
        raise BadCommand("malformed put")
    return key, value, lease, flags


def command_from_raw(raw: list[object]) -> Command:
    """Second half of :func:`decode_command`, for an unpacked array."""
    try:
        if raw[0] == _COMPACT and len(raw) == 2:
            return Compact(_int(raw[1]))
        if raw[0] == _LEASE_GRANT and len(raw) == 3:
            return LeaseGrant(_int(raw[2]), _int(raw[1]))
        if raw[0] == _LEASE_REVOKE and len(raw) == 2:
            return LeaseRevoke(_int(raw[1]))
        if raw[0] == _ALARM and len(raw) == 4:
            return Alarm(AlarmAction(_int(raw[1])), _int(raw[2]), AlarmType(_int(raw[3])))
        if raw[0] == _AUTH and len(raw) == 8:
            return AuthChange(AuthAction(_int(raw[1])), _str(raw[2]), _str(raw[3]),
                              _bytes(raw[4]), PermType(_int(raw[5])), _bytes(raw[6]),
                              _bytes(raw[7]))
        op = _decode_op(raw, 0)
    except BadCommand:
        raise
    except Exception as e:  # e.g. an enum value out of range
        raise BadCommand(f"malformed command: {type(e).__name__}: {e}") from e
    if type(op) is RangeOp:
        raise BadCommand("a range is not a command (reads are not replicated)")
    return cast(Command, op)  # every Op but RangeOp is a Command


def _decode_put(obj: list[object]) -> Put:
    fields = put_fields(obj)
    assert fields is not None
    key, value, lease, flags = fields
    return Put(key, value, lease, bool(flags & 1), bool(flags & 2), bool(flags & 4))


def _int(x: object) -> int:
    if type(x) is not int:
        raise BadCommand(f"expected an integer, got {type(x).__name__}")
    return x


def _bytes(x: object) -> bytes:
    if type(x) is not bytes:
        raise BadCommand(f"expected bytes, got {type(x).__name__}")
    return x


def _str(x: object) -> str:
    if type(x) is not str:
        raise BadCommand(f"expected a string, got {type(x).__name__}")
    return x


def _decode_op(obj: object, depth: int) -> Op:
    if type(obj) is not list or not obj:
        raise BadCommand("an operation must be a non-empty array")
    tag = obj[0]
    if tag == _PUT and len(obj) == 5:
        return _decode_put(obj)
    if tag == _DELETE and len(obj) == 4:
        flag = _int(obj[3])
        if flag not in (0, 1):
            raise BadCommand("malformed delete")
        return DeleteRange(_bytes(obj[1]), _bytes(obj[2]), bool(flag))
    if tag == _RANGE and len(obj) == 12:
        flags = _int(obj[5])
        if flags & ~3:
            raise BadCommand("malformed range flags")
        return RangeOp(_bytes(obj[1]), _bytes(obj[2]), _int(obj[3]), _int(obj[4]),
                       bool(flags & 1), bool(flags & 2), SortOrder(_int(obj[6])),
                       SortTarget(_int(obj[7])), _int(obj[8]), _int(obj[9]), _int(obj[10]),
                       _int(obj[11]))
    if tag == _TXN and len(obj) == 4:
        if depth >= MAX_TXN_DEPTH:
            raise BadCommand(f"transactions nested deeper than {MAX_TXN_DEPTH}")
        compares, success, failure = obj[1], obj[2], obj[3]
        if type(compares) is not list or type(success) is not list or type(failure) is not list:
            raise BadCommand("malformed txn")
        return Txn([_decode_compare(c) for c in compares],
                   [_decode_op(o, depth + 1) for o in success],
                   [_decode_op(o, depth + 1) for o in failure])
    raise BadCommand(f"unknown operation tag {tag!r} with {len(obj)} fields")


def _decode_compare(obj: object) -> Compare:
    if type(obj) is not list or len(obj) != 5:
        raise BadCommand("malformed compare")
    target = CompareTarget(_int(obj[2]))
    value = obj[4]
    if type(value) is not (bytes if target == CompareTarget.VALUE else int):
        raise BadCommand(f"compare value of the wrong type for target {target.name}")
    return Compare(_bytes(obj[0]), _bytes(obj[1]), target, CompareResult(_int(obj[3])), value)


# -- stateless validation --------------------------------------------------------------------------
def validate_command(cmd: Command, max_txn_ops: int = MAX_TXN_OPS) -> None:
    """The checks etcd makes before proposing: raise :class:`InvalidArgument` (or a subclass)
    for a command that can never succeed. Checks that depend on the store's state (a key
    missing for ``ignore_value``, a compacted revision) happen at apply time."""
    if type(cmd) is Put:
        check_put(cmd)
    elif type(cmd) is DeleteRange:
        check_delete(cmd)
    elif type(cmd) is Txn:
        validate_txn(cmd, max_txn_ops)
    elif type(cmd) is Compact:
        if type(cmd.revision) is not int or cmd.revision <= 0:
            raise InvalidArgument(f"compact revision must be a positive integer: {cmd.revision!r}")
    elif type(cmd) is LeaseGrant:
        check_lease_grant(cmd)
    elif type(cmd) is LeaseRevoke:
        check_lease_revoke(cmd)
    elif type(cmd) is Alarm:
        check_alarm(cmd)
    elif type(cmd) is AuthChange:
        check_auth_change(cmd)
    else:
        raise InvalidArgument(f"not a command: {type(cmd).__name__}")


def validate_txn(txn: Txn, max_ops: int | None = MAX_TXN_OPS) -> None:
    """etcd's ``checkTxnRequest`` and ``checkIntervals``: keys present, types right, at most
    ``max_ops`` compares or operations per branch (the budget shrinks with nesting as in
    etcd; None skips the count), and no key written twice in one branch: two puts of a key, or
    a put of a key a delete in the same branch covers (:class:`DuplicateKey`). Puts in the
    ``success`` and ``failure`` branches of one nested txn may share keys: only one runs."""
    _check_txn_shape(txn, max_ops, 0)
    _intervals(txn.success)
    _intervals(txn.failure)


def _check_key(key: object, what: str) -> None:
    if type(key) is not bytes:
        raise InvalidArgument(f"{what}: key must be bytes, got {type(key).__name__}")
    if not key:
        raise InvalidArgument(f"{what}: key is not provided")


def _check_range_end(range_end: object, what: str) -> None:
    if type(range_end) is not bytes:
        raise InvalidArgument(f"{what}: range_end must be bytes")


def check_put(op: Put) -> None:
    """Stateless checks of a put (etcd ``checkPutRequest``)."""
    _check_key(op.key, "put")
    if type(op.value) is not bytes or type(op.lease) is not int:
        raise InvalidArgument(f"put {op.key!r}: value must be bytes and lease an integer")
    if op.ignore_value and op.value:
        raise InvalidArgument(f"put {op.key!r}: value is provided with ignore_value")
    if op.ignore_lease and op.lease:
        raise InvalidArgument(f"put {op.key!r}: lease is provided with ignore_lease")


def check_lease_grant(cmd: LeaseGrant) -> None:
    """Stateless checks of a grant: an id in 0..2^63-1 (0: the store picks) and a TTL in
    1..``MAX_LEASE_TTL`` seconds."""
    if type(cmd.id) is not int or not 0 <= cmd.id <= MAX_LEASE_ID:
        raise InvalidArgument(f"lease grant: id must be an integer in 0..2^63-1 (0: let the "
                              f"server choose), got {cmd.id!r}")
    if type(cmd.ttl) is not int or cmd.ttl <= 0:
        raise InvalidArgument(f"lease grant: TTL must be a positive number of seconds, "
                              f"got {cmd.ttl!r}")
    if cmd.ttl > MAX_LEASE_TTL:
        raise InvalidArgument(f"etcdserver: too large lease TTL: {cmd.ttl} > {MAX_LEASE_TTL} "
                              "seconds")


def check_lease_revoke(cmd: LeaseRevoke) -> None:
    """Stateless checks of a revoke: an id in 1..2^63-1."""
    if type(cmd.id) is not int or not 0 < cmd.id <= MAX_LEASE_ID:
        raise InvalidArgument(f"lease revoke: id must be an integer in 1..2^63-1, "
                              f"got {cmd.id!r}")


def check_alarm(cmd: Alarm) -> None:
    """Stateless checks of an alarm change: ACTIVATE or DEACTIVATE of a NOSPACE alarm (the
    only kind Confer raises) for a member id in 0..2^64-1."""
    if cmd.action not in (AlarmAction.ACTIVATE, AlarmAction.DEACTIVATE):
        raise InvalidArgument(f"alarm: action must be ACTIVATE or DEACTIVATE, got "
                              f"{cmd.action!r}")
    if cmd.alarm != AlarmType.NOSPACE:
        raise InvalidArgument(f"alarm: Confer raises only NOSPACE alarms, got {cmd.alarm!r}")
    if type(cmd.member_id) is not int or not 0 <= cmd.member_id <= MAX_MEMBER_ID:
        raise InvalidArgument(f"alarm: member id must be an integer in 0..2^64-1, got "
                              f"{cmd.member_id!r}")


_USER_ACTIONS = frozenset({AuthAction.USER_ADD, AuthAction.USER_DELETE,
                           AuthAction.USER_PASSWORD, AuthAction.USER_GRANT,
                           AuthAction.USER_REVOKE, AuthAction.TOKEN})
_ROLE_ACTIONS = frozenset({AuthAction.ROLE_ADD, AuthAction.ROLE_DELETE, AuthAction.ROLE_GRANT,
                           AuthAction.ROLE_REVOKE})


def _check_auth_name(name: object, what: str) -> None:
    if type(name) is not str:
        raise InvalidArgument(f"{what} name must be a string, got {type(name).__name__}")
    if not name:
        raise InvalidArgument(f"etcdserver: {what} name is empty")
    if len(name.encode()) > MAX_AUTH_NAME_BYTES:
        raise InvalidArgument(f"{what} name {name[:40]!r}...: longer than "
                              f"{MAX_AUTH_NAME_BYTES} bytes")


def check_auth_change(cmd: AuthChange) -> None:
    """Stateless checks of an auth change (etcd's "user name is empty", "role name is
    empty", a permission's key present); what depends on the state (a user that exists, a
    role granted) is checked when it is applied (:class:`~confer.kv.errors.AuthError`)."""
    if cmd.action not in AuthAction:
        raise InvalidArgument(f"auth change: unknown action {cmd.action!r}")
    if type(cmd.secret) is not bytes or len(cmd.secret) > MAX_AUTH_SECRET_BYTES:
        raise InvalidArgument(f"auth change: the secret must be bytes of at most "
                              f"{MAX_AUTH_SECRET_BYTES} (a hash, never a password)")
    if cmd.action in _USER_ACTIONS:
        _check_auth_name(cmd.name, "user")
        if cmd.action in (AuthAction.USER_GRANT, AuthAction.USER_REVOKE):
            _check_auth_name(cmd.role, "role")
    elif cmd.action in _ROLE_ACTIONS:
        _check_auth_name(cmd.name, "role")
    if cmd.action in (AuthAction.ROLE_GRANT, AuthAction.ROLE_REVOKE):
        _check_key(cmd.key, "permission")
        _check_range_end(cmd.range_end, "permission")
        if cmd.perm not in PermType:
            raise InvalidArgument(f"permission: unknown type {cmd.perm!r}")


def needs_space(cmd: Command) -> bool:
    """Whether ``cmd`` may grow the store (etcd's quota cost > 0): a put, a transaction
    holding a put in either branch, a lease grant. What a NOSPACE alarm refuses."""
    if type(cmd) is Put or type(cmd) is LeaseGrant:
        return True
    return type(cmd) is Txn and _txn_puts(cmd)


def _txn_puts(txn: Txn) -> bool:
    return any(type(op) is Put or (type(op) is Txn and _txn_puts(op))
               for op in (*txn.success, *txn.failure))


def check_delete(op: DeleteRange) -> None:
    _check_key(op.key, "delete")
    _check_range_end(op.range_end, "delete")


def check_range(op: RangeOp) -> None:
    _check_key(op.key, "range")
    _check_range_end(op.range_end, "range")
    if not all(type(n) is int for n in (op.revision, op.limit, op.min_mod_revision,
                                        op.max_mod_revision, op.min_create_revision,
                                        op.max_create_revision)):
        raise InvalidArgument(f"range {op.key!r}: revisions and limit must be integers")
    if op.sort_order not in _SORT_ORDERS or op.sort_target not in _SORT_TARGETS:
        raise InvalidArgument(f"range {op.key!r}: bad sort order or target "
                              f"({op.sort_order!r}, {op.sort_target!r})")


def check_compare(c: Compare) -> None:
    _check_key(c.key, "compare")
    _check_range_end(c.range_end, "compare")
    if c.target not in _COMPARE_TARGETS:
        raise InvalidArgument(f"compare {c.key!r}: bad target {c.target!r}")
    if c.result not in _COMPARE_RESULTS:
        raise InvalidArgument(f"compare {c.key!r}: bad result {c.result!r}")
    want = bytes if c.target == CompareTarget.VALUE else int
    if type(c.value) is not want:
        raise InvalidArgument(f"compare {c.key!r}: {CompareTarget(c.target).name} compares "
                              f"against {want.__name__}, got {type(c.value).__name__}")


def _check_txn_shape(txn: Txn, max_ops: int | None, depth: int) -> None:
    if depth > MAX_TXN_DEPTH:
        raise InvalidArgument(f"transactions nested deeper than {MAX_TXN_DEPTH}")
    if type(txn) is not Txn:
        raise InvalidArgument(f"not a transaction: {type(txn).__name__}")
    ops = max(len(txn.compare), len(txn.success), len(txn.failure))
    if max_ops is not None and ops > max_ops:
        raise TooManyOps(f"too many operations in txn request ({ops} > {max_ops})")
    for c in txn.compare:
        if type(c) is not Compare:
            raise InvalidArgument(f"not a compare: {type(c).__name__}")
        check_compare(c)
    budget = None if max_ops is None else max_ops - ops
    for op in (*txn.success, *txn.failure):
        if type(op) is Put:
            check_put(op)
        elif type(op) is DeleteRange:
            check_delete(op)
        elif type(op) is RangeOp:
            check_range(op)
        elif type(op) is Txn:
            _check_txn_shape(op, budget, depth + 1)
        else:
            raise InvalidArgument(f"not a transaction operation: {type(op).__name__}")


_Interval = tuple[bytes, bytes | None]


def hits(dels: list[_Interval], k: bytes) -> bool:
    """Whether key ``k`` lies in one of the half-open intervals ``dels``."""
    return any(lo <= k and (hi is None or k < hi) for lo, hi in dels)


def _intervals(ops: list[Op]) -> tuple[set[bytes], list[_Interval]]:
    """etcd's ``checkIntervals``: the keys the ops put and the ranges they delete, raising
    :class:`DuplicateKey` where one branch writes a key twice. Linear scans: a txn holds at
    most ``MAX_TXN_OPS`` operations per level."""
    dels = [keyrange.bounds(op.key, op.range_end) for op in ops if type(op) is DeleteRange]
    puts: set[bytes] = set()
    for op in ops:
        if type(op) is not Txn:
            continue
        puts_then, dels_then = _intervals(op.success)
        puts_else, dels_else = _intervals(op.failure)
        # Sorted, so the key named in the error does not depend on hash order.
        for k in sorted(puts_then):
            if k in puts or hits(dels, k):
                raise DuplicateKey(f"duplicate key given in txn request: {k!r}")
            puts.add(k)
        for k in sorted(puts_else):
            # The same key in both branches of one nested txn is fine: only one runs.
            if (k in puts and k not in puts_then) or hits(dels, k):
                raise DuplicateKey(f"duplicate key given in txn request: {k!r}")
            puts.add(k)
        dels += dels_then + dels_else
    for op in ops:
        if type(op) is Put:
            if op.key in puts or hits(dels, op.key):
                raise DuplicateKey(f"duplicate key given in txn request: {op.key!r}")
            puts.add(op.key)
    return puts, dels
