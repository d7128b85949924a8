"""What every part of the request layer shares: the member it runs on, the guards every
request passes, reads at a consistency level, writes through the log, and answering at the
leader.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

import grpc

from confer.kv import (
    Command,
    ErrorCode,
    ErrorResult,
    KVStore,
    NoSpace,
    encode_command_as,
    validate_command,
)
from confer.raft.errors import NotLeader
from confer.server.api.context import Access, AccessKind, Guard, RequestContext
from confer.server.api.errors import TooManyRequests
from confer.server.api.limits import WriteLimits
from confer.server.config import ServerConfig
from confer.server.consensus import Consensus, NoLeader
from confer.server.fsm import ServerStateMachine
from confer.server.leases import Lessor
from confer.server.members import Member
from confer.server.node import Overloaded, RaftNode
from confer.server.watch import WatchHub

if TYPE_CHECKING:
    from confer.server.api.auth import AuthGuard

T = TypeVar("T")
_REFUSED_AT_APPLY = (ErrorCode.PERMISSION_DENIED, ErrorCode.USER_EMPTY)

ClusterListener = Callable[[str, Member | None, int], None]
"""Called with (kind, member, leader id) on membership and leader changes."""


class Host(Protocol):
    """What the request layer needs of the member process (:class:`ConferServer`)."""

    cfg: ServerConfig
    node_id: int
    fsm: ServerStateMachine
    hub: WatchHub
    lessor: Lessor
    consensus: Consensus
    stopped: asyncio.Event
    cluster_listeners: list[ClusterListener]

    @property
    def node(self) -> RaftNode | None: ...

    def storage_bytes(self) -> int: ...

    def cluster_id(self) -> int: ...

    def peer_address(self, node_id: int) -> str | None:
        """Where member ``node_id``'s peer port is reached."""
        ...

    def admit_peer(self, sender: int, cluster_id: int, first_contact: bool = True
                   ) -> str | None:
        """Why a peer's message (or internal call) is refused, or None to admit it."""
        ...

    def peer_identity_refusal(self, auth: Mapping[str, Iterable[bytes]],
                              member: int | None = None) -> str | None:
        """Why a peer connection with this TLS identity (gRPC's auth context), claiming to
        be ``member``, is refused."""
        ...

    def peer_channel_credentials(self) -> grpc.ChannelCredentials | None:
        """How to dial a peer port: TLS credentials, or None for plaintext."""
        ...

    async def initialize(self, founders: list[Member]) -> None: ...


class Header(NamedTuple):
    """Who answered and as of when: every response carries one."""

    cluster_id: int
    member_id: int
    revision: int
    raft_term: int
    leader_id: int


LeaderCall = Callable[[str, list[Any], float], Awaitable[Any]]
"""Sends an operation to the leader (name, msgpack-able arguments, deadline); returns its
msgpack-able result, or raises the leader's error (:mod:`confer.server.api.forwarding`)."""


