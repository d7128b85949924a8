"""The wire side of the client, with no I/O: the RPCs it calls, and converters from protobuf
responses to the client's models. Only the generated ``confer.v1`` modules are used."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confer.catalog import PREFIX, Record
from confer.catalog import decode as decode_record
from confer.catalog import encode as encode_record
from confer.client.errors import InvalidArgument
from confer.client.models import (
    ChildrenResult,
    ClusterEvent,
    ClusterEventType,
    DeleteResult,
    EventType,
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
    Status,
    TxnResult,
    WatchEvent,
)
from confer.v1 import confer_pb2, coord_pb2, kv_pb2

__all__ = ["RPCS", "Rpc"]


@dataclass(frozen=True, slots=True)
class Rpc:
    """One gRPC method: its full path and how to (de)serialize its messages.

    The I/O layers turn an ``Rpc`` into a cached multi-callable per channel.

    Attributes:
        streaming: the server streams its responses.
        bidi: the client streams its requests too (a :class:`~confer.client.plans.Send` per
            request); implies ``streaming``.
    """

    name: str
    path: str
    serialize: Callable[[Any], bytes]
    deserialize: Callable[[bytes], Any]
    streaming: bool = False
    bidi: bool = False


def _rpc(service: str, method: str, request: Any, response: Any, streaming: bool = False,
         bidi: bool = False) -> Rpc:
    """An :class:`Rpc` of the ``confer.v1`` package."""
    return Rpc(method, f"/confer.v1.{service}/{method}", request.SerializeToString,
               response.FromString, streaming or bidi, bidi)


RANGE = _rpc("KV", "Range", kv_pb2.RangeRequest, kv_pb2.RangeResponse)
CHILDREN = _rpc("KV", "Children", kv_pb2.ChildrenRequest, kv_pb2.ChildrenResponse)
PUT = _rpc("KV", "Put", kv_pb2.PutRequest, kv_pb2.PutResponse)
DELETE = _rpc("KV", "Delete", kv_pb2.DeleteRequest, kv_pb2.DeleteResponse)
TXN = _rpc("KV", "Txn", kv_pb2.TxnRequest, kv_pb2.TxnResponse)
COMPACT = _rpc("KV", "Compact", kv_pb2.CompactRequest, kv_pb2.CompactResponse)
WATCH = _rpc("KV", "Watch", kv_pb2.WatchRequest, kv_pb2.WatchResponse, streaming=True)
STATUS = _rpc("Cluster", "Status", kv_pb2.StatusRequest, kv_pb2.StatusResponse)
MEMBER_LIST = _rpc("Cluster", "MemberList", kv_pb2.MemberListRequest,
                   kv_pb2.MemberListResponse)
MEMBER_ADD = _rpc("Cluster", "MemberAdd", kv_pb2.MemberAddRequest, kv_pb2.MemberAddResponse)
MEMBER_REMOVE = _rpc("Cluster", "MemberRemove", kv_pb2.MemberRemoveRequest,
                     kv_pb2.MemberListResponse)
MEMBER_PROMOTE = _rpc("Cluster", "MemberPromote", kv_pb2.MemberPromoteRequest,
                      kv_pb2.MemberListResponse)
TRANSFER_LEADERSHIP = _rpc("Cluster", "TransferLeadership", kv_pb2.TransferLeadershipRequest,
                           kv_pb2.StatusResponse)
WATCH_CLUSTER = _rpc("ConferService", "WatchCluster", confer_pb2.Empty,
                     confer_pb2.ClusterUpdate, streaming=True)
LEASE_GRANT = _rpc("Lease", "Grant", coord_pb2.LeaseGrantRequest, coord_pb2.LeaseGrantResponse)
LEASE_REVOKE = _rpc("Lease", "Revoke", coord_pb2.LeaseRevokeRequest,
                    coord_pb2.LeaseRevokeResponse)
LEASE_KEEP_ALIVE = _rpc("Lease", "KeepAlive", coord_pb2.LeaseKeepAliveRequest,
                        coord_pb2.LeaseKeepAliveResponse, bidi=True)
LEASE_TIME_TO_LIVE = _rpc("Lease", "TimeToLive", coord_pb2.LeaseTimeToLiveRequest,
                          coord_pb2.LeaseTimeToLiveResponse)
LEASE_LEASES = _rpc("Lease", "Leases", coord_pb2.LeaseLeasesRequest,
                    coord_pb2.LeaseLeasesResponse)
LOCK = _rpc("Lock", "Lock", coord_pb2.LockRequest, coord_pb2.LockResponse)
UNLOCK = _rpc("Lock", "Unlock", coord_pb2.UnlockRequest, coord_pb2.UnlockResponse)
CAMPAIGN = _rpc("Election", "Campaign", coord_pb2.CampaignRequest, coord_pb2.CampaignResponse)
PROCLAIM = _rpc("Election", "Proclaim", coord_pb2.ProclaimRequest, coord_pb2.ProclaimResponse)
LEADER = _rpc("Election", "Leader", coord_pb2.LeaderRequest, coord_pb2.LeaderResponse)
OBSERVE = _rpc("Election", "Observe", coord_pb2.LeaderRequest, coord_pb2.LeaderResponse,
               streaming=True)
RESIGN = _rpc("Election", "Resign", coord_pb2.ResignRequest, coord_pb2.ResignResponse)

RPCS: tuple[Rpc, ...] = (RANGE, CHILDREN, PUT, DELETE, TXN, COMPACT, WATCH, STATUS, MEMBER_LIST,
                         MEMBER_ADD, MEMBER_REMOVE, MEMBER_PROMOTE, TRANSFER_LEADERSHIP,
                         WATCH_CLUSTER, LEASE_GRANT, LEASE_REVOKE, LEASE_KEEP_ALIVE,
                         LEASE_TIME_TO_LIVE, LEASE_LEASES, LOCK, UNLOCK, CAMPAIGN, PROCLAIM,
                         LEADER, OBSERVE, RESIGN)
"""Every RPC the client calls."""


# -- requests ---------------------------------------------------------------------------------
def as_bytes(value: object, what: str = "value") -> bytes:
    """A value as bytes: ``str`` is encoded as UTF-8; anything but bytes-like or ``str`` is
    refused (user input: the type is checked here, at run time)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise InvalidArgument(f"invalid {what}: expected bytes or str, got {type(value).__name__}")


