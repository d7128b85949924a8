"""Coordination commands of the `confer` CLI: leases, locks, elections, service discovery.

The long-running ones (``lease keep-alive``, ``lock``, ``elect``, ``service register``) run
until Ctrl-C or SIGTERM, then clean up (revoke, release, resign, deregister) and exit 0; if
what they hold is lost meanwhile, they print one line on stderr and exit 3.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import click

from confer.cli.context import Ctx, client_options, follow, print_listing, show
from confer.cli.output import (
    EXIT_NOT_FOUND,
    EXIT_UNAVAILABLE,
    fail,
    handle_errors,
    print_json,
    text,
    to_jsonable,
)
from confer.client import (
    Check,
    CheckKind,
    Client,
    Election,
    Instance,
    InvalidArgument,
    KeyValue,
    Lock,
    ServiceEvent,
    Weights,
)
from confer.client.coord import Handle

EXIT_LOST = EXIT_UNAVAILABLE
LOCK_ENV = frozenset({"CONFER_LOCK_KEY", "CONFER_FENCING_TOKEN", "CONFER_LEASE_ID"})
"""What `confer lock` puts in its command's environment."""
"""What a command exits with when its lease, lock, leadership or registration is lost."""
TERMINATE_GRACE = 5.0
"""Seconds a command run under a lost lock gets between SIGTERM and SIGKILL."""


def lease_id(value: str) -> int:
    """A lease id in decimal or, with 0x, in hex (as lock and election keys name them)."""
    try:
        parsed = int(value, 0)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a lease id (decimal, or hex with 0x)"
                                 ) from None
    if parsed <= 0:
        raise click.BadParameter(f"{value!r}: lease ids are positive")
    return parsed


class _Interrupted:
    """Which signal ended a long-running command (SIGINT or SIGTERM)."""

    signum = signal.SIGINT


@contextlib.contextmanager
def interruptible() -> Iterator[_Interrupted]:
    """Make SIGTERM end the command like Ctrl-C does (``KeyboardInterrupt``), so that it
    cleans up; tell which signal it was."""
    got = _Interrupted()

    def on_signal(signum: int, frame: Any) -> None:
        got.signum = signal.Signals(signum)
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield got
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def until_lost(handle: Handle[Client]) -> None:
    """Block until ``handle`` is lost (then fail with exit code 3) or interrupted."""
    while not handle.wait_lost(0.5):
        pass
    fail(f"lost: {handle.error}", EXIT_LOST)


