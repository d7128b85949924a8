"""What the confer.v1 services share: the error table, headers and conversions.

Every user error becomes a gRPC status whose message names the rule.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from confer import kv as store
from confer.kv.paths import validate_path
from confer.raft.errors import (
    ConfChangeInProgress,
    LeadershipTransferInProgress,
    NotLeader,
    ProposalDropped,
)
from confer.server.api import Header
from confer.server.api import errors as api
from confer.server.api.forwarding import LeaderError
from confer.server.consensus import NoLeader
from confer.server.members import Member
from confer.server.node import NodeStopped, OutcomeUnknown
from confer.server.rpc import RpcError, Status, handlers
from confer.server.watch import WatchClosed
from confer.v1 import kv_pb2

Code = grpc.StatusCode


_STATUSES: list[tuple[type[BaseException] | tuple[type[BaseException], ...],
                      grpc.StatusCode]] = [
    (store.InvalidArgument, Code.INVALID_ARGUMENT),
    (store.FutureRevisionError, Code.OUT_OF_RANGE),
    ((store.KeyNotFound, store.LeaseNotFound, api.MemberNotFound, api.LockNotHeld,
      api.NoElectionLeader), Code.NOT_FOUND),
    ((store.LeaseExists, api.MemberExists, api.PeerAddressInUse), Code.ALREADY_EXISTS),
    ((ConfChangeInProgress, api.NotALearner, api.LearnerNotReady, api.TransfereeIsLearner,
      api.UnsafeReconfiguration, api.LastVoter,
      api.AlreadyInitialized, api.UnknownMembers, api.LockHeldByOther,
      api.NotElectionLeader), Code.FAILED_PRECONDITION),
    (api.NotMemberOfInit, Code.INVALID_ARGUMENT),
    # A leadership transfer is temporary, and the write was not applied.
    ((LeadershipTransferInProgress, NoLeader, NotLeader, ProposalDropped, NodeStopped,
      WatchClosed), Code.UNAVAILABLE),
    (api.Unsupported, Code.UNIMPLEMENTED),
    ((api.NotAuthenticated, api.InvalidToken, api.AuthFailed), Code.UNAUTHENTICATED),
    (api.PermissionDenied, Code.PERMISSION_DENIED),
    ((store.AuthError, api.AuthNotEnabled), Code.FAILED_PRECONDITION),
    ((store.NoSpace, api.TooManyRequests), Code.RESOURCE_EXHAUSTED),
    ((api.CandidateVanished, LeaderError), Code.INTERNAL),
]


def native_status(exc: BaseException) -> Status | None:
    """The confer.v1 status for ``exc``; None for an unexpected exception."""
    if isinstance(exc, store.CompactedError):
        return Code.OUT_OF_RANGE, (f"{exc}; the oldest revision still available is "
                                   f"{exc.compact_revision + 1}")
    if isinstance(exc, api.WaiterLost):
        return (Code.NOT_FOUND if exc.lease_gone else Code.FAILED_PRECONDITION), str(exc)
    if isinstance(exc, OutcomeUnknown):
        return Code.UNKNOWN, f"outcome unknown: {exc}"
    if isinstance(exc, TimeoutError):
        return Code.DEADLINE_EXCEEDED, (
            "request timed out; if it was a write, it may or may not have been applied")
    for kinds, code in _STATUSES:
        if isinstance(exc, kinds):
            return code, str(exc)
    return None


rpc, stream_rpc = handlers(
    "confer", native_status, lambda e: f"internal error: {type(e).__name__}: {e}")
"""Decorators for the native API's handlers: exceptions become gRPC statuses."""


# -- conversions ------------------------------------------------------------------------------
def header_pb(h: Header) -> kv_pb2.ResponseHeader:
    return kv_pb2.ResponseHeader(cluster_id=h.cluster_id, member_id=h.member_id,
                                 revision=h.revision, raft_term=h.raft_term,
                                 leader_id=h.leader_id)


def kv_to_pb(kv: store.KeyValue, keys_only: bool = False, path: str | None = None
             ) -> kv_pb2.KeyValue:
    """``kv`` as a confer.v1 KeyValue (``path``: its key, already decoded)."""
    return kv_pb2.KeyValue(path=text(kv.key) if path is None else path,
                           create_revision=kv.create_revision, mod_revision=kv.mod_revision,
                           version=kv.version, value=b"" if keys_only else kv.value,
                           lease=kv.lease)


# Keys that are not UTF-8 (only the etcd API can write them) are no native paths: a proto
# string cannot carry them, and no native request could name them. Listings and watch
# streams leave them out (docs/api.md); where a response must still name one, its invalid
# bytes read as U+FFFD (``text``).
def path_of(key: bytes) -> str | None:
    """The key as a native path, or None if it is not valid UTF-8."""
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return None


def shown_kvs(kvs: Iterable[store.KeyValue], keys_only: bool = False
              ) -> list[kv_pb2.KeyValue]:
    """The keys of a listing that are native paths, as confer.v1 KeyValues."""
    out = []
    for kv in kvs:
        path = path_of(kv.key)
        if path is not None:
            out.append(kv_to_pb(kv, keys_only, path))
    return out


def shown_events(events: Iterable[store.Event], prev_kv: bool) -> list[kv_pb2.Event]:
    """The events of a watch batch whose key is a native path."""
    out = []
    for e in events:
        path = path_of(e.kv.key)
        if path is not None:
            out.append(kv_pb2.Event(
                type=_EVENT_TYPES[e.type], kv=kv_to_pb(e.kv, path=path),
                prev_kv=kv_to_pb(e.prev_kv, path=path) if prev_kv and e.prev_kv else None))
    return out


_EVENT_TYPES = {store.EventType.PUT: kv_pb2.Event.PUT,
                store.EventType.DELETE: kv_pb2.Event.DELETE}


def member_to_pb(m: Member) -> kv_pb2.Member:
    return kv_pb2.Member(id=m.id, name=m.name, peer_addr=m.peer_addr, client_addr=m.client_addr,
                         is_learner=m.is_learner)


def path_key(path: str, max_bytes: int, *, allow_root: bool = False) -> bytes:
    """Validate a path; the root ``/`` is accepted only where a subtree is meant."""
    if allow_root and path == "/":
        return b"/"
    return validate_path(path, max_bytes, allow_root=False)


__all__ = ["Code", "RpcError", "header_pb", "kv_to_pb", "member_to_pb", "native_status",
           "path_key", "path_of", "rpc", "shown_events", "shown_kvs", "stream_rpc", "text"]


def text(key: bytes) -> str:
    """A key (or name) for a proto string: invalid UTF-8 bytes read as U+FFFD (a lone
    surrogate, which ``surrogateescape`` would give, cannot be serialised)."""
    return key.decode("utf-8", "replace")
