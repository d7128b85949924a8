"""TLS settings and certificate files: what is refused at startup, and why (one line), the
peer identity rule, the client's TLS arguments, and `confer tls init`."""

from __future__ import annotations

import datetime
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from confer.cli import cli
from confer.cli.tls import FILES, issue, load_ca, new_ca, server_flags
from confer.client import InvalidArgument
from confer.client.transport import tls_credentials
from confer.server.config import ConfigError, load_config
from confer.server.tls import TlsError, TlsFiles, address_refusal, identity_refusal, load_pems


@pytest.mark.parametrize("flags, message", [
    ({"cert_file": "c.pem"}, "cert-file and key-file go together"),
    ({"peer_key_file": "k.pem"}, "peer-cert-file and peer-key-file go together"),
    ({"trusted_ca_file": "ca.pem"}, "trusted-ca-file needs cert-file"),
    ({"cert_file": "c", "key_file": "k", "client_cert_auth": True},
     "client-cert-auth needs trusted-ca-file"),
    ({"peer_cert_file": "c", "peer_key_file": "k", "peer_client_cert_auth": "true"},
     "peer-client-cert-auth needs peer-trusted-ca-file"),
    ({"peer_cert_allowed_cn": "x"}, "peer-cert-allowed-cn needs peer mTLS"),
    ({"peer_cert_match_address": True}, "peer-cert-match-address needs peer mTLS"),
])
def test_inconsistent_tls_settings_are_refused(flags: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, flags, environ={})


