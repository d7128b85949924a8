"""Operation histories: what clients asked for, and what they were told.

Each client operation is two events, written as JSON lines: an ``invoke`` and then its
completion, ``ok`` (it happened), ``fail`` (it certainly did not happen) or ``info`` (unknown:
a timeout or a broken connection; it may or may not have happened). A process has at most one
operation outstanding; after an ``info`` the client continues under a new process number,
because the old operation may still take effect at any later time.

Event fields: ``type``, ``process`` (int), ``f`` (operation name), ``key`` (str or null),
``value`` (the argument at invoke, the result at ok), ``time`` (monotonic nanoseconds since
the run began), and optionally ``rev`` (the revision the server reported) and ``error``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

INVOKE, OK, FAIL, INFO = "invoke", "ok", "fail", "info"
COMPLETIONS = (OK, FAIL, INFO)


@dataclass(frozen=True, slots=True)
class Operation:
    """One invoke paired with its completion.

    ``ret`` is None when the outcome is unknown (``info``): the operation may take effect at
    any time after ``call``, so checkers treat its return as infinitely late.
    """

    index: int
    """Position of the invoke event in the history."""
    process: int
    f: str
    key: str | None
    value: Any
    """The argument the client sent."""
    status: str
    """``ok``, ``fail`` or ``info``."""
    result: Any
    """What an ``ok`` completion returned (e.g. the value read); None otherwise."""
    call: int
    ret: int | None
    rev: int | None = None
    error: str | None = None


class HistoryWriter:
    """Appends events to a JSON-lines file; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._lock = threading.Lock()

    def write(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, separators=(",", ":"))
        with self._lock:
            self._file.write(line + "\n")

    def flush(self) -> None:
        with self._lock:
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    """The events of a JSON-lines history file, in order."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def pair(events: Iterable[dict[str, Any]]) -> list[Operation]:
    """Pair each invoke with its process's next completion; ordered by invoke.

    An invoke with no completion (the run ended first) counts as ``info``.
    """
    open_ops: dict[int, tuple[int, dict[str, Any]]] = {}
    done: list[Operation] = []
    for i, e in enumerate(events):
        p = e["process"]
        if e["type"] == INVOKE:
            if p in open_ops:
                raise ValueError(f"process {p} invoked event {i} with an operation outstanding")
            open_ops[p] = (i, e)
            continue
        if e["type"] not in COMPLETIONS:
            raise ValueError(f"event {i}: unknown type {e['type']!r}")
        if p not in open_ops:
            raise ValueError(f"event {i}: completion for process {p} with nothing outstanding")
        idx, inv = open_ops.pop(p)
        done.append(_operation(idx, inv, e))
    done.extend(_operation(idx, inv, None) for idx, inv in open_ops.values())
    done.sort(key=lambda op: op.index)
    return done


def _operation(index: int, inv: dict[str, Any], end: dict[str, Any] | None) -> Operation:
    status = end["type"] if end else INFO
    return Operation(
        index=index, process=inv["process"], f=inv["f"], key=inv.get("key"),
        value=inv.get("value"), status=status,
        result=end.get("value") if end and status == OK else None,
        call=inv["time"], ret=end["time"] if end and status != INFO else None,
        rev=end.get("rev") if end else None, error=end.get("error") if end else None,
    )