class Core:
    """The shared state and steps of every request (one per member)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.kv: KVStore = host.fsm.kv
        self.consensus = host.consensus
        cfg = host.cfg
        self.max_key_bytes = cfg.max_key_bytes
        self.limits = WriteLimits(cfg, self.kv)
        self.guards: list[Guard] = []
        """Checked, in order, before every access: authentication, authorization, quotas and
        metrics register here."""
        self.auth: AuthGuard | None = None
        """The auth guard (also in :attr:`guards`): watches register with it, so that one
        whose permission is revoked is cancelled."""
        self.call_leader: LeaderCall | None = None
        self.failed_writes = 0
        """Writes whose replication failed (no leader, timeout, lost to a leader change, the
        caller gone): etcd's ``proposals_failed_total``."""
        """Set by the forwarding module: how a follower reaches the leader's layer."""

    # -- guards ---------------------------------------------------------------------------------
    def check(self, ctx: RequestContext, access: Access) -> None:
        for guard in self.guards:
            guard(ctx, access)

    # -- state ----------------------------------------------------------------------------------
    def header(self, revision: int = 0) -> Header:
        """This member's header; ``revision`` (when given) is a write's own revision."""
        node = self.host.node
        return Header(self.host.fsm.membership.cluster_id, self.host.node_id,
                      revision or self.kv.revision,
                      node.term if node is not None else 0,
                      node.leader if node is not None else 0)

    # -- reads and writes -----------------------------------------------------------------------
    async def read(self, ctx: RequestContext, access: Access, serializable: bool = False
                   ) -> None:
        """Check ``access``, then wait until local state may answer it: at once for a
        serializable read, after a ReadIndex round for a linearizable one."""
        if self.guards:  # reads are the busiest path: no call when nothing guards
            self.check(ctx, access)
        if serializable:
            self.consensus.require_node()
        else:
            await self.consensus.read_barrier(ctx.deadline)

    async def write(self, ctx: RequestContext, command: Command, *accesses: Access) -> Any:
        """Check ``accesses`` and ``command``, replicate it, and return this member's result
        of applying it (a failed command raises its error; nothing changed)."""
        for access in accesses:
            self.check(ctx, access)
        validate_command(command)
        # Stamped with who was checked at which auth revision: the store checks it again if
        # the auth state moved before it is applied (confer.kv.commands, "Who sent it").
        data = encode_command_as(command, ctx.identity.user, self.kv.auth_revision())
        size = len(data)
        limits = self.limits
        limits.check(command, size)
        if limits.over_quota(command, size):
            await self._raise_nospace(ctx)
        limits.pending += 1
        limits.pending_bytes += size
        try:
            result = await self.consensus.replicate(data, ctx.deadline)
        except BaseException as e:
            self.failed_writes += 1
            if isinstance(e, Overloaded):  # refused before the log: the client may retry
                raise TooManyRequests(e.reason) from None
            raise
        finally:
            limits.pending -= 1
            limits.pending_bytes -= size
        if isinstance(result, ErrorResult):
            if result.code in _REFUSED_AT_APPLY and self.auth is not None:
                raise self.auth.refused_at_apply(ctx, command, result)
            raise result.to_exception()
        return result

    async def _raise_nospace(self, ctx: RequestContext) -> None:
        """Replicate this member's NOSPACE alarm (unless one is active), then refuse."""
        if not self.kv.nospace:
            await self.consensus.replicate(self.limits.nospace_alarm(self.host.node_id),
                                           ctx.deadline)
        raise NoSpace(f"database space exceeded: the store's {self.kv.size_bytes()} bytes "
                      f"and this write exceed the quota of {self.limits.quota_bytes} bytes "
                      "(--quota-backend-bytes); the NOSPACE alarm is raised: free space "
                      "(delete, compact), then disarm it (docs/operations.md)")

    async def admin(self, ctx: RequestContext) -> None:
        """Check a cluster-wide administrative access."""
        self.check(ctx, Access(AccessKind.ADMIN))

    # -- at the leader --------------------------------------------------------------------------
    async def at_leader(self, ctx: RequestContext, op: str, args: list[Any],
                        local: Callable[[], Awaitable[T]]) -> T | Any:
        """Run ``local`` if this member leads; else send ``op`` to the leader, following
        leader changes until the deadline. A request forwarded here is never forwarded
        again: it fails with NoLeader, and the member that sent it retries."""
        consensus = self.consensus
        while True:
            if time.monotonic() >= ctx.deadline:
                raise NoLeader("no leader answered in time")
            if consensus.is_leader():
                try:
                    return await local()
                except NotLeader:
                    if ctx.forwarded:
                        raise NoLeader("forwarded to a member that no longer leads") from None
            elif ctx.forwarded:
                raise NoLeader("forwarded to a member that no longer leads")
            else:
                await consensus.wait_for_leader(ctx.deadline)
                if not consensus.is_leader():
                    assert self.call_leader is not None, "no leader forwarding configured"
                    return await self.call_leader(op, args, ctx.deadline)
                continue
            await asyncio.sleep(consensus.retry_interval)
