"""An app's members in operation: the clients' errors, snapshots sent to a lagging member,
an upgrade that stops older code, a snapshot that fails to restore."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import msgpack
import pytest

import confer
from confer.client import InvalidArgument, PermissionDenied, Unauthenticated, Unavailable
from confer.replicated import (
    AppClient,
    AsyncAppClient,
    CannotStart,
    CommandError,
    Member,
    StateMachine,
)
from confer.replicated.machine import command
from confer.v1 import app_pb2, app_pb2_grpc
from testing.procs import free_port
from tests.replicated.apps import Register, RegisterV2, RegisterV2Pinned


class Group:
    """Founding members of one cluster, each of its own class (code version)."""

    def __init__(self, tmp_path: Path, classes: list[type[StateMachine]], **settings: Any
                 ) -> None:
        self.peers = {i: f"127.0.0.1:{free_port()}" for i in range(1, len(classes) + 1)}
        self.initial = ",".join(f"{i}={addr}" for i, addr in self.peers.items())
        self.tmp_path = tmp_path
        self.settings = {"tick_ms": 20, "listen_metrics": "none", **settings}
        self.members = [self.member(i, cls) for i, cls in enumerate(classes, 1)]

    def member(self, i: int, cls: type[StateMachine]) -> Member[Any]:
        return Member(cls, node_id=i, data_dir=self.tmp_path / f"m{i}",
                      listen_peer=self.peers[i], listen_client=f"127.0.0.1:{free_port()}",
                      initial_cluster=self.initial, **self.settings)

    async def leader(self, among: list[Member[Any]] | None = None) -> Member[Any]:
        async with asyncio.timeout(20):
            while True:
                leaders = [m for m in among or self.members if m.is_leader]
                if len(leaders) == 1:
                    return leaders[0]
                await asyncio.sleep(0.02)


def test_clients_check_arguments_and_raise_the_commands_errors(tmp_path: Path) -> None:
    async def main() -> None:
        g = Group(tmp_path, [Register])
        (m,) = g.members
        async with m:
            await g.leader()
            endpoints = [m.client_address]
            async with AsyncAppClient(Register, endpoints) as client:
                assert await client.set("a", 1) is None
                assert await client.add("a") == 2
                with pytest.raises(KeyError) as info:
                    await client.add("missing")
                assert isinstance(info.value, CommandError)
                assert await client.get("a") == 2
                assert await client.call("size", serializable=True) == 1
                with pytest.raises(TypeError, match="must be int, not str"):
                    await client.set("a", "b")  # refused here: nothing was sent
            # A client that names another app, or a method the member's class lacks, is
            # refused by the member with INVALID_ARGUMENT naming the rule.
            class Other(StateMachine):
                @command
                def set(self, key: str, value: int) -> None: ...

            class Register2(Register):
                @command
                def extra(self) -> None: ...

            Register2.__name__ = "Register"

            def sync_calls() -> None:
                with AppClient(Other, endpoints) as other, pytest.raises(
                        InvalidArgument, match="runs app 'Register', not 'Other'"):
                    other.set("a", 1)
                with AppClient(Register2, endpoints) as newer:
                    with pytest.raises(InvalidArgument, match="has no command 'extra'"):
                        newer.extra()
                    assert newer.get("a") == 2

            await asyncio.to_thread(sync_calls)
            # Any gRPC client can call an app: what it runs, then a call in msgpack.
            async with grpc.aio.insecure_channel(m.client_address) as channel:
                stub = app_pb2_grpc.AppStub(channel)
                about = await stub.Describe(app_pb2.DescribeRequest())
                assert (about.app, about.version) == ("Register", 1)
                assert list(about.commands) == ["add", "set", "stamp"]
                assert list(about.queries) == ["get", "size"]
                failed = await stub.Command(app_pb2.AppCall(
                    app="Register", method="add", arguments=msgpack.packb([["zz"], {}])))
                assert failed.error_type == "KeyError" and failed.header.member_id == 1
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Query(app_pb2.AppCall(app="Register", method="get",
                                                     arguments=b"\xc1"))
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "do not decode" in (info.value.details() or "")

    asyncio.run(main())


def test_a_lagging_member_catches_up_from_a_snapshot_with_the_app(tmp_path: Path) -> None:
    async def main() -> None:
        g = Group(tmp_path, [Register] * 3, snapshot_every=5, snapshot_catchup_entries=0)
        for m in g.members:
            await m.start()
        try:
            leader = await g.leader()
            await leader.set("x", 0)
            lagging = next(m for m in g.members if m is not leader)
            await lagging.stop()
            for i in range(30):
                await leader.add("x", i)
            again = g.member(lagging.node_id, Register)
            g.members[g.members.index(lagging)] = again
            await again.start()
            async with asyncio.timeout(20):
                while again.state.values.get("x") != sum(range(30)):
                    await asyncio.sleep(0.05)
            assert again.state.values == leader.state.values
            assert again.server.storage is not None  # it received the leader's snapshot:
            assert again.server.storage.snapshot().meta.index > 5
        finally:
            for m in g.members:
                await m.stop()

    asyncio.run(main())


def test_a_rolling_upgrade_and_an_older_member_stopping_at_a_newer_entry(tmp_path: Path
                                                                         ) -> None:
    async def main() -> None:
        g = Group(tmp_path, [RegisterV2Pinned, RegisterV2Pinned, Register])
        for m in g.members:
            await m.start()
        old = g.members[2]
        try:
            await g.leader()
            # Step 1: upgraded code pinned to the old version: the old member applies it.
            await g.members[0].set("a", 1)
            async with asyncio.timeout(20):
                while old.state.values != {"a": 1}:
                    await asyncio.sleep(0.02)
            assert old.failure is None
            # Step 2 begun: a member restarted unpinned writes version 2 entries, which the
            # member still on the old code refuses: it stops, saying why.
            await g.members[0].stop()
            g.members[0] = upgraded = g.member(1, RegisterV2)
            await upgraded.start()
            await upgraded.set("b", 2)  # written as version 2, whoever leads
            async with asyncio.timeout(20):
                await old.stopped.wait()
            assert old.failure is not None
            assert "written by Register version 2; this member runs version 1" in old.failure
            await g.leader(g.members[:2])  # the upgraded members carry on
            assert await upgraded.get("a") == 1
        finally:
            for m in g.members:
                await m.stop()

    asyncio.run(main())


class Unrestorable(Register):
    def restore(self, data: bytes) -> None:
        raise RuntimeError("cannot read this")


Unrestorable.__name__ = "Register"


def test_a_snapshot_that_fails_to_restore_stops_the_start(tmp_path: Path) -> None:
    async def main() -> None:
        g = Group(tmp_path, [Register], snapshot_every=3)
        (m,) = g.members
        async with m:
            await g.leader()
            for i in range(10):
                await m.set("k", i)
        broken = g.member(1, Unrestorable)
        with pytest.raises(CannotStart, match=r"cannot recover this member's state \(ValueError: "
                                             r"Register.restore\(\) failed .* cannot read this"):
            await broken.start()

    asyncio.run(main())


def test_authentication_guards_app_calls_by_their_apps_keys(tmp_path: Path) -> None:
    async def main() -> None:
        g = Group(tmp_path, [Register])
        (m,) = g.members
        async with m:
            await g.leader()

            def calls() -> None:
                endpoints = [m.client_address]
                with confer.Client(endpoints, user="root", password="rootpw") as root:
                    root.user_add("root", "rootpw")
                    root.user_grant_role("root", "root")
                    root.role_add("reader")
                    root.role_grant_permission("reader", "read", "/apps/Register/", prefix=True)
                    root.user_add("alice", "alicepw")
                    root.user_grant_role("alice", "reader")
                    root.auth_enable()
                with AppClient(Register, endpoints, user="root", password="rootpw") as admin:
                    admin.set("a", 1)
                with AppClient(Register, endpoints, user="alice", password="alicepw") as alice:
                    assert alice.get("a") == 1  # a query reads /apps/Register/get
                    with pytest.raises(PermissionDenied):
                        alice.set("a", 2)  # a command writes /apps/Register/set
                with AppClient(Register, endpoints) as anonymous, pytest.raises(
                        Unauthenticated):
                    anonymous.get("a")

            await asyncio.to_thread(calls)
            assert m.state.values == {"a": 1}

    asyncio.run(main())


def test_an_app_over_mutual_tls_on_both_ports(tmp_path: Path, certs: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("CONFER_CACERT", "CONFER_CERT", "CONFER_KEY"):
        monkeypatch.delenv(var, raising=False)
    tls = {"cert_file": str(certs / "server.pem"), "key_file": str(certs / "server-key.pem"),
           "trusted_ca_file": str(certs / "ca.pem"),
           "peer_cert_file": str(certs / "peer.pem"),
           "peer_key_file": str(certs / "peer-key.pem"),
           "peer_trusted_ca_file": str(certs / "ca.pem")}
    files = {"cacert": str(certs / "ca.pem"), "cert": str(certs / "client.pem"),
             "key": str(certs / "client-key.pem")}

    async def main() -> None:
        g = Group(tmp_path, [Register] * 3, **tls)
        for m in g.members:
            await m.start()
        try:
            await g.leader()
            endpoints = [m.client_address for m in g.members]
            async with AsyncAppClient(Register, endpoints, **files) as client:
                assert await client.set("a", 1) is None  # replicated over the peers' TLS
                assert await client.get("a") == 1
            async with AsyncAppClient(Register, endpoints, cacert=files["cacert"],
                                      timeout=2) as anonymous:
                with pytest.raises(Unavailable):  # no client certificate: not admitted
                    await anonymous.get("a")
        finally:
            for m in g.members:
                await m.stop()

    asyncio.run(main())


def test_a_received_snapshot_that_fails_to_restore_stops_the_member(tmp_path: Path) -> None:
    async def main() -> None:
        g = Group(tmp_path, [Register] * 3, snapshot_every=20, snapshot_catchup_entries=0)
        for m in g.members:
            await m.start()
        try:
            leader = await g.leader()
            lagging = next(m for m in g.members if m is not leader)
            await lagging.stop()  # before any snapshot: it will need the leader's
            for i in range(30):
                await leader.set("x", i)
            storage = leader.server.storage
            assert storage is not None
            async with asyncio.timeout(20):  # its snapshot written (in the background), the
                while storage.snapshot().meta.index == 0:  # log it would replay is gone
                    await asyncio.sleep(0.02)
            broken = g.member(lagging.node_id, Unrestorable)
            g.members[g.members.index(lagging)] = broken
            await broken.start()
            async with asyncio.timeout(20):
                await broken.stopped.wait()
            assert broken.failure is not None
            assert "Register.restore() failed" in broken.failure
            assert "cannot read this" in broken.failure
        finally:
            for m in g.members:
                await m.stop()

    asyncio.run(main())
