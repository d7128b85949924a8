"""The store's side of the space quota: its size, measured the same on every member, and the
replicated alarm store that makes every member refuse the same writes while NOSPACE is on."""

from __future__ import annotations

import pytest

from confer.kv import (
    Alarm,
    AlarmAction,
    AlarmResult,
    AlarmType,
    Command,
    Compact,
    DeleteRange,
    ErrorCode,
    ErrorResult,
    InvalidArgument,
    KVStore,
    LeaseGrant,
    LeaseGrantResult,
    LeaseRevoke,
    Put,
    Result,
    Txn,
    decode_command,
    encode_command,
    validate_command,
)
from confer.kv.commands import needs_space
from confer.kv.state import VERSION_OVERHEAD
from confer.raft.types import Entry

NOSPACE = Alarm(AlarmAction.ACTIVATE, 7, AlarmType.NOSPACE)
DISARM = Alarm(AlarmAction.DEACTIVATE, 7, AlarmType.NOSPACE)


def apply_all(store: KVStore, *commands: Command) -> list[Result]:
    """Apply commands as Raft entries, as every member does."""
    return [store.apply(Entry(index=store.applied_index + 1, term=1, data=encode_command(cmd)))
            for cmd in commands]


def test_the_size_counts_every_retained_version_and_shrinks_with_compaction() -> None:
    st = KVStore()
    assert st.size_bytes() == 0
    apply_all(st, Put(b"/a", b"x" * 100), Put(b"/a", b"y" * 50), Put(b"/b", b"z" * 10))
    versions = (2 + 100) + (2 + 50) + (2 + 10) + 3 * VERSION_OVERHEAD
    assert st.size_bytes() == versions
    apply_all(st, DeleteRange(b"/b"))  # a tombstone: the key and the overhead
    assert st.size_bytes() == versions + 2 + VERSION_OVERHEAD
    apply_all(st, Compact(st.revision))  # keeps only /a's latest version
    assert st.size_bytes() == 2 + 50 + VERSION_OVERHEAD


def test_the_size_is_the_same_after_a_snapshot_restore() -> None:
    st = KVStore()
    apply_all(st, *(Put(b"/k%d" % (i % 5), b"v" * i) for i in range(40)),
              DeleteRange(b"/k1"), Compact(20))
    copy = KVStore()
    copy.restore(st.snapshot())
    assert copy.size_bytes() == st.size_bytes() > 0


def test_an_alarm_round_trips_through_the_log_encoding() -> None:
    assert decode_command(encode_command(NOSPACE)) == NOSPACE
    for bad in (Alarm(AlarmAction.GET, 1), Alarm(AlarmAction.ACTIVATE, 1, AlarmType.CORRUPT),
                Alarm(AlarmAction.ACTIVATE, -1)):
        with pytest.raises(InvalidArgument):
            validate_command(bad)


def test_nospace_refuses_every_write_that_needs_space_and_nothing_else() -> None:
    st = KVStore()
    lease = apply_all(st, LeaseGrant(60))[0]
    assert isinstance(lease, LeaseGrantResult)
    apply_all(st, Put(b"/a", b"1"), Put(b"/b", b"2", lease=lease.id))
    result = apply_all(st, NOSPACE)[0]
    assert result == AlarmResult(st.revision, [(7, AlarmType.NOSPACE)])
    assert st.nospace and st.alarms() == [(7, AlarmType.NOSPACE)]
    rev = st.revision
    refused = apply_all(st, Put(b"/c", b"3"), LeaseGrant(60),
                        Txn([], [DeleteRange(b"/a")], [Put(b"/d", b"4")]),
                        Txn([], [Txn([], [Put(b"/e", b"5")], [])], []))
    for r in refused:
        assert isinstance(r, ErrorResult) and r.code == ErrorCode.NO_SPACE, r
        assert "database space exceeded" in r.message
    assert st.revision == rev and st.get(b"/c") is None
    # Deletes, revocations, compactions and transactions without a put still apply.
    allowed = apply_all(st, DeleteRange(b"/a"), LeaseRevoke(lease.id), Compact(st.revision),
                        Txn([], [DeleteRange(b"/zz")], []))
    assert not any(isinstance(r, ErrorResult) for r in allowed), allowed
    assert st.get(b"/a") is None and st.get(b"/b") is None


def test_disarming_lets_writes_in_again_and_the_alarms_survive_snapshots() -> None:
    st = KVStore()
    apply_all(st, NOSPACE, Alarm(AlarmAction.ACTIVATE, 9))
    copy = KVStore()
    copy.restore(st.snapshot())
    assert copy.nospace and copy.alarms() == [(7, 1), (9, 1)]
    assert apply_all(copy, NOSPACE)[0] == AlarmResult(copy.revision, [])  # already on
    apply_all(copy, DISARM)
    assert copy.nospace  # member 9's alarm is still active
    assert apply_all(copy, Alarm(AlarmAction.DEACTIVATE, 9))[0] == AlarmResult(
        copy.revision, [(9, 1)])
    assert not copy.nospace and copy.alarms() == []
    assert not isinstance(apply_all(copy, Put(b"/x", b"1"))[0], ErrorResult)


def test_which_commands_need_space() -> None:
    assert needs_space(Put(b"/a")) and needs_space(LeaseGrant(5))
    assert needs_space(Txn([], [], [Txn([], [Put(b"/a")], [])]))
    assert not needs_space(Txn([], [DeleteRange(b"/a")], []))
    for cmd in (DeleteRange(b"/a"), Compact(3), LeaseRevoke(4), DISARM):
        assert not needs_space(cmd)
