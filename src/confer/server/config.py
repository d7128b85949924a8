"""Server settings: defaults < config file (TOML) < environment (CONFER_*) < flags.

With no settings at all, a node is a working single-node cluster with its data under
``./confer-data``, clients on 127.0.0.1:7379 and peers on 127.0.0.1:7380.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confer.server.addresses import address_problem, member_id_problem
from confer.server.tls import TlsError, TlsFiles, check_tls_versions, cipher_list

DEFAULT_CLIENT_ADDR = "127.0.0.1:7379"
DEFAULT_PEER_ADDR = "127.0.0.1:7380"
METRICS_PORT_OFFSET = 1000
"""By default the HTTP listener (metrics, health) is on the client host, at the client port
plus this: 127.0.0.1:8379 for the default client address."""
DEFAULT_MAX_REQUEST_BYTES = 1536 * 1024
"""etcd's default --max-request-bytes (1.5 MiB)."""
DEFAULT_QUOTA_BACKEND_BYTES = 2 << 30
"""etcd's default --quota-backend-bytes (2 GiB)."""
MAX_CONCURRENT_STREAMS = 1_000
"""Calls (unary or streams) one client connection may have open at once; more wait in the
client (HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS). etcd leaves it unbounded."""
DNS_PORT_OFFSET = 1221
"""By default the DNS interface is on 127.0.0.1 at the client port plus this: 127.0.0.1:8600
(Consul's DNS port) for the default client address."""
GRPC_REQUEST_OVERHEAD = 512 * 1024
"""What the client port's gRPC receive limit allows beyond --max-request-bytes (etcd's
``grpcOverheadBytes``): a request's proto is larger than its log entry."""


class ConfigError(ValueError):
    """A setting is invalid; the message names the setting and the rule."""


