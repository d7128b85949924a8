"""A cluster whose members each serve the web dashboard, and the system's Chromium to look
at it (tests/browser, ``python -m testing.screenshots``)."""

from __future__ import annotations

import shutil
from pathlib import Path

from testing.procs import ProcessCluster, free_port

CHROMIUM_NAMES = ("chromium", "chromium-browser")
"""Debian's chromium package installs /usr/bin/chromium (Playwright drives it: its own
browser download is not available here)."""


def chromium() -> str | None:
    """The path of the system's Chromium, None if there is none."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


class DashboardCluster(ProcessCluster):
    """A :class:`ProcessCluster` whose members serve HTTP (the dashboard, /metrics, /health)
    on ports of their own, and are named ``node-<id>``."""

    def __init__(self, size: int, base_dir: Path, *, tick_ms: int = 50,
                 extra_args: list[str] | None = None, seed: int | None = None) -> None:
        super().__init__(size, base_dir, tick_ms=tick_ms, extra_args=extra_args, seed=seed)
        self.http_ports: dict[int, int] = {}
        for node_id, node in self.nodes.items():
            port = free_port(self.rng)
            self.http_ports[node_id] = port
            # The last flag wins (ProcessCluster's arguments say --listen-metrics none).
            node.args += ["--listen-metrics", f"127.0.0.1:{port}", "--name", f"node-{node_id}"]

    def url(self, node_id: int) -> str:
        """The base URL of a member's HTTP listener (its dashboard is at /ui/)."""
        return f"http://127.0.0.1:{self.http_ports[node_id]}"


__all__ = ["DashboardCluster", "chromium"]
