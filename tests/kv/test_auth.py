"""The replicated auth state: users, roles, permissions, the enabled flag and their rules."""

from __future__ import annotations

import pytest

from confer.kv import (
    AuthAction,
    AuthChange,
    AuthResult,
    ErrorCode,
    ErrorResult,
    InvalidArgument,
    KVStore,
    PermType,
    Put,
    decode_command,
    encode_command,
    validate_command,
)
from confer.kv.auth import Permission
from confer.raft.types import Entry

A = AuthAction


def change(store: KVStore, action: AuthAction, name: str = "", **kw: object) -> AuthResult:
    result = store.execute(AuthChange(action, name, **kw))  # type: ignore[arg-type]
    assert isinstance(result, AuthResult), result
    return result


def refused(store: KVStore, action: AuthAction, name: str = "", **kw: object) -> str:
    before = store.snapshot()
    result = store.execute(AuthChange(action, name, **kw))  # type: ignore[arg-type]
    assert isinstance(result, ErrorResult), result
    assert store.snapshot() == before  # nothing changed
    return result.message


def populated() -> KVStore:
    s = KVStore()
    change(s, A.USER_ADD, "root", secret=b"$2b$04$roothash")
    change(s, A.USER_GRANT, "root", role="root")  # the root role needs no RoleAdd (etcd)
    change(s, A.ROLE_ADD, "app-reader")
    change(s, A.ROLE_GRANT, "app-reader", perm=PermType.READ, key=b"/app/", range_end=b"/app0")
    change(s, A.USER_ADD, "alice", secret=b"$2b$04$alicehash")
    change(s, A.USER_GRANT, "alice", role="app-reader")
    return s


def test_users_roles_and_permissions() -> None:
    s = populated()
    assert s.user_names() == ["alice", "root"] and s.role_names() == ["app-reader"]
    alice = s.user("alice")
    assert alice is not None and alice.roles == ["app-reader"]
    assert alice.password_hash == b"$2b$04$alicehash"
    assert s.user_permissions("alice") == [Permission(PermType.READ, b"/app/", b"/app0")]
    assert s.is_root("root") and not s.is_root("alice")
    # A grant on the same range replaces the type; another range adds a permission.
    change(s, A.ROLE_GRANT, "app-reader", perm=PermType.READWRITE, key=b"/app/",
           range_end=b"/app0")
    change(s, A.ROLE_GRANT, "app-reader", perm=PermType.WRITE, key=b"/log")
    assert s.role("app-reader") == [Permission(PermType.READWRITE, b"/app/", b"/app0"),
                                    Permission(PermType.WRITE, b"/log")]
    change(s, A.ROLE_REVOKE, "app-reader", key=b"/log")
    change(s, A.USER_REVOKE, "alice", role="app-reader")
    assert s.user_permissions("alice") == []
    change(s, A.USER_PASSWORD, "alice", secret=b"$2b$04$newhash")
    assert s.user("alice").password_hash == b"$2b$04$newhash"  # type: ignore[union-attr]


def test_every_change_bumps_the_auth_revision_and_no_ops_do_not() -> None:
    s = KVStore()
    assert s.auth_revision() == 1
    r = change(s, A.ROLE_ADD, "r")
    assert r.auth_revision == 2 and s.auth_revision() == 2
    assert change(s, A.DISABLE).auth_revision == 2  # already disabled
    change(s, A.USER_ADD, "u")
    change(s, A.USER_GRANT, "u", role="r")
    assert change(s, A.USER_GRANT, "u", role="r").auth_revision == 4  # granted already
    assert s.revision == 1  # no key revision taken


def test_etcd_errors_change_nothing() -> None:
    s = populated()
    assert refused(s, A.USER_ADD, "alice") == "etcdserver: user name already exists"
    assert refused(s, A.USER_DELETE, "bob") == "etcdserver: user name not found"
    assert refused(s, A.ROLE_ADD, "app-reader") == "etcdserver: role name already exists"
    assert refused(s, A.ROLE_DELETE, "nope") == "etcdserver: role name not found"
    assert refused(s, A.USER_GRANT, "alice", role="nope") == "etcdserver: role name not found"
    assert (refused(s, A.USER_REVOKE, "alice", role="root")
            == "etcdserver: role is not granted to the user")
    assert (refused(s, A.ROLE_REVOKE, "app-reader", key=b"/other")
            == "etcdserver: permission is not granted to the role")
    assert (refused(s, A.TOKEN, "alice", secret=b"d" * 32)
            == "etcdserver: authentication is not enabled")
    assert refused(s, A.USER_ADD, "") == "etcdserver: user name is empty"
    assert refused(s, A.ROLE_ADD, "") == "etcdserver: role name is empty"