@dataclass(slots=True)
class ServerConfig:
    name: str = "default"
    node_id: int = 0
    """0 = 1 for a new single-node cluster, or taken from --initial-cluster / the data dir."""
    data_dir: Path = Path("confer-data")
    listen_client: str = DEFAULT_CLIENT_ADDR
    advertise_client: str = ""
    listen_peer: str = DEFAULT_PEER_ADDR
    advertise_peer: str = ""
    initial_cluster: str = ""
    """Founding members, ``id=peer_addr,...`` (or ``id=name@peer_addr``). Same on every founder."""
    cluster_token: str = "confer"
    join: str = ""
    peer_routes: str = ""
    """``id=HOST:PORT,...``: dial these peers here instead of at their advertised peer address
    (a proxy in front of each link, as the fault-injection harness uses)."""
    """Client address of a running member: ask it to add this node, then catch up."""
    wait_init: bool = False
    """Start empty and wait for the ``Init`` RPC instead of bootstrapping."""
    init_token: str = ""
    """A secret that ``Init`` must present (its ``token``); without one, only a caller on
    this host (loopback) may call ``Init``. See :mod:`confer.server.api.init_access`."""
    tick_ms: int = 100
    election_ticks: int = 10
    snapshot_every: int = 100_000
    snapshot_catchup_entries: int = 5_000
    """Entries kept in the log after a snapshot, so that slow followers catch up from the log."""
    auto_compaction_retention: int = 10_000
    """Keep this many revisions of history (the leader compacts older ones); 0 = compact
    only by hand, as etcd without --auto-compaction-*."""
    batch_window_ms: int = 20
    """Under load, rounds of the Raft loop at least this far apart (at most a quarter tick),
    so that each carries many writes; 0 = off. See NodeOptions.batch_window."""
    max_key_bytes: int = 4096
    max_value_bytes: int = 1 << 20
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    """Largest write, encoded as its log entry (etcd's --max-request-bytes)."""
    quota_backend_bytes: int = 0
    """Store size that raises the NOSPACE alarm: 0 = the default (2 GiB), negative = no
    quota (etcd's --quota-backend-bytes). See :attr:`quota_bytes`."""
    auth_token: str = "simple"
    """etcd's ``--auth-token``: ``simple``, or ``jwt,pub-key=PATH,priv-key=PATH,
    sign-method=RS256`` (see :mod:`confer.server.api.auth`)."""
    auth_token_ttl: int = 300
    """Seconds a simple token lives after its last use (etcd's ``--auth-token-ttl``)."""
    bcrypt_cost: int = 10
    """bcrypt's cost of users' password hashes (etcd's ``--bcrypt-cost``, 4..31)."""
    listen_metrics: str = "default"
    """HOST:PORT of the HTTP listener (/metrics, /health); ``none`` or empty: none;
    ``default``: see :attr:`metrics_addr`; ``https://HOST:PORT``: over TLS with the client
    port's files (:attr:`metrics_tls`), ``http://HOST:PORT``: plaintext."""
    enable_grpc_gateway: bool = True
    """Serve etcd's JSON gateway (``/v3/...``) on the HTTP listener (etcd's flag; not
    while the client port serves TLS and the listener is plaintext: see
    :func:`confer.server.http.exposure.bypasses_client_tls`)."""
    enable_dashboard: bool = True
    """Serve the web dashboard (``/ui/``) on the HTTP listener (under the gateway's
    rule: :func:`confer.server.http.exposure.bypasses_client_tls`)."""
    listen_dns: str = "default"
    """HOST:PORT of the DNS interface to the service catalog (UDP and TCP); ``none`` or
    empty: none; ``default``: see :attr:`dns_addr`."""
    dns_user: str = ""
    """The user whose permissions the DNS interface reads the catalog with while
    authentication is enabled (as Consul's DNS uses its agent's default token); empty: DNS
    reads are anonymous, so REFUSED with authentication on. No password: the operator names
    it on the member itself."""
    log_level: str = "info"
    log_format: str = "text"
    # TLS (etcd's flags; docs/security.md). Client port:
    cert_file: str = ""
    key_file: str = ""
    trusted_ca_file: str = ""
    """Clients must present a certificate this CA signed (as etcd: implies client-cert-auth)."""
    client_cert_auth: bool = False
    # Peer port, and this member's client certificate when it dials its peers:
    peer_cert_file: str = ""
    peer_key_file: str = ""
    peer_trusted_ca_file: str = ""
    peer_client_cert_auth: bool = False
    peer_cert_allowed_cn: str = ""
    """Comma-separated common names a peer's certificate must carry (with peer mTLS)."""
    peer_cert_match_address: bool = False
    """A peer's certificate must name the host of the advertised peer address of the member
    it speaks as (a subject alternative name), so no member can pose as another."""
    app: str = ""
    """``module:Class`` or ``path/file.py:Class``: a user's state machine (a subclass of
    ``confer.replicated.StateMachine``) this member replicates and serves beside the KV
    store (docs/platform.md)."""
    client_crl_file: str = ""
    """Client certificates revoked by the CA (a CRL): their calls are refused."""
    # Both ports (etcd's flags; what grpcio lets a Python server set: confer.server.tls).
    cipher_suites: str = ""
    """Comma-separated TLS 1.2 cipher suites (IANA names, as etcd's --cipher-suites)."""
    tls_min_version: str = ""
    tls_max_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def quota_bytes(self) -> int:
        """The effective quota: 0 when there is none (etcd: negative turns it off)."""
        if self.quota_backend_bytes < 0:
            return 0
        return self.quota_backend_bytes or DEFAULT_QUOTA_BACKEND_BYTES

    @property
    def client_url(self) -> str:
        return self.advertise_client or self.listen_client

    @property
    def peer_url(self) -> str:
        return self.advertise_peer or self.listen_peer

    @property
    def metrics_addr(self) -> str:
        """Where the HTTP listener binds ("": nowhere). By default, the client host at the
        client port plus :data:`METRICS_PORT_OFFSET` (any free port if the client port is 0
        or the sum is past 65535)."""
        if self.listen_metrics.lower() in ("", "none"):
            return ""
        if self.listen_metrics != "default":
            return self._metrics_url()[1]
        host, _, port = self.listen_client.rpartition(":")
        derived = int(port) + METRICS_PORT_OFFSET if int(port) else 0
        return f"{host}:{derived if derived <= 65535 else 0}"

    @property
    def dns_addr(self) -> str:
        """Where the DNS interface binds ("": nowhere). By default, loopback (a DNS server
        open to the network answers anyone) at the client port plus
        :data:`DNS_PORT_OFFSET` (any free port if the client port is 0 or the sum is past
        65535)."""
        if self.listen_dns.lower() in ("", "none"):
            return ""
        if self.listen_dns != "default":
            return self.listen_dns
        port = int(self.listen_client.rpartition(":")[2])
        derived = port + DNS_PORT_OFFSET if port else 0
        return f"127.0.0.1:{derived if derived <= 65535 else 0}"

    def _metrics_url(self) -> tuple[str, str]:
        """``listen_metrics`` as (scheme, HOST:PORT); no scheme is ``http``."""
        scheme, sep, addr = self.listen_metrics.partition("://")
        return (scheme.lower(), addr) if sep else ("http", self.listen_metrics)

    @property
    def metrics_tls(self) -> TlsFiles | None:
        """The HTTP listener's TLS files: the client port's, when it is given as
        ``https://HOST:PORT`` (etcd's ``--listen-metrics-urls https://...`` serves the
        client certificate likewise)."""
        if self.listen_metrics.lower() in ("", "none", "default"):
            return None
        return self.client_tls if self._metrics_url()[0] == "https" else None

    def founders(self) -> list[tuple[int, str, str]]:
        """Parse ``initial_cluster`` into (id, name, peer_addr)."""
        out = []
        for part in filter(None, (p.strip() for p in self.initial_cluster.split(","))):
            ident, sep, addr = part.partition("=")
            if (not sep or not ident.strip().isdigit() or member_id_problem(int(ident))
                    or not addr):
                raise ConfigError(
                    f"initial-cluster entry {part!r}: expected ID=HOST:PORT with an ID "
                    f"1..2**63-1"
                )
            name, at, peer = addr.partition("@")
            if not at:
                name, peer = f"node-{ident.strip()}", addr
            check_addr("initial-cluster", peer)
            out.append((int(ident), name, peer))
        ids = [i for i, _, _ in out]
        if len(set(ids)) != len(ids):
            raise ConfigError("initial-cluster: node ids must be distinct")
        return out

    def routes(self) -> dict[int, str]:
        """Parse ``peer_routes`` into {peer id: address to dial}; ``@PATH`` reads a file."""
        spec = self.peer_routes
        if spec.startswith("@"):
            try:
                spec = Path(spec[1:]).read_text()
            except OSError as e:
                raise ConfigError(f"peer-routes: cannot read {spec[1:]}: {e.strerror}") from None
        out: dict[int, str] = {}
        for part in filter(None, (p.strip() for p in spec.replace("\n", ",").split(","))):
            ident, sep, addr = part.partition("=")
            if not sep or not ident.strip().isdigit() or int(ident) <= 0:
                raise ConfigError(f"peer-routes entry {part!r}: expected ID=HOST:PORT")
            check_addr("peer-routes", addr)
            out[int(ident)] = addr
        return out

    def validate(self) -> None:
        for key in ("listen_client", "listen_peer"):
            check_addr(key.replace("_", "-"), getattr(self, key), allow_port_zero=True)
        if self.listen_metrics.lower() not in ("", "none", "default"):
            scheme, addr = self._metrics_url()
            if scheme not in ("http", "https"):
                raise ConfigError(f"listen-metrics {self.listen_metrics!r}: expected "
                                  "HOST:PORT, http://HOST:PORT or https://HOST:PORT")
            check_addr("listen-metrics", addr, allow_port_zero=True)
            if scheme == "https" and not self.cert_file:
                raise ConfigError("listen-metrics https://... serves the client port's "
                                  "certificate: give cert-file and key-file")
        if self.listen_dns.lower() not in ("", "none", "default"):
            check_addr("listen-dns", self.listen_dns, allow_port_zero=True)
        for key in ("advertise_client", "advertise_peer"):
            if getattr(self, key):
                check_addr(key.replace("_", "-"), getattr(self, key))
        if self.join:
            check_addr("join", self.join)
        if self.node_id != 0 and member_id_problem(self.node_id):
            raise ConfigError("id must be an integer 1..2**63-1")
        if self.tick_ms <= 0 or self.election_ticks < 2:
            raise ConfigError("tick-ms must be positive and election-ticks at least 2")
        if self.batch_window_ms < 0:
            raise ConfigError("batch-window-ms must be >= 0")
        if self.snapshot_every <= 0 or self.snapshot_catchup_entries < 0:
            raise ConfigError("snapshot-every must be positive, snapshot-catchup-entries >= 0")
        if self.max_key_bytes <= 0 or self.max_value_bytes <= 0:
            raise ConfigError("max-key-bytes and max-value-bytes must be positive")
        if self.max_request_bytes <= 0:
            raise ConfigError("max-request-bytes must be positive")
        if self.auto_compaction_retention < 0:
            raise ConfigError("auto-compaction-retention must be >= 0")
        if sum(bool(x) for x in (self.initial_cluster, self.join, self.wait_init)) > 1:
            raise ConfigError("use only one of initial-cluster, join and wait-init")
        if self.auth_token_ttl <= 0:
            raise ConfigError("auth-token-ttl must be a positive number of seconds")
        if not 4 <= self.bcrypt_cost <= 31:
            raise ConfigError(f"bcrypt-cost must be 4..31 (bcrypt's range), not "
                              f"{self.bcrypt_cost}")
        auth_token_settings(self.auth_token, self.auth_token_ttl)
        if self.log_format not in ("text", "json"):
            raise ConfigError("log-format must be text or json")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log-level must be debug, info, warning or error, "
                              f"not {self.log_level!r}")
        if self.listen_peer == self.listen_client and not self.listen_peer.endswith(":0"):
            raise ConfigError(f"listen-peer and listen-client are both {self.listen_peer}: "
                              "peers and clients need separate ports")
        self._validate_tls()
        self.routes()
        founders = self.founders()
        if founders and self.node_id and self.node_id not in {i for i, _, _ in founders}:
            raise ConfigError(f"id {self.node_id} is not in initial-cluster")
        if founders and not self.node_id:
            matches = [i for i, _, peer in founders if peer == self.peer_url]
            if len(matches) != 1:
                raise ConfigError("set --id: initial-cluster has no single entry for this "
                                  f"node's peer address {self.peer_url}")
            self.node_id = matches[0]

    def _validate_tls(self) -> None:
        for prefix in ("", "peer_"):
            cert, key, ca = (getattr(self, prefix + n) for n in
                             ("cert_file", "key_file", "trusted_ca_file"))
            flag = prefix.replace("_", "-")
            if bool(cert) != bool(key):
                raise ConfigError(f"{flag}cert-file and {flag}key-file go together: give both")
            if ca and not cert:
                raise ConfigError(f"{flag}trusted-ca-file needs {flag}cert-file and "
                                  f"{flag}key-file (TLS on that port)")
            if getattr(self, prefix + "client_cert_auth") and not ca:
                raise ConfigError(f"{flag}client-cert-auth needs {flag}trusted-ca-file (the "
                                  "CA that signs the certificates to accept)")
        for flag in ("peer_cert_allowed_cn", "peer_cert_match_address"):
            if getattr(self, flag) and not self.peer_trusted_ca_file:
                raise ConfigError(f"{flag.replace('_', '-')} needs peer mTLS: peer-cert-file, "
                                  "peer-key-file and peer-trusted-ca-file")
        if self.client_crl_file and not self.trusted_ca_file:
            raise ConfigError("client-crl-file needs client certificates: trusted-ca-file "
                              "(and cert-file, key-file)")
        try:
            self.grpc_cipher_list()
            check_tls_versions(self.tls_min_version, self.tls_max_version)
        except TlsError as e:
            raise ConfigError(str(e)) from None
        if (self.cipher_suites or self.tls_min_version or self.tls_max_version) and not (
                self.cert_file or self.peer_cert_file):
            raise ConfigError("cipher-suites, tls-min-version and tls-max-version need TLS on "
                              "a port (cert-file or peer-cert-file)")

    def grpc_cipher_list(self) -> str:
        """``--cipher-suites`` in gRPC's terms (its GRPC_SSL_CIPHER_SUITES, OpenSSL names);
        "" for gRPC's defaults."""
        return cipher_list(self.cipher_suites)

    @property
    def client_tls(self) -> TlsFiles | None:
        """The client port's certificate files, if it serves TLS."""
        if not self.cert_file:
            return None
        return TlsFiles(self.cert_file, self.key_file, self.trusted_ca_file,
                        self.client_cert_auth)

    @property
    def peer_tls(self) -> TlsFiles | None:
        """The peer port's certificate files (also this member's client certificate when it
        dials its peers), if peers talk TLS."""
        if not self.peer_cert_file:
            return None
        return TlsFiles(self.peer_cert_file, self.peer_key_file, self.peer_trusted_ca_file,
                        self.peer_client_cert_auth)

    @property
    def allowed_peer_cns(self) -> tuple[str, ...]:
        return tuple(n.strip() for n in self.peer_cert_allowed_cn.split(",") if n.strip())


