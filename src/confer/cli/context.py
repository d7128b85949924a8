"""What every client command of the `confer` CLI shares: the connection and output options
(global: before or after the command), the :class:`Ctx` built from them, and how results and
watches are shown.

Both command modules (:mod:`confer.cli.commands`, :mod:`confer.cli.coord`) import this one,
and neither imports the other."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import click
import grpc

from confer.cli.output import print_json, print_table
from confer.client import Client as SyncClient
from confer.client.aio import new_channel
from confer.client.credentials import Credentials
from confer.client.endpoints import DEFAULT_ENDPOINT, parse_endpoint, parse_endpoints
from confer.client.errors import InvalidArgument
from confer.client.transport import tls_credentials, tls_problem


@dataclass(frozen=True)
class ConnectionOption:
    """An option of every client command, given before the command (``confer -o json get
    /a``) or after it (``confer get /a -o json``): after wins, then the environment
    (``CONFER_`` + its name in capitals: :func:`env_name`), then the default."""

    flags: tuple[str, ...]
    name: str
    default: Any
    help: str
    type: Any = None


CONNECTION_OPTIONS: list[ConnectionOption] = [
    ConnectionOption(("--endpoints",), "endpoints", DEFAULT_ENDPOINT,
                     "Comma-separated client addresses: HOST:PORT or http(s)://HOST:PORT."),
    ConnectionOption(("-o", "--output"), "output", "table", "Output format.",
                     click.Choice(["table", "json"])),
    ConnectionOption(("--timeout",), "timeout", 10.0, "Seconds per request.",
                     click.FloatRange(0.1, 3600)),
    ConnectionOption(("--cacert",), "cacert", None,
                     "TLS: the CA that signed the servers' certificates. Any of --cacert, "
                     "--cert, --key, or https:// endpoints, turn TLS on."),
    ConnectionOption(("--cert",), "cert", None,
                     "Client certificate (PEM), for TLS servers that require one."),
    ConnectionOption(("--key",), "key_file", None, "Client certificate's private key (PEM)."),
    ConnectionOption(("--user",), "user", None,
                     "Authenticate as NAME[:PASSWORD] (the password is prompted for when "
                     "missing)."),
]


def env_name(option: str) -> str:
    """The environment variable of a flag: ``CONFER_`` and its long name in capitals, dashes
    as underscores (``--data-dir``: ``CONFER_DATA_DIR``). Every flag of ``confer`` follows it."""
    return "CONFER_" + option.lstrip("-").replace("-", "_").upper()


@dataclass
class Ctx:
    """What a client command was given: the settings of :data:`CONNECTION_OPTIONS`."""

    endpoints: list[str]
    """As given: ``host:port`` or a URL (whose ``https`` scheme asks for TLS)."""
    output: str
    timeout: float
    cacert: str | None = None
    cert: str | None = None
    key_file: str | None = None
    """``--key`` (not ``key``, which commands take as an argument)."""
    user: str | None = None
    password: str = ""

    def client(self) -> SyncClient:
        # A command line gives up at once when nothing listens at any endpoint.
        return SyncClient(self.endpoints, timeout=self.timeout, fail_fast=True,
                          cacert=self.cacert, cert=self.cert, key=self.key_file,
                          user=self.user, password=self.password)

    def aio_channel(self, endpoint: str) -> grpc.aio.Channel:
        """A channel to one endpoint with this command's TLS settings and user, for the
        calls the client does not make (a snapshot's download)."""
        (address,), tls = tls_credentials([endpoint], self.cacert, self.cert,
                                           self.key_file)
        return new_channel(address, tls,
                           Credentials(self.user, self.password) if self.user else None)

    def tls_problem(self) -> str | None:
        """Why no endpoint could be reached, when TLS is the reason (else None)."""
        for endpoint in self.endpoints:
            problem = tls_problem(endpoint, self.cacert, self.cert, self.key_file)
            if problem is not None:
                return problem
        return None

    @property
    def json(self) -> bool:
        return self.output == "json"

    @property
    def addresses(self) -> list[str]:
        """The endpoints as gRPC dials them (``host:port``: a URL's scheme dropped)."""
        return [parse_endpoint(e).address for e in self.endpoints]


def global_options(group: Any) -> Any:
    """Add :data:`CONNECTION_OPTIONS` to the top-level group (with their defaults and
    environment variables); its callback keeps their values in ``ctx.obj``."""
    for o in reversed(CONNECTION_OPTIONS):
        env = env_name(o.flags[-1])
        group = click.option(*o.flags, o.name, type=o.type, default=o.default, envvar=env,
                             show_default=True, help=f"{o.help} [env {env}]")(group)
    return group


def client_options(fn: Any) -> Any:
    """Add :data:`CONNECTION_OPTIONS` to a client command, so that they may follow it too,
    and hand the command a :class:`Ctx` as its first argument: the values given after the
    command, else before it (or their environment variables and defaults)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {o.name: kwargs.pop(o.name) for o in CONNECTION_OPTIONS}
        before = click.get_current_context().find_root().obj or {}
        settings = {o.name: o.default for o in CONNECTION_OPTIONS} | before | {
            name: value for name, value in given.items() if value is not None}
        try:
            parse_endpoints(settings["endpoints"])
        except InvalidArgument as e:
            raise click.UsageError(f"--endpoints: {e}") from None
        settings["endpoints"] = [e.strip() for e in settings["endpoints"].split(",")
                                 if e.strip()]
        settings["user"], settings["password"] = credentials(settings["user"])
        return fn(Ctx(**settings), *args, **kwargs)

    for o in reversed(CONNECTION_OPTIONS):
        wrapper = click.option(*o.flags, o.name, type=o.type, default=None,
                               help=f"{o.help} (May also come before the command.)")(wrapper)
    return wrapper


def credentials(user: str | None) -> tuple[str | None, str]:
    """``NAME[:PASSWORD]`` as (name, password), prompting (without echo) for a password
    not given; (None, "") without a user."""
    if not user:
        return None, ""
    name, sep, password = user.partition(":")
    if not name:
        raise click.UsageError("--user: expected NAME[:PASSWORD]")
    if not sep:
        password = click.prompt(f"Password for {name}", hide_input=True, err=True)
    return name, password


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
