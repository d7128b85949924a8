"""The request layer: one path for every request of both APIs.

In the spirit of etcd's ``EtcdServer`` behind ``v3rpc``: the confer.v1 services
(:mod:`confer.server.native`) and the etcd v3 services (:mod:`confer.server.etcd`) are thin
adapters; each request goes through here, where it is checked by the guards
(:class:`~confer.server.api.context.Guard`: authentication, authorization, quotas, metrics),
waits for a leader or a read point, is replicated, forwarded or answered, and fails with
Confer's own errors. Modules:

- ``context``: :class:`RequestContext` (deadline, origin, caller) and the guard hook;
- ``core``: what every request shares (guards, reads, writes, answering at the leader);
- ``kv``, ``watches``, ``leases``, ``coordination`` (locks, elections), ``cluster``;
- ``forwarding``: how a follower reaches the leader's layer for leader-only operations;
- ``errors``: the layer's own errors.
"""

from confer.server.api.context import (
    ANONYMOUS,
    Access,
    AccessKind,
    Guard,
    Identity,
    RequestContext,
)
from confer.server.api.core import Header, Host
from confer.server.api.layer import RequestLayer

__all__ = ["ANONYMOUS", "Access", "AccessKind", "Guard", "Header", "Host", "Identity",
           "RequestContext", "RequestLayer"]
