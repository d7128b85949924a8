"""What every etcd v3 service shares: response headers, key conversions and etcd's errors.

etcd's clients recognise a server error by its gRPC code and its exact message (clientv3's
``rpctypes``), so every failure is mapped here to the status etcd itself would send.
"""

from __future__ import annotations

import logging

import grpc

from confer import kv as store
from confer.etcdpb.etcdserverpb import rpc_pb2
from confer.etcdpb.mvccpb import kv_pb2 as mvcc_pb2
from confer.raft.errors import (
    ConfChangeInProgress,
    LeadershipTransferInProgress,
    NotLeader,
    ProposalDropped,
)
from confer.server.api import Header, RequestLayer
from confer.server.api import errors as api
from confer.server.consensus import NoLeader
from confer.server.node import NodeStopped, OutcomeUnknown
from confer.server.rpc import RpcError, Status, handlers
from confer.server.watch import WatchClosed

log = logging.getLogger("confer.etcd")

Code = grpc.StatusCode

# etcd's client-visible errors (clientv3/rpctypes): code and exact message.
ERR_KEY_NOT_PROVIDED = (Code.INVALID_ARGUMENT, "etcdserver: key is not provided")
ERR_KEY_NOT_FOUND = (Code.INVALID_ARGUMENT, "etcdserver: key not found")
ERR_VALUE_PROVIDED = (Code.INVALID_ARGUMENT, "etcdserver: value is provided")
ERR_LEASE_PROVIDED = (Code.INVALID_ARGUMENT, "etcdserver: lease is provided")
ERR_TOO_MANY_OPS = (Code.INVALID_ARGUMENT, "etcdserver: too many operations in txn request")
ERR_DUPLICATE_KEY = (Code.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request")
ERR_COMPACTED = (Code.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted")
ERR_FUTURE_REV = (Code.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision")
ERR_LEASE_NOT_FOUND = (Code.NOT_FOUND, "etcdserver: requested lease not found")
ERR_LEASE_EXISTS = (Code.FAILED_PRECONDITION, "etcdserver: lease already exists")
ERR_LEASE_TTL_TOO_LARGE = (Code.OUT_OF_RANGE, "etcdserver: too large lease TTL")
ERR_MEMBER_NOT_FOUND = (Code.NOT_FOUND, "etcdserver: member not found")
ERR_PEER_URL_EXIST = (Code.FAILED_PRECONDITION, "etcdserver: Peer URLs already exists")
ERR_MEMBER_NOT_LEARNER = (Code.FAILED_PRECONDITION, "etcdserver: can only promote a learner "
                          "member")
ERR_LEARNER_NOT_READY = (Code.FAILED_PRECONDITION, "etcdserver: can only promote a learner "
                         "member which is in sync with leader")
ERR_NOT_ENOUGH_STARTED = (Code.FAILED_PRECONDITION, "etcdserver: re-configuration failed due "
                          "to not enough started members")
ERR_BAD_LEADER_TRANSFEREE = (Code.FAILED_PRECONDITION, "etcdserver: bad leader transferee")
ERR_NOT_CAPABLE = (Code.UNAVAILABLE, "etcdserver: not capable")
ERR_NO_LEADER = (Code.UNAVAILABLE, "etcdserver: no leader")
ERR_NOT_LEADER = (Code.FAILED_PRECONDITION, "etcdserver: not leader")
ERR_LEADER_CHANGED = (Code.UNAVAILABLE, "etcdserver: leader changed")
ERR_TIMEOUT = (Code.UNAVAILABLE, "etcdserver: request timed out")
ERR_TIMEOUT_LEADER_FAIL = (Code.UNAVAILABLE, "etcdserver: request timed out, possibly due "
                           "to previous leader failure")
ERR_UNHEALTHY = (Code.UNAVAILABLE, "etcdserver: unhealthy cluster")
ERR_AUTH_NOT_ENABLED = (Code.FAILED_PRECONDITION, "etcdserver: authentication is not enabled")
ERR_AUTH_FAILED = (Code.INVALID_ARGUMENT, "etcdserver: authentication failed, invalid user ID "
                   "or password")


ERR_REQUEST_TOO_LARGE = (Code.INVALID_ARGUMENT, "etcdserver: request is too large")
ERR_TOO_MANY_REQUESTS = (Code.RESOURCE_EXHAUSTED, "etcdserver: too many requests")
ERR_NO_SPACE = (Code.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded")
ERR_PERMISSION_DENIED = (Code.PERMISSION_DENIED, "etcdserver: permission denied")
ERR_USER_EMPTY = (Code.INVALID_ARGUMENT, "etcdserver: user name is empty")
ERR_INVALID_AUTH_TOKEN = (Code.UNAUTHENTICATED, "etcdserver: invalid auth token")
ERR_LOCK_SESSION_EXPIRED = (Code.NOT_FOUND, "etcdserver: requested lease not found")
ERR_ELECTION_NOT_LEADER = (Code.FAILED_PRECONDITION, "election: not leader")
ERR_ELECTION_NO_LEADER = (Code.NOT_FOUND, "election: no leader")


def etcd_error(status: Status, detail: str = "") -> RpcError:
    """An error answered as ``status``; ``detail`` goes to the server log only (etcd's
    clients compare the message exactly)."""
    if detail:
        log.debug("%s: %s", status[1], detail)
    return RpcError(*status)


def etcd_status(exc: BaseException) -> Status | None:
    """The status etcd would send for ``exc``; None for an unexpected exception."""
    for kinds, status in _STATUSES:
        if isinstance(exc, kinds):
            log.debug("%s: %s", status[1], exc)  # etcd's message hides the detail
            return status
    if isinstance(exc, store.AuthError):  # the auth state's refusals, etcd's messages
        return Code.FAILED_PRECONDITION, str(exc)
    if isinstance(exc, store.InvalidArgument):
        message = str(exc)
        return Code.INVALID_ARGUMENT, (message if message.startswith("etcdserver: ")
                                       else f"etcdserver: {message}")
    return None


_STATUSES: list[tuple[type[BaseException] | tuple[type[BaseException], ...], Status]] = [
    (store.CompactedError, ERR_COMPACTED),
    (store.FutureRevisionError, ERR_FUTURE_REV),
    (store.DuplicateKey, ERR_DUPLICATE_KEY),
    (store.TooManyOps, ERR_TOO_MANY_OPS),
    (api.RequestTooLarge, ERR_REQUEST_TOO_LARGE),
    (api.TooManyRequests, ERR_TOO_MANY_REQUESTS),
    (store.NoSpace, ERR_NO_SPACE),
    (store.KeyNotFound, ERR_KEY_NOT_FOUND),
    (store.LeaseNotFound, ERR_LEASE_NOT_FOUND),
    (store.LeaseExists, ERR_LEASE_EXISTS),
    (api.NotAuthenticated, ERR_USER_EMPTY),
    (api.InvalidToken, ERR_INVALID_AUTH_TOKEN),
    (api.PermissionDenied, ERR_PERMISSION_DENIED),
    (api.AuthFailed, ERR_AUTH_FAILED),
    (api.AuthNotEnabled, ERR_AUTH_NOT_ENABLED),
    (api.MemberNotFound, ERR_MEMBER_NOT_FOUND),
    ((api.MemberExists, api.PeerAddressInUse), ERR_PEER_URL_EXIST),
    (api.NotALearner, ERR_MEMBER_NOT_LEARNER),
    (api.LearnerNotReady, ERR_LEARNER_NOT_READY),
    (api.TransfereeIsLearner, ERR_BAD_LEADER_TRANSFEREE),
    (api.UnsafeReconfiguration, ERR_UNHEALTHY),
    (api.LastVoter, ERR_NOT_ENOUGH_STARTED),
    ((api.WaiterLost, api.CandidateVanished), ERR_LOCK_SESSION_EXPIRED),
    (api.NotElectionLeader, ERR_ELECTION_NOT_LEADER),
    (api.NoElectionLeader, ERR_ELECTION_NO_LEADER),
    (ConfChangeInProgress, (Code.FAILED_PRECONDITION,
                            "etcdserver: unhealthy cluster: a membership change is in progress")),
    (LeadershipTransferInProgress, ERR_LEADER_CHANGED),
    ((NoLeader, NotLeader, ProposalDropped, NodeStopped, WatchClosed), ERR_NO_LEADER),
    (OutcomeUnknown, ERR_TIMEOUT_LEADER_FAIL),
    (TimeoutError, ERR_TIMEOUT),
]


etcd_rpc, etcd_stream = handlers(
    "etcd", etcd_status, lambda e: f"etcdserver: internal error: {type(e).__name__}: {e}")
"""Decorators for the etcd API's handlers: exceptions become etcd's statuses."""


def header(layer: RequestLayer, revision: int = 0) -> rpc_pb2.ResponseHeader:
    """etcd's header: the cluster and this member's ids, the store revision (``revision`` if
    given: a write's own revision) and the Raft term."""
    return header_pb(layer.header(revision))


def header_pb(h: Header) -> rpc_pb2.ResponseHeader:
    return rpc_pb2.ResponseHeader(cluster_id=h.cluster_id, member_id=h.member_id,
                                  revision=h.revision, raft_term=h.raft_term)


def require_key(key: bytes) -> bytes:
    """etcd refuses an empty key everywhere a key names what to read, write or compare."""
    if not key:
        raise etcd_error(ERR_KEY_NOT_PROVIDED)
    return key


def kv_to_etcd(kv: store.KeyValue, keys_only: bool = False) -> mvcc_pb2.KeyValue:
    return mvcc_pb2.KeyValue(key=kv.key, create_revision=kv.create_revision,
                             mod_revision=kv.mod_revision, version=kv.version,
                             value=b"" if keys_only else kv.value, lease=kv.lease)


def event_to_etcd(e: store.Event, prev_kv: bool) -> mvcc_pb2.Event:
    return mvcc_pb2.Event(type=_EVENT_TYPES[e.type], kv=kv_to_etcd(e.kv),
                          prev_kv=kv_to_etcd(e.prev_kv) if prev_kv and e.prev_kv else None)


_EVENT_TYPES = {store.EventType.PUT: mvcc_pb2.Event.PUT,
                store.EventType.DELETE: mvcc_pb2.Event.DELETE}
