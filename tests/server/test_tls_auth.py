"""Client-certificate authentication with auth enabled: a request without a token is the
user its certificate names (common name), as in etcd with ``--client-cert-auth``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import confer.aio
from confer.cli.tls import init_dir, issue, load_ca
from confer.client import PermissionDenied
from tests.server.test_tls_server import serving


def test_a_client_certificates_common_name_is_its_user(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("CONFER_CACERT", "CONFER_CERT", "CONFER_KEY", "CONFER_USER"):
        monkeypatch.delenv(var, raising=False)
    certs = tmp_path / "certs"
    init_dir(certs, client_cn="root")
    ca = load_ca(certs)
    for name in ("alice", "mallory"):
        issue(ca, name).write(certs / f"{name}.pem", certs / f"{name}-key.pem")
    asyncio.run(_common_name_is_the_user(tmp_path, certs))


async def _common_name_is_the_user(tmp_path: Path, certs: Path) -> None:
    async with serving(tmp_path, certs / "server.pem", certs / "server-key.pem",
                       certs / "ca.pem") as srv:

        def client(name: str) -> confer.aio.Client:
            cert = "client" if name == "root" else name
            return confer.aio.Client([f"127.0.0.1:{srv.client_port}"], timeout=5,
                                     cacert=str(certs / "ca.pem"),
                                     cert=str(certs / f"{cert}.pem"),
                                     key=str(certs / f"{cert}-key.pem"))

        async with client("root") as root:
            await root.user_add("root", "rootpw")
            await root.user_grant_role("root", "root")
            await root.role_add("reader")
            await root.role_grant_permission("reader", "read", "/app/", prefix=True)
            await root.user_add("alice", no_password=True)
            await root.user_grant_role("alice", "reader")
            await root.auth_enable()
            # No token: the certificate's common name, root, may write anything.
            await root.put("/app/x", b"1")
            await root.put("/other", b"2")
        async with client("alice") as alice:
            assert (await alice.get("/app/x")).value == b"1"  # type: ignore[union-attr]
            with pytest.raises(PermissionDenied):
                await alice.put("/app/x", b"changed")
            with pytest.raises(PermissionDenied):
                await alice.get("/other")
        async with client("mallory") as mallory:  # a valid certificate, but no such user
            with pytest.raises(PermissionDenied):
                await mallory.get("/app/x")
        async with client("root") as root:
            assert (await root.get("/app/x")).value == b"1"  # type: ignore[union-attr]
