"""The command line: ``python -m confer.sim``."""

from __future__ import annotations

import shlex
import subprocess
import sys

import pytest

from confer.raft.log import RaftLog
from confer.sim.__main__ import main


def test_runs_seeds_and_reports_progress_and_a_summary() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "confer.sim", "--seeds", "4", "--start", "10", "--steps", "50"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "[4/4]" in out and "scenarios/s" in out
    assert "4 scenarios in" in out and "4 passed, 0 failed" in out


def test_parallel_jobs_give_the_same_verdicts() -> None:
    assert main(["--seeds", "6", "--steps", "40", "--jobs", "2", "--quiet"]) == 0


def test_a_failure_prints_its_seed_and_a_command_that_replays_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(RaftLog, "is_up_to_date", lambda self, last_index, term: True)
    assert main(["--seeds", "20", "--flavour", "churn", "--fail-fast", "--quiet"]) == 1
    out = capsys.readouterr().out
    fail = next(line for line in out.splitlines() if line.startswith("FAIL seed="))
    command = next(line for line in out.splitlines() if "reproduce:" in line)
    argv = shlex.split(command.split("reproduce:", 1)[1])
    assert argv[:3] == ["python", "-m", "confer.sim"]

    # Replaying the printed command fails in exactly the same way.
    assert main(argv[3:]) == 1
    again = capsys.readouterr().out
    assert fail in again.splitlines()


def test_a_failure_on_the_storage_model_replays_on_the_storage_model(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(RaftLog, "is_up_to_date", lambda self, last_index, term: True)
    assert main(["--seeds", "20", "--flavour", "churn", "--storage", "model", "--fail-fast",
                 "--quiet"]) == 1
    out = capsys.readouterr().out
    fail = next(line for line in out.splitlines() if line.startswith("FAIL seed="))
    assert "model storage" in fail
    command = next(line for line in out.splitlines() if "reproduce:" in line)
    argv = shlex.split(command.split("reproduce:", 1)[1])
    assert argv[-2:] == ["--storage", "model"]
    assert main(argv[3:]) == 1
    assert fail in capsys.readouterr().out.splitlines()
