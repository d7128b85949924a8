"""Leases in the state machine: grant, revoke, the put-with-lease check, snapshots.

The store only keeps lease ids and TTLs; deadlines and expiry belong to the leader
(``confer.server.leases``), which proposes a ``LeaseRevoke`` when a lease expires.
"""

from __future__ import annotations

import msgpack
import pytest

from confer.kv import (
    MAX_LEASE_TTL,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRange,
    ErrorCode,
    ErrorResult,
    Event,
    EventType,
    InvalidArgument,
    KeyValue,
    KVStore,
    LeaseExists,
    LeaseGrant,
    LeaseGrantResult,
    LeaseInfo,
    LeaseNotFound,
    LeaseRevoke,
    LeaseRevokeResult,
    Put,
    PutResult,
    Txn,
    TxnResult,
    decode_command,
    encode_command,
    validate_command,
)
from confer.raft.types import Entry


def grant(store: KVStore, ttl: int = 10, lease: int = 0) -> int:
    result = store.execute(LeaseGrant(ttl, lease))
    assert isinstance(result, LeaseGrantResult), result
    return result.id


def error(result: object, code: ErrorCode) -> ErrorResult:
    assert isinstance(result, ErrorResult) and result.code == code, result
    return result


def test_grant_with_id_zero_picks_fresh_ids_deterministically() -> None:
    a, b = KVStore(), KVStore()
    for store in (a, b):
        assert grant(store, 5, 2) == 2  # a caller-chosen id
        assert [grant(store) for _ in range(3)] == [1, 3, 4]  # 2 is in use: skipped
        store.execute(LeaseRevoke(3))
        assert grant(store) == 5  # never the same id twice, even after a revoke
    assert a.leases() == b.leases() == [LeaseInfo(1, 10), LeaseInfo(2, 5), LeaseInfo(4, 10),
                                        LeaseInfo(5, 10)]
    assert a.snapshot() == b.snapshot()


def test_a_grant_takes_no_revision_and_reports_id_and_ttl() -> None:
    store = KVStore()
    result = store.execute(LeaseGrant(30, 0x1F))
    assert result == LeaseGrantResult(1, 0x1F, 30)
    assert store.revision == 1 and store.lease_ttl(0x1F) == 30 and store.lease_ttl(7) is None


def test_granting_an_existing_id_fails() -> None:
    store = KVStore()
    grant(store, 10, 7)
    result = error(store.execute(LeaseGrant(20, 7)), ErrorCode.LEASE_EXISTS)
    assert "lease already exists" in result.message and "0x7" in result.message
    assert isinstance(result.to_exception(), LeaseExists)
    assert store.lease_ttl(7) == 10


@pytest.mark.parametrize("cmd", [LeaseGrant(0), LeaseGrant(-5), LeaseGrant(MAX_LEASE_TTL + 1),
                                 LeaseGrant(10, -1), LeaseGrant(10, 1 << 63), LeaseRevoke(0),
                                 LeaseRevoke(-3)])
def test_bad_lease_commands_are_refused_before_and_at_apply(cmd: object) -> None:
    with pytest.raises(InvalidArgument):
        validate_command(cmd)  # type: ignore[arg-type]
    store = KVStore()
    error(store.execute(cmd), ErrorCode.INVALID_ARGUMENT)  # type: ignore[arg-type]
    assert store.leases() == []


def test_put_with_an_unknown_lease_fails_and_changes_nothing() -> None:
    store = KVStore()
    result = error(store.execute(Put(b"/a", b"v", lease=42)), ErrorCode.LEASE_NOT_FOUND)
    assert "etcdserver: requested lease not found" in result.message
    assert "42" in result.message
    assert isinstance(result.to_exception(), LeaseNotFound)
    assert store.revision == 1 and len(store) == 0
    lease = grant(store)
    assert isinstance(store.execute(Put(b"/a", b"v", lease=lease)), PutResult)
    assert store.get(b"/a").lease == lease  # type: ignore[union-attr]


def test_a_txn_that_puts_with_an_unknown_lease_fails_whole() -> None:
    store = KVStore()
    store.execute(Put(b"/x", b"1"))
    txn = Txn([Compare(b"/x", b"", CompareTarget.VALUE, CompareResult.EQUAL, b"1")],
              [Put(b"/a", b"v"), Put(b"/b", b"v", lease=9)], [])
    error(store.execute(txn), ErrorCode.LEASE_NOT_FOUND)
    assert store.revision == 2 and store.get(b"/a") is None
    # The failure branch is not checked when it is not taken.
    txn = Txn([], [Put(b"/a", b"v")], [Put(b"/b", b"v", lease=9)])
    assert isinstance(store.execute(txn), TxnResult)


