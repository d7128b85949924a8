"""Lease requests.

Grant and Revoke are log writes. TimeToLive and renewals need the leader's clock
(:class:`confer.server.leases.Lessor`): a follower sends them to the leader
(:meth:`Core.at_leader`), and a keep-alive session keeps one stream to whichever member leads,
following leader changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

from confer.kv import (
    LeaseGrant,
    LeaseGrantResult,
    LeaseInfo,
    LeaseRevoke,
    LeaseRevokeResult,
    validate_command,
)
from confer.raft.errors import NotLeader
from confer.server.api.context import Access, AccessKind, RequestContext
from confer.server.api.core import Core, Header
from confer.server.consensus import NoLeader

log = logging.getLogger("confer.leases")

KEEP_ALIVE_TIMEOUT = 10.0
"""How long one renewal may try, across leader changes."""


@dataclass(frozen=True, slots=True)
class LeaseTTL:
    """A lease as its leader's clock sees it."""

    id: int
    remaining: float
    """Seconds until it expires."""
    granted_ttl: int
    keys: list[bytes]
    header: Header
    """The header of the member whose clock answered: the leader."""


class UpstreamRenewals(Protocol):
    """A follower's renewal stream to the leader (:mod:`confer.server.api.forwarding`)."""

    leader: int

    async def renew(self, lease: int, deadline: float) -> int: ...

    def close(self) -> None: ...


def describe_lease(lease: int) -> str:
    return f"lease {lease} ({lease:#x})"


class LeaseRequests:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.lessor = core.host.lessor

    async def grant(self, ctx: RequestContext, ttl: int, lease_id: int = 0) -> LeaseGrantResult:
        """Grant a lease of at least ``ttl`` seconds (raised to the minimum TTL, 1.5
        election timeouts, as etcd does)."""
        validate_command(LeaseGrant(ttl, lease_id))  # the TTL asked for, before raising it
        result: LeaseGrantResult = await self.core.write(
            ctx, LeaseGrant(max(ttl, self.lessor.min_ttl), lease_id), Access(AccessKind.WRITE))
        return result

    def key_accesses(self, kind: AccessKind, lease_id: int) -> list[Access]:
        """The lease's own access (no key: any user) and one per key attached to it: only
        a user allowed to write (read) all of them may revoke or renew (inspect) it."""
        return [Access(kind), *(Access(kind, k) for k in self.core.kv.lease_keys(lease_id))]

    async def revoke(self, ctx: RequestContext, lease_id: int) -> LeaseRevokeResult:
        result: LeaseRevokeResult = await self.core.write(
            ctx, LeaseRevoke(lease_id), *self.key_accesses(AccessKind.WRITE, lease_id))
        return result

    async def leases(self, ctx: RequestContext) -> list[LeaseInfo]:
        await self.core.read(ctx, Access(AccessKind.READ))
        return self.core.kv.leases()

    async def time_to_live(self, ctx: RequestContext, lease_id: int, keys: bool = False
                           ) -> LeaseTTL | None:
        """The lease's remaining time on the leader's clock; None if there is no such
        lease."""
        for access in self.key_accesses(AccessKind.READ, lease_id):
            self.core.check(ctx, access)

        async def local() -> list[Any] | None:
            got = await self.lessor.time_to_live(lease_id, ctx.remaining())
            if got is None:
                return None
            attached = self.core.kv.lease_keys(lease_id) if keys else []
            return [got[0], got[1], attached, list(self.core.header())]

        answer = await self.core.at_leader(ctx, "lease_ttl", [lease_id, keys], local)
        if answer is None:
            return None
        remaining, granted, attached, header = answer
        return LeaseTTL(lease_id, float(remaining), int(granted), [bytes(k) for k in attached],
                        Header(*header))

    async def renew_here(self, lease_id: int, deadline: float) -> int:
        """Renew on this member, which must lead (NotLeader otherwise); the TTL, or 0 if the
        lease does not exist."""
        return await self.lessor.renew(lease_id, max(0.0, deadline - time.monotonic()))

    def keep_alive(self, ctx: RequestContext, upstream: UpstreamRenewals) -> KeepAliveSession:
        """A session renewing leases for one client stream."""
        return KeepAliveSession(self, ctx, upstream)


class KeepAliveSession:
    """Renews leases for one client's keep-alive stream: on this member while it leads,
    else through one upstream stream to the leader, reopened when the leader changes or the
    stream fails. A stream forwarded here is never forwarded again: it fails with NoLeader
    and the member that forwarded it reconnects."""

    def __init__(self, leases: LeaseRequests, ctx: RequestContext,
                 upstream: UpstreamRenewals) -> None:
        self.leases = leases
        self.ctx = ctx
        self.upstream = upstream

    async def renew(self, lease_id: int) -> int:
        """Renew one lease; its TTL, or 0 if it does not exist (etcd)."""
        core = self.leases.core
        for access in self.leases.key_accesses(AccessKind.WRITE, lease_id):
            core.check(self.ctx, access)
        consensus = core.consensus
        deadline = time.monotonic() + KEEP_ALIVE_TIMEOUT
        forwarded = self.ctx.forwarded
        while True:
            if time.monotonic() >= deadline:
                raise NoLeader(f"no leader renewed {describe_lease(lease_id)} in time")
            try:
                if consensus.is_leader():
                    self.upstream.close()
                    return await self.leases.renew_here(lease_id, deadline)
                if forwarded:
                    raise NoLeader("forwarded to a member that no longer leads")
                await consensus.wait_for_leader(deadline)
                if not consensus.is_leader():
                    return await self.upstream.renew(lease_id, deadline)
                continue
            except NotLeader:
                if forwarded:
                    raise NoLeader("forwarded to a member that no longer leads") from None
            except (NoLeader, TimeoutError, ConnectionError) as e:
                if forwarded:
                    raise
                log.debug("keep-alive of %s: %s; retrying", describe_lease(lease_id), e)
                self.upstream.close()
            await asyncio.sleep(consensus.retry_interval)

    def close(self) -> None:
        self.upstream.close()
