"""Data and cluster commands of the `confer` CLI, built on the Python client."""

from __future__ import annotations

import functools
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from confer.cli.context import Ctx, client_options, follow, print_listing
from confer.cli.output import (
    EXIT_NOT_FOUND,
    EXIT_UNAVAILABLE,
    MAX_CELL,
    fail,
    handle_errors,
    print_json,
    print_table,
    show_value,
    text,
    to_jsonable,
)
from confer.client import (
    Client,
    ClusterEvent,
    DeadlineExceeded,
    DeleteResult,
    KeyValue,
    PutResult,
    Status,
    Unavailable,
    WatchEvent,
)
from confer.client.errors import ConferError


def kv_row(kv: KeyValue, hex_: bool = False) -> list[Any]:
    return [kv.path, show_value(kv.value, hex_, MAX_CELL), kv.create_revision,
            kv.mod_revision, kv.version, kv.lease or ""]


hex_option = click.option("--hex", "hex_", is_flag=True, help="Show values in hexadecimal.")
member_timeout_option = click.option(
    "--member-timeout", type=click.FloatRange(0.1, 3600), default=2.0, show_default=True,
    help="Seconds to wait for each member's answer (all are asked at once).")


@dataclass(frozen=True)
class EndpointCheck:
    """One endpoint's health: it answered Status and knows a leader."""

    status: Status | None
    took: float
    error: str = ""

    @property
    def healthy(self) -> bool:
        return not self.error


def check_endpoints(c: Client, addrs: list[str], timeout: float) -> dict[str, EndpointCheck]:
    """Ask every endpoint for its status at once (a dead or stuck member costs ``timeout``,
    once), in ``addrs`` order."""

    def check(addr: str) -> EndpointCheck:
        start = time.monotonic()
        try:
            st = c.status(addr, timeout=timeout)
        except ConferError as e:
            took = time.monotonic() - start
            why = "no answer" if isinstance(e, (DeadlineExceeded, Unavailable)) else "error"
            return EndpointCheck(None, took, f"{why}: {type(e).__name__}")
        took = time.monotonic() - start
        return EndpointCheck(st, took, "" if st.leader_id else "no leader")

    if not addrs:
        return {}
    with ThreadPoolExecutor(min(len(addrs), 16)) as pool:
        return dict(zip(addrs, pool.map(check, addrs), strict=True))


KV_HEADERS = ["PATH", "VALUE", "CREATE_REV", "MOD_REV", "VERSION", "LEASE"]


