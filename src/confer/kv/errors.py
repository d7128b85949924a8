"""Errors of the key-value store: a small named hierarchy, each with a stable code.

Reads raise these. Commands applied from the Raft log never raise for bad input: they return an
:class:`~confer.kv.types.ErrorResult` carrying the same code, which
:meth:`~confer.kv.types.ErrorResult.to_exception` turns back into one of these on the API side.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    """Why a command or a read failed. Stable numbers: they may cross the wire."""

    INVALID_ARGUMENT = 1
    KEY_NOT_FOUND = 2
    DUPLICATE_KEY = 3
    TOO_MANY_OPS = 4
    COMPACTED = 5
    FUTURE_REVISION = 6
    BAD_COMMAND = 7
    LEASE_NOT_FOUND = 8
    LEASE_EXISTS = 9
    NO_SPACE = 10
    AUTH = 11
    PERMISSION_DENIED = 12
    USER_EMPTY = 13


class KVError(Exception):
    """Base class of the store's errors."""

    code: ErrorCode = ErrorCode.INVALID_ARGUMENT


class InvalidArgument(KVError):
    """The request breaks a rule that does not depend on the store's state (the message names
    the rule and the offending key or path)."""

    code = ErrorCode.INVALID_ARGUMENT


class DuplicateKey(InvalidArgument):
    """A transaction writes the same key twice (etcd: "duplicate key given in txn request")."""

    code = ErrorCode.DUPLICATE_KEY


class TooManyOps(InvalidArgument):
    """A transaction has more operations than allowed (etcd's ``--max-txn-ops``)."""

    code = ErrorCode.TOO_MANY_OPS


class BadCommand(InvalidArgument):
    """A Raft entry's payload is not a command this version can decode."""

    code = ErrorCode.BAD_COMMAND


class KeyNotFound(KVError):
    """``ignore_value``/``ignore_lease`` was used on a key that does not exist."""

    code = ErrorCode.KEY_NOT_FOUND


class LeaseNotFound(KVError):
    """A command names a lease that does not exist (never granted, revoked or expired);
    etcd: "etcdserver: requested lease not found"."""

    code = ErrorCode.LEASE_NOT_FOUND


class LeaseExists(KVError):
    """A grant asks for a lease id that is already in use (etcd: "etcdserver: lease already
    exists")."""

    code = ErrorCode.LEASE_EXISTS


def lease_not_found(lease: int, what: str = "") -> LeaseNotFound:
    """The error for an unknown lease, with etcd's message and the lease id in decimal and
    hex (lock and election keys name leases in hex)."""
    context = f" ({what})" if what else ""
    return LeaseNotFound(f"etcdserver: requested lease not found: lease {lease} "
                         f"({lease:#x}){context}")


class NoSpace(KVError):
    """A write that needs space while the NOSPACE alarm is active (etcd: "etcdserver: mvcc:
    database space exceeded"). Deletes, lease revocations and compactions still pass."""

    code = ErrorCode.NO_SPACE


class AuthError(KVError):
    """An auth change that the auth state refuses (a user or role that exists or does not,
    a role not granted, the root user's rules); the message is etcd's, e.g. "etcdserver:
    user name already exists"."""

    code = ErrorCode.AUTH


class AuthDenied(KVError):
    """A stamped command whose user may no longer make it: the auth state changed between
    the check when it was proposed and its turn in the log (etcd: "etcdserver: permission
    denied"). The request layer turns it into its own PermissionDenied."""

    code = ErrorCode.PERMISSION_DENIED


class AuthUserEmpty(AuthDenied):
    """A stamped command checked for no user, applied once authentication is enabled (etcd:
    "etcdserver: user name is empty")."""

    code = ErrorCode.USER_EMPTY


class CompactedError(KVError):
    """The requested revision has been compacted away; ``compact_revision`` is the store's."""

    code = ErrorCode.COMPACTED

    def __init__(self, compact_revision: int, message: str = "") -> None:
        super().__init__(message or "mvcc: required revision has been compacted "
                         f"(compact revision {compact_revision})")
        self.compact_revision = compact_revision


class FutureRevisionError(KVError):
    """The requested revision is newer than the store's current revision."""

    code = ErrorCode.FUTURE_REVISION

    def __init__(self, revision: int, current_revision: int, message: str = "") -> None:
        super().__init__(message or "mvcc: required revision is a future revision "
                         f"(requested {revision}, current {current_revision})")
        self.revision = revision
        self.current_revision = current_revision
