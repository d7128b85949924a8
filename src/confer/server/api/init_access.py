"""Who may call ``Init``: the one request that turns an empty member into a cluster.

A member started with ``--wait-init`` has no cluster, no membership and so no peers to
trust: whoever reaches its client port first could found a cluster on it, naming their own
machines as the other members. So ``Init`` needs one of two proofs:

- the node was given ``--init-token`` (or ``CONFER_INIT_TOKEN``): the request's ``token``
  must equal it (compared in constant time); nothing else is enough, loopback included;
- no token was given: the caller must be on the node's own host (a loopback address or a
  Unix socket), i.e. someone who can log in there. A proxy on the same host makes every
  caller look local: behind one, set a token.
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import unquote

from confer.server.api.context import RequestContext
from confer.server.api.errors import PermissionDenied


def check_init_caller(ctx: RequestContext, token: str, expected: str) -> None:
    """Raise :class:`PermissionDenied`, naming the rule, unless the caller may call Init."""
    if expected:
        if not hmac.compare_digest(token.encode(), expected.encode()):
            raise PermissionDenied("Init refused: this node was started with --init-token, "
                                   "and the request does not carry that token")
        return
    if not is_local_peer(ctx.peer):
        raise PermissionDenied(f"Init refused: without --init-token, Init is taken only "
                               f"from this node's host (loopback), not from {ctx.peer or '?'}")


def is_local_peer(peer: str) -> bool:
    """Whether a gRPC peer name (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``, which some
    gRPC versions percent-encode, ``unix:/path``) is a caller on this host."""
    kind, _, rest = peer.partition(":")
    rest = unquote(rest)
    if kind == "unix":
        return True
    if kind not in ("ipv4", "ipv6"):
        return False
    host = rest.rpartition(":")[0].strip("[]")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped  # ::ffff:127.0.0.1, from a dual-stack listener
    return addr.is_loopback
