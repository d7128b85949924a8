"""etcd's TLS settings beyond the certificate files: ``--cipher-suites`` (TLS 1.2 suites of
both ports, through gRPC's GRPC_SSL_CIPHER_SUITES), ``--tls-min-version`` and
``--tls-max-version`` (only the bounds grpcio's Python API gives: TLS 1.2 to 1.3), and
``--client-crl-file`` (checked per call: grpcio's handshake takes no revocation list)."""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from confer.cli.tls import KeyPair, issue, load_ca, new_ca, server_flags
from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.server.config import ConfigError, load_config
from confer.server.tls import GRPC_CIPHER_ENV, cipher_list
from testing import ProcessCluster

AES256 = "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"


def test_cipher_suites_take_etcds_names() -> None:
    assert cipher_list(f"{AES256}, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305") == (
        "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305")
    assert cipher_list("") == ""


@pytest.mark.parametrize("flags, message", [
    ({"cipher_suites": "TLS_FOO"}, "unknown or unsupported suite 'TLS_FOO'"),
    ({"cipher_suites": "TLS_AES_128_GCM_SHA256"}, "is a TLS 1.3 suite"),
    ({"tls_min_version": "TLS1.3"}, "tls-min-version TLS1.3: not supported: grpcio"),
    ({"tls_max_version": "TLS1.2"}, "tls-max-version TLS1.2: not supported"),
    ({"tls_min_version": "TLS1.1"}, "expected one of TLS1.2, TLS1.3"),
])
def test_what_cannot_be_done_is_refused_with_the_reason(flags: dict[str, object],
                                                        message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, {"cert_file": "c.pem", "key_file": "k.pem", **flags}, environ={})
    with pytest.raises(ConfigError, match="need TLS on a port"):
        load_config(None, {"cipher_suites": AES256}, environ={})


def test_the_default_bounds_are_taken() -> None:
    cfg = load_config(None, {"cert_file": "c.pem", "key_file": "k.pem"},
                      environ={"CONFER_TLS_MIN_VERSION": "TLS1.2",
                               "CONFER_TLS_MAX_VERSION": "TLS1.3"})
    assert (cfg.tls_min_version, cfg.tls_max_version) == ("TLS1.2", "TLS1.3")


