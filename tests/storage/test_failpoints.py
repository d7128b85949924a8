"""Armed failpoints crash the process (SIGKILL) at the named storage step, on the Nth hit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from confer import failpoints

SCRIPT = """
import sys
from confer.raft.types import ConfState, Entry
from confer.storage.durable import DurableStorage
s = DurableStorage.open(sys.argv[1])
s.append([Entry(index=i, term=1, data=b"x") for i in range(1, 11)])
s.sync()
for i in (2, 4, 6, 8):
    s.create_snapshot(i, ConfState(voters=frozenset({1})), b"state")
    s.compact(i)
    print("compacted", i, flush=True)
"""


def run(tmp_path: Path, spec: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, failpoints.ENV: spec}
    return subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "data")], env=env,
                          capture_output=True, text=True, timeout=60)


def test_unarmed_runs_through(tmp_path: Path) -> None:
    proc = run(tmp_path, "")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[-2] == "compacted 8"


def test_log_compaction_crashes_on_the_nth_hit_and_the_log_recovers(tmp_path: Path) -> None:
    proc = run(tmp_path, "log-compaction@3")
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout.split() == ["compacted", "2", "compacted", "4"]
    from confer.storage.durable import DurableStorage
    with DurableStorage.open(tmp_path / "data") as s:
        assert s.last_index() == 10
        assert s.snapshot().meta.index in (4, 6)  # the third snapshot may not be recorded yet
        assert [e.index for e in s.entries(s.first_index(), 11)][-1] == 10


def test_snapshot_create_crashes_before_the_wal_records_it(tmp_path: Path) -> None:
    proc = run(tmp_path, "snapshot-create")
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout == ""


def test_bad_spec_is_refused() -> None:
    with pytest.raises(ValueError, match="not one of"):
        failpoints.parse("no-such-point")
    with pytest.raises(ValueError, match="not one of"):
        failpoints.parse("log-compaction@0")
    assert failpoints.parse("snapshot-install@2,log-compaction") == {
        "snapshot-install": 2, "log-compaction": 1}
