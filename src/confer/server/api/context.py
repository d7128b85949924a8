"""What every request carries into the request layer, and the hook that sees each one.

An adapter (a confer.v1 or etcd gRPC servicer) builds a :class:`RequestContext` from its
call, then calls the layer. The layer checks each request against its guards before it
reads or changes anything: authentication, authorization, quotas, rate limits and metrics
hook in there, once for both APIs.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

DEFAULT_TIMEOUT = 10.0
"""Seconds a request may take when its caller set no deadline."""
MAX_TIMEOUT = 60.0
"""The longest a request may wait, whatever deadline its caller set."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who sent a request: anonymous, or a user of the auth state (confer.kv.auth)."""

    user: str = ""
    """The authenticated user name; empty for an anonymous caller. The transport may set
    it (with client-certificate authentication, the certificate's common name, as etcd);
    else the auth guard sets it from :attr:`RequestContext.token`."""


ANONYMOUS = Identity()


@dataclass(slots=True)
class RequestContext:
    """One request's deadline, origin and caller."""

    api: str
    """Which API it came in through: ``"confer"`` or ``"etcd"`` (or ``"internal"``)."""
    method: str
    """The RPC's name, for logs, metrics and audit."""
    deadline: float
    """Absolute ``time.monotonic()`` time by which the request must be answered."""
    forwarded: bool = False
    """A member forwarded it to this one as the leader: it must not be forwarded again."""
    peer: str = ""
    """The caller's transport address, as gRPC names it."""
    identity: Identity = field(default=ANONYMOUS)
    token: str = ""
    """The auth token the call carried (gRPC metadata ``token``, as etcd's clients send it);
    the auth guard turns it into :attr:`identity`."""
    certificate_user: Callable[[], str] | None = None
    """Reads the common name of the caller's verified client certificate ("" if none): the
    user of a request that carries no token, as in etcd with ``--client-cert-auth`` (read
    only when authentication needs it)."""
    wait_until: float | None = None
    """The caller's own deadline, uncapped (None: it set none). A blocking wait (for a
    lock, an election) lasts until then, for ever if None; each step inside it (a write, a
    read) still ends at ``deadline``."""

    @classmethod
    def with_timeout(cls, api: str, method: str, timeout: float | None, *,
                     forwarded: bool = False, peer: str = "", token: str = "",
                     certificate_user: Callable[[], str] | None = None) -> RequestContext:
        """A context whose deadline is ``timeout`` seconds from now (None: the default),
        capped at :data:`MAX_TIMEOUT`."""
        # Built on every request: conditionals rather than min() and max(), and positional
        # arguments in the order of the fields (each builtin call and the keywords cost as
        # much as the rest; benchmarks/instructions.py, docs/performance.md).
        now = time.monotonic()
        if timeout is None:
            return cls(api, method, now + DEFAULT_TIMEOUT, forwarded, peer, ANONYMOUS, token,
                       certificate_user, None)
        if not timeout > 0.0:  # a past deadline (or NaN): no time left
            timeout = 0.0
        return cls(api, method, now + (timeout if timeout < MAX_TIMEOUT else MAX_TIMEOUT),
                   forwarded, peer, ANONYMOUS, token, certificate_user, now + timeout)

    def remaining(self) -> float:
        """Seconds left before the deadline (never negative)."""
        return max(0.0, self.deadline - time.monotonic())


class AccessKind(enum.Enum):
    """What a request does, as a guard sees it."""

    READ = "read"
    """Reads keys (ranges, watches, lock and election state)."""
    WRITE = "write"
    """Changes keys or leases through the log."""
    ADMIN = "admin"
    """Changes or inspects the cluster itself (membership, compaction, snapshots)."""
    PUBLIC = "public"
    """Reads what any caller may know, authenticated or not: the member list and a member's
    status (etcd answers MemberList and Status without a user; health checks use them)."""


class Access(NamedTuple):
    """One access a request makes: a guard allows or refuses it. (A named tuple: every
    request builds one, and a frozen dataclass takes twice the instructions to build.)"""

    kind: AccessKind
    key: bytes = b""
    """The key, or the start of the key range, touched (empty for cluster-wide access)."""
    range_end: bytes = b""
    """The end of the key range (exclusive; empty: the single key ``key``)."""


Guard = Callable[[RequestContext, Access], None]
"""Called before the layer serves an access; raises to refuse it (e.g. PermissionDenied)."""
