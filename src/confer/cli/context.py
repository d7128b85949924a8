"""What every client command of the `confer` CLI shares: the connection and output options,
the :class:`Ctx` built from them, and how results and watches are shown.

Both command modules (:mod:`confer.cli.commands`, :mod:`confer.cli.coord`) import this one,
and neither imports the other."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import click

from confer.cli.output import print_json, print_table
from confer.client import Client as SyncClient
from confer.client.transport import tls_problem

DEFAULT_ENDPOINTS = "127.0.0.1:7379"


@dataclass
class Ctx:
    endpoints: list[str]
    output: str
    timeout: float
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None

    def client(self) -> SyncClient:
        return SyncClient(self.endpoints, timeout=self.timeout, cacert=self.cacert,
                          cert=self.cert, key=self.key)

    def tls_problem(self) -> str | None:
        """Why no endpoint could be reached, when TLS is the reason (else None)."""
        for endpoint in self.endpoints:
            problem = tls_problem(endpoint, self.cacert, self.cert, self.key)
            if problem is not None:
                return problem
        return None

    @property
    def json(self) -> bool:
        return self.output == "json"


def client_options(fn: Any) -> Any:
    """Add the connection and output options every client command takes, and hand the
    command a :class:`Ctx` built from them as its first argument."""

    @functools.wraps(fn)
    def wrapper(*args: Any, endpoints: str, output: str, timeout: float, cacert: str | None,
                cert: str | None, key: str | None, **kwargs: Any) -> Any:
        eps = [e.strip() for e in endpoints.split(",") if e.strip()]
        if not eps:
            raise click.UsageError("--endpoints: give at least one HOST:PORT")
        return fn(Ctx(eps, output, timeout, cacert, cert, key), *args, **kwargs)

    for flag, what in (("--key", "Client certificate's private key (PEM) [env CONFER_KEY]."),
                       ("--cert", "Client certificate (PEM), for TLS servers that require "
                                  "one [env CONFER_CERT]."),
                       ("--cacert", "TLS: the CA that signed the servers' certificates "
                                    "[env CONFER_CACERT]. Any of the three, or https:// "
                                    "endpoints, turn TLS on.")):
        wrapper = click.option(flag, envvar="CONFER_" + flag[2:].upper(), default=None,
                               help=what)(wrapper)

    wrapper = click.option("--timeout", type=click.FloatRange(0.1, 3600), default=10.0,
                           show_default=True, help="Seconds per request.")(wrapper)
    wrapper = click.option("-o", "--output", type=click.Choice(["table", "json"]),
                           default="table", show_default=True, envvar="CONFER_OUTPUT",
                           help="Output format [env CONFER_OUTPUT].")(wrapper)
    return click.option("--endpoints", envvar="CONFER_ENDPOINTS", default=DEFAULT_ENDPOINTS,
                        show_default=True,
                        help="Comma-separated client addresses [env CONFER_ENDPOINTS].")(wrapper)


def show(ctx: Ctx, value: Any, line: str) -> None:
    """One result: as JSON with ``-o json``, else the line of text."""
    if ctx.json:
        print_json(value)
    else:
        click.echo(line)


def print_listing(ctx: Ctx, items: Sequence[Any], headers: list[str],
                  row: Callable[[Any], list[Any]]) -> None:
    """A list of results: as a JSON list with ``-o json``, else a table, a row per item."""
    if ctx.json:
        print_json(list(items))
    else:
        print_table(headers, [row(item) for item in items])


def follow(watch: Any, count: int | None, show: Callable[[Any], None]) -> None:
    """Show a watch's events until Ctrl-C (or ``count`` events), then cancel it."""
    try:
        for seen, event in enumerate(watch, 1):
            show(event)
            if count is not None and seen >= count:
                break
    finally:
        watch.cancel()
