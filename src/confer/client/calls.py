"""The client's request/response methods, each described once.

Every function here takes a method's arguments and returns a :class:`~confer.client.plans.Call`
(what to send, how it may be retried, how to read the answer). ``confer.Client`` and
``confer.aio.Client`` turn each into a method of the same name, signature and docstring: one
runs it with blocking gRPC, the other returns a coroutine.

Every method also takes ``timeout`` (keyword only): the call's deadline in seconds, retries
included (default: the client's ``timeout``).
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable, Sequence

from confer.client import protocol
from confer.client.errors import ConferError, InvalidArgument, LeaseLost, NotFound
from confer.client.models import (
    ChildrenResult,
    DeleteResult,
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
)
from confer.client.plans import Call
from confer.client.policy import Retry
from confer.v1 import coord_pb2, kv_pb2

__all__ = [
    "children",
    "compact",
    "delete",
    "discover",
    "get",
    "lease_grant",
    "lease_list",
    "lease_revoke",
    "lease_time_to_live",
    "list",
    "member_add",
    "member_list",
    "member_promote",
    "member_remove",
    "put",
    "status",
    "transfer_leadership",
]

_READ, _CONVERGENT, _ONCE, _WAIT = Retry.READ, Retry.CONVERGENT, Retry.ONCE, Retry.WAIT


def get(path: str, revision: int = 0, serializable: bool = False, *,
        timeout: float | None = None) -> Call[KeyValue | None]:
    """Read one key.

    Args:
        path: the key, e.g. ``"/app/config/db"``.
        revision: read the key as it was at this revision (0: the latest).
        serializable: let the endpoint answer from its own state without confirming with
            the leader: faster, possibly stale. The default is linearizable.

    Returns:
        The key, or ``None`` when it does not exist.

    Raises:
        InvalidArgument: a malformed path. Compacted / FutureRevision: ``revision`` is not
        available. Unavailable / DeadlineExceeded: no endpoint answered in time.
    """
    request = kv_pb2.RangeRequest(path=protocol.check_path(path), revision=revision,
                                  serializable=serializable)
    return Call(f"Get {path}", protocol.RANGE, request, _READ,
                lambda resp, _: protocol.get_result(resp), timeout)


def put(path: str, value: bytes | str, lease: int = 0, prev_kv: bool = False, *,
        timeout: float | None = None) -> Call[PutResult]:
    """Create or replace a key.

    A put whose outcome is unknown (the connection broke, the attempt timed out) is retried:
    writing the same value again leaves the key in the same state. A retried put may
    therefore report a ``prev_kv`` that is its own first attempt, and bump ``version`` once
    more.

    Args:
        path: the key (not ``/``).
        value: bytes, or a str (stored as UTF-8).
        lease: attach the key to this lease (0: none).
        prev_kv: also return the key as it was before.

    Raises:
        InvalidArgument: a malformed path or an oversized value. OutcomeUnknown: the
        deadline passed after an attempt with an unknown outcome. Unavailable: nothing was
        applied.
    """
    request = kv_pb2.PutRequest(path=protocol.check_path(path), value=protocol.as_bytes(value),
                                lease=lease, prev_kv=prev_kv)
    return Call(f"Put {path}", protocol.PUT, request, _CONVERGENT,
                lambda resp, _: protocol.put_result(resp), timeout)


def delete(path: str, recursive: bool = False, prev_kv: bool = False, *,
           timeout: float | None = None) -> Call[DeleteResult]:
    """Delete a key, or with ``recursive`` the key and its whole subtree.

    Deleting nothing is not an error (``deleted == 0``). Like ``put``, a delete with an
    unknown outcome is retried; a retry may then report ``deleted == 0``.

    Args:
        path: the key; with ``recursive``, ``/`` deletes everything.
        recursive: also delete every key below ``path`` (``/app`` does not cover
            ``/application``).
        prev_kv: also return the deleted keys.
    """
    request = kv_pb2.DeleteRequest(path=protocol.check_path(path), recursive=recursive,
                                   prev_kv=prev_kv)
    return Call(f"Delete {path}", protocol.DELETE, request, _CONVERGENT,
                lambda resp, _: protocol.delete_result(resp), timeout)


def list(path: str, recursive: bool = True, limit: int = 0,
         start_after: str = "", revision: int = 0, keys_only: bool = False,
         serializable: bool = False, *, timeout: float | None = None) -> Call[ListResult]:
    """List a key and, with ``recursive`` (the default), every key below it, in path order.

    Args:
        path: the subtree's root; ``/`` lists everything.
        recursive: include the subtree (otherwise: just the key itself).
        limit: at most this many keys (0: no limit); ``more`` says if some were left out.
        start_after: only keys strictly after this path (pagination: pass the last path of
            the previous page, and its ``revision``).
        revision: read at this revision (0: the latest).
        keys_only: leave values out.
        serializable: as for :meth:`get`.

    See also ``scan()``, which pages through a listing for you.
    """
    request = kv_pb2.RangeRequest(path=protocol.check_path(path), recursive=recursive,
                                  limit=limit, start_after=start_after, revision=revision,
                                  keys_only=keys_only, serializable=serializable)
    return Call(f"List {path}", protocol.RANGE, request, _READ,
                lambda resp, _: protocol.list_result(resp), timeout)


def children(path: str, limit: int = 0, start_after: str = "", revision: int = 0,
             serializable: bool = False, *, timeout: float | None = None
             ) -> Call[ChildrenResult]:
    """The names of the immediate children of a path (like ZooKeeper's getChildren).

    A child is listed when it is a key itself or has keys below it.

    Args:
        path: the parent; ``/`` for the top level.
        limit: at most this many names (0: no limit).
        start_after: only names strictly after this one.
        revision: read at this revision (0: the latest).
        serializable: as for :meth:`get`.
    """
    request = kv_pb2.ChildrenRequest(path=protocol.check_path(path), limit=limit,
                                     start_after=start_after, revision=revision,
                                     serializable=serializable)
    return Call(f"Children {path}", protocol.CHILDREN, request, _READ,
                lambda resp, _: protocol.children_result(resp), timeout)


def compact(revision: int, *, timeout: float | None = None) -> Call[int]:
    """Discard the history before ``revision``: older revisions can no longer be read or
    watched from. Never retried once its outcome is unknown.

    Returns:
        The store revision when the compaction was applied.
    """
    return Call(f"Compact {revision}", protocol.COMPACT, kv_pb2.CompactRequest(revision=revision),
                _ONCE, lambda resp, _: protocol.compact_result(resp), timeout)


def status(endpoint: str | None = None, *, timeout: float | None = None) -> Call[Status]:
    """One member's status.

    Args:
        endpoint: ask this endpoint (any address, not only the client's), with no failover;
            ``None``: any endpoint of the client.
    """
    return Call(f"Status {endpoint or ''}".strip(), protocol.STATUS, kv_pb2.StatusRequest(),
                _READ, protocol.status_result, timeout, endpoint)


def member_list(serializable: bool = False, *, timeout: float | None = None
                ) -> Call[tuple[Member, ...]]:
    """The cluster's members, by id.

    Args:
        serializable: answer from the endpoint's own state without a leadership check.
    """
    return Call("MemberList", protocol.MEMBER_LIST,
                kv_pb2.MemberListRequest(serializable=serializable), _READ,
                lambda resp, _: protocol.members_result(resp), timeout)


def member_add(peer_addr: str, client_addr: str = "", name: str = "", learner: bool = False,
               id: int = 0, *, timeout: float | None = None
               ) -> Call[MemberAddResult]:
    """Add a member (then start it with ``--join``).

    Args:
        peer_addr: where the other members will reach it.
        client_addr: where clients will reach it (default: none until the member starts
            and publishes its own).
        name: a name (default: ``node-<id>``).
        learner: add it as a non-voting learner, to promote once caught up.
        id: its id (0: the cluster picks one).

    Raises:
        AlreadyExists: that peer address or id is taken. FailedPrecondition: another
        membership change is in progress. OutcomeUnknown: not retried.
    """
    request = kv_pb2.MemberAddRequest(id=id, name=name, peer_addr=peer_addr,
                                      client_addr=client_addr, is_learner=learner)
    return Call(f"MemberAdd {peer_addr}", protocol.MEMBER_ADD, request, _ONCE,
                lambda resp, _: protocol.member_add_result(resp), timeout)


def member_remove(id: int, *, timeout: float | None = None
                  ) -> Call[tuple[Member, ...]]:
    """Remove a member; returns the remaining members.

    Raises:
        NotFound: no such member. OutcomeUnknown: not retried.
    """
    return Call(f"MemberRemove {id}", protocol.MEMBER_REMOVE, kv_pb2.MemberRemoveRequest(id=id),
                _ONCE, lambda resp, _: protocol.members_result(resp), timeout)


def member_promote(id: int, *, timeout: float | None = None
                   ) -> Call[tuple[Member, ...]]:
    """Make a learner a voting member; returns the members.

    Raises:
        NotFound: no such member. FailedPrecondition: not a learner, or not caught up yet.
        OutcomeUnknown: not retried.
    """
    return Call(f"MemberPromote {id}", protocol.MEMBER_PROMOTE,
                kv_pb2.MemberPromoteRequest(id=id), _ONCE,
                lambda resp, _: protocol.members_result(resp), timeout)


def transfer_leadership(target_id: int, *, timeout: float | None = None) -> Call[Status]:
    """Ask the leader to hand leadership to ``target_id``; returns the status after it did.

    Raises:
        NotFound: no such member. FailedPrecondition: the target is a learner.
        OutcomeUnknown: not retried.
    """
    return Call(f"TransferLeadership {target_id}", protocol.TRANSFER_LEADERSHIP,
                kv_pb2.TransferLeadershipRequest(target_id=target_id), _ONCE,
                protocol.status_result, timeout)


def list_page(path: str, recursive: bool, page_size: int, revision: int, keys_only: bool,
              serializable: bool, timeout: float | None) -> Callable[[str, int], Call[ListResult]]:
    """The page maker of ``scan()``: ``(start_after, revision) -> Call[ListResult]``."""
    protocol.check_path(path)
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size <= 0:
        raise InvalidArgument(f"scan {path}: page_size must be a positive int, got {page_size!r}")

    def page(start_after: str, pinned: int) -> Call[ListResult]:
        return list(path, recursive, page_size, start_after, revision or pinned, keys_only,
                    serializable, timeout=timeout)

    return page


# -- leases and service discovery -------------------------------------------------------------
def lease_grant(ttl: int, id: int = 0, *, timeout: float | None = None
                ) -> Call[LeaseGrantResult]:
    """Create a lease (see also ``lease()``, which also keeps it alive).

    A grant with ``id=0`` is retried when its outcome is unknown: a lease granted by a lost
    attempt has no keys and simply expires after its TTL. A grant with a chosen ``id`` is
    never retried once its outcome is unknown (OutcomeUnknown).

    Args:
        ttl: time to live in seconds (1 to 9,000,000,000); raised to the cluster's minimum
            (1.5 election timeouts, rounded up to whole seconds).
        id: the lease id to use (0: the cluster chooses).

    Returns:
        The lease id, the TTL granted and the revision of the grant.

    Raises:
        InvalidArgument: a TTL out of range. AlreadyExists: ``id`` is in use.
    """
    _check_int(ttl, "lease ttl")
    _check_int(id, "lease id")
    request = coord_pb2.LeaseGrantRequest(ttl=ttl, id=id)
    return Call(f"LeaseGrant {ttl}s" + (f" {id}" if id else ""), protocol.LEASE_GRANT, request,
                _CONVERGENT if id == 0 else _ONCE,
                lambda resp, _: protocol.lease_grant_result(resp), timeout)


def lease_revoke(id: int, *, timeout: float | None = None) -> Call[LeaseRevokeResult]:
    """Revoke a lease: delete it and every key attached to it, in one revision.

    Retried when its outcome is unknown; if the retry finds the lease gone (the lost attempt
    revoked it), the result says ``revision == 0, deleted == 0``.

    Raises:
        NotFound: there is no such lease (it expired, or was revoked already).
    """
    _check_int(id, "lease id")
    return Call(f"LeaseRevoke {id}", protocol.LEASE_REVOKE, coord_pb2.LeaseRevokeRequest(id=id),
                _CONVERGENT, lambda resp, _: protocol.lease_revoke_result(resp), timeout,
                settle=_revoked_before)


def lease_time_to_live(id: int, keys: bool = False, *, timeout: float | None = None
                       ) -> Call[LeaseTimeToLive | None]:
    """A lease's remaining time, from the leader's clock.

    Args:
        id: the lease.
        keys: also list the keys attached to it.

    Returns:
        ``LeaseTimeToLive(id, ttl, remaining, granted_ttl, keys)``, or ``None`` when there is
        no such lease.
    """
    _check_int(id, "lease id")
    return Call(f"LeaseTimeToLive {id}", protocol.LEASE_TIME_TO_LIVE,
                coord_pb2.LeaseTimeToLiveRequest(id=id, keys=keys), _READ,
                lambda resp, _: protocol.lease_ttl_result(resp), timeout)


def lease_list(*, timeout: float | None = None) -> Call[tuple[LeaseStatus, ...]]:
    """Every lease, by id: ``LeaseStatus(id, granted_ttl)`` (linearizable)."""
    return Call("LeaseList", protocol.LEASE_LEASES, coord_pb2.LeaseLeasesRequest(), _READ,
                lambda resp, _: protocol.leases_result(resp), timeout)


def discover(service: str, healthy_only: bool = False, tags: Sequence[str] = (), *,
             timeout: float | None = None) -> Call[builtins.list[Instance]]:
    """The live instances of a service: every instance registered (with ``register()``) at
    ``/services/<service>/<id>`` whose lease is alive, by id (a linearizable read).

    Args:
        service: the service name.
        healthy_only: only the healthy instances (passing or warning; not critical).
        tags: only the instances that carry every one of these tags.

    Returns:
        A list of :class:`Instance` (id, address, metadata, revision, tags, weights,
        status...).
    """
    prefix = protocol.service_prefix(service)
    wanted = protocol.check_tags(tags)
    return Call(f"Discover {service}", protocol.RANGE,
                kv_pb2.RangeRequest(path=prefix, recursive=True), _READ,
                lambda resp, _: protocol.select(protocol.instances_result(resp, prefix),
                                                healthy_only, wanted), timeout)


def _check_int(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"invalid {what} {value!r}: must be an int")


def _revoked_before(error: ConferError, unknown: bool) -> LeaseRevokeResult:
    """A revocation retried after an unknown outcome that finds the lease gone: done."""
    if isinstance(error, NotFound) and unknown:
        return LeaseRevokeResult(0, 0)
    raise error


# -- the building blocks of locks and elections (used by their handles) ------------------------
def _wait_timeout(timeout: float | None) -> float:
    """A waiting call's deadline: ``None`` means no deadline."""
    return math.inf if timeout is None else timeout


def lock(name: str, lease: int, timeout: float | None,
         lease_lost: Callable[[], LeaseLost | None]) -> Call[coord_pb2.LockResponse]:
    """``Lock``: wait until ``lease`` holds the lock ``name``. Retried (with the same lease
    the server reuses the waiting key) until ``timeout`` (``None``: no deadline), unless
    ``lease_lost()`` tells that the lease is gone."""
    return Call(f"Lock {name}", protocol.LOCK,
                coord_pb2.LockRequest(name=protocol.check_path(name), lease=lease), _WAIT,
                lambda resp, _: resp, _wait_timeout(timeout), abort=lease_lost)


def unlock(key: str, lease: int = 0, *, timeout: float | None = None) -> Call[None]:
    """``Unlock``: delete a lock's owner key, held by ``lease`` when given (NotFound if the key
    is gone, FailedPrecondition if another lease holds it)."""
    return Call(f"Unlock {key}", protocol.UNLOCK, coord_pb2.UnlockRequest(key=key, lease=lease),
                _CONVERGENT, lambda resp, _: None, timeout)


def campaign(name: str, lease: int, value: bytes | str, timeout: float | None,
             lease_lost: Callable[[], LeaseLost | None]) -> Call[coord_pb2.CampaignResponse]:
    """``Campaign``: wait until elected; retried like :func:`lock`."""
    request = coord_pb2.CampaignRequest(name=protocol.check_path(name), lease=lease,
                                        value=protocol.as_bytes(value))
    return Call(f"Campaign {name}", protocol.CAMPAIGN, request, _WAIT, lambda resp, _: resp,
                _wait_timeout(timeout), abort=lease_lost)


def proclaim(leader: coord_pb2.LeaderKey, value: bytes | str, *,
             timeout: float | None = None) -> Call[int]:
    """``Proclaim``: set the leader's value; returns the revision. Repeating it converges
    (the same key, revision and lease), so it is retried."""
    request = coord_pb2.ProclaimRequest(leader=leader, value=protocol.as_bytes(value))
    return Call(f"Proclaim {leader.name}", protocol.PROCLAIM, request, _CONVERGENT,
                lambda resp, _: int(resp.header.revision), timeout)


def election_leader(name: str, *, timeout: float | None = None) -> Call[KeyValue | None]:
    """``Leader``: the current leader's key, or None when there is none."""
    return Call(f"Leader {name}", protocol.LEADER,
                coord_pb2.LeaderRequest(name=protocol.check_path(name)), _READ,
                lambda resp, _: protocol.key_value(resp.kv), timeout, settle=_no_leader)


def resign(leader: coord_pb2.LeaderKey, *, timeout: float | None = None) -> Call[None]:
    """``Resign``: delete the leader key if it still leads (repeating it converges)."""
    return Call(f"Resign {leader.name}", protocol.RESIGN, coord_pb2.ResignRequest(leader=leader),
                _CONVERGENT, lambda resp, _: None, timeout)


def _no_leader(error: ConferError, unknown: bool) -> None:
    if isinstance(error, NotFound):
        return None
    raise error
