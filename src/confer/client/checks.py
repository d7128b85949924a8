"""Health checks a registrant runs against its own instance (``register(..., check=...)``).

A :class:`Check` says what to probe (an HTTP(S) URL, a TCP address, a gRPC server's
``grpc.health.v1`` service) and how often; :meth:`Check.probe` runs it once, blocking, and
says what it found (a :class:`Result`). The registration's background loop
(:class:`confer.client.coord.Registration`) probes every ``interval`` and writes the
instance's status to its record when it changes, through a :class:`Damper`: the status
changes only after ``threshold`` consecutive results agree, so a flapping service does not
flap in the catalog.

The probes block (urllib, a socket, a blocking gRPC channel; each imported when first
used): the blocking client runs them
in the registration's thread, the asyncio client in a worker thread (``Offload``), so the
event loop never waits on them.
"""

from __future__ import annotations

import enum
import math
import socket
from dataclasses import dataclass

import grpc

from confer.catalog import HealthStatus, split_address
from confer.client.errors import InvalidArgument

__all__ = ["Check", "CheckKind", "Damper", "Result"]

PASSING, WARNING, CRITICAL = HealthStatus.PASSING, HealthStatus.WARNING, HealthStatus.CRITICAL
MAX_OUTPUT = 256
"""Characters of a check's output kept in the record."""


class CheckKind(enum.Enum):
    """What a check probes."""

    TTL = "ttl"
    """Nothing: the instance is passing while its lease lives (the registrant's keep-alive
    is the check)."""
    HTTP = "http"
    """GET a URL: 2xx is passing, 429 warning, anything else (or no answer within the
    timeout) critical."""
    TCP = "tcp"
    """Connect to HOST:PORT: passing if it accepts within the timeout."""
    GRPC = "grpc"
    """``grpc.health.v1.Health/Check`` on HOST:PORT (plaintext): SERVING is passing."""


@dataclass(frozen=True, slots=True)
class Result:
    """What one probe found: a status and a line saying why."""

    status: HealthStatus
    output: str


