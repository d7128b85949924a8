"""The request layer: one path for every request of both APIs (see api/__init__.py)."""

from __future__ import annotations

from confer.server.api.auth import AuthGuard, AuthRequests, make_tokens
from confer.server.api.cluster import ClusterRequests
from confer.server.api.coordination import CoordinationRequests
from confer.server.api.core import Core, Header, Host
from confer.server.api.forwarding import LeaderLink, LeaderService
from confer.server.api.kv import KVRequests
from confer.server.api.leases import LeaseRequests
from confer.server.api.watches import WatchRequests
from confer.server.metrics import CallStats
from confer.server.tls import RevocationList


class RequestLayer:
    """Everything a client can ask of a member, in Confer's own terms, grouped by concern.

    The confer.v1 and etcd services are adapters over it: they check a request's shape,
    convert its proto into the layer's types, call one method here, and convert the result
    (or map the error with their API's table). Guards registered on :attr:`guards` see every
    access of every request, whichever API it came in through.
    """

    def __init__(self, host: Host) -> None:
        self.core = Core(host)
        self.guards = self.core.guards
        cfg = host.cfg
        guard = AuthGuard(self.core, make_tokens(cfg))
        self.guards.append(guard)  # first: who the caller is comes before anything else
        self.core.auth = guard
        self.auth = AuthRequests(self.core, guard, cfg.bcrypt_cost)
        self.kv = KVRequests(self.core)
        self.watches = WatchRequests(self.core)
        self.leases = LeaseRequests(self.core)
        self.coordination = CoordinationRequests(self.core)
        self.cluster = ClusterRequests(self.core)
        self.leader_link = LeaderLink(self.core)
        self.core.call_leader = self.leader_link.call
        self.leader_service = LeaderService(self.core, self.cluster, self.leases)
        """Serves the operations other members forward to this one while it leads."""
        self.calls = CallStats()
        """Every client RPC of both APIs, health and reflection included, counted and timed
        as gRPC serves it (rpc.py)."""
        self.crl: RevocationList | None = None
        """``--client-crl-file``: set by the member before its ports serve (rpc.py checks
        each client-port call against it)."""
        self.peer_calls = CallStats()
        """The peer port's calls but Raft's streams (its own metrics count those): the
        internal Leader service and health."""

    @property
    def max_key_bytes(self) -> int:
        return self.core.max_key_bytes

    def header(self, revision: int = 0) -> Header:
        return self.core.header(revision)

    async def close(self) -> None:
        await self.leader_link.close()
