"""What the client returns: frozen dataclasses and enums, the same for the sync and the
asyncio client. They are plain values built from the protobuf responses."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from confer.catalog import HealthStatus, Weights, split_address

__all__ = [
    "ChildrenResult",
    "ClusterEvent",
    "ClusterEventType",
    "DeleteResult",
    "EventType",
    "HealthStatus",
    "Instance",
    "KeyValue",
    "LeaseGrantResult",
    "LeaseRevokeResult",
    "LeaseStatus",
    "LeaseTimeToLive",
    "ListResult",
    "Member",
    "MemberAddResult",
    "PutResult",
    "ServiceEvent",
    "ServiceEventType",
    "Status",
    "TxnResult",
    "WatchEvent",
    "Weights",
]


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key (a path) and its value, with its MVCC metadata.

    Attributes:
        path: the key, e.g. ``"/app/config/db"``.
        value: the value (empty for ``keys_only`` listings).
        create_revision: the revision that created the key (its current incarnation).
        mod_revision: the revision of the last change; for a deletion event, the revision of
            the deletion.
        version: how many times the key was written since it was created (1 after creation).
        lease: the lease id attached to the key, 0 for none.
    """

    path: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0

    @property
    def text(self) -> str:
        """The value decoded as UTF-8."""
        return self.value.decode("utf-8")


@dataclass(frozen=True, slots=True)
class PutResult:
    """The outcome of :meth:`put`.

    Attributes:
        revision: the store revision of the write.
        prev_kv: the key before the write, when ``prev_kv=True`` was asked and it existed.
    """

    revision: int
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """The outcome of :meth:`delete`.

    Attributes:
        revision: the store revision after the delete (unchanged when nothing was deleted).
        deleted: how many keys were deleted.
        prev_kvs: the deleted keys, when ``prev_kv=True`` was asked.
    """

    revision: int
    deleted: int
    prev_kvs: tuple[KeyValue, ...] = ()


@dataclass(frozen=True, slots=True)
class ListResult:
    """A page of keys from :meth:`list`.

    Attributes:
        kvs: the keys, in path order.
        more: whether keys were left out because of ``limit``.
        count: how many keys matched, as the server counts them (``limit`` does not cap it).
        revision: the store revision when the page was served; pass it as ``revision`` to
            read further pages from the same snapshot (a read of a past revision carries
            the current revision here, not the one read).
    """

    kvs: tuple[KeyValue, ...]
    more: bool
    count: int
    revision: int


@dataclass(frozen=True, slots=True)
class ChildrenResult:
    """The immediate children of a path, from :meth:`children`.

    Attributes:
        names: child names, one path segment each, in order.
        more: whether names were left out because of ``limit``.
    """

    names: tuple[str, ...]
    more: bool


@dataclass(frozen=True, slots=True)
class TxnResult:
    """The outcome of a transaction.

    Attributes:
        succeeded: whether every comparison held (the ``then`` branch ran) or not (``else_``).
        revision: the store revision after the transaction.
        responses: one entry per operation of the branch that ran, in order: a
            :class:`KeyValue` or ``None`` for ``Op.get``, a :class:`PutResult` for ``Op.put``,
            a :class:`DeleteResult` for ``Op.delete``.
    """

    succeeded: bool
    revision: int
    responses: tuple[KeyValue | PutResult | DeleteResult | None, ...]