@dataclass(frozen=True, slots=True)
class Check:
    """A health check: build one with :meth:`http`, :meth:`tcp`, :meth:`grpc` or
    :meth:`ttl`.

    Attributes:
        kind: what it probes.
        target: the URL (HTTP), or HOST:PORT (TCP, gRPC).
        service: the service name a gRPC check asks about ("" : the server as a whole).
        interval: seconds between probes.
        timeout: seconds a probe may take before it counts as critical.
        threshold: consecutive results that must agree before the status changes (1: every
            result counts at once).
    """

    kind: CheckKind = CheckKind.TTL
    target: str = ""
    service: str = ""
    interval: float = 10.0
    timeout: float = 1.0
    threshold: int = 1

    def __post_init__(self) -> None:
        for name in ("interval", "timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    value > 0 and math.isfinite(value)):
                raise InvalidArgument(f"check {name} must be a positive number of seconds, "
                                      f"not {value!r}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int) or (
                self.threshold < 1):
            raise InvalidArgument(f"check threshold must be an integer >= 1, not "
                                  f"{self.threshold!r}")
        if self.kind is CheckKind.HTTP and not self.target.lower().startswith(
                ("http://", "https://")):
            raise InvalidArgument(f"HTTP check {self.target!r}: expected an http:// or "
                                  "https:// URL")
        if self.kind in (CheckKind.TCP, CheckKind.GRPC) and not split_address(self.target)[1]:
            raise InvalidArgument(f"{self.kind.value.upper()} check {self.target!r}: expected "
                                  "HOST:PORT")

    @classmethod
    def ttl(cls) -> Check:
        """No probe: the instance is passing while its registrant keeps its lease alive."""
        return cls()

    @classmethod
    def http(cls, url: str, *, interval: float = 10.0, timeout: float = 1.0,
             threshold: int = 1) -> Check:
        """GET ``url`` (http:// or https://, verified against the system's CAs): 2xx is
        passing, 429 warning, anything else critical."""
        return cls(CheckKind.HTTP, url, "", interval, timeout, threshold)

    @classmethod
    def tcp(cls, address: str, *, interval: float = 10.0, timeout: float = 1.0,
            threshold: int = 1) -> Check:
        """Connect to ``address`` (HOST:PORT): passing if it accepts."""
        return cls(CheckKind.TCP, address, "", interval, timeout, threshold)

    @classmethod
    def grpc(cls, address: str, service: str = "", *, interval: float = 10.0,
             timeout: float = 1.0, threshold: int = 1) -> Check:
        """Ask ``address``'s ``grpc.health.v1.Health`` about ``service`` ("": the whole
        server): SERVING is passing."""
        return cls(CheckKind.GRPC, address, service, interval, timeout, threshold)

    @property
    def active(self) -> bool:
        """Whether there is anything to probe (every kind but TTL)."""
        return self.kind is not CheckKind.TTL

    def describe(self) -> str:
        """What the record's ``check`` field says: ``http URL``, ``tcp HOST:PORT``, ``grpc
        HOST:PORT[/SERVICE]`` ("" for TTL)."""
        if not self.active:
            return ""
        suffix = f"/{self.service}" if self.service else ""
        return f"{self.kind.value} {self.target}{suffix}"

    def probe(self) -> Result:
        """Run the check once (blocking, at most about ``timeout`` seconds)."""
        try:
            if self.kind is CheckKind.HTTP:
                return self._http()
            if self.kind is CheckKind.TCP:
                return self._tcp()
            if self.kind is CheckKind.GRPC:
                return self._grpc()
        except Exception as e:  # whatever a probe meets, the instance is not healthy
            return Result(CRITICAL, _clip(f"{type(e).__name__}: {e}"))
        return Result(PASSING, "")

    def _http(self) -> Result:
        # Imported here: a client that runs no HTTP check does not pay for urllib.
        import http.client
        import urllib.error
        import urllib.request

        # No proxy from the environment: the registrant checks its own instance directly.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(self.target, timeout=self.timeout) as resp:
                code, reason = resp.status, resp.reason
        except urllib.error.HTTPError as e:  # a status outside 2xx (after redirects)
            code, reason = e.code, e.reason
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            why = e.reason if isinstance(e, urllib.error.URLError) else e
            return Result(CRITICAL, _clip(f"GET {self.target}: {why}"))
        status = PASSING if 200 <= code < 300 else WARNING if code == 429 else CRITICAL
        return Result(status, _clip(f"HTTP {code} {reason}"))

    def _tcp(self) -> Result:
        host, port = split_address(self.target)
        try:
            with socket.create_connection((host, port), timeout=self.timeout):
                pass
        except OSError as e:
            return Result(CRITICAL, _clip(f"TCP connect {self.target}: "
                                          f"{e.strerror or type(e).__name__}"))
        return Result(PASSING, f"TCP connect {self.target}: success")

    def _grpc(self) -> Result:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(self.target) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check  # type: ignore[attr-defined]  # stubs omit it
            try:
                resp = check(health_pb2.HealthCheckRequest(service=self.service),
                                  timeout=self.timeout)
            except grpc.RpcError as e:
                code = e.code()
                return Result(CRITICAL, _clip(f"gRPC health {self.target}: "
                                              f"{code.name if code else 'UNKNOWN'} "
                                              f"{e.details() or ''}".rstrip()))
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
        status = PASSING if resp.status == health_pb2.HealthCheckResponse.SERVING else CRITICAL
        return Result(status, f"gRPC health {self.target}: {name}")


def _clip(text: str) -> str:
    return text if len(text) <= MAX_OUTPUT else text[:MAX_OUTPUT - 3] + "..."


class Damper:
    """Flap damping: the status reported moves to a new one only once ``threshold``
    consecutive results have it. The output follows the latest result that agrees with the
    reported status.

    Attributes:
        current: the result to report (what the record should say).
    """

    def __init__(self, threshold: int, first: Result) -> None:
        self.threshold = threshold
        self.current = first
        self._candidate: HealthStatus | None = None  # the status of the streak below
        self._streak = 0  # consecutive results with that status (not current's)

    def observe(self, result: Result) -> Result:
        """Take one probe's result; return what to report now."""
        if result.status is self.current.status:
            self._streak = 0
            self.current = result
            return result
        if self._candidate is not result.status:
            self._streak = 0
        self._candidate = result.status
        self._streak += 1
        if self._streak >= self.threshold:
            self._streak = 0
            self.current = result
        return self.current