def register(cli: click.Group) -> None:
    """Attach every client-side command to the top-level group."""

    @cli.command("put")
    @click.argument("path")
    @click.argument("value", required=False)
    @click.option("--lease", type=int, default=0, help="Attach the key to this lease id.")
    @click.option("--prev-kv", is_flag=True, help="Print the previous value.")
    @client_options
    @handle_errors
    def put(ctx: Ctx, path: str, value: str | None, lease: int, prev_kv: bool) -> None:
        """Set PATH to VALUE (read from stdin when VALUE is omitted)."""
        data = sys.stdin.buffer.read() if value is None else value.encode()
        with ctx.client() as c:
            res: PutResult = c.put(path, data, lease=lease, prev_kv=prev_kv)
        if ctx.json:
            print_json(res)
        else:
            click.echo(f"OK (revision {res.revision})")
            if res.prev_kv is not None:
                click.echo(f"previous: {text(res.prev_kv.value)}")

    @cli.command("get")
    @click.argument("path")
    @click.option("--rev", type=click.IntRange(0), default=0, help="Read at a past revision.")
    @click.option("--serializable", is_flag=True, help="Local read, possibly stale.")
    @click.option("--print-value-only", "raw", is_flag=True,
                  help="Write the value's exact bytes, nothing else (no newline).")
    @hex_option
    @client_options
    @handle_errors
    def get(ctx: Ctx, path: str, rev: int, serializable: bool, raw: bool, hex_: bool) -> None:
        """Print the value of PATH (table output: the value alone, as text)."""
        if raw and hex_:
            raise click.UsageError("--print-value-only and --hex exclude each other")
        with ctx.client() as c:
            kv = c.get(path, revision=rev, serializable=serializable)
        if kv is None:
            fail(f"{path} not found", EXIT_NOT_FOUND)
            return
        if raw:
            sys.stdout.buffer.write(kv.value)
            sys.stdout.buffer.flush()
        elif ctx.json:
            print_json(kv)
        else:
            click.echo(kv.value.hex() if hex_ else text(kv.value))

    @cli.command("del")
    @click.argument("path")
    @click.option("-r", "--recursive", is_flag=True, help="Also delete the whole subtree.")
    @click.option("--prev-kv", is_flag=True, help="Print the deleted keys.")
    @client_options
    @handle_errors
    def delete(ctx: Ctx, path: str, recursive: bool, prev_kv: bool) -> None:
        """Delete PATH (and with -r everything below it)."""
        with ctx.client() as c:
            res: DeleteResult = c.delete(path, recursive=recursive, prev_kv=prev_kv)
        if ctx.json:
            print_json(res)
            return
        click.echo(f"deleted {res.deleted} (revision {res.revision})")
        if res.prev_kvs:
            print_table(KV_HEADERS, [kv_row(kv) for kv in res.prev_kvs])

    @cli.command("ls")
    @click.argument("path", default="/")
    @click.option("-r", "--recursive", is_flag=True,
                  help="List every key of the subtree with its value, not just child names.")
    @click.option("--limit", type=click.IntRange(0), default=0, help="At most this many.")
    @click.option("--rev", type=click.IntRange(0), default=0, help="(with -r) a past revision.")
    @hex_option
    @client_options
    @handle_errors
    def ls(ctx: Ctx, path: str, recursive: bool, limit: int, rev: int, hex_: bool) -> None:
        """List the children of PATH (like ZooKeeper's ls), or with -r its whole subtree.
        A PATH that is neither a key nor has keys below it is not found (exit status 4)."""
        with ctx.client() as c:
            if not recursive:
                if rev:
                    raise click.UsageError("--rev needs --recursive")
                res = c.children(path, limit=limit)
                if not res.names and path != "/" and c.get(path) is None:
                    fail(f"{path} not found", EXIT_NOT_FOUND)
                if ctx.json:
                    print_json(res)
                else:
                    for name in res.names:
                        click.echo(name)
                    if res.more:
                        click.echo("... (more: raise --limit)", err=True)
                return
            page = c.list(path, recursive=True, limit=limit, revision=rev)
        if not page.kvs and path != "/":
            fail(f"{path} not found" + (f" at revision {rev}" if rev else ""), EXIT_NOT_FOUND)
        if ctx.json:
            print_json(page)
            return
        print_table(KV_HEADERS, [kv_row(kv, hex_) for kv in page.kvs])
        if page.more:
            click.echo(f"... {page.count - len(page.kvs)} more (raise --limit)", err=True)

    @cli.command("watch")
    @click.argument("path")
    @click.option("-r", "--recursive", is_flag=True, help="Watch the whole subtree.")
    @click.option("--rev", type=click.IntRange(0), default=0,
                  help="Replay every change since this revision first.")
    @click.option("--prev-kv", is_flag=True, help="Show previous values.")
    @click.option("--count", type=click.IntRange(1), default=None,
                  help="Exit after this many events.")
    @client_options
    @handle_errors
    def watch(ctx: Ctx, path: str, recursive: bool, rev: int, prev_kv: bool,
              count: int | None) -> None:
        """Print changes of PATH as they happen, until Ctrl-C (or --count events)."""
        with ctx.client() as c:
            follow(c.watch(path, recursive=recursive, start_revision=rev, prev_kv=prev_kv),
                   count, functools.partial(print_event, ctx))

    @cli.command("txn")
    @click.option("-f", "--file", "path", type=click.Path(dir_okay=False, path_type=Path),
                  help="Read the transaction from a file (default: stdin).")
    @client_options
    @handle_errors
    def txn(ctx: Ctx, path: Path | None) -> None:
        """Run a transaction: compares, blank line, success ops, blank line, failure ops.

        \b
        value("/a") = "x"
        version("/b") > 0

        put /a "y"
        del /b

        get /a
        """
        from confer.cli.txnparse import TxnSyntaxError, parse_txn

        source = path.read_text() if path is not None else sys.stdin.read()
        try:
            parsed = parse_txn(source)
        except TxnSyntaxError as e:
            raise click.UsageError(str(e)) from None
        with ctx.client() as c:
            res = (c.txn().if_(*parsed.compare).then(*parsed.success)
                   .else_(*parsed.failure).commit())
        if ctx.json:
            print_json(res)
            return
        click.echo(f"{'SUCCESS' if res.succeeded else 'FAILURE'} (revision {res.revision})")
        for r in res.responses:
            if isinstance(r, KeyValue):
                click.echo(f"{r.path} = {text(r.value)}")
            elif isinstance(r, PutResult):
                click.echo("OK")
            elif isinstance(r, DeleteResult):
                click.echo(f"deleted {r.deleted}")
            else:
                click.echo("(not found)")

    @cli.command("compact")
    @click.argument("revision", type=click.IntRange(1))
    @client_options
    @handle_errors
    def compact(ctx: Ctx, revision: int) -> None:
        """Drop history at or below REVISION."""
        with ctx.client() as c:
            c.compact(revision)
        click.echo(f"compacted history up to revision {revision}")

    @cli.command("status")
    @member_timeout_option
    @client_options
    @handle_errors
    def status(ctx: Ctx, member_timeout: float) -> None:
        """Show every member: role, term, indexes, revision, storage, health. Exit status 3
        when a member is unhealthy (no answer within --member-timeout, or no leader known)."""
        with ctx.client() as c:
            members = c.member_list(serializable=True)
            checks = check_endpoints(c, [m.client_addr for m in members if m.client_addr],
                                     member_timeout)
        rows: list[tuple[Any, Status | None, str]] = []
        for m in members:
            if not m.client_addr:  # added, but it has not started (or published) yet
                rows.append((m, None, "not started"))
                continue
            check = checks[m.client_addr]
            rows.append((m, check.status, "healthy" if check.healthy else
                         f"unhealthy: {check.error}"))
        if ctx.json:
            print_json([{"member": to_jsonable(m), "status": to_jsonable(s), "health": h}
                        for m, s, h in rows])
        else:
            print_table(
                ["ID", "NAME", "ENDPOINT", "ROLE", "TERM", "COMMIT", "APPLIED", "REVISION",
                 "STORAGE", "HEALTH"],
                [[m.id, m.name, m.client_addr or "-",
                  (s.role + (" (learner)" if s.is_learner else "")) if s else "-",
                  s.raft_term if s else "-", s.commit_index if s else "-",
                  s.applied_index if s else "-", s.revision if s else "-",
                  human_bytes(s.storage_bytes) if s else "-", h] for m, s, h in rows])
        if not all(check.healthy for check in checks.values()):
            sys.exit(EXIT_UNAVAILABLE)

    @cli.group("endpoint")
    def endpoint() -> None:
        """Check the endpoints (as etcdctl's endpoint commands)."""

    @endpoint.command("health")
    @click.option("--cluster", is_flag=True,
                  help="Check every member's client address, not only --endpoints.")
    @member_timeout_option
    @client_options
    @handle_errors
    def endpoint_health(ctx: Ctx, cluster: bool, member_timeout: float) -> None:
        """Check that each endpoint answers and knows a leader; exit status 3 if one does not
        (usable as a health check)."""
        with ctx.client() as c:
            if cluster:
                addrs = [m.client_addr for m in c.member_list(serializable=True)
                         if m.client_addr]
            else:
                addrs = ctx.addresses
            checks = check_endpoints(c, addrs, member_timeout)
        if ctx.json:
            print_json([{"endpoint": a, "health": ch.healthy, "took": round(ch.took, 6),
                         "error": ch.error} for a, ch in checks.items()])
        else:
            for a, ch in checks.items():
                took = f"took = {ch.took * 1000:.1f}ms"
                click.echo(f"{a} is healthy: {took}" if ch.healthy else
                           f"{a} is unhealthy: {ch.error} ({took})")
        if not all(ch.healthy for ch in checks.values()):
            sys.exit(EXIT_UNAVAILABLE)

    @cli.group("member")
    def member() -> None:
        """List and change the cluster's members."""

    @member.command("list")
    @client_options
    @handle_errors
    def member_list(ctx: Ctx) -> None:
        """List the members."""
        with ctx.client() as c:
            members = c.member_list()
        print_listing(ctx, members, ["ID", "NAME", "PEER", "CLIENT", "LEARNER"], lambda m: [
            m.id, m.name, m.peer_addr, m.client_addr, "yes" if m.is_learner else "no"])

    @member.command("add")
    @click.argument("peer_addr")
    @click.option("--client-addr", default="", help="Its client address [PEER_ADDR].")
    @click.option("--name", default="", help="Its name.")
    @click.option("--learner", is_flag=True, help="Add as a non-voting learner.")
    @client_options
    @handle_errors
    def member_add(ctx: Ctx, peer_addr: str, client_addr: str, name: str,
                   learner: bool) -> None:
        """Add a member reachable at PEER_ADDR; start it with --join afterwards."""
        with ctx.client() as c:
            res = c.member_add(peer_addr, client_addr=client_addr, name=name, learner=learner)
        if ctx.json:
            print_json(res)
        else:
            kind = "learner" if res.member.is_learner else "voter"
            click.echo(f"added member {res.member.id} ({kind}) at {res.member.peer_addr}")

    @member.command("remove")
    @click.argument("member_id", type=click.IntRange(1))
    @client_options
    @handle_errors
    def member_remove(ctx: Ctx, member_id: int) -> None:
        """Remove a member; the node shuts itself down."""
        with ctx.client() as c:
            c.member_remove(member_id)
        click.echo(f"removed member {member_id}")

    @member.command("promote")
    @click.argument("member_id", type=click.IntRange(1))
    @client_options
    @handle_errors
    def member_promote(ctx: Ctx, member_id: int) -> None:
        """Make a learner a voter (once it has caught up)."""
        with ctx.client() as c:
            c.member_promote(member_id)
        click.echo(f"promoted member {member_id} to voter")

    @member.command("transfer-leader")
    @click.argument("member_id", type=click.IntRange(1))
    @client_options
    @handle_errors
    def member_transfer(ctx: Ctx, member_id: int) -> None:
        """Hand leadership to a voter."""
        with ctx.client() as c:
            st = c.transfer_leadership(member_id)
        click.echo(f"leader is now member {st.leader_id} (term {st.raft_term})")

    @cli.group("cluster")
    def cluster() -> None:
        """Cluster-wide views."""

    @cluster.command("watch")
    @click.option("--count", type=click.IntRange(1), default=None,
                  help="Exit after this many events.")
    @client_options
    @handle_errors
    def cluster_watch(ctx: Ctx, count: int | None) -> None:
        """Follow membership and leader changes (the current state comes first)."""
        with ctx.client() as c:
            follow(c.watch_cluster(), count, functools.partial(print_cluster_event, ctx))



def print_event(ctx: Ctx, e: WatchEvent) -> None:
    if ctx.json:
        print_json(e)
        return
    line = f"{e.type.value:<6} {e.kv.path} rev={e.revision}"
    if e.type.value == "PUT":
        line += f" value={text(e.kv.value)}"
    if e.prev_kv is not None:
        line += f" prev={text(e.prev_kv.value)}"
    click.echo(line)
    sys.stdout.flush()


def print_cluster_event(ctx: Ctx, e: ClusterEvent) -> None:
    if ctx.json:
        print_json(e)
    else:
        click.echo(f"{e.type.value:<16} node {e.node_id} {e.addr}".rstrip())
    sys.stdout.flush()


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