JWT_METHODS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
               "ES512", "EdDSA")
"""The asymmetric signing methods ``--auth-token jwt`` takes (PyJWT's names)."""


@dataclass(frozen=True, slots=True)
class TokenSettings:
    """``--auth-token``, parsed: ``simple``, or ``jwt`` with its method and keys."""

    kind: str
    ttl: float
    """Seconds: a simple token's life after its last use, a JWT's after its issue."""
    method: str = ""
    public_key: bytes = b""
    private_key: bytes | None = None
    """None: this member verifies tokens but does not issue them."""


def auth_token_settings(spec: str, ttl: float) -> TokenSettings:
    """Parse ``--auth-token``: ``simple``, or ``jwt,pub-key=PATH,priv-key=PATH,
    sign-method=METHOD[,ttl=DURATION]`` (etcd's syntax; the duration in seconds, or with an
    ``s``, ``m`` or ``h`` suffix). Reads the key files; raises :class:`ConfigError`."""
    kind, _, rest = spec.partition(",")
    if kind == "simple" and not rest:
        return TokenSettings("simple", ttl)
    if kind != "jwt":
        raise ConfigError(f"auth-token {spec!r}: expected 'simple' or 'jwt,pub-key=PATH,"
                          "priv-key=PATH,sign-method=METHOD'")
    opts: dict[str, str] = {}
    for part in filter(None, rest.split(",")):
        key, sep, value = part.partition("=")
        if not sep or key not in ("pub-key", "priv-key", "sign-method", "ttl"):
            raise ConfigError(f"auth-token: unknown jwt option {part!r} (pub-key, priv-key, "
                              "sign-method, ttl)")
        opts[key] = value
    method = opts.get("sign-method", "")
    if method not in JWT_METHODS:
        raise ConfigError(f"auth-token: sign-method must be one of {', '.join(JWT_METHODS)}, "
                          f"not {method!r}")
    if "pub-key" not in opts:
        raise ConfigError("auth-token: jwt needs pub-key=PATH")
    return TokenSettings("jwt", _duration(opts["ttl"]) if "ttl" in opts else ttl, method,
                         _read_key(opts["pub-key"]),
                         _read_key(opts["priv-key"]) if "priv-key" in opts else None)


