"""The simulated disks keep what was synced, and only that, across a crash."""

from __future__ import annotations

import random

import pytest

from confer.raft import ConfState, Entry, HardState
from confer.sim.disk import DurableDisk, SimDisk


def ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(i, term, b"e%d" % i) for i in range(lo, hi + 1)]


def test_a_crash_loses_what_was_written_but_not_synced() -> None:
    d = SimDisk()
    d.append(ents(1, 3))
    d.set_hard_state(HardState(term=1, vote=2, commit=2))
    d.sync()
    d.append(ents(4, 5))
    d.set_hard_state(HardState(term=2, vote=3, commit=4))
    d.end_batch()
    assert d.live.last_index() == 5  # written: the node reads it back

    assert d.crash() == 1
    assert d.live.last_index() == 3
    assert d.live.initial_state()[0] == HardState(term=1, vote=2, commit=2)
    assert d.durable_commit == 2


def test_a_crash_may_keep_a_prefix_of_unsynced_batches() -> None:
    d = SimDisk()
    d.append(ents(1, 2))
    d.end_batch()
    d.append(ents(3, 4))
    d.end_batch()
    d.append(ents(5, 6))  # still being written when the power goes

    assert d.crash(keep=1) == 2
    assert d.live.last_index() == 2


def test_truncation_snapshots_and_compaction_survive_a_restart() -> None:
    d = SimDisk()
    d.append(ents(1, 5))
    d.append(ents(4, 6, term=2))  # a new leader's entries replace 4..5
    d.set_hard_state(HardState(term=2, vote=1, commit=5))
    d.create_snapshot(5, ConfState(frozenset({1, 2, 3})), b"state at 5")
    d.compact(5)
    d.sync()

    d.crash()
    assert d.live.first_index() == 6 and d.live.last_index() == 6
    assert d.live.term(6) == 2 and d.live.term(5) == 2
    assert d.live.snapshot().data == b"state at 5"
    d.crash()  # a second restart reads the same
    assert d.live.snapshot().meta.index == 5 and d.live.last_index() == 6


def test_durable_disk_recovers_through_the_real_storage() -> None:
    d = DurableDisk(random.Random(5), segment_size=256)
    d.append(ents(1, 3))
    d.set_hard_state(HardState(term=1, vote=2, commit=2))
    d.sync()
    d.append(ents(4, 5))  # buffered in the WAL: in the process, not yet in a file
    d.set_hard_state(HardState(term=2, vote=3, commit=4))
    d.end_batch()
    assert d.durable_commit == 2

    d.crash()
    with pytest.raises(RuntimeError, match="not open"):
        d.live.last_index()
    d.recover()
    assert d.live.last_index() == 3
    assert d.live.initial_state()[0] == HardState(term=1, vote=2, commit=2)
    assert d.stats.crashes == 1


def test_durable_disk_survives_a_power_cut_during_recovery() -> None:
    struck = 0
    for seed in range(20):
        d = DurableDisk(random.Random(seed), segment_size=256)
        for i in range(1, 30, 3):
            d.append(ents(i, i + 2))
            d.set_hard_state(HardState(term=1, vote=1, commit=i + 2))
            d.sync()
        d.append(ents(31, 40))
        d.interrupted_sync()  # torn in its write or fdatasync
        d.crash()
        d.fs.cut_power_after(seed % 3)  # and again while recovering
        d.recover()
        assert 30 <= d.live.last_index() <= 40
        assert d.durable_commit == 30
        struck += d.stats.crashes == 2
    assert struck > 0
