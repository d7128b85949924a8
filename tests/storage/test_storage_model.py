"""Property test: DurableStorage against MemoryStorage over random operation sequences.

Every step compares all observable reads. ``reopen`` must give back exactly the model;
``crash`` must give back the model as of the last completed sync (or, when the write got
through before the crash, the model now).
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from confer.raft.storage import MemoryStorage
from confer.raft.types import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMeta
from confer.storage import DurableStorage

from .helpers import FaultyDisk, crash, state_of

SEGMENT_SIZE = 400  # tiny, so that rotation and segment removal happen all the time


class StorageMachine(RuleBasedStateMachine):
    base: Path  # set per test run, inside tmp_path

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(dir=self.base)
        self.disk = FaultyDisk()
        self.st = self._open()
        self.model = MemoryStorage()
        self.synced = copy.deepcopy(self.model)
        self.term = 1

    def _open(self) -> DurableStorage:
        return DurableStorage.open(self.dir, segment_size=SEGMENT_SIZE, disk=self.disk)

    def _both(self, op: str, *args: object) -> None:
        getattr(self.model, op)(*args)
        getattr(self.st, op)(*args)

    def _snap_index(self) -> int:
        return self.model.snapshot().meta.index

    # -- writes ----------------------------------------------------------------------------------
    @rule(back=st.integers(0, 6), n=st.integers(1, 6), size=st.integers(0, 40),
          new_term=st.booleans(), conf=st.booleans())
    def append(self, back: int, n: int, size: int, new_term: bool, conf: bool) -> None:
        # Raft never overwrites what a snapshot covers (snapshot <= applied <= commit).
        lowest = max(self.model.first_index(), self._snap_index() + 1)
        lo = max(lowest, self.model.last_index() + 1 - back)
        self.term += new_term
        etype = EntryType.CONF_CHANGE if conf else EntryType.NORMAL
        ents = [Entry(i, self.term, bytes([i % 251]) * size, etype) for i in range(lo, lo + n)]
        self._both("append", ents)

    @rule(vote=st.integers(0, 3), commit_back=st.integers(0, 3))
    def set_hard_state(self, vote: int, commit_back: int) -> None:
        commit = max(self._snap_index(), self.model.last_index() - commit_back)
        self._both("set_hard_state", HardState(self.term, vote, commit))

    @precondition(lambda self: self.model.last_index() > self.model.snapshot().meta.index)
    @rule(where=st.floats(0, 1), voters=st.frozensets(st.integers(1, 5), max_size=3),
          data=st.binary(max_size=30))
    def create_snapshot(self, where: float, voters: frozenset[int], data: bytes) -> None:
        lo, hi = self._snap_index() + 1, self.model.last_index()
        index = lo + int(where * (hi - lo))
        conf = ConfState(voters, frozenset({9}) if 9 not in voters else frozenset())
        assert self.st.create_snapshot(index, conf, data) == self.model.create_snapshot(
            index, conf, data)

    @precondition(lambda self: self.model.snapshot().meta.index >= self.model.first_index())
    @rule(where=st.floats(0, 1))
    def compact(self, where: float) -> None:
        lo, hi = self.model.first_index(), self._snap_index()
        self._both("compact", lo + int(where * (hi - lo)))
        self.synced = copy.deepcopy(self.model)  # compact syncs

    @rule(ahead=st.integers(1, 15), new_term=st.booleans(), data=st.binary(max_size=30))
    def apply_snapshot(self, ahead: int, new_term: bool, data: bytes) -> None:
        self.term += new_term
        meta = SnapshotMeta(self._snap_index() + ahead, self.term, ConfState(frozenset({1})))
        self._both("apply_snapshot", Snapshot(meta, data))

    @rule()
    def sync(self) -> None:
        self._both("sync")
        self.synced = copy.deepcopy(self.model)

    # -- restarts --------------------------------------------------------------------------------
    @rule()
    def reopen(self) -> None:
        self.st.close()
        self.synced = copy.deepcopy(self.model)
        self.st = self._open()

    @rule(written=st.booleans())
    def crash(self, written: bool) -> None:
        crash(self.st, self.disk, "unsynced" if written else "lost")
        self.st = self._open()
        if written:  # the write reached the file; only the fdatasync was missing
            self.synced = copy.deepcopy(self.model)
        else:
            self.model = copy.deepcopy(self.synced)

    @invariant()
    def same_as_model(self) -> None:
        assert state_of(self.st) == state_of(self.model)

    def teardown(self) -> None:
        self.st.close()
        shutil.rmtree(self.dir)


def test_durable_storage_matches_memory_storage(tmp_path: Path) -> None:
    machine = type("Machine", (StorageMachine,), {"base": tmp_path})
    # No example database, and Hypothesis' own caches go to tmp_path too: no files elsewhere.
    set_hypothesis_home_dir(tmp_path / "hypothesis")
    try:
        run_state_machine_as_test(machine, settings=settings(
            max_examples=100, stateful_step_count=40, deadline=None, database=None,
            suppress_health_check=[HealthCheck.too_slow],
        ))
    finally:
        set_hypothesis_home_dir(None)


@pytest.mark.parametrize("seed", range(3))
def test_long_random_history(tmp_path: Path, seed: int) -> None:
    """A few long runs, to reach deep segment chains that short examples rarely build."""
    import random

    rng = random.Random(seed)
    machine = type("Machine", (StorageMachine,), {"base": tmp_path})()
    steps = [
        lambda: machine.append(rng.randint(0, 6), rng.randint(1, 6), rng.randint(0, 40),
                               rng.random() < 0.1, rng.random() < 0.05),
        lambda: machine.set_hard_state(rng.randint(0, 3), rng.randint(0, 3)),
        machine.sync,
    ]
    try:
        for i in range(1500):
            rng.choice(steps)()
            if i % 97 == 0 and machine.model.last_index() > machine._snap_index():
                machine.create_snapshot(rng.random(), frozenset({1, 2}), b"snap")
            if i % 131 == 0 and machine._snap_index() >= machine.model.first_index():
                machine.compact(rng.random())
            if i % 211 == 0:
                machine.crash(rng.random() < 0.5)
            if i % 307 == 0:
                machine.reopen()
            machine.same_as_model()
    finally:
        machine.teardown()
