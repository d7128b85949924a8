"""Log lines an attacker (or a buggy client or peer) could repeat at will are limited, so
that nobody can fill the disk with our log: one line per kind and source per interval."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Mapping


class LogLimiter:
    """At most one log line per key per ``interval`` seconds; the lines held back meanwhile
    are counted, and the next line admitted for that key reports them. Bounded: at most
    ``max_keys`` keys are tracked (beyond that, new keys share one)."""

    OVERFLOW = ("(other)",)

    def __init__(self, interval: float = 60.0, max_keys: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self.clock = clock
        self._keys: dict[Hashable, list[float]] = {}  # key -> [time admitted, held back]

    def admit(self, key: Hashable) -> int | None:
        """None: hold this line back. Else log it, with the count of lines held back
        since the last one for ``key``."""
        now = self.clock()
        entry = self._keys.get(key)
        if entry is None and len(self._keys) >= self.max_keys:
            self._keys = {k: e for k, e in self._keys.items() if now - e[0] < self.interval}
            if len(self._keys) >= self.max_keys:
                key = self.OVERFLOW
                entry = self._keys.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return None
        self._keys[key] = [now, 0]
        return int(entry[1]) if entry is not None else 0

    def warning(self, logger: logging.Logger, key: Hashable, msg: str, *args: object,
                extra: Mapping[str, object] | None = None) -> None:
        """``logger.warning(msg, *args)`` if :meth:`admit` lets it through, with the count
        of lines held back (``extra``: fields for structured logs, e.g. ``peer``)."""
        count = self.admit(key)
        if count is not None:
            logger.warning(msg + held_back(count), *args, extra=extra)


def held_back(count: int) -> str:
    return f" ({count} more held back since the last such line)" if count else ""