def test_enable_needs_root_with_the_root_role_and_protects_it() -> None:
    s = KVStore()
    assert refused(s, A.ENABLE) == "etcdserver: root user does not exist"
    change(s, A.USER_ADD, "root")
    assert refused(s, A.ENABLE) == "etcdserver: root user does not have root role"
    change(s, A.USER_GRANT, "root", role="root")
    change(s, A.ROLE_ADD, "root")
    change(s, A.ENABLE)
    assert s.auth_enabled()
    bad = "etcdserver: invalid auth management"
    assert refused(s, A.USER_DELETE, "root") == bad
    assert refused(s, A.USER_REVOKE, "root", role="root") == bad
    assert refused(s, A.ROLE_DELETE, "root") == bad
    change(s, A.TOKEN, "root", secret=b"d" * 32)
    assert refused(s, A.TOKEN, "ghost", secret=b"d" * 32).startswith(
        "etcdserver: authentication failed")
    change(s, A.DISABLE)
    assert not s.auth_enabled()
    change(s, A.USER_DELETE, "root")


def test_deleting_a_role_revokes_it_from_every_user() -> None:
    s = populated()
    change(s, A.ROLE_DELETE, "app-reader")
    assert s.user("alice").roles == []  # type: ignore[union-attr]
    assert s.role("app-reader") is None
    # The root role answers as etcd's: every key.
    assert s.role("root") == [Permission(PermType.READWRITE, b"\0", b"\0")]


def test_listeners_see_each_applied_change_and_tokens() -> None:
    s = populated()
    seen: list[AuthChange] = []
    s.add_auth_listener(seen.append)
    change(s, A.ENABLE)
    change(s, A.TOKEN, "alice", secret=b"x" * 32)
    refused(s, A.USER_ADD, "alice")
    assert [c.action for c in seen] == [A.ENABLE, A.TOKEN]


def test_encoding_round_trips_through_apply() -> None:
    cmd = AuthChange(A.ROLE_GRANT, "r", perm=PermType.WRITE, key=b"/k", range_end=b"/l")
    assert decode_command(encode_command(cmd)) == cmd
    s = KVStore()
    change(s, A.ROLE_ADD, "r")
    assert isinstance(s.apply(Entry(1, 1, data=encode_command(cmd))), AuthResult)
    assert s.role("r") == [Permission(PermType.WRITE, b"/k", b"/l")]


@pytest.mark.parametrize("cmd", [
    AuthChange(A.USER_ADD, "u", secret="pw"),  # type: ignore[arg-type]  # a str password
    AuthChange(A.USER_ADD, "u", secret=b"x" * 200),  # longer than any hash
    AuthChange(A.USER_GRANT, "u"),  # no role
    AuthChange(A.ROLE_GRANT, "r"),  # no key
    AuthChange(A.USER_ADD, "u" * 300),
])
def test_invalid_changes_are_refused_before_proposing(cmd: AuthChange) -> None:
    with pytest.raises(InvalidArgument):
        validate_command(cmd)
    result = KVStore().execute(cmd)
    assert isinstance(result, ErrorResult) and result.code == ErrorCode.INVALID_ARGUMENT


def test_snapshot_round_trip_and_determinism() -> None:
    s = populated()
    change(s, A.ENABLE)
    s.execute(Put(b"/app/x", b"1"))
    data = s.snapshot()
    other = KVStore()
    other.restore(data)
    assert other.snapshot() == data
    assert other.auth_enabled() and other.auth_revision() == s.auth_revision()
    assert other.user("alice") == s.user("alice")
    assert other.role("app-reader") == s.role("app-reader")
    # The same changes in another order of users and roles give the same bytes.
    t = KVStore()
    change(t, A.ROLE_ADD, "app-reader")
    change(t, A.ROLE_GRANT, "app-reader", perm=PermType.READ, key=b"/app/", range_end=b"/app0")
    change(t, A.USER_ADD, "alice", secret=b"$2b$04$alicehash")
    change(t, A.USER_GRANT, "alice", role="app-reader")
    change(t, A.USER_ADD, "root", secret=b"$2b$04$roothash")
    change(t, A.USER_GRANT, "root", role="root")
    change(t, A.ENABLE)
    t.execute(Put(b"/app/x", b"1"))
    assert t.snapshot() == data
    # An empty restore resets the auth state.
    other.restore(b"")
    assert not other.auth_enabled() and other.user_names() == []
