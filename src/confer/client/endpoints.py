"""Endpoint strings as users write them: ``HOST:PORT``, or a URL ``http://HOST:PORT`` /
``https://HOST:PORT`` (the etcdctl habit), and the default when none are given.

The scheme is kept apart from the address gRPC dials: ``https`` is what asks for TLS (the
channel credentials are chosen from it), ``http`` and no scheme mean plaintext.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from confer.client.errors import InvalidArgument

__all__ = ["DEFAULT_ENDPOINT", "ENDPOINTS_ENV", "Endpoint", "default_endpoints",
           "parse_endpoint", "parse_endpoints"]

DEFAULT_ENDPOINT = "127.0.0.1:7379"
"""Where ``confer serve`` listens for clients by default."""
ENDPOINTS_ENV = "CONFER_ENDPOINTS"
"""The environment variable naming the endpoints when a client is given none."""
SCHEMES = ("http", "https")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One endpoint: the ``host:port`` to dial, and the URL scheme it was given with ("" when
    none)."""

    address: str
    scheme: str = ""

    @property
    def tls(self) -> bool:
        """Whether the endpoint asks for TLS (an ``https://`` URL)."""
        return self.scheme == "https"


def parse_endpoint(text: str) -> Endpoint:
    """Parse ``http(s)://HOST:PORT[/]``; anything without a scheme is a gRPC target
    (``HOST:PORT``...), kept as it is.

    Raises:
        InvalidArgument: another scheme, or a URL with a path, no host or no port 1-65535.
    """
    spec = text.strip()
    scheme, sep, rest = spec.partition("://")
    if not sep:
        return Endpoint(spec)
    if scheme.lower() not in SCHEMES:
        raise InvalidArgument(f"endpoint {text!r}: expected HOST:PORT, http://HOST:PORT or "
                              "https://HOST:PORT")
    rest = rest.removesuffix("/")
    host, colon, port = rest.rpartition(":")
    if (not colon or not host or "/" in rest or any(c.isspace() for c in rest)
            or not port.isdigit() or not 1 <= int(port) <= 65535):
        raise InvalidArgument(f"endpoint {text!r}: expected HOST:PORT with a port 1-65535")
    return Endpoint(rest, scheme.lower())


def parse_endpoints(spec: str | Sequence[str]) -> tuple[Endpoint, ...]:
    """Parse a list of endpoints, or a comma-separated string of them (blanks ignored).

    Raises:
        InvalidArgument: an invalid endpoint, none at all, or a mix of ``https://`` and
            plaintext endpoints (one client talks TLS to every member, or to none).
    """
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    endpoints = tuple(parse_endpoint(p) for p in parts if p.strip())
    if not endpoints:
        raise InvalidArgument("a client needs at least one endpoint (HOST:PORT)")
    if len({e.tls for e in endpoints}) > 1:
        raise InvalidArgument("endpoints mix https:// and plaintext addresses: use one kind")
    return endpoints


def default_endpoints(environ: Mapping[str, str] | None = None) -> str:
    """The endpoints of a client given none: ``$CONFER_ENDPOINTS``, else
    :data:`DEFAULT_ENDPOINT` (as etcd's and ZooKeeper's clients default to localhost)."""
    env = os.environ if environ is None else environ
    return env.get(ENDPOINTS_ENV, "").strip() or DEFAULT_ENDPOINT
