"""Counts and failures of a fuzz run, and their printout.

A failure is reproducible: the seed, the method and the request bytes (hex, bounded). Failures
are grouped into classes (kind, method, status, message with its numbers blanked) so that one
bug seen a thousand times prints once, with its first reproduction and its count.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from testing.fuzz.calls import Outcome

BAD_CODES = frozenset({"INTERNAL", "UNKNOWN"})
"""Statuses a server must never answer to a request, however malformed."""
MAX_HEX_BYTES = 256
"""Request bytes printed per reproduction; a longer request prints its length and head."""


@dataclass(frozen=True)
class Failure:
    kind: str
    """``status`` (INTERNAL/UNKNOWN), ``hang`` (no status within the deadline), or a check:
    ``canary``, ``health``, ``log``, ``store``, ``membership``, ``term``, ``state``,
    ``stream``."""
    where: str
    """The method path, or the phase and moment of a check."""
    code: str
    details: str
    repro: str = ""

    def key(self) -> tuple[str, str, str]:
        """The class: one cause seen in many methods is one class (the methods are listed)."""
        return (self.kind, self.code, _normalize(self.details))


def _normalize(details: str) -> str:
    text = re.sub(r"^\S+ \S+ ", "", details)  # a log line's date and time
    text = re.sub(r"\[/[\w.]+/\w+\]|'[\w.]+'|<[^>]*>", "<x>", text)  # method, type names
    return re.sub(r"0x[0-9a-fA-F]+|\d+", "N", text)[:120]


def hex_of(payloads: list[bytes]) -> str:
    parts = []
    for p in payloads:
        if len(p) <= MAX_HEX_BYTES:
            parts.append(p.hex())
        else:
            parts.append(f"<{len(p)} bytes, first {MAX_HEX_BYTES}>{p[:MAX_HEX_BYTES].hex()}")
    return ",".join(parts)


@dataclass
class Report:
    seed: int
    calls: Counter[str] = field(default_factory=Counter)
    """Calls per service."""
    codes: Counter[str] = field(default_factory=Counter)
    """Calls per status."""
    by_service_code: Counter[tuple[str, str]] = field(default_factory=Counter)
    classes: dict[tuple[str, str, str], tuple[int, Failure, set[str]]] = field(
        default_factory=dict)
    """Per failure class: how many, the first one (its reproduction) and where seen."""
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    @property
    def failures(self) -> int:
        return sum(n for n, _, _ in self.classes.values())

    def add(self, failure: Failure) -> None:
        key = failure.key()
        n, first, where = self.classes.get(key, (0, failure, set()))
        where.add(failure.where)
        self.classes[key] = (n + 1, first, where)

    def record_call(self, phase: str, path: str, payloads: list[bytes], outcome: Outcome, *,
                    may_block: bool) -> None:
        """Count one call; a bad status, or no status in time where one was due, fails."""
        service = path.rsplit("/", 1)[0].lstrip("/")
        self.calls[service] += 1
        self.codes[outcome.code] += 1
        self.by_service_code[(service, outcome.code)] += 1
        kind = None
        if outcome.code in BAD_CODES:
            kind = "status"
        elif outcome.code == "DEADLINE_EXCEEDED" and not may_block:
            kind = "hang"
        if kind is not None:
            self.add(Failure(kind, path, outcome.code, outcome.details,
                             self.repro(phase, path, payloads)))

    def repro(self, phase: str, path: str, payloads: list[bytes]) -> str:
        """How to send the same request again."""
        return f"seed={self.seed} phase={phase} method={path} request_hex={hex_of(payloads)}"

    def render(self, max_classes: int = 60) -> str:
        """The summary: totals, per service, per status, then each failure class."""
        lines = [f"fuzz seed {self.seed}: {self.total} calls, {self.failures} failures in "
                 f"{len(self.classes)} classes"]
        lines.append("calls per service:")
        for service, n in sorted(self.calls.items()):
            codes = ", ".join(f"{c} {k}" for (s, c), k in sorted(self.by_service_code.items())
                              if s == service)
            lines.append(f"  {service:34} {n:7}  ({codes})")
        lines.append("calls per status: " + ", ".join(
            f"{c} {n}" for c, n in self.codes.most_common()))
        lines.extend(f"note: {n}" for n in self.notes)
        for i, (count, f, where) in enumerate(sorted(self.classes.values(),
                                                     key=lambda x: (x[1].kind, x[1].where))):
            if i == max_classes:
                lines.append(f"... {len(self.classes) - max_classes} more failure classes")
                break
            lines.append(f"FAIL [{f.kind}] {f.code} x{count}: {f.details[:300]}")
            seen = sorted(where)
            lines.append(f"     in {len(seen)}: {', '.join(seen[:8])}"
                         + (" ..." if len(seen) > 8 else ""))
            if f.repro:
                lines.append(f"     repro: {f.repro}")
        return "\n".join(lines)
