"""Fixtures of the discovery tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.discovery.helpers import StatusServer


@pytest.fixture
def web() -> Iterator[StatusServer]:
    """A :class:`StatusServer`, closed after the test."""
    server = StatusServer()
    try:
        yield server
    finally:
        server.close()
