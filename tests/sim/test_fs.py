"""The simulated file system loses what a power cut loses, and the real storage recovers on it."""

from __future__ import annotations

import builtins
import copy
import inspect
import os
import random

import pytest

from confer.raft import ConfState, Entry, HardState, MemoryStorage
from confer.raft.storage import LogStorage
from confer.sim.fs import PowerCut, SimFS
from confer.storage import Disk, DurableStorage


def fs(seed: int = 0) -> SimFS:
    f = SimFS(random.Random(seed))
    f.makedirs("/d")
    f.fsync_dir("/")
    return f


def test_every_call_of_the_seam_is_simulated() -> None:
    """A Disk method SimFS forgot would silently touch the real file system."""
    public = {n for n, _ in inspect.getmembers(Disk, inspect.isfunction) if not n.startswith("_")}
    missing = {n for n in public if getattr(SimFS, n) is getattr(Disk, n)}
    assert not missing


def test_storage_on_simfs_makes_no_real_file_system_call(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a real file-system call: {args}")

    for name in ("open", "remove", "rename", "listdir", "makedirs", "ftruncate", "stat",
                 "scandir", "fsync"):
        monkeypatch.setattr(os, name, refuse)
    monkeypatch.setattr(builtins, "open", refuse)
    f = SimFS(random.Random(1))
    st = DurableStorage.open("/data", segment_size=200, disk=f)
    st.append([Entry(i, 1, b"x" * 30) for i in range(1, 21)])
    st.set_hard_state(HardState(1, 1, 20))
    st.sync()
    st.create_snapshot(15, CONF, b"state")
    st.compact(15)
    assert st.disk_usage() > 0
    st.close()
    with DurableStorage.open("/data", segment_size=200, disk=f) as st:
        assert (st.first_index(), st.last_index()) == (16, 20)
    assert len(f.listdir("/data/wal")) >= 1 and f.listdir("/data/snap")


def test_synced_data_survives_and_unsynced_data_may_not() -> None:
    outcomes = set()
    for seed in range(200):
        f = fs(seed)
        fd = f.create("/d/x")
        f.write(fd, b"synced.")
        f.fsync(fd)
        f.fsync_dir("/d")
        f.write(fd, b"unsynced-tail")
        f.power_loss()
        got = f.read("/d/x")
        assert got.startswith(b"synced."), got
        tail = got[len(b"synced.") :]
        if tail == b"":
            outcomes.add("lost")
        elif tail == b"unsynced-tail":
            outcomes.add("kept")
        elif b"unsynced-tail".startswith(tail):
            outcomes.add("prefix")
        else:
            outcomes.add("garbled")  # junk after a prefix, or a hole inside
    assert outcomes == {"lost", "kept", "prefix", "garbled"}


def test_fdatasync_makes_a_write_durable() -> None:
    for seed in range(50):
        f = fs(seed)
        fd = f.create("/d/x")
        f.fsync_dir("/d")
        f.write(fd, b"abc")
        f.fdatasync(fd)
        f.power_loss()
        assert f.read("/d/x") == b"abc"


def test_a_new_file_may_vanish_until_its_directory_is_synced() -> None:
    seen = set()
    for seed in range(50):
        f = fs(seed)
        fd = f.create("/d/new")
        f.write(fd, b"data")
        f.fsync(fd)  # the data is durable, the name is not
        f.power_loss()
        seen.add(f.listdir("/d") == ["new"])
    assert seen == {True, False}
    f = fs()
    fd = f.create("/d/new")
    f.fsync_dir("/d")
    f.power_loss()
    assert f.listdir("/d") == ["new"]


def test_an_unsynced_rename_is_atomic_and_an_unsynced_removal_may_be_undone() -> None:
    names, removed = set(), set()
    for seed in range(60):
        f = fs(seed)
        fd = f.create("/d/a.tmp")
        f.write(fd, b"snap")
        f.fsync(fd)
        f.fsync_dir("/d")
        f.rename("/d/a.tmp", "/d/a")
        f.power_loss()
        names.add(tuple(f.listdir("/d")))  # one name or the other, never both or neither
        assert f.read(f"/d/{f.listdir('/d')[0]}") == b"snap"
        f.remove(f"/d/{f.listdir('/d')[0]}")
        f.power_loss()
        removed.add(len(f.listdir("/d")))
    assert names == {("a.tmp",), ("a",)}
    assert removed == {0, 1}


def test_a_directory_not_synced_into_its_parent_may_vanish_with_its_files() -> None:
    seen = set()
    for seed in range(40):
        f = SimFS(random.Random(seed))
        f.makedirs("/data/wal")
        fd = f.create("/data/wal/s")
        f.fsync(fd)
        f.fsync_dir("/data/wal")  # but "/" never learns of "/data"
        f.power_loss()
        seen.add(f.isdir("/data"))
    assert seen == {True, False}


def test_cutting_the_power_tears_the_write_it_strikes() -> None:
    torn = 0
    for seed in range(40):
        f = fs(seed)
        fd = f.create("/d/x")
        f.cut_power_after(0)  # the very next changing call: the write
        with pytest.raises(PowerCut):
            f.write(fd, b"0123456789" * 10)
        assert not f.armed
        got = f.read("/d/x")
        data = b"0123456789" * 10
        assert got != data and data.startswith(got)
        torn += len(got) > 0
    assert torn > 30


def test_the_same_seed_loses_the_same_bytes() -> None:
    def run(seed: int) -> dict[str, bytes]:
        f = fs(seed)
        for i in range(5):
            fd = f.create(f"/d/{i}")
            f.write(fd, bytes(range(50)) * (i + 1))
            if i % 2:
                f.fsync(fd)
        f.power_loss()
        return f.files()

    assert run(3) == run(3)
    assert len({tuple(run(s).items()) for s in range(10)}) > 1


# -- the real storage on it ------------------------------------------------------------------------
CONF = ConfState(frozenset({1, 2, 3}))


def state_of(s: LogStorage) -> tuple[object, ...]:
    first, last = s.first_index(), s.last_index()
    ents = s.entries(first, last + 1) if last >= first else []
    return (s.initial_state(), first, last, tuple((e.index, e.term, bytes(e.data)) for e in ents),
            s.snapshot().meta, bytes(s.snapshot().data))


@pytest.mark.parametrize("seed", range(6))
def test_durable_storage_recovers_a_state_it_passed_through(seed: int) -> None:
    """Random writes, syncs, snapshots and compactions on SimFS, with the power cut at a
    random file-system call: every reopen recovers a state the log passed through since its
    last completed sync, never an older one."""
    rng = random.Random(seed)
    f = SimFS(random.Random(seed))
    seg = rng.choice((300, 2000))
    st = DurableStorage.open("/data", segment_size=seg, disk=f)
    model = MemoryStorage()
    since_sync = [copy.deepcopy(model)]  # what a crash may recover: the last synced state on
    term, crashes, torn = 1, 0, 0

    def passed() -> None:
        since_sync.append(copy.deepcopy(model))

    for _ in range(400):
        r = rng.random()
        try:
            if r < 0.5:
                lo = max(model.first_index(), model.snapshot().meta.index + 1,
                         model.last_index() + 1 - rng.randint(0, 3))
                ents = [Entry(i, term, rng.randbytes(rng.randint(0, 40)))
                        for i in range(lo, lo + rng.randint(1, 5))]
                st.append(ents)
                model.append(ents)
                passed()
            elif r < 0.65:
                term += rng.random() < 0.3
                hs = HardState(term, rng.randint(0, 3), model.last_index())
                st.set_hard_state(hs)
                model.set_hard_state(hs)
                passed()
            elif r < 0.72 and model.last_index() > model.snapshot().meta.index:
                i = rng.randint(model.snapshot().meta.index + 1, model.last_index())
                data = rng.randbytes(30)
                st.create_snapshot(i, CONF, data)
                model.create_snapshot(i, CONF, data)
                passed()
                st.compact(i, sync=False)
                model.compact(i)
                passed()
            elif r < 0.93:
                if rng.random() < 0.4:
                    f.cut_power_after(rng.randint(0, 6))
                st.sync()
                f.disarm()
                since_sync = [copy.deepcopy(model)]
            else:
                raise PowerCut("the power goes out between calls")
        except PowerCut:
            crashes += 1
            f.power_loss()
            st = DurableStorage.open("/data", segment_size=seg, disk=f)
            got = state_of(st)
            states = [state_of(m) for m in since_sync]
            assert got in states, f"crash {crashes}: recovered a state never passed through"
            torn += 0 < states.index(got) < len(states) - 1
            model = copy.deepcopy(since_sync[states.index(got)])
            since_sync = [copy.deepcopy(model)]
    st.close()
    assert crashes > 5
