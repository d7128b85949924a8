"""Unary calls as plans: one request with failover and retries (:func:`unary`), and a paged
listing read at one revision (:func:`scan`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from confer.client import protocol
from confer.client.errors import ConferError
from confer.client.models import ListResult
from confer.client.plans.actions import Emit, Plan, Sleep, Unary
from confer.client.policy import Core, Failure, Outcome, Retry
from confer.client.protocol import Rpc
from confer.v1 import kv_pb2

T = TypeVar("T")


@dataclass(slots=True)
class Call(Generic[T]):
    """One unary request, fully described: what to send, how to retry, how to read the answer.

    Attributes:
        what: names the operation in error messages, e.g. ``"Put /app/x"``.
        rpc: the method.
        request: the protobuf request.
        retry: how it may be retried.
        convert: turns the response (and the endpoint that answered) into the result.
        timeout: the call's deadline in seconds (``None``: the client's default; ``inf``: no
            deadline, for calls that wait on the server).
        endpoint: pin the call to this endpoint (no failover).
        settle: reads an error answer as a result: called with the error the answer would
            raise and whether an earlier attempt's outcome was unknown (so the answer may be
            that attempt's effect, e.g. NOT_FOUND for a revocation that did happen); returns
            the result, or raises.
        abort: asked before each retry; an error it returns ends the call (e.g. the lease a
            waiting Lock call needs was lost meanwhile).
    """

    what: str
    rpc: Rpc
    request: Any
    retry: Retry
    convert: Callable[[Any, str], T]
    timeout: float | None = None
    endpoint: str | None = None
    settle: Callable[[ConferError, bool], T] | None = None
    abort: Callable[[], ConferError | None] | None = None


def unary(core: Core, call: Call[T]) -> Plan[T]:
    """Make ``call``, failing over and retrying as :class:`~confer.client.policy.Attempts`
    decides."""
    attempts = core.attempts(call.retry, call.timeout, call.what, call.endpoint,
                             may_fail_fast=True)
    write = call.retry is not Retry.READ
    if write and call.endpoint is None and core.router.wants_topology(core.clock()):
        yield from refresh_topology(core, attempts.attempt_timeout())
        attempts.endpoint = core.router.pick(True)
    while True:
        endpoint = attempts.endpoint
        connect = attempts.connect_timeout() if call.retry is Retry.ONCE else None
        result = yield Unary(endpoint, call.rpc, call.request, attempts.attempt_timeout(),
                             connect)
        if type(result) is not Failure:
            header = result.header
            # etcd's headers (the Auth service) name no leader: 0, unknown.
            core.router.learn(endpoint, header.member_id, getattr(header, "leader_id", 0),
                              not write)
            return call.convert(result, endpoint)
        try:
            delay = attempts.failed(result)
        except ConferError as e:
            if call.settle is None or result.outcome is not Outcome.ANSWER:
                raise
            return call.settle(e, attempts.unknown is not None)
        if call.abort is not None and (error := call.abort()) is not None:
            raise error
        if delay > 0:
            yield Sleep(delay)


def refresh_topology(core: Core, timeout: float) -> Plan[None]:
    """Learn which endpoint is the leader's from one serializable MemberList (best effort)."""
    router = core.router
    router.mark_topology_attempt(core.clock())
    result = yield Unary(router.current, protocol.MEMBER_LIST,
                         kv_pb2.MemberListRequest(serializable=True),
                         min(timeout, core.options.connect_timeout))
    if type(result) is not Failure:
        router.learn_members(((m.id, m.client_addr) for m in result.members),
                             result.header.leader_id, core.clock())


def scan(core: Core, page: Callable[[str, int], Call[ListResult]]) -> Plan[None]:
    """Emit every key of a listing, page by page; ``page(start_after, revision)`` makes the
    call for one page. Pages after the first are read at the first page's revision, so the
    whole scan sees one snapshot."""
    start_after, revision = "", 0
    while True:
        result: ListResult = yield from unary(core, page(start_after, revision))
        if result.kvs:
            yield Emit(result.kvs)
        if not result.more or not result.kvs:
            return
        start_after, revision = result.kvs[-1].path, revision or result.revision
