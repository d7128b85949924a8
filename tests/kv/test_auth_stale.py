"""Exact revocation for writes: a command is stamped with the user and the auth revision its
permissions were checked at, and the store checks it again when it applies it if the auth
state moved since (etcd's ``AuthRevision`` in the request header). Driven with two entries:
the write, checked before a revocation, applied after it."""

from __future__ import annotations

import msgpack
import pytest

from confer.envelope import EntryKind, kind_of
from confer.kv import (
    AuthAction,
    AuthChange,
    AuthResult,
    Command,
    Compact,
    Compare,
    DeleteRange,
    ErrorCode,
    ErrorResult,
    KVStore,
    LeaseGrant,
    LeaseRevoke,
    PermType,
    Put,
    RangeOp,
    Txn,
    decode_command,
    encode_command,
    encode_command_as,
)
from confer.kv.commands import decode_command_as
from confer.raft.types import Entry

A = AuthAction


class Log:
    """A store fed entries one index after another, as Raft feeds it."""

    def __init__(self) -> None:
        self.store = KVStore()
        self.index = 0

    def apply(self, data: bytes) -> object:
        self.index += 1
        return self.store.apply(Entry(self.index, 1, data))

    def auth(self, action: AuthAction, name: str = "", **kw: object) -> None:
        result = self.apply(encode_command(AuthChange(action, name, **kw)))  # type: ignore[arg-type]
        assert isinstance(result, AuthResult), result

    def checked(self, cmd: Command, user: str) -> bytes:
        """``cmd`` as the request layer proposes it after checking ``user`` now."""
        return encode_command_as(cmd, user, self.store.auth_revision())


def enabled() -> Log:
    """root; alice with READWRITE on /app/ (role app) and on /b (role b); auth enabled."""
    log = Log()
    log.auth(A.USER_ADD, "root", secret=b"h")
    log.auth(A.USER_GRANT, "root", role="root")
    log.auth(A.ROLE_ADD, "app")
    log.auth(A.ROLE_GRANT, "app", perm=PermType.READWRITE, key=b"/app/", range_end=b"/app0")
    log.auth(A.ROLE_ADD, "b")
    log.auth(A.ROLE_GRANT, "b", perm=PermType.READWRITE, key=b"/b")
    log.auth(A.USER_ADD, "alice", secret=b"h")
    log.auth(A.USER_GRANT, "alice", role="app")
    log.auth(A.USER_GRANT, "alice", role="b")
    log.auth(A.ENABLE)
    return log


def state(store: KVStore) -> object:
    """Everything a write could change (a snapshot also holds the applied index)."""
    return (store.revision, store.range(b"\0", b"\0").kvs, store.leases(),
            [store.lease_keys(lease.id) for lease in store.leases()], store.auth_revision())


def refused(log: Log, data: bytes, code: ErrorCode = ErrorCode.PERMISSION_DENIED) -> str:
    before = state(log.store)
    result = log.apply(data)
    assert isinstance(result, ErrorResult), result
    assert result.code == code
    assert state(log.store) == before  # nothing changed
    return result.message


def test_a_put_checked_before_a_revoke_and_applied_after_it_is_refused() -> None:
    log = enabled()
    write = log.checked(Put(b"/app/x", b"1"), "alice")  # checked: alice may write /app/x
    log.auth(A.USER_REVOKE, "alice", role="app")  # committed first
    message = refused(log, write)
    assert message.startswith("etcdserver: permission denied")
    assert "alice" in message and "before the write was applied" in message
    assert log.store.get(b"/app/x") is None


def test_a_write_still_allowed_after_an_unrelated_change_applies() -> None:
    log = enabled()
    write = log.checked(Put(b"/app/x", b"1"), "alice")
    log.auth(A.ROLE_ADD, "other")  # the auth revision moves; alice keeps her permission
    assert not isinstance(log.apply(write), ErrorResult)
    assert log.store.get(b"/app/x").value == b"1"  # type: ignore[union-attr]


def test_a_write_whose_auth_revision_did_not_move_is_not_checked_again() -> None:
    # Checked at the current revision: the proposer's check stands (the hot path).
    log = enabled()
    assert not isinstance(log.apply(log.checked(Put(b"/elsewhere", b"1"), "alice")),
                          ErrorResult)


@pytest.mark.parametrize("cmd", [
    DeleteRange(b"/app/", b"/app0"),
    Txn([Compare(b"/app/x")], [], []),  # a compare reads
    Txn([], [RangeOp(b"/app/x")], []),  # a range reads
    Txn([], [Put(b"/b")], [Put(b"/app/y")]),  # the branch that would not run counts too
    Txn([], [Txn([], [], [DeleteRange(b"/app/z")])], []),  # nested
])
def test_every_key_of_every_write_kind_is_checked_again(cmd: Command) -> None:
    log = enabled()
    write = log.checked(cmd, "alice")
    log.auth(A.ROLE_REVOKE, "app", key=b"/app/", range_end=b"/app0")
    refused(log, write)