class EventType(enum.Enum):
    """The kind of a watch event."""

    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change seen by a watch.

    Attributes:
        type: PUT (created or updated) or DELETE.
        kv: the key after the change; for a DELETE, its path and the deletion revision.
        prev_kv: the key before the change, when the watch asked for ``prev_kv``.
        revision: the store revision of the change (several events share one revision when a
            transaction or a recursive delete changed several keys).
    """

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None
    revision: int


class ClusterEventType(enum.Enum):
    """The kind of a cluster event."""

    LEADER_CHANGED = "LEADER_CHANGED"
    MEMBER_ADDED = "MEMBER_ADDED"
    LEARNER_ADDED = "LEARNER_ADDED"
    MEMBER_REMOVED = "MEMBER_REMOVED"
    MEMBER_PROMOTED = "MEMBER_PROMOTED"


@dataclass(frozen=True, slots=True)
class ClusterEvent:
    """A membership or leadership change, from :meth:`watch_cluster`.

    Attributes:
        type: what happened.
        node_id: the member concerned (the new leader for LEADER_CHANGED; 0 = no leader).
        addr: that member's client address, when the server sent it.
    """

    type: ClusterEventType
    node_id: int
    addr: str = ""


@dataclass(frozen=True, slots=True)
class Member:
    """A cluster member.

    Attributes:
        id: the member id.
        name: a human-readable name.
        peer_addr: where the other members reach it.
        client_addr: where clients reach it.
        is_learner: a non-voting member catching up.
    """

    id: int
    name: str
    peer_addr: str
    client_addr: str
    is_learner: bool


@dataclass(frozen=True, slots=True)
class MemberAddResult:
    """The outcome of :meth:`member_add`: the new member and the resulting member list."""

    member: Member
    members: tuple[Member, ...]


@dataclass(frozen=True, slots=True)
class Status:
    """One member's view of the cluster, from :meth:`status`.

    Attributes:
        endpoint: the endpoint that answered.
        member_id: that member's id.
        leader_id: the leader it knows of (0 = none).
        raft_term: its Raft term.
        commit_index: its commit index.
        applied_index: its applied index.
        raft_index: the last index of its Raft log.
        revision: its store revision.
        compact_revision: its store's compaction revision.
        storage_bytes: disk space used by its data.
        version: the server version.
        is_learner: whether it is a learner.
        role: ``"leader"``, ``"follower"``, ``"candidate"``, ... as the server names it.
    """

    endpoint: str
    member_id: int
    leader_id: int
    raft_term: int
    commit_index: int
    applied_index: int
    raft_index: int
    revision: int
    compact_revision: int
    storage_bytes: int
    version: str
    is_learner: bool
    role: str


@dataclass(frozen=True, slots=True)
class LeaseGrantResult:
    """The outcome of :meth:`lease_grant`.

    Attributes:
        id: the lease id (chosen by the cluster when 0 was asked for).
        ttl: the TTL granted, in seconds: the one asked for, or the cluster's minimum if that
            is larger.
        revision: the store revision when the grant was applied.
    """

    id: int
    ttl: int
    revision: int


@dataclass(frozen=True, slots=True)
class LeaseRevokeResult:
    """The outcome of :meth:`lease_revoke`.

    Attributes:
        revision: the revision that deleted the lease's keys (the store revision when it had
            none; 0 when a retried revocation found the lease already gone).
        deleted: how many keys the revocation deleted.
    """

    revision: int
    deleted: int


@dataclass(frozen=True, slots=True)
class LeaseTimeToLive:
    """A lease's remaining life, from :meth:`lease_time_to_live` (the leader's clock).

    Attributes:
        id: the lease id.
        ttl: remaining whole seconds, rounded down.
        remaining: remaining seconds, with millisecond precision.
        granted_ttl: the TTL the lease was granted with.
        keys: the keys attached to it, sorted (only when asked for with ``keys=True``).
    """

    id: int
    ttl: int
    remaining: float
    granted_ttl: int
    keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LeaseStatus:
    """One lease of :meth:`lease_list`: its id and granted TTL (seconds)."""

    id: int
    granted_ttl: int


@dataclass(frozen=True, slots=True)
class Instance:
    """An instance of a service (service discovery), as registered at
    ``/services/<service>/<id>`` (the JSON record of :mod:`confer.catalog`), attached to
    its registrant's lease.

    Attributes:
        id: the instance id, unique within its service (one path segment).
        address: where to reach it, e.g. ``"10.0.0.7:8080"`` (see :attr:`host`, :attr:`port`).
        metadata: free-form JSON-compatible details (version, zone...).
        revision: the revision of its record (the key's ``mod_revision``: a health change
            rewrites it).
        tags: labels to select instances by (``discover(service, tags=[...])``).
        weights: its share of the traffic while passing and while warning.
        status: its health as its registrant's check last reported it (passing without a
            check).
        output: what that check said.
        check: which check its registrant runs ("" for none).
    """

    id: str
    address: str
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=True)
    revision: int = 0
    tags: tuple[str, ...] = ()
    weights: Weights = field(default_factory=Weights)
    status: HealthStatus = HealthStatus.PASSING
    output: str = ""
    check: str = ""

    @property
    def healthy(self) -> bool:
        """Passing or warning: to be sent traffic."""
        return self.status.healthy

    @property
    def host(self) -> str:
        """The host part of :attr:`address`."""
        return split_address(self.address)[0]

    @property
    def port(self) -> int:
        """The port of :attr:`address` (0 if it names none)."""
        return split_address(self.address)[1]


class ServiceEventType(enum.Enum):
    """What happened to an instance of a watched service."""

    JOIN = "JOIN"
    """The instance registered (or was live when the watch started)."""
    UPDATE = "UPDATE"
    """A live instance registered again with another address or metadata."""
    LEAVE = "LEAVE"
    """The instance deregistered, or its lease ended (its process died)."""


@dataclass(frozen=True, slots=True)
class ServiceEvent:
    """A change of a service's instances, from :meth:`watch_service`.

    Attributes:
        type: JOIN, UPDATE or LEAVE.
        instance: the instance; for LEAVE, as it was last seen.
        revision: the store revision of the change; for the JOINs of the instances that were
            live when the watch started, the revision they were read at.
    """

    type: ServiceEventType
    instance: Instance
    revision: int
