"""Fixtures for the client tests: real ``confer serve`` clusters on loopback (tick 50 ms)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.procs import ProcessCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    """A 3-node cluster shared by a module's tests (they use distinct paths)."""
    with ProcessCluster(3, tmp_path_factory.mktemp("cluster"), tick_ms=50) as c:
        c.leader()
        yield c


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[ProcessCluster]:
    """A 3-node cluster of the test's own, for tests that kill or pause members."""
    with ProcessCluster(3, tmp_path, tick_ms=50) as c:
        c.leader()
        yield c


def wait_for(predicate: object, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate()`` until true, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
