"""``--rewrite``: regenerate the outputs of the Raft interaction transcripts."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--rewrite", action="store_true", default=False,
        help="rewrite the outputs of tests/raft/testdata/*.txt instead of comparing them "
             "(run as: pytest tests/raft/test_interaction.py --rewrite)",
    )


@pytest.fixture
def rewrite(request: pytest.FixtureRequest) -> bool:
    # The default covers a run where this conftest was loaded after option parsing
    # (pytest from the repository root): then --rewrite was not given to us.
    return bool(request.config.getoption("--rewrite", default=False))
