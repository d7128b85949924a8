"""Paths (the native API's keys) and the byte ranges they map to.

The store itself takes any non-empty byte key, as etcd does; the native API validates paths here
before a command is proposed. A path is UTF-8 text such as ``/app/config/db``: the keys of a
subtree are then one contiguous byte range, because every key strictly under ``/app`` starts
with ``/app/`` and ``0`` is the byte right after ``/``.
"""

from __future__ import annotations

from confer.kv.errors import InvalidArgument

MAX_PATH_BYTES = 4096
MAX_VALUE_BYTES = 1 << 20
ROOT = b"/"


def validate_path(path: str | bytes, max_bytes: int = MAX_PATH_BYTES, *,
                  allow_root: bool = True) -> bytes:
    """Check a path against the rules and return its UTF-8 bytes.

    Rules: starts with ``/``; no empty segment (no ``//``); no trailing ``/`` except the root
    ``/`` itself; no ``.`` or ``..`` segment and no NUL character (as ZooKeeper: they would make
    two spellings of one node); at most ``max_bytes`` bytes. The root is valid where a path
    names a subtree (listing, watching) but not as a key: use ``allow_root=False`` (or
    :func:`validate_key`) for writes.

    Raises:
        InvalidArgument: naming the path and the rule it breaks.
    """
    if isinstance(path, bytes):
        try:
            text = path.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidArgument(f"invalid path {path!r}: not valid UTF-8") from e
        raw = path
    elif isinstance(path, str):
        text = path
        try:
            raw = path.encode("utf-8")
        except UnicodeEncodeError as e:  # lone surrogates
            raise InvalidArgument(f"invalid path {path!r}: not encodable as UTF-8") from e
    else:
        raise InvalidArgument(f"invalid path {path!r}: must be a string")
    if not text.startswith("/"):
        raise InvalidArgument(f"invalid path {text!r}: must start with '/'")
    if len(raw) > max_bytes:
        raise InvalidArgument(f"invalid path {text[:64]!r}...: {len(raw)} bytes, "
                              f"at most {max_bytes} allowed")
    if text == "/":
        if not allow_root:
            raise InvalidArgument("invalid path '/': the root is not a key")
        return raw
    if text.endswith("/"):
        raise InvalidArgument(f"invalid path {text!r}: must not end with '/'")
    if "\x00" in text:
        raise InvalidArgument(f"invalid path {text!r}: must not contain NUL")
    for segment in text[1:].split("/"):
        if not segment:
            raise InvalidArgument(f"invalid path {text!r}: empty segment ('//')")
        if segment in (".", ".."):
            raise InvalidArgument(f"invalid path {text!r}: relative segment {segment!r}")
    return raw


def validate_key(path: str | bytes, max_bytes: int = MAX_PATH_BYTES) -> bytes:
    """:func:`validate_path` for a path that is written to: the root is refused."""
    return validate_path(path, max_bytes, allow_root=False)


def validate_value(value: bytes | bytearray | memoryview, max_bytes: int = MAX_VALUE_BYTES
                   ) -> bytes:
    """Check a value's type and size; return it as ``bytes``."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise InvalidArgument(f"invalid value: expected bytes, got {type(value).__name__}")
    data = bytes(value)
    if len(data) > max_bytes:
        raise InvalidArgument(f"invalid value: {len(data)} bytes, at most {max_bytes} allowed")
    return data


def _as_bytes(path: str | bytes) -> bytes:
    return path.encode("utf-8") if isinstance(path, str) else path


def subtree_range(path: str | bytes) -> tuple[bytes, bytes]:
    """The byte range ``[start, end)`` of every key strictly under ``path``.

    ``/app`` gives ``[b"/app/", b"/app0")``: it holds ``/app/x`` but not ``/app`` itself nor
    ``/application``. The root gives ``[b"/", b"0")``, every path.
    """
    raw = _as_bytes(path)
    base = raw if raw.endswith(b"/") else raw + b"/"
    return base, base[:-1] + b"0"


def prefix_end(prefix: bytes) -> bytes:
    """The range end that selects every key starting with ``prefix`` (etcd's
    ``GetPrefixRangeEnd``): the prefix with its last byte below 0xff incremented and the rest
    dropped. ``b"\\0"`` (all keys from ``prefix`` on) when there is no such byte."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"
