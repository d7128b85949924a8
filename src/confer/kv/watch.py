"""Which watchers does a changed key concern? An index over many ``(key, range_end)`` watches.

The server's watch hub registers each watch here and, for each revision's events, asks which
watches they match. Watches are filed by shape so that matching a key costs

    O(1 + d + p + r)

dict lookups and comparisons, where d is the number of ``/`` in the key (path subtrees), p the
number of distinct lengths among other prefix watches and r the number of general range
watches (scanned). Shapes:

- single key (``range_end == b""``): one dict lookup;
- prefix (``range_end == prefix_end(key)``), including a path subtree ``[p + "/", p + "0")``:
  prefixes ending in ``/`` are looked up at each ``/`` of the key, O(d); the others at each
  distinct registered prefix length, O(p) (the empty prefix, "every key", is length 0);
- any other range, such as etcd's ``[k, "\\0")`` from-key watch: scanned, O(r);
- a path and its subtree at path boundaries (``/app`` holds ``/app`` and ``/app/x``, not
  ``/application``: :meth:`WatchIndex.add_tree`): one dict lookup for the path and the
  subtree's ``/`` prefix, so exactly, where the byte range ``[/app, /app0)`` would also hold
  ``/app-x``.
"""

from __future__ import annotations

from collections.abc import Iterable

from confer.kv.keyrange import FROM_KEY
from confer.kv.paths import prefix_end
from confer.kv.types import Event


class WatchIndex:
    """Maps keys to the ids of the watches whose range holds them."""

    def __init__(self) -> None:
        self._exact: dict[bytes, set[int]] = {}
        self._slash: dict[bytes, set[int]] = {}  # prefixes ending with "/"
        self._by_len: dict[int, dict[bytes, set[int]]] = {}  # other prefixes, by length
        self._ranges: dict[int, tuple[bytes, bytes | None]] = {}
        self._where: dict[int, tuple[str, bytes]] = {}  # watch id -> (shape, key)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, watch_id: object) -> bool:
        return watch_id in self._where

    def add(self, watch_id: int, key: bytes, range_end: bytes = b"") -> None:
        """Register a watch on the keys ``(key, range_end)`` names (etcd's three forms)."""
        if watch_id in self._where:
            raise ValueError(f"watch {watch_id} is already registered")
        if not range_end:
            self._exact.setdefault(key, set()).add(watch_id)
            self._where[watch_id] = ("exact", key)
        elif range_end == prefix_end(key):
            if key.endswith(b"/"):
                self._slash.setdefault(key, set()).add(watch_id)
                self._where[watch_id] = ("slash", key)
            else:
                self._by_len.setdefault(len(key), {}).setdefault(key, set()).add(watch_id)
                self._where[watch_id] = ("prefix", key)
        else:
            self._ranges[watch_id] = (key, None if range_end == FROM_KEY else range_end)
            self._where[watch_id] = ("range", key)

    def add_tree(self, watch_id: int, path: bytes) -> None:
        """Register a watch of the key ``path`` and every key below it (``path + b"/"...``);
        the root ``/`` holds every key that starts with ``/``."""
        if watch_id in self._where:
            raise ValueError(f"watch {watch_id} is already registered")
        if not path.endswith(b"/"):  # the root has no key of its own
            self._exact.setdefault(path, set()).add(watch_id)
        under = path if path.endswith(b"/") else path + b"/"
        self._slash.setdefault(under, set()).add(watch_id)
        self._where[watch_id] = ("tree", path)

    def remove(self, watch_id: int) -> bool:
        """Unregister a watch; False if it was not registered."""
        where = self._where.pop(watch_id, None)
        if where is None:
            return False
        shape, key = where
        if shape == "range":
            del self._ranges[watch_id]
            return True
        if shape == "tree":
            if not key.endswith(b"/"):
                self._discard(self._exact, key, watch_id)
            self._discard(self._slash, key if key.endswith(b"/") else key + b"/", watch_id)
            return True
        if shape == "prefix":
            table = self._by_len[len(key)]
        else:
            table = self._exact if shape == "exact" else self._slash
        ids = table[key]
        ids.discard(watch_id)
        if not ids:
            del table[key]
            if shape == "prefix" and not table:
                del self._by_len[len(key)]
        return True

    @staticmethod
    def _discard(table: dict[bytes, set[int]], key: bytes, watch_id: int) -> None:
        ids = table[key]
        ids.discard(watch_id)
        if not ids:
            del table[key]

    def match(self, key: bytes) -> list[int]:
        """The ids of the watches whose range holds ``key`` (each once, in no set order)."""
        out: list[int] = []
        ids = self._exact.get(key)
        if ids:
            out.extend(ids)
        if self._slash:
            slash = self._slash
            i = key.find(b"/")
            while i >= 0:
                ids = slash.get(key[: i + 1])
                if ids:
                    out.extend(ids)
                i = key.find(b"/", i + 1)
        for length, table in self._by_len.items():
            if length <= len(key):
                ids = table.get(key[:length])
                if ids:
                    out.extend(ids)
        for watch_id, (lo, hi) in self._ranges.items():
            if lo <= key and (hi is None or key < hi):
                out.append(watch_id)
        return out

    def match_events(self, events: Iterable[Event]) -> dict[int, list[Event]]:
        """Group a revision's events by the watches they concern, keeping event order."""
        out: dict[int, list[Event]] = {}
        for event in events:
            for watch_id in self.match(event.kv.key):
                out.setdefault(watch_id, []).append(event)
        return out
