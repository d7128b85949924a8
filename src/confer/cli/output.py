"""Printing results as aligned tables or JSON, and turning client errors into exit codes.

Values are bytes. In tables and lines of text they are shown as UTF-8 text, invalid bytes and
control characters escaped (``\\xff``, ``\\n``), a table cell cut at :data:`MAX_CELL`
characters; ``--hex`` shows them in hexadecimal, ``get --print-value-only`` writes the exact
bytes. In JSON (``-o json``) every value is base64 (RFC 4648, padded), as in etcd's JSON."""

from __future__ import annotations

import base64
import dataclasses
import enum
import functools
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import click

from confer.client import (
    ConferError,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    OutcomeUnknown,
    Unavailable,
)
from confer.client.errors import plain_message

EXIT_ERROR = 1
"""The server refused the request (failed precondition, compacted revision, ...)."""
EXIT_USAGE = 2
"""Bad input: a flag (click's own exit status for usage errors), or a request the server
found invalid (a malformed path, an oversized value...)."""
EXIT_UNAVAILABLE = 3
"""No member answered in time, or a write's outcome is unknown."""
EXIT_NOT_FOUND = 4

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """One line on stderr and a non-zero exit for every client error: never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NotFound as e:
            fail(plain(str(e)), EXIT_NOT_FOUND)
        except InvalidArgument as e:
            fail(plain(str(e)), EXIT_USAGE)
        except Unavailable as e:
            # gRPC tells only that no connection was made: a TLS mismatch is named instead
            # (the command's first argument, its Ctx, can tell).
            problem = getattr(args[0], "tls_problem", lambda: None)() if args else None
            fail(problem or f"{type(e).__name__}: {plain(str(e))}", EXIT_UNAVAILABLE)
        except (DeadlineExceeded, OutcomeUnknown) as e:
            fail(f"{type(e).__name__}: {plain(str(e))}", EXIT_UNAVAILABLE)
        except ConferError as e:
            fail(plain(str(e)), EXIT_ERROR)
        except KeyboardInterrupt:
            sys.exit(130)

    return cast(F, wrapper)


plain = plain_message
"""A server's error message without what only means something inside Confer or etcd (the
client's exceptions already carry it so; kept for messages that did not pass the client)."""


def fail(message: str, code: int = EXIT_ERROR) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    return value


def print_json(value: Any) -> None:
    click.echo(json.dumps(to_jsonable(value)))


def text(value: bytes) -> str:
    """A value as text: UTF-8, invalid bytes as ``\\xNN``."""
    return value.decode("utf-8", "backslashreplace")


def show_value(value: bytes, hex_: bool = False, limit: int | None = None) -> str:
    """A value on one line: hexadecimal, or text with control characters escaped; with
    ``limit``, at most that many characters (a cut value ends in ``...``)."""
    # A character takes at most 4 bytes (and 2 hex digits 1 byte): a table cell of 60
    # characters never needs more of a 1 MiB value than its first 240 bytes.
    head = value if limit is None else value[:4 * limit]
    shown = head.hex() if hex_ else "".join(
        c if c.isprintable() else repr(c)[1:-1] for c in text(head))
    if limit is not None and (len(shown) > limit or len(head) < len(value)):
        return shown[:limit - 3] + "..."
    return shown


MAX_CELL = 60
"""The widest a table column gets: longer cells are cut (``...``)."""


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
                max_cell: int | None = MAX_CELL) -> None:
    """Rows aligned under their headers; no cell wider than ``max_cell`` (None: cells that
    are never long, such as a checksum, shown whole)."""

    def cut(c: Any) -> str:
        c = str(c)
        return c if max_cell is None or len(c) <= max_cell else c[:max_cell - 3] + "..."

    cells = [[cut(h) for h in headers]] + [[cut(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))