def check_path(path: object) -> str:
    """Refuse a path of the wrong type early (the server checks the rules themselves)."""
    if not isinstance(path, str):
        raise InvalidArgument(f"invalid path {path!r}: must be a string")
    return path


# -- responses --------------------------------------------------------------------------------
def key_value(pb: kv_pb2.KeyValue) -> KeyValue:
    """A protobuf KeyValue as a :class:`KeyValue`."""
    return KeyValue(pb.path, pb.value, pb.create_revision, pb.mod_revision, pb.version,
                    pb.lease)


def optional_kv(parent: Any, field: str) -> KeyValue | None:
    """``parent.field`` as a :class:`KeyValue`, or None when the field is unset."""
    return key_value(getattr(parent, field)) if parent.HasField(field) else None


def get_result(resp: kv_pb2.RangeResponse) -> KeyValue | None:
    """The answer of ``get``: the first key of a RangeResponse, or None."""
    return key_value(resp.kvs[0]) if resp.kvs else None


def list_result(resp: kv_pb2.RangeResponse) -> ListResult:
    """The answer of ``list``."""
    return ListResult(tuple(map(key_value, resp.kvs)), resp.more, resp.count,
                      resp.header.revision)


def children_result(resp: kv_pb2.ChildrenResponse) -> ChildrenResult:
    """The answer of ``children``."""
    return ChildrenResult(tuple(resp.names), resp.more)


def put_result(resp: kv_pb2.PutResponse) -> PutResult:
    """The answer of ``put`` (also a put inside a transaction)."""
    return PutResult(resp.header.revision, optional_kv(resp, "prev_kv"))