class Printer:
    """Prints from several threads (a watch callback and the main thread), one line at a
    time, flushed."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.lock = threading.Lock()

    def emit(self, line: str, record: dict[str, Any]) -> None:
        with self.lock:
            click.echo(json.dumps(to_jsonable(record)) if self.ctx.json else line)
            sys.stdout.flush()


def register(cli: click.Group) -> None:
    """Attach the coordination commands to the top-level group."""
    _lease_commands(cli)
    _lock_command(cli)
    _elect_command(cli)
    _service_commands(cli)


def _lease_commands(cli: click.Group) -> None:
    @cli.group("lease")
    def lease() -> None:
        """Grant, revoke, inspect and keep alive leases."""

    @lease.command("grant")
    @click.argument("ttl", type=click.IntRange(1))
    @click.option("--id", "id_", type=lease_id, default=None,
                  help="Use this lease id (decimal, or hex with 0x).")
    @client_options
    @handle_errors
    def lease_grant(ctx: Ctx, ttl: int, id_: int | None) -> None:
        """Grant a lease of TTL seconds; print its id. Attach keys with `put --lease ID`."""
        with ctx.client() as c:
            res = c.lease_grant(ttl, id=id_ or 0)
        show(ctx, res, f"lease {res.id} ({res.id:#x}) granted with TTL {res.ttl}s")

    @lease.command("revoke")
    @click.argument("lease", type=lease_id)
    @client_options
    @handle_errors
    def lease_revoke(ctx: Ctx, lease: int) -> None:
        """Revoke LEASE: delete it and every key attached to it."""
        with ctx.client() as c:
            res = c.lease_revoke(lease)
        show(ctx, res, f"lease {lease} revoked ({res.deleted} keys deleted)")

    @lease.command("ttl")
    @click.argument("lease", type=lease_id)
    @click.option("--keys", is_flag=True, help="Also list the keys attached to it.")
    @client_options
    @handle_errors
    def lease_ttl(ctx: Ctx, lease: int, keys: bool) -> None:
        """Show the remaining and granted TTL of LEASE (from the leader's clock)."""
        with ctx.client() as c:
            res = c.lease_time_to_live(lease, keys=keys)
        if res is None:
            fail(f"lease {lease} not found (expired, revoked or never granted)",
                 EXIT_NOT_FOUND)
            return
        if ctx.json:
            print_json(res)
            return
        click.echo(f"lease {res.id} ({res.id:#x}): {res.remaining:.1f}s remaining of "
                   f"{res.granted_ttl}s")
        for key in res.keys:
            click.echo(key)

    @lease.command("list")
    @client_options
    @handle_errors
    def lease_list(ctx: Ctx) -> None:
        """List every lease with its granted TTL."""
        with ctx.client() as c:
            leases = c.lease_list()
        print_listing(ctx, leases, ["ID", "HEX", "GRANTED_TTL"],
                      lambda s: [s.id, f"{s.id:#x}", s.granted_ttl])

    @lease.command("keep-alive")
    @click.argument("lease", type=lease_id)
    @client_options
    @handle_errors
    def lease_keep_alive(ctx: Ctx, lease: int) -> None:
        """Keep LEASE alive until Ctrl-C (the lease is not revoked then: it expires after
        its TTL). Exits with code 3 if the lease is lost."""
        printer = Printer(ctx)
        with ctx.client() as c, interruptible():
            try:
                with c.lease_keep_alive(lease) as handle:
                    printer.emit(f"keeping lease {lease} ({lease:#x}) alive, TTL "
                                 f"{handle.ttl}s; Ctrl-C to stop",
                                 {"event": "keep-alive", "id": lease, "ttl": handle.ttl})
                    until_lost(handle)
            except KeyboardInterrupt:
                pass


def _lock_command(cli: click.Group) -> None:
    @cli.command("lock", context_settings={"ignore_unknown_options": True})
    @click.argument("name")
    @click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
    @click.option("--ttl", type=click.IntRange(1), default=10, show_default=True,
                  help="TTL of the lock's lease: if this process dies, the lock is released "
                       "within about this long.")
    @click.option("--wait", type=click.FloatRange(0), default=0,
                  help="Give up after waiting this many seconds for the lock (0: for ever).")
    @client_options
    @handle_errors
    def lock(ctx: Ctx, name: str, command: tuple[str, ...], ttl: int, wait: float) -> None:
        """Run COMMAND while holding the lock NAME: confer lock NAME -- COMMAND [ARGS...].

        COMMAND gets CONFER_LOCK_KEY, CONFER_FENCING_TOKEN and CONFER_LEASE_ID in its
        environment: pass the token along with every write it guards. Exits with COMMAND's
        exit code after releasing the lock. If the lock is lost meanwhile, COMMAND gets
        SIGTERM (SIGKILL 5 s later) and confer exits with code 3.
        """
        with ctx.client() as c, interruptible() as got:
            held = c.lock(name, ttl=ttl, timeout=wait or None)
            try:
                with held:
                    code = run_holding(held, list(command), got)
            except KeyboardInterrupt:
                sys.exit(130)
        if held.lost:
            fail(f"lock {name} was lost while {command[0]} ran: {held.error}", EXIT_LOST)
        sys.exit(code)


def run_holding(lock: Lock[Client], command: list[str], got: _Interrupted) -> int:
    """Run ``command`` with the lock's key, token and lease in its environment; forward
    SIGINT/SIGTERM to it; terminate it if the lock is lost. Returns its exit code (128 + the
    signal that ended it)."""
    env = {**os.environ, "CONFER_LOCK_KEY": lock.key,
           "CONFER_FENCING_TOKEN": str(lock.fencing_token),
           "CONFER_LEASE_ID": str(lock.lease.id)}
    try:
        proc = subprocess.Popen(command, env=env)
    except OSError as e:
        fail(f"cannot run {command[0]}: {e.strerror or e}", 127)
        raise  # not reached: fail() exits
    lost_at: list[float] = []

    def on_lost(error: object) -> None:
        lost_at.append(time.monotonic())
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()

    lock.on_lost(on_lost)
    while True:
        try:
            code = proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            if lost_at and time.monotonic() - lost_at[0] > TERMINATE_GRACE:
                proc.kill()
            continue
        except KeyboardInterrupt:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(got.signum)
            continue
        return code if code >= 0 else 128 - code


def _elect_command(cli: click.Group) -> None:
    @cli.command("elect")
    @click.argument("name")
    @click.argument("value", required=False)
    @click.option("--ttl", type=click.IntRange(1), default=10, show_default=True,
                  help="TTL of the candidate's lease.")
    @click.option("--listen", is_flag=True, help="Only print the leaders; do not campaign.")
    @client_options
    @handle_errors
    def elect(ctx: Ctx, name: str, value: str | None, ttl: int, listen: bool) -> None:
        """Campaign in the election NAME with VALUE and print leadership changes until
        Ctrl-C (then resign). With --listen, only print the leaders.

        \b
        Lines: "leader VALUE (key KEY, rev N)" for each leader (and each new value),
        "elected KEY (rev N)" when this process is elected. Exits with code 3 if its
        leadership is lost.
        """
        if (value is None) != listen:
            raise click.UsageError("give a VALUE to campaign with, or --listen (not both)")
        printer = Printer(ctx)

        def on_leader(kv: KeyValue) -> None:
            printer.emit(f"leader {text(kv.value)} (key {kv.path}, rev {kv.create_revision})",
                         {"event": "leader", "key": kv.path, "value": kv.value,
                          "rev": kv.create_revision})

        def on_error(error: BaseException) -> None:
            click.echo(f"Error: observe {name}: {error}", err=True)

        with ctx.client() as c, interruptible():
            election = c.election(name, ttl=ttl)
            watch = election.observe(callback=on_leader, on_error=on_error)
            try:
                if listen:
                    while not watch.wait(0.5):
                        pass
                else:
                    with election:
                        campaign(election, value or "", printer)
            except KeyboardInterrupt:
                return
            finally:
                watch.cancel()
        if watch.error is not None:
            sys.exit(EXIT_UNAVAILABLE)


def campaign(election: Election[Client], value: str, printer: Printer) -> None:
    """Campaign, report the election, and lead until lost (exit 3) or interrupted."""
    election.campaign(value)
    printer.emit(f"elected {election.key} (rev {election.rev})",
                 {"event": "elected", "key": election.key, "value": value.encode(),
                  "rev": election.rev})
    until_lost(election)


DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}


