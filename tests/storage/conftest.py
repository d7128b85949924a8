"""Fixtures for the durable storage tests (helpers live in helpers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from confer.storage import DurableStorage

from .helpers import FaultyDisk


@pytest.fixture
def disk() -> FaultyDisk:
    return FaultyDisk()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def open_storage(data_dir: Path, disk: FaultyDisk) -> Iterator[Callable[..., DurableStorage]]:
    """``open_storage(segment_size=..., root=...)``; whatever is left open is closed after."""
    opened: list[DurableStorage] = []

    def _open(segment_size: int = 1 << 20, root: Path | None = None) -> DurableStorage:
        st = DurableStorage.open(root or data_dir, segment_size=segment_size, disk=disk)
        opened.append(st)
        return st

    yield _open
    for st in opened:
        st.close()
