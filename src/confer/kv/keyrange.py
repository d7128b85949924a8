"""etcd's three ways of naming keys with ``(key, range_end)``, as half-open byte intervals.

- ``range_end == b""``: the single key ``key``;
- ``range_end == b"\\0"``: every key ``>= key``;
- otherwise: every key in ``[key, range_end)`` (empty when ``range_end <= key``).
"""

from __future__ import annotations

from collections.abc import Callable

FROM_KEY = b"\0"


def bounds(key: bytes, range_end: bytes) -> tuple[bytes, bytes | None]:
    """The interval ``[lo, hi)``; ``hi is None`` means unbounded. A single key ``k`` is
    ``[k, k + b"\\0")``, the smallest interval holding only ``k``."""
    if not range_end:
        return key, key + b"\0"
    if range_end == FROM_KEY:
        return key, None
    return key, range_end


def contains(key: bytes, range_end: bytes, k: bytes) -> bool:
    """Whether ``k`` is named by ``(key, range_end)``."""
    if not range_end:
        return k == key
    if range_end == FROM_KEY:
        return k >= key
    return key <= k < range_end


def matcher(key: bytes, range_end: bytes) -> Callable[[bytes], bool]:
    """A fast predicate for :func:`contains` with the range fixed."""
    if not range_end:
        return key.__eq__
    if range_end == FROM_KEY:
        return key.__le__
    return lambda k: key <= k < range_end
