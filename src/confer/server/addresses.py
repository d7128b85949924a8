"""The rules for member addresses (``HOST:PORT``) and member ids, in one place: the flags
(``--initial-cluster``, ``--join``, listen and advertise addresses) and the membership RPCs
of both APIs check them, before anything is dialled or written to the log.
"""

from __future__ import annotations

import ipaddress
import re

MAX_ADDR_CHARS = 261
"""A 253-character DNS name, ``:`` and a 5-digit port, with room for IPv6 brackets."""
MAX_MEMBER_ID = 2**63 - 1
"""Member ids are 1 .. 2**63-1: they travel in int64 fields too (etcd's are uint64, but
Confer's messages and statuses keep every id within int64)."""

_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def _host_problem(host: str) -> str | None:
    if host.startswith("["):
        if not host.endswith("]"):
            return "an IPv6 literal must be written [ADDRESS]"
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"{host} is not an IPv6 address"
        return None
    if ":" in host:
        return "an IPv6 address must be in brackets ([::1]:PORT); a host has no ':'"
    if host.replace(".", "").isdigit():
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"{host} is not an IPv4 address"
        return None
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        return (f"{host!r} is not a host name (labels of 1-63 letters, digits, '-' or '_', "
                f"at most 253 characters)")
    return None


def address_problem(addr: str, *, allow_port_zero: bool = False) -> str | None:
    """The rule ``addr`` breaks, or None if it is a valid ``HOST:PORT``: a host name, an
    IPv4 address or a bracketed IPv6 address, and a port 1-65535 (0 too with
    ``allow_port_zero``: a listen address may let the system choose); printable ASCII
    without spaces, at most :data:`MAX_ADDR_CHARS` characters."""
    if len(addr) > MAX_ADDR_CHARS:
        return f"longer than {MAX_ADDR_CHARS} characters"
    if not addr.isascii() or not addr.isprintable() or any(c.isspace() for c in addr):
        return "only printable ASCII without spaces or control characters is allowed"
    host, sep, port = addr.rpartition(":")
    if not sep or not host:
        return "expected HOST:PORT"
    if not port.isdigit() or not (0 if allow_port_zero else 1) <= int(port) <= 65535:
        return f"port {port!r} is not {'0' if allow_port_zero else '1'}-65535"
    return _host_problem(host)


def member_id_problem(member_id: int) -> str | None:
    """The rule a member id breaks, or None."""
    if not 1 <= member_id <= MAX_MEMBER_ID:
        return f"member id {member_id} is not 1..{MAX_MEMBER_ID}"
    return None
