"""The client's request/response methods, each described once.

Every function here takes a method's arguments and returns a :class:`~confer.client.plans.Call`
(what to send, how it may be retried, how to read the answer). ``confer.Client`` and
``confer.aio.Client`` turn each into a method of the same name, signature and docstring: one
runs it with blocking gRPC, the other returns a coroutine.

Every method also takes ``timeout`` (keyword only): the call's deadline in seconds, retries
included (default: the client's ``timeout``).
"""

from __future__ import annotations

from collections.abc import Callable

from confer.client import protocol
from confer.client.errors import InvalidArgument
from confer.client.models import (
    ChildrenResult,
    DeleteResult,
    KeyValue,
    ListResult,
    Member,
    MemberAddResult,
    PutResult,
    Status,
)
from confer.client.plans import Call
from confer.client.policy import Retry
from confer.v1 import kv_pb2

__all__ = [
    "children",
    "compact",
    "delete",
    "get",
    "list",
    "member_add",
    "member_list",
    "member_promote",
    "member_remove",
    "put",
    "status",
    "transfer_leadership",
]

_READ, _CONVERGENT, _ONCE = Retry.READ, Retry.CONVERGENT, Retry.ONCE


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
        client_addr: where clients will reach it (default: ``peer_addr``).
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
