"""`confer tls init DIR`: a local CA and the certificates of a dev cluster (docs/security.md).

The CA signs three certificates, each valid for 127.0.0.1, ::1 and localhost and usable as
server and as client certificate: ``server.pem`` (the client ports), ``peer.pem`` (the peer
ports, and the members' own certificate when they dial each other; common name
:data:`PEER_CN`, the name ``--peer-cert-allowed-cn`` expects) and ``client.pem`` (for the
CLI, etcdctl and the Python clients). Every private key is written ``*-key.pem``, mode 0600.
The tests generate their certificates with the same functions.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOCAL_NAMES = ("127.0.0.1", "::1", "localhost")
PEER_CN = "confer-peer"
SERVER_CN = "confer-server"
CLIENT_CN = "client"


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> KeyPair:
        """Read a pair written by :meth:`write` (e.g. a directory's CA, to issue more)."""
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path}: not an EC private key")
        return cls(x509.load_pem_x509_certificate(cert_path.read_bytes()), key)

    def write(self, cert_path: Path, key_path: Path) -> None:
        """Write the certificate, and the key readable by this user only (0600)."""
        cert_path.write_bytes(self.cert_pem)
        key_path.unlink(missing_ok=True)  # a leftover would keep its mode
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.key_pem)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _validity(days: int, not_before: datetime.datetime | None,
              not_after: datetime.datetime | None) -> tuple[datetime.datetime,
                                                            datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    start = not_before or now - datetime.timedelta(minutes=5)  # clocks a little apart
    return start, not_after or now + datetime.timedelta(days=days)


def new_ca(cn: str = "Confer dev CA", days: int = 3650) -> KeyPair:
    """A self-signed CA certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity(days, None, None)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return KeyPair(cert, key)


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue(ca: KeyPair, cn: str, *, names: Sequence[str] = LOCAL_NAMES, days: int = 365,
          not_before: datetime.datetime | None = None,
          not_after: datetime.datetime | None = None) -> KeyPair:
    """A certificate signed by ``ca`` for common name ``cn`` and subject alternative names
    ``names`` (IP addresses or DNS names), for TLS servers and clients alike."""
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity(days, not_before, not_after)
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                     ExtendedKeyUsageOID.CLIENT_AUTH]),
                              critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca.key.public_key()), critical=False))
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
    return KeyPair(builder.sign(ca.key, hashes.SHA256()), key)


FILES = ("ca.pem", "ca-key.pem", "server.pem", "server-key.pem", "peer.pem", "peer-key.pem",
         "client.pem", "client-key.pem")


def init_dir(directory: Path, *, client_cn: str = CLIENT_CN, days: int = 365,
             names: Sequence[str] = LOCAL_NAMES) -> None:
    """Write a new CA and the server, peer and client certificates into ``directory``
    (:data:`FILES`). Raises FileExistsError rather than replace any of them."""
    directory.mkdir(parents=True, exist_ok=True)
    taken = [f for f in FILES if (directory / f).exists()]
    if taken:
        raise FileExistsError(f"{directory / taken[0]} exists; not replacing certificates "
                              "(use another directory, or remove the files)")
    ca = new_ca()
    ca.write(directory / "ca.pem", directory / "ca-key.pem")
    for stem, cn in (("server", SERVER_CN), ("peer", PEER_CN), ("client", client_cn)):
        issue(ca, cn, names=names, days=days).write(directory / f"{stem}.pem",
                                                     directory / f"{stem}-key.pem")


def load_ca(directory: Path) -> KeyPair:
    """The CA of a directory made by :func:`init_dir` (to issue more certificates)."""
    return KeyPair.load(directory / "ca.pem", directory / "ca-key.pem")


def server_flags(directory: Path) -> list[str]:
    """`confer serve` flags for mTLS on both ports with the files of :func:`init_dir`."""
    d = directory.resolve()
    return ["--cert-file", str(d / "server.pem"), "--key-file", str(d / "server-key.pem"),
            "--trusted-ca-file", str(d / "ca.pem"), "--client-cert-auth",
            "--peer-cert-file", str(d / "peer.pem"), "--peer-key-file", str(d / "peer-key.pem"),
            "--peer-trusted-ca-file", str(d / "ca.pem"), "--peer-client-cert-auth",
            "--peer-cert-allowed-cn", PEER_CN, "--peer-cert-match-address"]


def client_flags(directory: Path) -> list[str]:
    """Client flags (the CLI's and etcdctl's) for the files of :func:`init_dir`."""
    d = directory.resolve()
    return ["--cacert", str(d / "ca.pem"), "--cert", str(d / "client.pem"),
            "--key", str(d / "client-key.pem")]
