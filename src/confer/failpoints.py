"""Crash points for fault injection, armed by the environment of the process.

``CONFER_FAILPOINTS="snapshot-install,log-compaction@3"`` makes the process SIGKILL itself the
first time it reaches ``snapshot-install`` and the third time it reaches ``log-compaction``.
The fault-injection harness (the ``chaos`` package beside ``tests/``) uses them to crash a
node inside a window that random kills rarely hit. Unarmed, :func:`hit` is one dict lookup on
an empty dict.
"""

from __future__ import annotations

import logging
import os
import signal

ENV = "CONFER_FAILPOINTS"
NAMES = ("snapshot-install", "snapshot-create", "log-compaction")
"""Where the storage layer can crash: after the snapshot file is saved but before the WAL
records it (install from the leader, or a local snapshot), and after a log compaction is
recorded but before it is synced and the obsolete files are removed."""


def parse(spec: str) -> dict[str, int]:
    """``name[@N],...`` -> {name: hits before the crash}; unknown names are an error."""
    armed: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, count = part.partition("@")
        if name not in NAMES or (count and not count.isdigit()) or count == "0":
            raise ValueError(f"{ENV}: {part!r} is not one of {', '.join(NAMES)} [@N>0]")
        armed[name] = int(count or 1)
    return armed


_armed = parse(os.environ.get(ENV, ""))


def hit(name: str) -> None:
    """Crash here (SIGKILL, like kill -9) if the failpoint is armed and its count is reached."""
    left = _armed.get(name)
    if left is None:
        return
    if left > 1:
        _armed[name] = left - 1
        return
    logging.getLogger("confer.failpoints").critical("failpoint %s: crashing", name)
    os.kill(os.getpid(), signal.SIGKILL)