def test_a_lease_revoke_needs_write_on_the_keys_attached_when_it_applies() -> None:
    log = enabled()
    assert not isinstance(log.apply(log.checked(LeaseGrant(60, 7), "alice")), ErrorResult)
    assert not isinstance(log.apply(log.checked(Put(b"/app/x", b"1", lease=7), "alice")),
                          ErrorResult)
    revoke = log.checked(LeaseRevoke(7), "alice")
    log.auth(A.USER_REVOKE, "alice", role="app")
    refused(log, revoke)
    assert log.store.lease_keys(7) == [b"/app/x"]


def test_root_only_commands_and_deleted_users() -> None:
    log = enabled()
    log.apply(encode_command(Put(b"/k", b"1")))
    log.apply(encode_command(Put(b"/k", b"2")))
    compact = log.checked(Compact(2), "alice")
    by_root = log.checked(Compact(2), "root")
    grant = log.checked(LeaseGrant(60, 9), "alice")
    log.auth(A.ROLE_ADD, "other")
    refused(log, compact)  # alice never had the root role
    assert not isinstance(log.apply(by_root), ErrorResult)
    assert not isinstance(log.apply(grant), ErrorResult)  # any user may grant a lease
    write = log.checked(Put(b"/b", b"1"), "alice")
    log.auth(A.USER_DELETE, "alice")
    refused(log, write)


def test_a_write_checked_while_auth_was_off_is_refused_once_it_is_on() -> None:
    log = enabled()
    log.auth(A.DISABLE)
    write = log.checked(Put(b"/app/x", b"1"), "")  # no user: authentication is off
    token = log.checked(AuthChange(A.TOKEN, "alice", secret=b"x" * 40), "")
    log.auth(A.ENABLE)
    assert "user name is empty" in refused(log, write, ErrorCode.USER_EMPTY)
    assert isinstance(log.apply(token), AuthResult)  # Authenticate's record needs no user


def test_auth_disabled_before_the_write_applies_lets_it_through() -> None:
    log = enabled()
    write = log.checked(Put(b"/app/x", b"1"), "alice")
    log.auth(A.USER_REVOKE, "alice", role="app")
    log.auth(A.DISABLE)
    assert not isinstance(log.apply(write), ErrorResult)


def test_every_member_decides_alike() -> None:
    logs = [enabled(), enabled()]
    entries = [logs[0].checked(Put(b"/app/x", b"1"), "alice"),
               encode_command(AuthChange(A.ROLE_REVOKE, "app", key=b"/app/",
                                         range_end=b"/app0")),
               logs[0].checked(Put(b"/app/y", b"1"), "alice"),
               logs[0].checked(Put(b"/b", b"1"), "alice")]
    for log in logs:
        for data in entries:
            log.apply(data)
    assert logs[0].store.snapshot() == logs[1].store.snapshot()
    assert [kv.key for kv in logs[0].store.range(b"/", b"0").kvs] == [b"/app/x", b"/b"]


def test_the_stamped_format_and_old_entries() -> None:
    put = Put(b"/app/x", b"1", lease=0, prev_kv=True)
    data = encode_command_as(put, "alice", 12)
    assert kind_of(data) is EntryKind.KV_COMMAND_AS
    assert decode_command_as(data) == (put, ("alice", 12))
    assert decode_command(data) == put
    txn = Txn([Compare(b"/a")], [Put(b"/a")], [])
    assert decode_command_as(encode_command_as(txn, "", 1)) == (txn, ("", 1))
    # An entry written before stamps existed (KV_COMMAND, no stamp) still applies, auth on
    # or not, and its bytes are what they always were.
    log = enabled()
    old = encode_command(Put(b"/app/x", b"1"))
    assert kind_of(old) is EntryKind.KV_COMMAND and decode_command_as(old) == (
        Put(b"/app/x", b"1"), None)
    log.auth(A.USER_REVOKE, "alice", role="app")
    assert not isinstance(log.apply(old), ErrorResult)


@pytest.mark.parametrize("raw_tail", [[0, b"/k", b"v", 0, 0, "alice"],  # no revision
                                      [0, b"/k", b"v", 0, 0, b"alice", 3],  # user not a str
                                      [0, b"/k", b"v", 0, 0, "alice", "3"]])
def test_a_malformed_stamp_is_a_bad_command_that_changes_nothing(raw_tail: list[object]
                                                                  ) -> None:
    log = enabled()
    data = bytes((EntryKind.KV_COMMAND_AS,)) + msgpack.packb(raw_tail)
    refused(log, data, ErrorCode.BAD_COMMAND)
