"""`confer serve` rough edges: stopping while it still tries to join, and bad settings in one
line."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testing.procs import free_port


def serve(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "confer", "serve", "--data-dir", str(tmp_path / "data"),
             "--listen-client", f"127.0.0.1:{free_port()}",
             "--listen-peer", f"127.0.0.1:{free_port()}", *args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    finally:
        log.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_node_still_trying_to_join_stops_at_once_on_a_signal(tmp_path: Path,
                                                               sig: signal.Signals) -> None:
    proc = serve(tmp_path, "--join", f"127.0.0.1:{free_port()}")  # nobody there: it retries
    try:
        deadline = time.monotonic() + 30
        while b"retrying" not in (tmp_path / "serve.log").read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, (
                tmp_path / "serve.log").read_text()
            time.sleep(0.1)
        proc.send_signal(sig)
        # Joining retries for 60 s: only a stop on the signal ends it within 30.
        assert proc.wait(timeout=30) == 0
        assert (tmp_path / "serve.log").read_text().splitlines()[-1] == (
            "confer: stopped before it started")
    finally:
        proc.kill()
        proc.wait()


def test_a_bad_setting_is_one_line(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "confer", "serve", "--data-dir",
                        str(tmp_path / "d"), "--log-level", "verbose"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr == ("Error: log-level must be debug, info, warning or error, "
                        "not 'verbose'\n")
