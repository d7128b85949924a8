"""Printing results as aligned tables or JSON, and turning client errors into exit codes."""

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
    Compacted,
    ConferError,
    DeadlineExceeded,
    NotFound,
    OutcomeUnknown,
    Unavailable,
)

EXIT_ERROR = 1
"""The server refused the request (bad input, failed precondition, ...)."""
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
            fail(str(e), EXIT_NOT_FOUND)
        except Unavailable as e:
            # gRPC tells only that no connection was made: a TLS mismatch is named instead
            # (the command's first argument, its Ctx, can tell).
            problem = getattr(args[0], "tls_problem", lambda: None)() if args else None
            fail(problem or f"{type(e).__name__}: {e}", EXIT_UNAVAILABLE)
        except (DeadlineExceeded, OutcomeUnknown) as e:
            fail(f"{type(e).__name__}: {e}", EXIT_UNAVAILABLE)
        except Compacted as e:
            fail(str(e), EXIT_ERROR)
        except ConferError as e:
            fail(str(e), EXIT_ERROR)
        except KeyboardInterrupt:
            sys.exit(130)

    return cast(F, wrapper)


def fail(message: str, code: int = EXIT_ERROR) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode()}
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
    return value.decode("utf-8", "backslashreplace")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))