def _read_key(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"auth-token: cannot read key {path}: {e.strerror}") from None


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    scale = units.get(text[-1:], 1)
    try:
        value = float(text[:-1] if text[-1:] in units else text) * scale
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ConfigError(f"auth-token: ttl {text!r} is not a positive duration (e.g. 5m)")
    return value


def client_grpc_options(cfg: ServerConfig) -> list[tuple[str, int]]:
    """The client port's gRPC server options: gRPC itself refuses (RESOURCE_EXHAUSTED,
    before parsing) a message larger than ``max_request_bytes`` + ``GRPC_REQUEST_OVERHEAD``,
    and a connection holds at most ``MAX_CONCURRENT_STREAMS`` calls at once."""
    return [("grpc.max_receive_message_length",
             cfg.max_request_bytes + GRPC_REQUEST_OVERHEAD),
            ("grpc.max_concurrent_streams", MAX_CONCURRENT_STREAMS)]


def check_addr(setting: str, addr: str, *, allow_port_zero: bool = False) -> None:
    """Refuse ``addr`` unless it is a valid ``HOST:PORT`` (:func:`address_problem`)."""
    problem = address_problem(addr, allow_port_zero=allow_port_zero)
    if problem:
        raise ConfigError(f"{setting}: {addr!r} is not a valid HOST:PORT: {problem}")