class Duration(click.ParamType):
    """Seconds, as a number or with a unit: ``5``, ``5s``, ``200ms``, ``1m``."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            seconds = float(value)
        else:
            text = str(value).strip().lower()
            unit = next((u for u in ("ms", "s", "m") if text.endswith(u)), "")
            try:
                seconds = float(text[:len(text) - len(unit)]) * DURATION_UNITS.get(unit, 1.0)
            except ValueError:
                seconds = 0.0
        if not 0 < seconds < 86400:
            self.fail(f"{value!r} is not a duration (a positive number of seconds, or with "
                      "ms, s or m: 200ms, 5s, 1m)", param, ctx)
        return seconds


def parse_meta(meta: tuple[str, ...]) -> dict[str, str]:
    """``--meta KEY=VALUE`` options as a dict."""
    metadata = {}
    for item in meta:
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--meta")
        metadata[key] = val
    return metadata


@dataclass(frozen=True, slots=True)
class CheckTls:
    """The ``--check-tls``, ``--check-cacert``, ``--check-cert`` and ``--check-key``
    options."""

    tls: bool = False
    cacert: str = ""
    cert: str = ""
    key: str = ""


def make_check(http: str | None, tcp: str | None, grpc_target: str | None, interval: float,
               timeout: float, threshold: int, tls: CheckTls = CheckTls()) -> Check | None:
    """The health check the ``--check-*`` options describe (None without one)."""
    given = [(k, t) for k, t in (("http", http), ("tcp", tcp), ("grpc", grpc_target)) if t]
    if len(given) > 1:
        raise click.UsageError("give one of --check-http, --check-tcp and --check-grpc")
    if not given:
        if tls != CheckTls():
            raise click.UsageError("--check-tls, --check-cacert, --check-cert and --check-key "
                                   "go with --check-http https://... or --check-grpc")
        return None
    kind, target = given[0]
    service = ""
    if kind == "grpc":
        target, _, service = target.partition("/")
    try:
        return Check(CheckKind(kind), target, service, interval, timeout, threshold,
                     tls.cacert, tls.cert, tls.key, tls.tls)
    except InvalidArgument as e:
        raise click.BadParameter(e.details or str(e), param_hint=f"--check-{kind}") from None


def _service_commands(cli: click.Group) -> None:
    @cli.group("service")
    def service() -> None:
        """Register, list, check and watch the instances of services
        (/services/<service>/<id>)."""

    @service.command("register")
    @click.argument("service_name", metavar="SERVICE")
    @click.argument("where", nargs=-1, required=True, metavar="[INSTANCE] ADDRESS")
    @click.option("--meta", multiple=True, metavar="KEY=VALUE",
                  help="Metadata, repeatable: --meta zone=eu --meta version=2.")
    @click.option("--tag", "tags", multiple=True, help="A tag, repeatable.")
    @click.option("--weight", type=click.IntRange(0, 65535), default=1, show_default=True,
                  help="Weight while passing (DNS SRV weight).")
    @click.option("--warning-weight", type=click.IntRange(0, 65535), default=1,
                  show_default=True, help="Weight while warning.")
    @click.option("--ttl", type=click.IntRange(1), default=10, show_default=True,
                  help="TTL of the registration's lease.")
    @click.option("--check-http", metavar="URL",
                  help="Health check: GET URL; 2xx passing, 429 warning, else critical.")
    @click.option("--check-tcp", metavar="HOST:PORT",
                  help="Health check: connect to HOST:PORT.")
    @click.option("--check-grpc", metavar="HOST:PORT[/SERVICE]",
                  help="Health check: grpc.health.v1 Check (plaintext, or --check-tls); "
                       "SERVING passes.")
    @click.option("--check-tls", is_flag=True,
                  help="The gRPC check speaks TLS (an HTTP check does with https://).")
    @click.option("--check-cacert", metavar="FILE", default="",
                  help="TLS checks: verify the server with this CA (PEM) [the system's].")
    @click.option("--check-cert", metavar="FILE", default="",
                  help="TLS checks: present this client certificate (PEM; with --check-key).")
    @click.option("--check-key", metavar="FILE", default="",
                  help="The client certificate's private key (PEM).")
    @click.option("--interval", type=Duration(), default="10s", show_default=True,
                  help="Time between health checks (5s, 200ms...).")
    @click.option("--check-timeout", type=Duration(), default="1s", show_default=True,
                  help="Time a health check may take (--timeout is the requests' deadline).")
    @click.option("--threshold", type=click.IntRange(1), default=1, show_default=True,
                  help="Consecutive check results needed to change the status (damps "
                       "flapping).")
    @client_options
    @handle_errors
    def service_register(ctx: Ctx, service_name: str, where: tuple[str, ...],
                         meta: tuple[str, ...], tags: tuple[str, ...], weight: int,
                         warning_weight: int, ttl: int, check_http: str | None,
                         check_tcp: str | None, check_grpc: str | None, check_tls: bool,
                         check_cacert: str, check_cert: str, check_key: str,
                         interval: float, check_timeout: float, threshold: int) -> None:
        """Register an instance of SERVICE at ADDRESS (HOST:PORT) until Ctrl-C (then
        deregister); INSTANCE (its id) defaults to ADDRESS. If this process dies, the
        instance disappears within TTL seconds. With a --check-* option, this process
        checks the instance every --interval and records its health (passing, warning,
        critical) in the catalog, and prints a line ("critical: HTTP 503 ...") each time it
        changes."""
        if len(where) > 2:
            raise click.UsageError("expected SERVICE [INSTANCE] ADDRESS")
        instance, address = (where[0], where[-1])
        check = make_check(check_http, check_tcp, check_grpc, interval, check_timeout,
                           threshold, CheckTls(check_tls, check_cacert, check_cert, check_key))
        printer = Printer(ctx)
        with ctx.client() as c, interruptible():
            try:
                with c.register(service_name, instance, address, parse_meta(meta), ttl=ttl,
                                tags=tags, weights=Weights(weight, warning_weight),
                                check=check) as reg:
                    health = f", {reg.status.value}" if check else ""
                    printer.emit(f"registered {reg.path} at {address} (lease {reg.lease.id}, "
                                 f"TTL {reg.lease.ttl}s{health}); Ctrl-C to deregister",
                                 {"event": "registered", "key": reg.path,
                                  "instance": reg.instance, "lease": reg.lease.id})
                    reg.on_status(lambda i: printer.emit(
                        f"{i.status.value}: {i.output}",
                        {"event": "status", "status": i.status, "output": i.output}))
                    until_lost(reg)
            except KeyboardInterrupt:
                pass

    @service.command("list")
    @click.argument("service_name", metavar="SERVICE")
    @click.option("--healthy", is_flag=True, help="Only the healthy instances (not critical).")
    @click.option("--tag", "tags", multiple=True, help="Only instances with this tag "
                                                       "(repeatable: all of them).")
    @client_options
    @handle_errors
    def service_list(ctx: Ctx, service_name: str, healthy: bool, tags: tuple[str, ...]
                     ) -> None:
        """List the live instances of SERVICE."""
        with ctx.client() as c:
            instances = c.discover(service_name, healthy_only=healthy, tags=tags)
        print_listing(ctx, instances, ["INSTANCE", "ADDRESS", "METADATA", "TAGS", "STATUS",
                                       "REVISION"], instance_row)

    @service.command("health")
    @click.argument("service_name", metavar="SERVICE")
    @client_options
    @handle_errors
    def service_health(ctx: Ctx, service_name: str) -> None:
        """Show the health of every live instance of SERVICE: status, check, last output."""
        with ctx.client() as c:
            instances = c.discover(service_name)
        print_listing(ctx, instances, ["INSTANCE", "ADDRESS", "STATUS", "WEIGHT", "CHECK",
                                       "OUTPUT"],
                      lambda i: [i.id, i.address, i.status.value, i.weights.of(i.status),
                                 i.check or "ttl", i.output])

    @service.command("watch")
    @click.argument("service_name", metavar="SERVICE")
    @click.option("--no-current", is_flag=True,
                  help="Do not start with a JOIN for each live instance.")
    @click.option("--healthy", is_flag=True,
                  help="Print the healthy set (one line, the instance ids) each time it "
                       "changes, starting with the current one.")
    @click.option("--count", type=click.IntRange(1), default=None,
                  help="Exit after this many events.")
    @client_options
    @handle_errors
    def service_watch(ctx: Ctx, service_name: str, no_current: bool, healthy: bool,
                      count: int | None) -> None:
        """Print instances of SERVICE joining, changing and leaving, until Ctrl-C."""
        with ctx.client() as c:
            if healthy:
                follow(c.watch_healthy(service_name), count,
                       functools.partial(print_healthy_set, ctx))
            else:
                follow(c.watch_service(service_name, current=not no_current), count,
                       functools.partial(print_service_event, ctx))


def instance_row(i: Instance) -> list[Any]:
    meta = ",".join(f"{k}={v}" for k, v in sorted(i.metadata.items()))
    return [i.id, i.address, meta, ",".join(i.tags), i.status.value, i.revision]


def print_service_event(ctx: Ctx, e: ServiceEvent) -> None:
    if ctx.json:
        print_json(e)
    else:
        click.echo(f"{e.type.value:<6} " + "  ".join(str(c) for c in instance_row(e.instance)
                                                     if c != ""))
    sys.stdout.flush()


def print_healthy_set(ctx: Ctx, instances: list[Instance]) -> None:
    if ctx.json:
        print_json(instances)
    else:
        click.echo("healthy: " + (" ".join(f"{i.id}={i.address}" for i in instances)
                                  or "(none)"))
    sys.stdout.flush()


__all__ = ["EXIT_LOST", "LOCK_ENV", "register"]
