"""The Confer client library: ``confer.Client`` (blocking) and ``confer.aio.Client``
(asyncio), with the same methods, models and exceptions.

Layout (the two clients differ only in the I/O layer):

* :mod:`~confer.client.calls`: each request/response method, described once;
* :mod:`~confer.client.plans`: every operation as a sans-I/O generator of actions (unary
  calls with failover, paginated scans, resumable watches);
* :mod:`~confer.client.policy`: the retry, failover and backoff decisions;
* :mod:`~confer.client.protocol`: the RPCs and protobuf <-> model conversions;
* :mod:`~confer.client.coord`: the coordination handles (leases kept alive in the
  background, locks, elections, service registrations), one class each for both clients;
* :mod:`~confer.client.sync` and :mod:`~confer.client.aio`: the two I/O layers;
* :mod:`~confer.client.models`, :mod:`~confer.client.errors`, :mod:`~confer.client.txn`:
  the public types.

See ``docs/client.md`` for the guide.
"""

from confer.client.checks import Check, CheckKind
from confer.client.coord import Election, Lease, Lock, Registration
from confer.client.errors import (
    AlreadyExists,
    ClientClosed,
    Compacted,
    ConferError,
    DeadlineExceeded,
    FailedPrecondition,
    FutureRevision,
    InvalidArgument,
    LeaseLost,
    Lost,
    NotFound,
    OutcomeUnknown,
    PermissionDenied,
    RevisionUnavailable,
    Unauthenticated,
    Unavailable,
)
from confer.client.models import (
    ChildrenResult,
    ClusterEvent,
    ClusterEventType,
    DeleteResult,
    EventType,
    HealthStatus,
    Instance,
    KeyValue,
    LeaseGrantResult,
    LeaseRevokeResult,
    LeaseStatus,
    LeaseTimeToLive,
    ListResult,
    Member,
    MemberAddResult,
    PutResult,
    ServiceEvent,
    ServiceEventType,
    Status,
    TxnResult,
    WatchEvent,
    Weights,
)
from confer.client.sync import Client, Watch
from confer.client.txn import Compare, Condition, Op, Txn

__all__ = [
    "AlreadyExists",
    "Check",
    "CheckKind",
    "ChildrenResult",
    "Client",
    "ClientClosed",
    "ClusterEvent",
    "ClusterEventType",
    "Compacted",
    "Compare",
    "Condition",
    "ConferError",
    "DeadlineExceeded",
    "DeleteResult",
    "Election",
    "EventType",
    "FailedPrecondition",
    "FutureRevision",
    "HealthStatus",
    "Instance",
    "InvalidArgument",
    "KeyValue",
    "Lease",
    "LeaseGrantResult",
    "LeaseLost",
    "LeaseRevokeResult",
    "LeaseStatus",
    "LeaseTimeToLive",
    "ListResult",
    "Lock",
    "Lost",
    "Member",
    "MemberAddResult",
    "NotFound",
    "Op",
    "OutcomeUnknown",
    "PermissionDenied",
    "PutResult",
    "Registration",
    "RevisionUnavailable",
    "ServiceEvent",
    "ServiceEventType",
    "Status",
    "Txn",
    "TxnResult",
    "Unauthenticated",
    "Unavailable",
    "Watch",
    "WatchEvent",
    "Weights",
]