def delete_result(resp: kv_pb2.DeleteResponse) -> DeleteResult:
    """The answer of ``delete`` (also a delete inside a transaction)."""
    return DeleteResult(resp.header.revision, resp.deleted, tuple(map(key_value, resp.prev_kvs)))


def txn_result(resp: kv_pb2.TxnResponse) -> TxnResult:
    """The answer of a transaction."""
    return TxnResult(resp.succeeded, resp.header.revision,
                     tuple(op_result(r) for r in resp.responses))


def op_result(r: kv_pb2.ResponseOp) -> KeyValue | PutResult | DeleteResult | None:
    """The response of one transaction operation."""
    kind = r.WhichOneof("response")
    if kind == "put":
        return put_result(r.put)
    if kind == "delete":
        return delete_result(r.delete)
    if kind == "txn":  # the server runs a recursive delete as a nested txn of deletes
        return nested_delete_result(r.txn)
    return get_result(r.range) if kind == "range" else None


def nested_delete_result(resp: kv_pb2.TxnResponse) -> DeleteResult:
    """A recursive delete inside a transaction, answered as a nested transaction of deletes,
    as one :class:`DeleteResult` (as the unary Delete answers it)."""
    deletes = [op.delete for op in resp.responses if op.WhichOneof("response") == "delete"]
    return DeleteResult(resp.header.revision, sum(d.deleted for d in deletes),
                        tuple(key_value(kv) for d in deletes for kv in d.prev_kvs))


def compact_result(resp: kv_pb2.CompactResponse) -> int:
    """The answer of ``compact``: the revision when it was applied."""
    return int(resp.header.revision)


def member(pb: kv_pb2.Member) -> Member:
    """A protobuf Member as a :class:`Member`."""
    return Member(pb.id, pb.name, pb.peer_addr, pb.client_addr, pb.is_learner)


def members_result(resp: kv_pb2.MemberListResponse) -> tuple[Member, ...]:
    """A member list."""
    return tuple(map(member, resp.members))


def member_add_result(resp: kv_pb2.MemberAddResponse) -> MemberAddResult:
    """The answer of ``member_add``."""
    return MemberAddResult(member(resp.member), tuple(map(member, resp.members)))


def status_result(resp: kv_pb2.StatusResponse, endpoint: str) -> Status:
    """The answer of ``status``, naming the endpoint that gave it."""
    return Status(endpoint, resp.member_id, resp.leader_id, resp.raft_term, resp.commit_index,
                  resp.applied_index, resp.raft_index, resp.revision, resp.compact_revision,
                  resp.storage_bytes, resp.version, resp.is_learner, resp.role)


_EVENT_TYPES = {kv_pb2.Event.PUT: EventType.PUT, kv_pb2.Event.DELETE: EventType.DELETE}


def watch_event(e: kv_pb2.Event) -> WatchEvent:
    """One watch event; its revision is the key's ``mod_revision``."""
    kv = key_value(e.kv)
    return WatchEvent(_EVENT_TYPES[e.type], kv, optional_kv(e, "prev_kv"), kv.mod_revision)


def cluster_event(u: confer_pb2.ClusterUpdate) -> ClusterEvent | None:
    """A ClusterUpdate as a :class:`ClusterEvent` (None for an unknown kind)."""
    kind = u.WhichOneof("update_type")
    if kind == "leader_changed":
        return ClusterEvent(ClusterEventType.LEADER_CHANGED, u.leader_changed.node_id,
                            u.leader_changed.addr)
    if kind == "member_added":
        return ClusterEvent(ClusterEventType.MEMBER_ADDED, u.member_added.node_id,
                            u.member_added.addr)
    if kind == "learner_added":
        return ClusterEvent(ClusterEventType.LEARNER_ADDED, u.learner_added.node_id,
                            u.learner_added.addr)
    if kind == "member_removed":
        return ClusterEvent(ClusterEventType.MEMBER_REMOVED, u.member_removed)
    if kind == "member_promoted":
        return ClusterEvent(ClusterEventType.MEMBER_PROMOTED, u.member_promoted)
    return None


