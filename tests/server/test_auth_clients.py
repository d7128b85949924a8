"""Both Python clients with ``user=``/``password=`` against a real node with authentication
enabled: permissions on the native API, user and role management, watch cancellation on
revoke, and a token that expires being replaced without the caller noticing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

import confer
import confer.aio
from confer.client import PermissionDenied, Unauthenticated
from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.v1 import confer_pb2, confer_pb2_grpc
from testing import ProcessCluster, free_port

TOKEN_TTL = 2
"""Seconds a token lives unused on this test's node (--auth-token-ttl)."""


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    with ProcessCluster(1, tmp_path_factory.mktemp("auth-clients"), extra_args=[
            "--bcrypt-cost", "4", "--auth-token-ttl", str(TOKEN_TTL)]) as c:
        c.leader()
        with confer.Client(c.endpoints, user="root", password="rootpw") as root:
            # Before auth is enabled the client sends no token (as etcd's clients).
            root.user_add("root", "rootpw")
            root.user_grant_role("root", "root")
            root.role_add("reader")
            root.role_grant_permission("reader", "read", "/app")
            root.role_grant_permission("reader", "read", "/app/", prefix=True)
            root.user_add("alice", "alicepw")
            root.user_grant_role("alice", "reader")
            root.put("/app/x", b"1")
            root.put("/other", b"2")
            root.auth_enable()
            # The same client authenticates from now on.
            assert root.auth_status().enabled
            assert root.user_get("alice") == ("reader",)
        yield c.endpoints


def test_the_sync_client_is_held_to_its_roles(endpoints: list[str]) -> None:
    with (confer.Client(endpoints) as anonymous,
          pytest.raises(PermissionDenied, match="user name is empty")):
        anonymous.get("/app/x")
    with (confer.Client(endpoints, user="alice", password="nope") as wrong,
          pytest.raises(confer.client.InvalidArgument, match="authentication failed")):
        wrong.get("/app/x")
    with confer.Client(endpoints, user="alice", password="alicepw") as alice:
        assert alice.get("/app/x").value == b"1"  # type: ignore[union-attr]
        assert [kv.path for kv in alice.list("/app", recursive=True).kvs] == ["/app/x"]
        with pytest.raises(PermissionDenied, match="permission denied"):
            alice.put("/app/x", b"2")
        with pytest.raises(PermissionDenied):
            alice.get("/other")
        with pytest.raises(PermissionDenied):
            alice.member_add("127.0.0.1:1", learner=True)
        with pytest.raises(PermissionDenied):
            alice.user_list()
    with confer.Client(endpoints, user="root", password="rootpw") as root:
        added = root.member_add("127.0.0.1:1", learner=True)
        root.member_remove(added.member.id)


def test_an_expired_token_is_replaced_transparently(endpoints: list[str]) -> None:
    with confer.Client(endpoints, user="alice", password="alicepw") as alice:
        assert alice.get("/app/x").value == b"1"  # type: ignore[union-attr]
        token = alice._io.credentials.token
        time.sleep(TOKEN_TTL + 1)  # unused for longer than its TTL: the server forgot it
        assert alice.get("/app/x").value == b"1"  # type: ignore[union-attr]
        assert alice._io.credentials.token not in (None, token)


def test_the_asyncio_client_too(endpoints: list[str]) -> None:
    async def main() -> None:
        async with confer.aio.Client(endpoints, user="alice", password="alicepw") as alice:
            assert (await alice.get("/app/x")).value == b"1"  # type: ignore[union-attr]
            with pytest.raises(PermissionDenied):
                await alice.put("/app/x", b"2")
            await asyncio.sleep(TOKEN_TTL + 1)
            assert (await alice.get("/app/x")).value == b"1"  # type: ignore[union-attr]
        async with confer.aio.Client(endpoints, user="ghost", password="x") as ghost:
            with pytest.raises(confer.client.InvalidArgument):
                await ghost.get("/app/x")

    asyncio.run(main())


def test_revoking_the_role_cancels_the_users_watch(endpoints: list[str]) -> None:
    with confer.Client(endpoints, user="root", password="rootpw") as root, \
            confer.Client(endpoints, user="alice", password="alicepw") as alice:
        rev = root.put("/app/w", b"1").revision
        watch = alice.watch("/app", recursive=True, start_revision=rev)
        events = iter(watch)
        assert next(events).kv.path == "/app/w"
        root.user_revoke_role("alice", "reader")
        try:
            with pytest.raises(PermissionDenied, match="permission denied"):
                next(events)
        finally:
            watch.cancel()
            root.user_grant_role("alice", "reader")
        with pytest.raises(PermissionDenied):  # a watch it may not read: refused at once
            alice.watch("/other")