def handshake(port: int, ca: Path, version: ssl.TLSVersion, cipher: str | None = None) -> str:
    """The TLS version and cipher a handshake with the port settles on ("" if refused)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.minimum_version = ctx.maximum_version = version
    if cipher:
        ctx.set_ciphers(cipher)
    ctx.set_alpn_protocols(["h2"])
    try:
        with (socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
              ctx.wrap_socket(raw, server_hostname="127.0.0.1") as conn):
            got = conn.cipher()
            return f"{conn.version()} {got[0] if got else ''}"
    except (ssl.SSLError, OSError):
        return ""


def test_a_node_serves_only_the_cipher_suites_given(tmp_path: Path, certs: Path) -> None:
    # One TLS 1.2 suite allowed (the certificates are ECDSA): another is refused in the
    # handshake; TLS 1.3 is untouched (its suites are gRPC's, as Go's are etcd's).
    flags = [f for f in server_flags(certs) if f != "--client-cert-auth"]
    ca_at = flags.index("--trusted-ca-file")
    del flags[ca_at:ca_at + 2]  # no client certificate needed for a bare handshake
    ca = certs / "ca.pem"
    with ProcessCluster(1, tmp_path, extra_args=[*flags, "--cipher-suites", AES256],
                        credentials=grpc.ssl_channel_credentials(ca.read_bytes())) as c:
        node = c.nodes[1]
        port = int(node.client_addr.rsplit(":", 1)[1])
        assert handshake(port, ca, ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES256-GCM-SHA384") == (
            "TLSv1.2 ECDHE-ECDSA-AES256-GCM-SHA384")
        assert handshake(port, ca, ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256") == ""
        assert handshake(port, ca, ssl.TLSVersion.TLSv1_3).startswith("TLSv1.3 ")
        # The same process (exec keeps the pid) now runs with gRPC's setting.
        environ = Path(f"/proc/{node.pid}/environ").read_bytes().split(b"\0")
        assert f"{GRPC_CIPHER_ENV}=ECDHE-ECDSA-AES256-GCM-SHA384".encode() in environ
    assert GRPC_CIPHER_ENV not in os.environ


def write_crl(path: Path, ca: KeyPair, revoked: list[x509.Certificate]) -> None:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject)
               .last_update(now).next_update(now + datetime.timedelta(days=1)))
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
            .revocation_date(now).build())
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(builder.sign(ca.key, hashes.SHA256()).public_bytes(
        serialization.Encoding.PEM))
    tmp.rename(path)  # as one rotates it: a whole new file at once


def test_a_revoked_client_certificate_is_refused(tmp_path: Path, certs: Path) -> None:
    ca = load_ca(certs)
    other = issue(ca, "bob")
    other.write(tmp_path / "bob.pem", tmp_path / "bob-key.pem")
    crl = tmp_path / "crl.pem"
    write_crl(crl, ca, [x509.load_pem_x509_certificate((certs / "client.pem").read_bytes())])
    creds = grpc.ssl_channel_credentials((certs / "ca.pem").read_bytes(), other.key_pem,
                                         other.cert_pem)
    with ProcessCluster(1, tmp_path / "c", credentials=creds,
                        extra_args=[*server_flags(certs), "--client-crl-file", str(crl)]) as c:
        node = c.nodes[1]

        def status(cert: str, key: str) -> grpc.StatusCode:
            creds = grpc.ssl_channel_credentials((certs / "ca.pem").read_bytes(),
                                                 Path(key).read_bytes(), Path(cert).read_bytes())
            with grpc.secure_channel(node.client_addr, creds) as ch:
                try:
                    rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"/k"), timeout=10)
                except grpc.RpcError as e:
                    assert e.code() != grpc.StatusCode.UNAUTHENTICATED or "revoked" in str(
                        e.details())
                    return e.code()  # type: ignore[no-any-return]
                return grpc.StatusCode.OK

        revoked = (str(certs / "client.pem"), str(certs / "client-key.pem"))
        assert status(*revoked) == grpc.StatusCode.UNAUTHENTICATED
        assert status(str(tmp_path / "bob.pem"), str(tmp_path / "bob-key.pem")) == (
            grpc.StatusCode.OK)
        write_crl(crl, ca, [])  # the list changes: read again (looked at once a second)
        deadline = time.monotonic() + 20
        while status(*revoked) != grpc.StatusCode.OK:
            assert time.monotonic() < deadline, "the new list was never taken"
            time.sleep(0.2)


def test_an_unusable_revocation_list_stops_the_start_in_one_line(tmp_path: Path,
                                                                 certs: Path) -> None:
    bad = tmp_path / "crl.pem"
    bad.write_text("not a list")
    stranger = new_ca("someone else")
    foreign = tmp_path / "foreign.pem"
    write_crl(foreign, stranger, [])
    for crl, why in ((bad, "not a certificate revocation list"),
                     (foreign, "not signed by a CA of trusted-ca-file")):
        proc = subprocess.run(
            [sys.executable, "-m", "confer", "serve", "--data-dir", str(tmp_path / "data"),
             "--listen-client", "127.0.0.1:0", "--listen-peer", "127.0.0.1:0",
             *server_flags(certs), "--client-crl-file", str(crl)],
            capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("cannot start with TLS: client-crl-file")
        assert why in lines[0]
        assert not (tmp_path / "data").exists()
    with pytest.raises(ConfigError, match="client-crl-file needs client certificates"):
        load_config(None, {"client_crl_file": str(bad)}, environ={})