# -- coordination -----------------------------------------------------------------------------
def lease_grant_result(resp: coord_pb2.LeaseGrantResponse) -> LeaseGrantResult:
    """The answer of ``lease_grant``."""
    return LeaseGrantResult(resp.id, resp.ttl, resp.header.revision)


def lease_revoke_result(resp: coord_pb2.LeaseRevokeResponse) -> LeaseRevokeResult:
    """The answer of ``lease_revoke``."""
    return LeaseRevokeResult(resp.header.revision, resp.deleted)


def lease_ttl_result(resp: coord_pb2.LeaseTimeToLiveResponse) -> LeaseTimeToLive | None:
    """The answer of ``lease_time_to_live``: None when there is no such lease (TTL -1)."""
    if resp.ttl < 0:
        return None
    return LeaseTimeToLive(resp.id, resp.ttl, resp.remaining_ms / 1000, resp.granted_ttl,
                           tuple(resp.keys))


def leases_result(resp: coord_pb2.LeaseLeasesResponse) -> tuple[LeaseStatus, ...]:
    """The answer of ``lease_list``."""
    return tuple(LeaseStatus(s.id, s.granted_ttl) for s in resp.leases)


def check_segment(value: object, what: str) -> str:
    """A service name or instance id: a non-empty string that is one path segment."""
    if not isinstance(value, str) or not value or "/" in value or value in (".", ".."):
        raise InvalidArgument(f"invalid {what} {value!r}: must be a non-empty string without "
                              "'/' (one path segment)")
    return value


SERVICES = PREFIX
"""Where service discovery registers instances: ``/services/<service>/<instance id>``."""


def service_prefix(service: str) -> str:
    """``/services/<service>``."""
    return f"{SERVICES}/{check_segment(service, 'service name')}"


def instance_value(record: Record) -> bytes:
    """The registration value: the JSON record of :mod:`confer.catalog`."""
    if not isinstance(record.address, str) or not record.address:
        raise InvalidArgument(f"invalid address {record.address!r}: must be a non-empty "
                              "string")
    try:
        return encode_record(record)
    except ValueError as e:
        raise InvalidArgument(str(e)) from None


def instance(kv: KeyValue, prefix: str) -> Instance | None:
    """The instance a key under ``prefix`` registers, or None if the key is not an instance
    (deeper below the prefix, or the prefix itself). A value that is not the JSON object of a
    registration is taken as the address itself (e.g. written by ``confer put``)."""
    if not kv.path.startswith(prefix + "/"):
        return None
    instance_id = kv.path[len(prefix) + 1:]
    if not instance_id or "/" in instance_id:
        return None
    return instance_of(instance_id, decode_record(kv.value), kv.mod_revision)


def instance_of(instance_id: str, r: Record, revision: int) -> Instance:
    """The :class:`Instance` of a record written at ``revision``."""
    return Instance(instance_id, r.address, r.metadata, revision, r.tags, r.weights, r.status,
                    r.output, r.check)


def check_tags(tags: Sequence[str]) -> frozenset[str]:
    """Tags to select instances by: a list of non-empty strings."""
    if isinstance(tags, str) or not all(isinstance(t, str) and t for t in tags):
        raise InvalidArgument(f"tags must be a list of non-empty strings, not {tags!r}")
    return frozenset(tags)


def select(instances: list[Instance], healthy_only: bool, tags: frozenset[str]
           ) -> list[Instance]:
    """The instances that are healthy (if asked) and carry every tag of ``tags``."""
    return [i for i in instances
            if (i.healthy or not healthy_only) and tags.issubset(i.tags)]


def instances_result(resp: kv_pb2.RangeResponse, prefix: str) -> list[Instance]:
    """The answer of ``discover``: the instances registered under ``prefix``, by id."""
    found = (instance(key_value(kv), prefix) for kv in resp.kvs)
    return [i for i in found if i is not None]
