"""`confer snapshot save|status|restore`: backups of a member's store, and new clusters made
from them (docs/operations.md, "Backup and disaster recovery")."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import click

from confer.cli.context import Ctx, client_options
from confer.cli.output import EXIT_ERROR, EXIT_UNAVAILABLE, fail, print_json, print_table

EXIT_USAGE = 2


class SaveFailed(Exception):
    """The member could not be copied: ``args`` are the message and the exit status."""


def register(cli: click.Group) -> None:
    """Attach the ``snapshot`` group to the top-level group."""
    cli.add_command(snapshot)


@click.group("snapshot")
def snapshot() -> None:
    """Back up a member's store to a file, inspect a file, restore a new cluster from one."""


@snapshot.command("save")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@client_options
def save(ctx: Ctx, file: Path) -> None:
    """Save a consistent snapshot of one member's store (every key with its history, and the
    leases, at one revision) to FILE. Give one endpoint: the member to copy. --timeout
    bounds each wait for data once the member has started sending."""
    from confer.server.snapshot_file import SnapshotFileError, read, status
    from confer.storage import Disk

    if len(ctx.endpoints) != 1:
        fail(f"snapshot save copies one member: give one endpoint, not "
             f"{','.join(ctx.endpoints)}", EXIT_USAGE)
    endpoint = ctx.endpoints[0]
    part = file.with_name(file.name + ".part")
    try:
        try:
            asyncio.run(_download(ctx, endpoint, part))
            st = status(read(part))
        except SaveFailed as e:
            fail(*e.args)
        except SnapshotFileError as e:
            fail(f"the snapshot from {endpoint} is damaged ({e}); nothing saved")
        os.replace(part, file)
        Disk().fsync_dir(str(file.absolute().parent))  # the rename, durable
    except OSError as e:
        fail(f"cannot write {file}: {e.strerror or e}")
    finally:
        part.unlink(missing_ok=True)
    if ctx.json:
        print_json({"file": str(file), **dataclasses.asdict(st)})
    else:
        click.echo(f"Snapshot saved at {file}: revision {st.revision}, {st.keys} keys, "
                   f"{st.size} bytes, {st.checksum}")


async def _download(ctx: Ctx, endpoint: str, part: Path) -> None:
    """Stream the member's snapshot into ``part`` and fsync it. Raises :class:`SaveFailed`
    if the member cannot be reached, refuses, or stops sending for ``ctx.timeout`` seconds."""
    import grpc

    from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc

    with open(part, "wb") as out, contextlib.ExitStack() as stack:
        bar: Progress | None = None
        try:
            async with ctx.aio_channel(endpoint) as channel:
                call = rpc_pb2_grpc.MaintenanceStub(channel).Snapshot(rpc_pb2.SnapshotRequest())
                # The first message waits for the member to serialise its whole store, which
                # takes longer the larger it is (gRPC itself reports a member it cannot
                # reach); after it, ``timeout`` bounds each wait.
                resp = await call.read()
                while resp is not grpc.aio.EOF:
                    if bar is None:  # the first message tells the size
                        bar = stack.enter_context(Progress(
                            f"Saving from {endpoint}", len(resp.blob) + resp.remaining_bytes))
                    out.write(resp.blob)
                    bar.add(len(resp.blob))
                    resp = await asyncio.wait_for(call.read(), ctx.timeout)
        except grpc.aio.AioRpcError as e:
            code = e.code()
            raise SaveFailed(f"snapshot save from {endpoint}: {code.name}: {e.details()}",
                             EXIT_UNAVAILABLE if code in (grpc.StatusCode.UNAVAILABLE,
                                                          grpc.StatusCode.DEADLINE_EXCEEDED)
                             else EXIT_ERROR) from None
        except TimeoutError:
            raise SaveFailed(f"snapshot save from {endpoint}: no data for {ctx.timeout:g}s",
                             EXIT_UNAVAILABLE) from None
        out.flush()
        os.fsync(out.fileno())


@snapshot.command("status")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table",
              show_default=True, envvar="CONFER_OUTPUT", help="Output format [env CONFER_OUTPUT].")