def test_tls_settings_come_from_env_and_config_file(tmp_path: Path, certs: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text(f'cert-file = "{certs / "server.pem"}"\n'
                    f'key-file = "{certs / "server-key.pem"}"\n'
                    f'trusted-ca-file = "{certs / "ca.pem"}"\nclient-cert-auth = true\n')
    cfg = load_config(toml, {}, environ={"CONFER_PEER_CERT_ALLOWED_CN": "a, b",
                                         "CONFER_PEER_CERT_FILE": "p.pem",
                                         "CONFER_PEER_KEY_FILE": "pk.pem",
                                         "CONFER_PEER_TRUSTED_CA_FILE": "ca.pem"})
    assert cfg.client_tls == TlsFiles(str(certs / "server.pem"), str(certs / "server-key.pem"),
                                      str(certs / "ca.pem"), True)
    assert cfg.peer_tls is not None and cfg.peer_tls.verify_clients
    assert cfg.allowed_peer_cns == ("a", "b")
    assert load_config(None, {}, environ={}).client_tls is None


def test_usable_files_load(certs: Path) -> None:
    pems = load_pems(TlsFiles(str(certs / "peer.pem"), str(certs / "peer-key.pem"),
                              str(certs / "ca.pem")))
    assert pems.ca == (certs / "ca.pem").read_bytes()
    assert pems.not_after > datetime.datetime.now(datetime.UTC)


def test_unusable_files_are_named(certs: Path, tmp_path: Path) -> None:
    def refusal(cert: Path, key: Path, ca: Path | None = None) -> str:
        with pytest.raises(TlsError) as e:
            load_pems(TlsFiles(str(cert), str(key), str(ca or "")), "peer-")
        return str(e.value)

    missing = tmp_path / "missing.pem"
    assert refusal(missing, certs / "server-key.pem") == \
        f"peer-cert-file {missing}: No such file or directory"
    assert "does not match the certificate" in refusal(certs / "server.pem",
                                                        certs / "peer-key.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    assert refusal(junk, certs / "server-key.pem").endswith("not a PEM certificate")
    assert "not an unencrypted PEM private key" in refusal(certs / "server.pem", junk)
    assert "peer-trusted-ca-file" in refusal(certs / "server.pem", certs / "server-key.pem",
                                             junk)
    now = datetime.datetime.now(datetime.UTC)
    old = issue(load_ca(certs), "old", not_before=now - datetime.timedelta(days=3),
                not_after=now - datetime.timedelta(days=1))
    old.write(tmp_path / "old.pem", tmp_path / "old-key.pem")
    assert "the certificate expired on" in refusal(tmp_path / "old.pem",
                                                   tmp_path / "old-key.pem")
    early = issue(load_ca(certs), "early", not_before=now + datetime.timedelta(days=1))
    early.write(tmp_path / "early.pem", tmp_path / "early-key.pem")
    assert "not valid before" in refusal(tmp_path / "early.pem", tmp_path / "early-key.pem")


def test_serve_refuses_a_mismatched_key_in_one_line_and_touches_nothing(
        certs: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, "-m", "confer", "serve", "--data-dir", str(data),
         "--listen-client", "127.0.0.1:0", "--listen-peer", "127.0.0.1:0",
         "--cert-file", str(certs / "server.pem"), "--key-file", str(certs / "client-key.pem")],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"cannot start with TLS: key-file {certs / 'client-key.pem'} does not match the "
        f"certificate in cert-file {certs / 'server.pem'}"]
    assert not data.exists()


def test_etcd_member_urls_show_and_take_https() -> None:
    from confer.server.etcd.cluster import addr_of, member_to_etcd
    from confer.server.members import Member

    assert addr_of(["https://127.0.0.1:7380"]) == addr_of(["http://127.0.0.1:7380"])
    m = member_to_etcd(Member(1, "a", "127.0.0.1:7380", "127.0.0.1:7379"), True, False)
    assert list(m.peerURLs) == ["https://127.0.0.1:7380"]
    assert list(m.clientURLs) == ["http://127.0.0.1:7379"]


def test_peer_identity_by_common_name() -> None:
    auth = {"x509_common_name": [b"confer-peer"], "transport_security_type": [b"ssl"]}
    assert identity_refusal(auth, ()) is None
    assert identity_refusal(auth, ("confer-peer",)) is None
    assert identity_refusal(auth, ("other", "confer-peer")) is None
    why = identity_refusal({"x509_common_name": [b"intruder"]}, ("confer-peer",))
    assert why is not None and "'intruder' is not an allowed peer name" in why
    why = identity_refusal({"transport_security_type": [b"insecure"]}, ("confer-peer",))
    assert why == "the peer presented no certificate with a common name"


def test_peer_identity_by_advertised_address() -> None:
    auth = {"x509_subject_alternative_name": [b"127.0.0.1", b"::1", b"node2.example"]}
    assert address_refusal(auth, 2, "127.0.0.1:7380") is None
    assert address_refusal(auth, 2, "[0:0::1]:7380") is None
    assert address_refusal(auth, 2, "NODE2.example:7380") is None
    assert address_refusal(auth, 2, None) is None  # not known here yet
    assert address_refusal(auth, 3, "10.0.0.3:7380") == (
        "the peer certificate is not valid for member 3's peer address 10.0.0.3:7380 "
        "(its names: 127.0.0.1, ::1, node2.example)")
    assert "(its names: none)" in (address_refusal({}, 3, "h:1") or "")


def test_client_tls_arguments(certs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("CONFER_CACERT", "CONFER_CERT", "CONFER_KEY"):
        monkeypatch.delenv(var, raising=False)
    assert tls_credentials(["a:1", "http://b:2/"], None, None, None) == (("a:1", "b:2"), None)
    targets, creds = tls_credentials(["https://a:1", "https://b:2"], None, None, None)
    assert targets == ("a:1", "b:2") and creds is not None
    with pytest.raises(InvalidArgument, match="mix https:// and plaintext"):
        tls_credentials(["https://a:1", "b:2"], None, None, None)
    targets, creds = tls_credentials(["a:1"], str(certs / "ca.pem"), None, None)
    assert creds is not None
    with pytest.raises(InvalidArgument, match="http:// endpoints are plaintext"):
        tls_credentials(["http://a:1"], str(certs / "ca.pem"), None, None)
    with pytest.raises(InvalidArgument, match="needs both cert and key"):
        tls_credentials(["a:1"], None, str(certs / "client.pem"), None)
    with pytest.raises(InvalidArgument, match="expected HOST:PORT, http://HOST:PORT or https://HOST:PORT"):
        tls_credentials(["unix://x"], None, None, None)
    with pytest.raises(InvalidArgument, match=r"^cacert /nonexistent.pem: No such file"):
        tls_credentials(["a:1"], "/nonexistent.pem", None, None)
    monkeypatch.setenv("CONFER_CACERT", str(certs / "ca.pem"))
    assert tls_credentials(["a:1"], None, None, None)[1] is not None


def test_tls_init_writes_private_keys_and_never_replaces(tmp_path: Path) -> None:
    d = tmp_path / "tls"
    result = CliRunner().invoke(cli, ["tls", "init", str(d), "--client-cn", "alice"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in d.iterdir()) == sorted(FILES)
    for name in FILES:
        mode = stat.S_IMODE(os.stat(d / name).st_mode)
        assert (mode == 0o600) == name.endswith("-key.pem"), (name, oct(mode))
    assert " ".join(server_flags(d)) in result.output
    from cryptography import x509

    client = x509.load_pem_x509_certificate((d / "client.pem").read_bytes())
    assert client.subject.rfc4514_string() == "CN=alice"
    sans = client.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(n) for n in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    before = (d / "ca-key.pem").read_bytes()
    again = CliRunner().invoke(cli, ["tls", "init", str(d)])
    assert again.exit_code == 1 and "exists; not replacing certificates" in again.output
    assert (d / "ca-key.pem").read_bytes() == before


def test_a_new_ca_signs_what_it_issues() -> None:
    ca = new_ca()
    leaf = issue(ca, "x", names=["example.test"])
    leaf.cert.verify_directly_issued_by(ca.cert)
