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
import ssl
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
    """``grpc.health.v1.Health/Check`` on HOST:PORT (plaintext, or TLS): SERVING is
    passing."""


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
        cacert: TLS (an https:// URL, a gRPC check with ``tls``): verify the server with
            this CA file (PEM) instead of the system's CAs ("": the system's).
        cert: TLS: present this client certificate (PEM; with ``key``).
        key: the client certificate's private key (PEM).
        tls: a gRPC check speaks TLS (an HTTP check's scheme says whether it does).
    """

    kind: CheckKind = CheckKind.TTL
    target: str = ""
    service: str = ""
    interval: float = 10.0
    timeout: float = 1.0
    threshold: int = 1
    cacert: str = ""
    cert: str = ""
    key: str = ""
    tls: bool = False

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
        self._validate_tls()

    def _validate_tls(self) -> None:
        """TLS options only where TLS is spoken, a certificate with its key, and files that
        load (so a typo fails at once, not as a critical status later)."""
        if self.tls and self.kind is not CheckKind.GRPC:
            raise InvalidArgument("tls applies to gRPC checks (an HTTP check speaks TLS with "
                                  "an https:// URL)")
        if not (self.cacert or self.cert or self.key):
            return
        if not self.uses_tls:
            needs = {CheckKind.HTTP: "an https:// URL", CheckKind.GRPC: "tls"}.get(
                self.kind, "an HTTPS or gRPC check")
            raise InvalidArgument(f"{self.kind.value.upper()} check {self.target!r}: the CA "
                                  f"and client certificate options need {needs}")
        if bool(self.cert) != bool(self.key):
            raise InvalidArgument("a check's client certificate needs both cert and key")
        for option, path in (("cacert", self.cacert), ("cert", self.cert), ("key", self.key)):
            try:
                _read(path)
            except OSError as e:
                raise InvalidArgument(f"check {option} {path!r}: {e.strerror or e}") from None
        try:
            self._ssl_context()
        except ssl.SSLError as e:
            raise InvalidArgument(f"check cacert, cert and key: not a PEM CA file, or a "
                                  f"certificate and its key: {e}") from None

    @property
    def uses_tls(self) -> bool:
        """Whether the probe speaks TLS (an https:// URL, a gRPC check with ``tls``)."""
        if self.kind is CheckKind.HTTP:
            return self.target.lower().startswith("https://")
        return self.kind is CheckKind.GRPC and self.tls

    def _ssl_context(self) -> ssl.SSLContext:
        """The TLS settings of an HTTPS probe: the CA file's (else the system's CAs), and
        the client certificate if any. Read at each probe: renewed files are picked up."""
        context = ssl.create_default_context(cafile=self.cacert or None)
        if self.cert:
            context.load_cert_chain(self.cert, self.key)
        return context

    @classmethod
    def ttl(cls) -> Check:
        """No probe: the instance is passing while its registrant keeps its lease alive."""
        return cls()

    @classmethod
    def http(cls, url: str, *, interval: float = 10.0, timeout: float = 1.0,
             threshold: int = 1, cacert: str = "", cert: str = "", key: str = "") -> Check:
        """GET ``url`` (http:// or https://): 2xx is passing, 429 warning, anything else
        critical. An https:// server is verified against ``cacert`` (a PEM file; else the
        system's CAs); ``cert`` and ``key`` (PEM files) are the client certificate to
        present, if the server asks for one."""
        return cls(CheckKind.HTTP, url, "", interval, timeout, threshold, cacert, cert, key)

    @classmethod
    def tcp(cls, address: str, *, interval: float = 10.0, timeout: float = 1.0,
            threshold: int = 1) -> Check:
        """Connect to ``address`` (HOST:PORT): passing if it accepts."""
        return cls(CheckKind.TCP, address, "", interval, timeout, threshold)

    @classmethod
    def grpc(cls, address: str, service: str = "", *, interval: float = 10.0,
             timeout: float = 1.0, threshold: int = 1, tls: bool = False, cacert: str = "",
             cert: str = "", key: str = "") -> Check:
        """Ask ``address``'s ``grpc.health.v1.Health`` about ``service`` ("": the whole
        server): SERVING is passing. Plaintext, or with ``tls`` over TLS: the server
        verified against ``cacert`` (a PEM file; else gRPC's default roots), presenting
        ``cert`` and ``key`` (PEM files) as client certificate if given."""
        return cls(CheckKind.GRPC, address, service, interval, timeout, threshold, cacert,
                   cert, key, tls)

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
        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
        if self.cacert or self.cert:
            handlers.append(urllib.request.HTTPSHandler(context=self._ssl_context()))
        opener = urllib.request.build_opener(*handlers)
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

        with _grpc_channel(self) as channel:
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


def _grpc_channel(check: Check) -> grpc.Channel:
    """A channel to a gRPC check's target: plaintext, or TLS with its files (read at each
    probe: renewed files are picked up)."""
    if not check.tls:
        return grpc.insecure_channel(check.target)
    credentials = grpc.ssl_channel_credentials(_read(check.cacert), _read(check.key),
                                               _read(check.cert))
    return grpc.secure_channel(check.target, credentials)


def _read(path: str) -> bytes | None:
    """A PEM file's bytes (None for no file)."""
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


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