def status_cmd(file: Path, output: str) -> None:
    """Check FILE (its checksum and contents) and show its revision, keys, leases, size and
    checksum."""
    from confer.server.snapshot_file import SnapshotFileError, read, status

    try:
        st = status(read(file))
    except SnapshotFileError as e:
        fail(f"{file}: {e}")
    fields = dataclasses.asdict(st)
    if output == "json":
        print_json(fields)
    else:
        print_table([k.upper() for k in fields], [list(fields.values())], max_cell=None)


@snapshot.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The new member's data dir (must not exist, or be empty).")
@click.option("--name", help="This member's name (as `confer serve --name`) [default]; "
                             "picks its --initial-cluster entry when --id is not given.")
@click.option("--id", "node_id", type=int, help="This member's id in --initial-cluster.")
@click.option("--initial-cluster",
              help="The new cluster's members, ID=[NAME@]HOST:PORT,... (peer addresses), the "
                   "same for every member restored. Without it: a single-member cluster.")
@click.option("--advertise-peer", "--initial-advertise-peer-urls", "advertise_peer",
              help="This member's peer address (picks its --initial-cluster entry when "
                   "neither --id nor --name does) [127.0.0.1:7380].")
@click.option("--cluster-token", "--initial-cluster-token", "cluster_token",
              help="Mixed into the new cluster's id, with the file's checksum [confer].")
def restore_cmd(file: Path, data_dir: Path, **flags: Any) -> None:
    """Create the data dir of a member of a new cluster from the snapshot FILE (etcd's
    `snapshot restore`): every key with its history at the snapshot's revision, the leases,
    and the membership of --initial-cluster. Restore every member from the same FILE with
    the same flags but its own --id (or --name) and --data-dir, then start each with
    `confer serve --data-dir DIR` and its addresses."""
    from confer.server.config import ConfigError, ServerConfig
    from confer.server.restore import RestoreError, preflight, restore
    from confer.server.snapshot_file import SnapshotFileError, read

    flags["advertise_peer"] = _strip_scheme(flags["advertise_peer"])
    cfg = ServerConfig(data_dir=data_dir, **{k: v for k, v in flags.items() if v is not None})
    try:
        preflight(data_dir, cfg)  # bad flags or data dir: say so before reading a large file
        with Progress(f"Reading {file}", _size(file)) as bar:
            snap = read(file, bar.add)
        done = restore(snap, data_dir, cfg)
    except SnapshotFileError as e:
        fail(f"{file}: {e}; nothing restored")
    except ConfigError as e:
        fail(str(e), EXIT_USAGE)
    except RestoreError as e:
        fail(str(e))
    size = len(done.members)
    click.echo(f"Restored member {done.node_id} of new cluster {done.cluster_id:x} "
               f"({size} member{'s' if size > 1 else ''}) at revision {done.revision} "
               f"({done.keys} keys{f', app {done.app}' if done.app else ''}) into {data_dir}")


def _strip_scheme(addr: str | None) -> str | None:
    """etcd's peer URLs (``http://host:port``) as Confer's addresses (``host:port``)."""
    if addr is None:
        return None
    for scheme in ("http://", "https://"):
        if addr.startswith(scheme):
            return addr[len(scheme):].rstrip("/")
    return addr


def _size(file: Path) -> int:
    try:
        return file.stat().st_size
    except OSError:
        return 0  # read() says why


class Progress:
    """A progress bar of bytes on stderr (done, total, rate), drawn only on a terminal."""

    def __init__(self, label: str, total: int) -> None:
        self._label = label
        self._total = total
        self._done = 0
        self._start = time.monotonic()
        self._bar: Any = None

    def __enter__(self) -> Progress:
        if sys.stderr.isatty():
            self._bar = click.progressbar(length=max(self._total, 1), label=self._label,
                                          file=sys.stderr, item_show_func=lambda s: s)
            self._bar.__enter__()
        return self

    def add(self, n: int) -> None:
        self._done += n
        if self._bar is not None:
            rate = self._done / max(time.monotonic() - self._start, 1e-6)
            self._bar.update(n, f"{_mib(self._done)}/{_mib(self._total)} MiB, "
                                f"{_mib(rate)} MiB/s")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.1f}"