def test_unauthenticated_is_a_permission_error() -> None:
    assert issubclass(Unauthenticated, PermissionDenied)


def test_the_original_confer_service_is_guarded_too(endpoints: list[str]) -> None:
    with grpc.insecure_channel(endpoints[0]) as ch:
        token = rpc_pb2_grpc.AuthStub(ch).Authenticate(
            rpc_pb2.AuthenticateRequest(name="alice", password="alicepw"), timeout=10).token
        legacy = confer_pb2_grpc.ConferServiceStub(ch)
        alice = [("token", token)]

        def code(call: Any, request: Any, metadata: Any = ()) -> grpc.StatusCode:
            with pytest.raises(grpc.RpcError) as e:
                call(request, metadata=metadata, timeout=10)
            return e.value.code()  # type: ignore[no-any-return]

        path = confer_pb2.ConfigPath(path="/app/x")
        assert code(legacy.Get, path) == grpc.StatusCode.UNAUTHENTICATED  # no user
        assert legacy.Get(path, metadata=alice, timeout=10).value == b"1"
        assert code(legacy.Set, confer_pb2.SetConfigRequest(
            path=path, value=confer_pb2.ConfigValue(value=b"2")), alice) == (
            grpc.StatusCode.PERMISSION_DENIED)
        assert code(legacy.Get, confer_pb2.ConfigPath(path="/other"), alice) == (
            grpc.StatusCode.PERMISSION_DENIED)
        # Membership: root only, even a no-op (the learner is a member already).
        assert code(legacy.AddLearner, confer_pb2.AddLearnerRequest(
            node=confer_pb2.Node(node_id=1, addr=endpoints[0])), alice) == (
            grpc.StatusCode.PERMISSION_DENIED)
        assert code(legacy.ChangeMembership, confer_pb2.ChangeMembershipRequest(members=[1]),
                    alice) == grpc.StatusCode.PERMISSION_DENIED
        # Defragment (etcd's maintenance): root only.
        maintenance = rpc_pb2_grpc.MaintenanceStub(ch)
        assert code(maintenance.Defragment, rpc_pb2.DefragmentRequest(), alice) == (
            grpc.StatusCode.PERMISSION_DENIED)


def test_status_and_member_list_need_no_user_and_keyless_requests_do(endpoints: list[str]
                                                                     ) -> None:
    # etcd answers MemberList and Status to anyone (health checks call them); a request
    # that names no key still needs a user, as etcd checks the user of every request.
    with grpc.insecure_channel(endpoints[0]) as ch:
        assert rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(),
                                                        timeout=10).leader
        assert len(rpc_pb2_grpc.ClusterStub(ch).MemberList(rpc_pb2.MemberListRequest(),
                                                           timeout=10).members) == 1
        kv = rpc_pb2_grpc.KVStub(ch)
        for call, request in ((kv.Txn, rpc_pb2.TxnRequest()),
                              (kv.Txn, rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(
                                  request_txn=rpc_pb2.TxnRequest())])),
                              (kv.Range, rpc_pb2.RangeRequest(key=b"/b", range_end=b"/a"))):
            with pytest.raises(grpc.RpcError) as e:
                call(request, timeout=10)
            assert e.value.details() == "etcdserver: user name is empty", request
    with confer.Client(endpoints) as anonymous:
        assert anonymous.status().leader_id
        assert [m.id for m in anonymous.member_list()] == [1]


def test_a_dead_first_endpoint_does_not_stop_authentication(endpoints: list[str]) -> None:
    """Authenticating through a member that does not answer is a failure of that member, as
    any call's: the client goes on to the next endpoint instead of giving up."""
    dead = f"127.0.0.1:{free_port()}"
    with confer.Client([dead, *endpoints], user="alice", password="alicepw") as alice:
        assert alice.get("/app/x").value == b"1"  # type: ignore[union-attr]


def test_a_dead_first_endpoint_does_not_stop_the_asyncio_clients_either(
        endpoints: list[str]) -> None:
    dead = f"127.0.0.1:{free_port()}"

    async def main() -> None:
        async with confer.aio.Client([dead, *endpoints], user="alice",
                                     password="alicepw") as alice:
            assert (await alice.get("/app/x")).value == b"1"  # type: ignore[union-attr]

    asyncio.run(main())