_FIELDS = {f.name: f for f in dataclasses.fields(ServerConfig) if f.name != "extra"}
_FLAG_NAMES = {"node_id": "id"}
"""Settings whose flag (and so config-file key and environment variable) is named otherwise."""
DEPRECATED_ENV = {"CONFER_NODE_ID": "node_id"}
"""Environment variables named before the rule of :func:`env_var`, and their settings: still
read (the new name wins), with a warning."""


def flag_name(setting: str) -> str:
    """A setting's flag without its dashes: ``data_dir``: ``data-dir``, ``node_id``: ``id``."""
    return _FLAG_NAMES.get(setting, setting).replace("_", "-")


def env_var(setting: str) -> str:
    """A setting's environment variable, by the one rule of every ``confer`` flag:
    ``CONFER_`` and the flag's name in capitals, dashes as underscores (``--data-dir``:
    ``CONFER_DATA_DIR``, ``--id``: ``CONFER_ID``)."""
    return "CONFER_" + flag_name(setting).replace("-", "_").upper()


def env_vars() -> set[str]:
    """The environment variables the server settings read (:func:`env_var` of each)."""
    return {env_var(name) for name in _FIELDS}


def _coerce(name: str, value: Any) -> Any:
    kind = _FIELDS[name].type
    try:
        if kind == "int":
            return int(value)
        if kind == "bool":
            if isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("1", "true", "yes")
            return bool(value)
        if kind == "Path":
            return Path(value)
        return str(value)
    except ValueError:
        raise ConfigError(f"{flag_name(name)}: {value!r} is not a valid {kind}") from None


