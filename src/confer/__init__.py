"""Confer: a strongly consistent coordination service for Python teams, built on Raft."""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("confer-kv")  # the distribution name (pyproject.toml)
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

# The client is imported on first use, so that ``import confer.raft`` (or the server) does not
# pay for it: ``confer.Client``, ``confer.Compare``, ``confer.ConferError``... are the names
# ``confer.client`` exports; ``confer.aio.Client`` is the asyncio client.
if TYPE_CHECKING:
    from confer.client import *  # noqa: F403


def __getattr__(name: str) -> Any:
    import confer.client

    if name in confer.client.__all__:
        value = getattr(confer.client, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'confer' has no attribute {name!r}")


def __dir__() -> list[str]:
    import confer.client

    return sorted(set(globals()) | set(confer.client.__all__))
