"""TLS on the client and peer ports: the certificate files, their reload, and peer identity.

Each port has its own files (etcd's flags: ``--cert-file``/``--key-file``/``--trusted-ca-file``
/``--client-cert-auth`` for clients, the ``--peer-*`` twins for members). The files are
checked at startup (readable, the key matches the certificate, not expired, the CA parses),
and re-read whenever one of them changes: gRPC asks :class:`CertificateReloader` before
every new TLS handshake, so a rotated certificate serves the next connection, without a
restart, while connections already open keep theirs. A member dials its peers with its
peer certificate as client certificate (:class:`PeerChannelCredentials`, re-read the same
way), and with peer client-certificate auth it refuses a peer whose certificate does not
name an allowed common name (:func:`identity_refusal`) or, with
``--peer-cert-match-address``, that is not valid for the peer address of the member it
claims to be (:func:`address_refusal`), before the cluster-id and membership admission
(``ConferServer.admit_peer``).
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

log = logging.getLogger("confer.tls")


class TlsError(Exception):
    """A certificate or key file is unusable; the message names the file and the cause."""


# -- cipher suites and versions ----------------------------------------------------------------
CIPHER_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
}
"""The TLS 1.2 cipher suites ``--cipher-suites`` takes, by etcd's (IANA) names, with the
names gRPC's TLS library (BoringSSL) knows them by. Go's ``..._CHACHA20_POLY1305`` aliases
are accepted too."""
TLS13_SUITES = frozenset({"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                          "TLS_CHACHA20_POLY1305_SHA256"})
GRPC_CIPHER_ENV = "GRPC_SSL_CIPHER_SUITES"
"""gRPC core's setting of the TLS 1.2 cipher list, read once per process when grpc is
imported: ``confer serve`` restarts itself with it set (:func:`cipher_list`)."""
TLS_VERSIONS = ("TLS1.2", "TLS1.3")


def cipher_list(suites: str) -> str:
    """``--cipher-suites`` (comma-separated IANA names) as gRPC's cipher list (OpenSSL
    names, colon-separated); "" for gRPC's defaults. Raises :class:`TlsError` naming an
    unknown or unsupported suite."""
    names = []
    for suite in (x.strip() for x in suites.split(",")):
        if not suite:
            continue
        if suite in TLS13_SUITES:
            raise TlsError(f"cipher-suites: {suite} is a TLS 1.3 suite; as in etcd, "
                           "--cipher-suites lists TLS 1.2 suites (TLS 1.3's are gRPC's own, "
                           "not configurable)")
        name = CIPHER_SUITES.get(suite) or CIPHER_SUITES.get(suite + "_SHA256")
        if name is None:
            raise TlsError(f"cipher-suites: unknown or unsupported suite {suite!r} (known: "
                           f"{', '.join(CIPHER_SUITES)})")
        names.append(name)
    return ":".join(dict.fromkeys(names))


def check_tls_versions(minimum: str, maximum: str) -> None:
    """Refuse what ``--tls-min-version``/``--tls-max-version`` cannot do: grpcio's Python
    API (1.85) sets no TLS version on a server, which accepts TLS 1.2 and 1.3, so only
    those bounds (etcd's defaults too) are taken."""
    for flag, value, allowed in (("tls-min-version", minimum, "TLS1.2"),
                                 ("tls-max-version", maximum, "TLS1.3")):
        if value and value not in TLS_VERSIONS:
            raise TlsError(f"{flag} {value!r}: expected one of {', '.join(TLS_VERSIONS)}")
        if value and value != allowed:
            raise TlsError(f"{flag} {value}: not supported: grpcio's Python API sets no TLS "
                           "version, so Confer's ports always accept TLS 1.2 and 1.3 (only "
                           f"{flag} {allowed} is taken; docs/security.md)")


class RevocationList:
    """``--client-crl-file`` (etcd's flag): client certificates the CA revoked, refused.

    gRPC's Python API takes no revocation list for the TLS handshake (grpc core has one,
    for its newer TLS credentials, which grpcio does not expose), so the list is checked
    per call instead, before the request is served: a revoked certificate still completes
    its TLS handshake but every call on the connection is refused (UNAUTHENTICATED). The
    file (PEM or DER, signed by a CA of ``--trusted-ca-file``) is read again when it
    changes, looked at once a second at most, as etcd reads it again for each new
    connection; a bad new file is not taken (the last good list stays, with a warning)."""

    RECHECK_SECONDS = 1.0
    MAX_VERDICTS = 10_000
    """Certificates whose verdict is remembered (bounded whatever clients present)."""

    def __init__(self, path: str, trusted_ca_file: str, clock: Any = time.monotonic) -> None:
        self.path = path
        self.trusted_ca_file = trusted_ca_file
        self.clock = clock
        self._stamp = _stamp((path,))
        self._revoked, self._issuer = self._load()
        self._checked_at = self.clock()
        self._verdicts: dict[bytes, str | None] = {}

    def _load(self) -> tuple[frozenset[int], Any]:
        """The revoked serial numbers and the issuer; raises :class:`TlsError`."""
        from cryptography import x509

        data = _read("client-crl-file", self.path)
        try:
            crl = (x509.load_pem_x509_crl(data) if b"-----BEGIN" in data
                   else x509.load_der_x509_crl(data))
        except ValueError:
            raise TlsError(f"client-crl-file {self.path}: not a certificate revocation list "
                           "(PEM or DER)") from None
        cas = x509.load_pem_x509_certificates(_read("trusted-ca-file", self.trusted_ca_file))
        if not any(ca.subject == crl.issuer and _signed_by(crl, ca) for ca in cas):
            raise TlsError(f"client-crl-file {self.path}: not signed by a CA of "
                           f"trusted-ca-file {self.trusted_ca_file}")
        return frozenset(r.serial_number for r in crl), crl.issuer

    def _refresh(self) -> None:
        now = self.clock()
        if now - self._checked_at < self.RECHECK_SECONDS:
            return
        self._checked_at = now
        stamp = _stamp((self.path,))
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._revoked, self._issuer = self._load()
        except TlsError as e:
            log.warning("keeping the last good revocation list: %s", e)
            return
        self._verdicts.clear()
        log.info("client-crl-file %s reloaded: %d revoked", self.path, len(self._revoked))

    def refusal(self, auth: Mapping[str, Iterable[bytes]]) -> str | None:
        """Why a call whose TLS identity (gRPC's auth context) is this is refused: its
        client certificate is revoked; None otherwise."""
        self._refresh()
        pem = next(iter(auth.get("x509_pem_cert") or ()), b"")
        if not pem:
            return None  # no client certificate: the handshake's rules decided
        verdict = self._verdicts.get(pem, "")
        if verdict == "":
            verdict = self._verdict(pem)
            if len(self._verdicts) >= self.MAX_VERDICTS:
                self._verdicts.clear()
            self._verdicts[pem] = verdict
        return verdict

    def _verdict(self, pem: bytes) -> str | None:
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(pem)
        if cert.issuer == self._issuer and cert.serial_number in self._revoked:
            return (f"the client certificate (serial {cert.serial_number:#x}) is revoked "
                    f"(client-crl-file)")
        return None


def _signed_by(crl: Any, ca: Any) -> bool:
    """Whether ``ca``'s key signed ``crl`` (a key that cannot sign, e.g. X25519: no)."""
    try:
        return bool(crl.is_signature_valid(ca.public_key()))
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """One port's certificate files (paths as given)."""

    cert_file: str
    key_file: str
    trusted_ca_file: str = ""
    """Clients (or peers) must present a certificate signed by this CA (as etcd, setting it
    turns client-certificate verification on)."""
    client_cert_auth: bool = False

    @property
    def verify_clients(self) -> bool:
        """Whether a connection must present a certificate the trusted CA signed."""
        return self.client_cert_auth or bool(self.trusted_ca_file)

    def paths(self) -> tuple[str, ...]:
        return tuple(p for p in (self.cert_file, self.key_file, self.trusted_ca_file) if p)


@dataclass(frozen=True, slots=True)
class Pems:
    """The files' contents, checked."""

    cert_chain: bytes
    key: bytes
    ca: bytes | None
    not_after: datetime.datetime


def _read(setting: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TlsError(f"{setting} {path}: {e.strerror}") from None


def load_pems(files: TlsFiles, prefix: str = "") -> Pems:
    """Read and check ``files``: a PEM certificate (chain), the private key that matches its
    first certificate, a certificate valid now, and a CA file holding certificates.
    ``prefix`` names the flags (``"peer-"`` for the peer port's). Raises :class:`TlsError`."""
    # Imported here: a member without TLS (and every `confer` command) does without it.
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_flag, key_flag, ca_flag = (f"{prefix}cert-file", f"{prefix}key-file",
                                    f"{prefix}trusted-ca-file")
    chain = _read(cert_flag, files.cert_file)
    key_pem = _read(key_flag, files.key_file)
    try:
        certs = x509.load_pem_x509_certificates(chain)
    except ValueError:
        raise TlsError(f"{cert_flag} {files.cert_file}: not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:  # TypeError: an encrypted key
        raise TlsError(f"{key_flag} {files.key_file}: not an unencrypted PEM private key "
                       f"({e})") from None
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*raw) != certs[0].public_key().public_bytes(*raw):
        raise TlsError(f"{key_flag} {files.key_file} does not match the certificate in "
                       f"{cert_flag} {files.cert_file}")
    now = datetime.datetime.now(datetime.UTC)
    cert = certs[0]
    if cert.not_valid_after_utc < now:
        raise TlsError(f"{cert_flag} {files.cert_file}: the certificate expired on "
                       f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if cert.not_valid_before_utc > now:
        raise TlsError(f"{cert_flag} {files.cert_file}: the certificate is not valid before "
                       f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    ca = None
    if files.trusted_ca_file:
        ca = _read(ca_flag, files.trusted_ca_file)
        try:
            x509.load_pem_x509_certificates(ca)
        except ValueError:
            raise TlsError(f"{ca_flag} {files.trusted_ca_file}: not a PEM certificate") \
                from None
    return Pems(chain, key_pem, ca, cert.not_valid_after_utc)


def _stamp(paths: Sequence[str]) -> tuple[tuple[int, int, int], ...]:
    """What tells that a file changed: inode, size and modification time of each."""
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((0, 0, 0))
    return tuple(out)


class _Watched:
    """Files re-read (and checked) when they change; the last good contents otherwise."""

    def __init__(self, files: TlsFiles, prefix: str) -> None:
        self.files = files
        self.prefix = prefix
        self._lock = threading.Lock()  # gRPC calls the fetcher from its own threads
        self._stamp = _stamp(files.paths())
        self.pems = load_pems(files, prefix)

    def changed(self) -> Pems | None:
        """The new contents if the files changed and are usable, else None (a rotation
        half done, or a bad file: the current ones stay, with a warning)."""
        stamp = _stamp(self.files.paths())
        if stamp == self._stamp:
            return None
        with self._lock:
            if stamp == self._stamp:
                return None
            self._stamp = stamp
            try:
                pems = load_pems(self.files, self.prefix)
            except TlsError as e:
                log.warning("keeping the current %scertificate: %s", self.prefix, e)
                return None
            self.pems = pems
        log.info("reloaded the %scertificate from %s (valid until %s)", self.prefix,
                 self.files.cert_file, f"{pems.not_after:%Y-%m-%d %H:%M} UTC")
        return pems


def _server_config(pems: Pems) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(pems.key, pems.cert_chain)], pems.ca)


class CertificateReloader:
    """gRPC's certificate-configuration fetcher for one port: called before every new TLS
    handshake, it hands gRPC the files' new contents once they change (None: no change)."""

    def __init__(self, files: TlsFiles, prefix: str = "") -> None:
        self._watched = _Watched(files, prefix)

    def initial(self) -> grpc.ServerCertificateConfiguration:
        return _server_config(self._watched.pems)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        pems = self._watched.changed()
        return None if pems is None else _server_config(pems)


def server_credentials(files: TlsFiles, prefix: str = "") -> grpc.ServerCredentials:
    """A port's TLS credentials, reloaded when the files change. Raises :class:`TlsError`
    if the files are unusable now."""
    reloader = CertificateReloader(files, prefix)
    return grpc.dynamic_ssl_server_credentials(
        reloader.initial(),
        reloader,  # type: ignore[arg-type]  # the stubs omit the documented None: no change
        require_client_authentication=files.verify_clients)


def server_ssl_context(files: TlsFiles, prefix: str = "") -> ssl.SSLContext:
    """The same files for an asyncio TLS server (the HTTP listener): a context whose SNI
    callback, run in every handshake, hands the handshake a context made from the files
    again once they changed (a bad or half-rotated pair keeps the last good one). Raises
    :class:`TlsError` if the files are unusable now."""
    watched = _Watched(files, prefix)

    def make() -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(files.cert_file, files.key_file)
        if watched.pems.ca is not None:
            ctx.load_verify_locations(cadata=watched.pems.ca.decode("ascii", "replace"))
        if files.verify_clients:
            ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.sni_callback = renew
        return ctx

    def renew(conn: ssl.SSLSocket | ssl.SSLObject, _name: str | None,
              _ctx: ssl.SSLContext) -> None:
        if watched.changed() is not None:
            try:
                current[0] = make()
            except (ssl.SSLError, OSError) as e:  # the files changed again since checked
                log.warning("keeping the current %scertificate: %s", prefix, e)
        if conn.context is not current[0]:
            conn.context = current[0]

    current = [make()]
    return current[0]


def client_port_credentials(files: TlsFiles | None) -> grpc.ChannelCredentials | None:
    """How a member dials another member's client port (``--join``, the dashboard's status
    of the others): over TLS when its own client port serves TLS (the cluster's client ports
    alike), its client-port certificate as its own, the client CA (or the system's) as
    roots; None (plaintext) otherwise."""
    if files is None:
        return None
    pems = load_pems(files)
    return grpc.ssl_channel_credentials(pems.ca, pems.key, pems.cert_chain)


class PeerChannelCredentials:
    """How a member dials its peers over TLS: the peer CA as roots (the system's if none) and
    its peer certificate as client certificate, re-read when the files change."""

    def __init__(self, files: TlsFiles) -> None:
        self._watched = _Watched(files, "peer-")
        self._creds = self._make(self._watched.pems)

    @staticmethod
    def _make(pems: Pems) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(pems.ca, pems.key, pems.cert_chain)

    def get(self) -> grpc.ChannelCredentials:
        """The current credentials (new ones once the files changed)."""
        pems = self._watched.changed()
        if pems is not None:
            self._creds = self._make(pems)
        return self._creds


def address_refusal(auth: Mapping[str, Iterable[bytes]], member: int, peer_addr: str | None
                    ) -> str | None:
    """Why a peer with the TLS identity ``auth`` may not speak as ``member``, whose
    advertised peer address is ``peer_addr``: the certificate must name that address's host
    among its subject alternative names (an IP address or a DNS name). None: admitted, or
    the member's address is not known here yet (an empty node's first contact)."""
    if peer_addr is None:
        return None
    host = peer_addr.rpartition(":")[0].strip("[]").lower()
    names = [n.decode(errors="replace").lower()
             for n in auth.get("x509_subject_alternative_name", ())]
    if any(_same_host(host, n) for n in names):
        return None
    shown = ", ".join(n[:60] for n in names[:5]) or "none"
    return (f"the peer certificate is not valid for member {member}'s peer address "
            f"{peer_addr[:100]} (its names: {shown})")


def _same_host(host: str, name: str) -> bool:
    try:
        return ipaddress.ip_address(host) == ipaddress.ip_address(name)
    except ValueError:
        return host == name


def identity_refusal(auth: Mapping[str, Iterable[bytes]], allowed_cn: Sequence[str]
                     ) -> str | None:
    """Why a peer with the TLS identity ``auth`` (gRPC's auth context) is refused: its
    certificate's common name must be one of ``allowed_cn`` (etcd's
    ``--peer-cert-allowed-cn``). None: admitted (or no names required)."""
    if not allowed_cn:
        return None
    names = [n.decode(errors="replace") for n in auth.get("x509_common_name", ())]
    if not names:
        return "the peer presented no certificate with a common name"
    if not any(n in allowed_cn for n in names):
        return (f"the peer certificate's common name {names[0][:100]!r} is not an allowed "
                f"peer name ({', '.join(allowed_cn)})")
    return None
