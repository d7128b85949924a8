"""A restarted node applies only what its snapshot does not already hold.

Storage may keep log entries before its snapshot (catch-up entries for slow followers). The
driver restores the state machine from the snapshot, so the core must hand out committed
entries only after it: re-applying the kept ones would apply them twice and make this node's
state diverge (found by the fault-injection soak, seed 101).
"""

from __future__ import annotations

from pathlib import Path

from confer.raft.core import Config
from confer.raft.rawnode import RawNode
from confer.raft.storage import MemoryStorage
from confer.raft.types import ConfChange, ConfChangeType, ConfState, Entry, EntryType, HardState
from confer.storage import DurableStorage

VOTERS = ConfState(voters=frozenset({1, 2, 3}))


def test_entries_kept_before_the_snapshot_are_not_applied_again() -> None:
    storage = MemoryStorage()
    storage.append([Entry(index=i, term=1, data=b"x%d" % i) for i in range(1, 11)])
    storage.create_snapshot(8, VOTERS, b"state through 8")
    storage.set_hard_state(HardState(term=1, vote=1, commit=10))
    node = RawNode(Config(id=1), storage)
    rd = node.ready()
    assert [e.index for e in rd.committed_entries] == [9, 10]


def test_a_durable_log_reopened_after_snapshot_and_compaction_applies_only_newer_entries(
        tmp_path: Path) -> None:
    with DurableStorage.open(tmp_path) as s:
        s.append([Entry(index=i, term=1, data=b"x") for i in range(1, 301)])
        s.set_hard_state(HardState(term=1, vote=1, commit=300))
        s.sync()
        s.create_snapshot(250, VOTERS, b"state through 250")
        s.compact(200)  # keep 50 catch-up entries before the snapshot
    with DurableStorage.open(tmp_path) as s:
        assert s.first_index() == 201 and s.snapshot().meta.index == 250
        rd = RawNode(Config(id=1), s).ready()
        assert [e.index for e in rd.committed_entries] == list(range(251, 301))


def test_membership_changes_before_the_snapshot_are_not_replayed() -> None:
    storage = MemoryStorage()
    remove_3 = ConfChange(ConfChangeType.REMOVE, 3).encode()
    storage.append([Entry(index=1, term=1, data=b"x"),
                    Entry(index=2, term=1, type=EntryType.CONF_CHANGE, data=remove_3),
                    Entry(index=3, term=1, data=b"x")])
    storage.create_snapshot(3, ConfState(voters=frozenset({1, 2})), b"state through 3")
    storage.set_hard_state(HardState(term=1, vote=1, commit=3))
    node = RawNode(Config(id=1), storage)
    assert node.ready().committed_entries == []
    assert node.raft.conf.voters == frozenset({1, 2})
