"""The client's exceptions: one small hierarchy shared by ``confer.Client`` and
``confer.aio.Client``.

Every exception is a :class:`ConferError`. Each carries ``code`` (the gRPC status name that
caused it, or ``None`` when the client raised it itself) and ``details`` (the server's or the
transport's message)::

    ConferError
    ├── InvalidArgument       bad path, value, option or transaction (INVALID_ARGUMENT)
    ├── NotFound              e.g. an unknown member id (NOT_FOUND)
    ├── AlreadyExists         e.g. a member with that peer address (ALREADY_EXISTS)
    ├── FailedPrecondition    e.g. promoting a learner that is not caught up (FAILED_PRECONDITION)
    ├── RevisionUnavailable   the requested revision cannot be served (OUT_OF_RANGE)
    │   ├── Compacted         ... it was compacted away; ``compact_revision`` says up to where
    │   └── FutureRevision    ... it is newer than the store's current revision
    ├── Unavailable           no endpoint could serve the call in time: definitely not applied
    ├── OutcomeUnknown        a write may or may not have been applied
    ├── DeadlineExceeded      a read, or waiting for a lock or an election, ran out of time
    ├── ClientClosed          the client was closed
    └── Lost                  a lock, leadership or registration ended while held
        └── LeaseLost         ... because its lease ended or could not be renewed in time
"""

from __future__ import annotations

import re

__all__ = [
    "AlreadyExists",
    "ClientClosed",
    "Compacted",
    "ConferError",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FutureRevision",
    "InvalidArgument",
    "LeaseLost",
    "Lost",
    "NotFound",
    "OutcomeUnknown",
    "RevisionUnavailable",
    "Unavailable",
]


class ConferError(Exception):
    """Base class of every error the Confer client raises.

    Attributes:
        code: the gRPC status code name behind the error (``"UNAVAILABLE"``...), or ``None``
            when the client itself decided (for example a closed client).
        details: the message of the server or of the transport.
    """

    def __init__(self, message: str, *, code: str | None = None, details: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.details = details or message


class InvalidArgument(ConferError):
    """The request breaks a rule that does not depend on the cluster's state: a malformed
    path, an oversized value, a negative limit, a transaction writing one key twice..."""


class NotFound(ConferError):
    """The named thing does not exist (for example a member id)."""


class AlreadyExists(ConferError):
    """The thing to create exists already (for example a member with that peer address)."""


class FailedPrecondition(ConferError):
    """The cluster is not in a state that allows the request (a membership change already in
    progress, a learner not yet caught up, a learner as a leadership target...)."""


class RevisionUnavailable(ConferError):
    """The requested revision cannot be served (gRPC ``OUT_OF_RANGE``)."""


class Compacted(RevisionUnavailable):
    """The requested revision was compacted away.

    Attributes:
        compact_revision: the store's compaction revision; the oldest revision still
            readable or watchable is ``compact_revision + 1``.
    """

    def __init__(self, compact_revision: int, message: str = "", *, code: str | None = None,
                 details: str = "") -> None:
        super().__init__(message or f"revision compacted (compact revision {compact_revision})",
                         code=code, details=details)
        self.compact_revision = compact_revision


class FutureRevision(RevisionUnavailable):
    """The requested revision is newer than the store's current revision."""


class Unavailable(ConferError):
    """No endpoint could serve the call before its deadline, and every failure guaranteed that
    nothing was applied (no leader, connection refused...). Safe to retry later."""


class OutcomeUnknown(ConferError):
    """A write may or may not have been applied: the connection broke after the request was
    sent, or the deadline passed while the cluster was working on it. Read the state back
    before deciding what to do. Never raised for reads."""


class DeadlineExceeded(ConferError):
    """A read (or another call with no side effect) did not complete before its deadline; or
    a lock or an election was not won within its timeout (its lease was then given up)."""


class ClientClosed(ConferError):
    """The client was closed; no call can be made with it any more."""


class PermissionDenied(ConferError):
    """The user may not do this (authentication is enabled and its roles do not allow it),
    or (:class:`Unauthenticated`) the request names no valid user."""


class Unauthenticated(PermissionDenied):
    """No user, an unknown one, a wrong password, or a token the server no longer accepts."""


class Lost(ConferError):
    """Something held (a lease, a lock, a leadership, a service registration) is gone: its key
    was deleted, or (:class:`LeaseLost`) its lease ended. Whoever relied on it must stop acting
    on it."""


class LeaseLost(Lost):
    """A lease ended: it was revoked or expired, or no renewal was acknowledged within its TTL
    (counted from when the last acknowledged renewal was sent), so it may have expired.

    Attributes:
        lease_id: the lease.
    """

    def __init__(self, lease_id: int, message: str, *, code: str | None = None,
                 details: str = "") -> None:
        super().__init__(message, code=code, details=details)
        self.lease_id = lease_id


_COMPACT_REVISION = re.compile(r"compact(?:ed)? revision[ :=]*(\d+)", re.IGNORECASE)
_INTERNALS = (
    # etcd's message prefixes, which the server keeps for etcd's clients
    (re.compile(r"\b(?:etcdserver|mvcc): "), ""),
    # a lease id repeated in hex: "lease 999 (0x3e7)"
    (re.compile(r" \(0x[0-9a-f]+\)"), ""),
    # the store's own account of the operation, "(put b'/x')": the message names it already
    (re.compile(r""" \((?:put|delete|range|txn|compare)[^()]*\)"""), ""),
    # a key as Python's bytes repr, b'/x'
    (re.compile(r"""\bb'([^'\\]*)'"""), r"\1"),
)


def plain_message(message: str) -> str:
    """A server's error message without what only means something inside Confer or etcd
    (etcd's ``etcdserver:`` prefixes, a lease id repeated in hex, keys as Python bytes)."""
    for pattern, replacement in _INTERNALS:
        message = pattern.sub(replacement, message)
    return message

_BY_CODE: dict[str, type[ConferError]] = {
    "INVALID_ARGUMENT": InvalidArgument,
    "NOT_FOUND": NotFound,
    "ALREADY_EXISTS": AlreadyExists,
    "FAILED_PRECONDITION": FailedPrecondition,
    "PERMISSION_DENIED": PermissionDenied,
    "UNAUTHENTICATED": Unauthenticated,
    "UNAVAILABLE": Unavailable,
    "UNKNOWN": OutcomeUnknown,
    "DEADLINE_EXCEEDED": DeadlineExceeded,
}


def error_from_status(code: str, details: str, context: str = "") -> ConferError:
    """The exception for a gRPC status the server answered with: its message is the
    status message made plain (:func:`plain_message`), its ``details`` the status message
    as the server sent it.

    Args:
        code: the status code name, e.g. ``"OUT_OF_RANGE"``.
        details: the status message.
        context: what was being done (``"Put /a/b"``), prefixed to the message.
    """
    message = plain_message(f"{context}: {details}" if context else details)
    if code == "OUT_OF_RANGE":
        match = _COMPACT_REVISION.search(details)
        if "compact" in details.lower():
            return Compacted(int(match.group(1)) if match else 0, message, code=code,
                             details=details)
        return FutureRevision(message, code=code, details=details)
    return _BY_CODE.get(code, ConferError)(message, code=code, details=details)
