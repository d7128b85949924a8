"""The service catalog's record: what ``/services/<service>/<instance id>`` holds.

One JSON object per instance, written by the registering client (``register()``) and read
by the clients (``discover()``, the watches), by the members' DNS interface
(:mod:`confer.server.dns`) and by anyone with an etcd client::

    {"address": "10.0.0.7:8080", "tags": ["v2"], "metadata": {"zone": "eu"},
     "weights": {"passing": 10, "warning": 1},
     "status": "passing", "output": "HTTP 200 OK", "check": "http http://10.0.0.7:8080/health"}

Only ``address`` is required: a record without ``status`` is passing (a registration made
before health checks existed, or with none), and a value that is not such an object is the
address itself (e.g. written by ``confer put``). Both the client and the server read records
with :func:`decode`, so they agree on what is healthy; this module imports nothing of
Confer's, so that neither depends on the other through it.
"""

from __future__ import annotations

import enum
import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PREFIX", "HealthStatus", "Record", "Weights", "decode", "encode", "ip_of",
           "split_address"]

PREFIX = "/services"
"""Where instances are registered: ``/services/<service>/<instance id>``."""


class HealthStatus(enum.Enum):
    """An instance's health, as its registrant's check last reported it (Consul's names)."""

    PASSING = "passing"
    WARNING = "warning"
    """Degraded but serving (an HTTP check answered 429): still healthy, at its warning
    weight."""
    CRITICAL = "critical"
    """Failing: left out of every healthy-only answer."""

    @property
    def healthy(self) -> bool:
        """Passing or warning: served to clients (discover(healthy_only=True), DNS)."""
        return self is not HealthStatus.CRITICAL


@dataclass(frozen=True, slots=True)
class Weights:
    """An instance's share of the traffic while passing and while warning (Consul's
    weights; the DNS interface puts them in SRV records)."""

    passing: int = 1
    warning: int = 1

    def __post_init__(self) -> None:
        for name in ("passing", "warning"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
                raise ValueError(f"weights.{name} must be an integer 0..65535, not {value!r}")

    def of(self, status: HealthStatus) -> int:
        """The weight for ``status`` (0 when critical)."""
        return {HealthStatus.PASSING: self.passing,
                HealthStatus.WARNING: self.warning}.get(status, 0)


@dataclass(frozen=True, slots=True)
class Record:
    """One instance's registration, as stored."""

    address: str
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)
    weights: Weights = field(default_factory=Weights)
    status: HealthStatus = HealthStatus.PASSING
    output: str = ""
    """What the last check said (``HTTP 503 Service Unavailable``, ``connection refused``)."""
    check: str = ""
    """Which check the registrant runs, e.g. ``http http://10.0.0.7:8080/health`` ("" for
    none: the lease alone keeps the instance)."""


def encode(record: Record) -> bytes:
    """The record as stored: compact JSON with sorted keys. ValueError if the metadata is
    not JSON-serializable."""
    doc: dict[str, Any] = {"address": record.address, "metadata": dict(record.metadata)}
    if record.tags:
        doc["tags"] = list(record.tags)
    if record.weights != Weights():
        doc["weights"] = {"passing": record.weights.passing,
                          "warning": record.weights.warning}
    if record.check or record.status is not HealthStatus.PASSING or record.output:
        doc.update(status=record.status.value, output=record.output, check=record.check)
    try:
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata of {record.address}: not JSON-serializable: {e}") from None


def decode(value: bytes) -> Record:
    """Read a stored record leniently: a value that is not a registration object is the
    address itself; a field of the wrong type takes its default (an unknown status is
    critical: never route to what cannot be read as healthy)."""
    try:
        doc = json.loads(value)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("address"), str):
        return Record(value.decode("utf-8", "replace"))
    meta = doc.get("metadata")
    tags = doc.get("tags")
    status_text = doc.get("status", HealthStatus.PASSING.value)
    try:
        status = HealthStatus(status_text)
    except ValueError:
        status = HealthStatus.CRITICAL
    return Record(doc["address"],
                  tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else (),
                  meta if isinstance(meta, dict) else {},
                  _weights(doc.get("weights")), status,
                  _text(doc.get("output")), _text(doc.get("check")))


def _weights(doc: object) -> Weights:
    if not isinstance(doc, dict):
        return Weights()
    try:
        return Weights(doc.get("passing", 1), doc.get("warning", 1))
    except ValueError:
        return Weights()


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[V6]:PORT``) as (host, port); port 0 when there is none (a bare host,
    or something else)."""
    host, sep, port = address.rpartition(":")
    if sep and port.isdigit() and 0 < int(port) <= 65535 and host:
        if host.startswith("[") and host.endswith("]"):
            return host[1:-1], int(port)
        if ":" not in host:  # a bare IPv6 address has colons of its own
            return host, int(port)
    return address.strip("[]"), 0


def ip_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an IP address, or None if it is a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
