"""Fixtures shared by test packages: certificates for the TLS tests (made by `confer tls
init`'s own code, never committed keys)."""

from __future__ import annotations

from pathlib import Path

import pytest

from confer.cli.tls import init_dir


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA with server, peer and client certificates (`confer tls init`'s files)."""
    d = tmp_path_factory.mktemp("certs")
    init_dir(d)
    return d


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Certificates of another CA (with the same common names)."""
    d = tmp_path_factory.mktemp("stranger")
    init_dir(d)
    return d