def test_revoke_deletes_every_attached_key_in_one_revision() -> None:
    store = KVStore()
    lease, other = grant(store), grant(store)
    seen: list[tuple[Event, ...]] = []
    store.add_listener(seen.append)
    store.execute(Put(b"/s/b", b"2", lease=lease))  # 2
    store.execute(Put(b"/s/a", b"1", lease=lease))  # 3
    store.execute(Put(b"/s/c", b"3", lease=other))  # 4
    store.execute(Put(b"/s/d", b"4", lease=lease))  # 5
    store.execute(Put(b"/s/d", b"5"))  # 6: detached from the lease
    seen.clear()
    result = store.execute(LeaseRevoke(lease))
    assert result == LeaseRevokeResult(7, [b"/s/a", b"/s/b"])
    assert store.revision == 7 and store.lease_ttl(lease) is None
    assert [kv.key for kv in store.range(b"/s/", b"/s0").kvs] == [b"/s/c", b"/s/d"]
    assert len(seen) == 1  # one revision, pushed once
    assert [(e.type, e.kv) for e in seen[0]] == [
        (EventType.DELETE, KeyValue(b"/s/a", 0, 7, 0, b"", 0)),
        (EventType.DELETE, KeyValue(b"/s/b", 0, 7, 0, b"", 0))]
    assert store.events_at(7) == list(seen[0])
    assert store.lease_keys(lease) == []


def test_revoking_a_lease_without_keys_takes_no_revision() -> None:
    store = KVStore()
    lease = grant(store)
    store.execute(Put(b"/a", b"v"))
    assert store.execute(LeaseRevoke(lease)) == LeaseRevokeResult(2, [])
    assert store.revision == 2 and store.leases() == []


def test_revoking_an_unknown_lease_fails() -> None:
    store = KVStore()
    result = error(store.execute(LeaseRevoke(5)), ErrorCode.LEASE_NOT_FOUND)
    assert "requested lease not found" in result.message


def test_lease_listeners_hear_grants_and_revocations_after_the_deletes() -> None:
    store = KVStore()
    calls: list[object] = []
    store.add_listener(lambda events: calls.append([e.type for e in events]))
    store.add_lease_listener(lambda lease, ttl: calls.append((lease, ttl)))
    lease = grant(store, 15)
    store.execute(Put(b"/a", b"", lease=lease))
    store.execute(LeaseRevoke(lease))
    assert calls == [(lease, 15), [EventType.PUT], [EventType.DELETE], (lease, 0)]


def test_lease_commands_round_trip_and_apply_from_entries() -> None:
    for cmd in (LeaseGrant(10), LeaseGrant(MAX_LEASE_TTL, (1 << 63) - 1), LeaseRevoke(3)):
        assert decode_command(encode_command(cmd)) == cmd
    store = KVStore()
    result = store.apply(Entry(7, 1, encode_command(LeaseGrant(10, 3))))
    assert result == LeaseGrantResult(1, 3, 10) and store.applied_index == 7
    # Inside a transaction, or with the wrong shape, a lease command is a bad command.
    for raw in ([3, [], [[5, 0, 10]], []], [5, 1], [6, 1, 2], [5, 1, b"10"]):
        result = store.apply(Entry(8, 1, b"\x01" + msgpack.packb(raw)))
        error(result, ErrorCode.BAD_COMMAND)
    assert store.leases() == [LeaseInfo(3, 10)]


def test_snapshot_keeps_leases_and_the_id_counter() -> None:
    a = KVStore()
    lease = grant(a, 20)
    grant(a, 30, 100)
    a.execute(Put(b"/k", b"v", lease=lease))
    b = KVStore()
    b.restore(a.snapshot())
    assert b.leases() == a.leases() == [LeaseInfo(1, 20), LeaseInfo(100, 30)]
    assert b.lease_keys(lease) == [b"/k"]
    assert grant(b) == grant(a) == 2
    assert b.snapshot() == a.snapshot()
    b.execute(LeaseRevoke(lease))
    assert b.get(b"/k") is None


def v1_snapshot(store: KVStore) -> bytes:
    """What the previous version wrote: no lease table."""
    body = msgpack.unpackb(store.snapshot()[1:])
    return b"\x01" + msgpack.packb(body[:6])


def test_a_version_1_snapshot_is_still_read() -> None:
    old = KVStore()
    old.execute(Put(b"/a", b"1"))
    old.execute(DeleteRange(b"/a"))
    old.execute(Put(b"/b", b"2"))
    restored = KVStore()
    restored.restore(v1_snapshot(old))
    assert restored.revision == 4 and restored.get(b"/b").value == b"2"  # type: ignore[union-attr]
    assert restored.events_since(2) == old.events_since(2)
    assert restored.leases() == [] and grant(restored) == 1
    # A key attached to a lease that was never granted (possible before leases existed) stays
    # attached to it; revoking it reports the lease as unknown.
    body = msgpack.unpackb(old.snapshot()[1:])
    keys, histories = body[3], body[4]
    histories[keys.index(b"/b")][4] = 77  # the lease of /b's only version
    restored.restore(b"\x01" + msgpack.packb(body[:6]))
    assert restored.lease_keys(77) == [b"/b"]
    error(restored.execute(LeaseRevoke(77)), ErrorCode.LEASE_NOT_FOUND)
    assert restored.snapshot()[0] == 4  # written in the current version