def load_config(config_file: Path | None, overrides: dict[str, Any],
                environ: dict[str, str] | None = None,
                warn: Callable[[str], None] | None = None) -> ServerConfig:
    """Merge the sources; ``overrides`` are the flags actually given (None = not given).
    A config file's keys are the flags' names (``data-dir``, ``id``; ``node_id`` too);
    ``warn`` hears of deprecated environment variables still in use."""
    by_key = {flag_name(name): name for name in _FIELDS}
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            raw = tomllib.loads(config_file.read_text())
        except OSError as e:
            raise ConfigError(f"config file {config_file}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {config_file}: {e}") from None
        for key, value in raw.items():
            name = by_key.get(key.replace("_", "-"), key.replace("-", "_"))
            if name not in _FIELDS:
                raise ConfigError(f"config file {config_file}: unknown setting {key!r}")
            values[name] = _coerce(name, value)
    env = os.environ if environ is None else environ
    for name in _FIELDS:
        if env_var(name) in env:
            values[name] = _coerce(name, env[env_var(name)])
    for old_var, name in DEPRECATED_ENV.items():
        if old_var in env:
            if warn is not None:
                warn(f"{old_var} is deprecated: use {env_var(name)}")
            if env_var(name) not in env:
                values[name] = _coerce(name, env[old_var])
    for name, value in overrides.items():
        if value is not None:
            values[name] = _coerce(name, value)
    cfg = ServerConfig(**values)
    cfg.validate()
    return cfg
