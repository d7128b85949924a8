"""The `confer` command line."""

from __future__ import annotations

import os
from pathlib import Path

import click

GRPC_EXPERIMENTS = "-event_engine_listener,-event_engine_callback_cq"
"""grpcio experiments the `confer` processes turn off (unless GRPC_EXPERIMENTS is set),
read once when grpc is first imported, so set here, first. With them on, grpcio 1.85 hands
every call between several threads: an echo server under `etcdctl check perf --load=m`
(200 connections, 1,000 calls/s) made ~10 context switches and spent 0.72 ms of CPU per
call; with them off, 5 and 0.60 ms, and its slowest call took 28 ms instead of 330 ms.
(Unknown names are logged and ignored, should a later grpcio retire them.)
``event_engine_client`` (outgoing connections) stays on: with it off, a TLS channel whose
first connection attempt is refused never connects afterwards (grpcio 1.85.3), so a
client started before its member listens, or a member dialling a restarted peer, would
fail for ever."""
os.environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)
# grpc's C core logs each failed TLS handshake on stderr (a line per connection: a CLI
# error would not be one line, and a server could be flooded); errors only, unless set.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="confer")
def cli() -> None:
    """Confer: a strongly consistent coordination service."""


@cli.command("demo")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the nodes' logs here (default: a temporary directory).")
@click.option("--in-memory", is_flag=True, help="Use in-memory storage instead of the WAL.")
def demo_cmd(data_dir: Path | None, in_memory: bool) -> None:
    """Run a 3-node cluster in one process through crashes and partitions."""
    from confer.cli.demo import demo

    if not demo(data_dir, in_memory):
        raise SystemExit(1)


@cli.command("dev")
@click.option("--nodes", type=click.IntRange(1, 9), default=3, show_default=True)
@click.option("--base-port", type=click.IntRange(1024, 32700), default=7379, show_default=True,
              help="Node i listens for clients on BASE+2(i-1) and for peers on the next port.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("confer-dev"), show_default=True)
@click.option("--tick-ms", type=click.IntRange(10, 10_000), default=100, show_default=True)
@click.option("--tls", is_flag=True,
              help="mTLS on the client and peer ports, with certificates made (once) in "
                   "DATA_DIR/tls by `confer tls init`.")
def dev_cmd(nodes: int, base_port: int, data_dir: Path, tick_ms: int, tls: bool) -> None:
    """Start a local cluster of NODES processes until Ctrl-C."""
    from confer.cli.dev import run_dev

    raise SystemExit(run_dev(nodes, base_port, data_dir, tick_ms, tls))


@cli.group("tls")
def tls_group() -> None:
    """Certificates for a local cluster."""


@tls_group.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--days", type=click.IntRange(1, 3650), default=365, show_default=True,
              help="Validity of the server, peer and client certificates.")
@click.option("--client-cn", default="client", show_default=True,
              help="Common name of the client certificate (the user, with auth on).")
@click.option("--san", "names", multiple=True,
              help="A host name or IP address the server and peer certificates are valid for "
                   "(repeatable) [127.0.0.1, ::1, localhost].")
def tls_init_cmd(directory: Path, days: int, client_cn: str, names: tuple[str, ...]) -> None:
    """Create a CA and server, peer and client certificates in DIRECTORY (for a dev or test
    cluster: keep ca-key.pem private, or delete it)."""
    from confer.cli.tls import LOCAL_NAMES, client_flags, init_dir, server_flags

    try:
        init_dir(directory, client_cn=client_cn, days=days, names=names or LOCAL_NAMES)
    except (FileExistsError, OSError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote a CA and certificates to {directory.resolve()}\n"
               f"server flags: {' '.join(server_flags(directory))}\n"
               f"client flags: {' '.join(client_flags(directory))}")


def _serve_command() -> click.Command:
    from confer.cli.serve import SERVE_OPTIONS

    @click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
                  help="TOML file with any of the settings below (flags win).")
    def serve_cmd(config_file: Path | None, **flags: object) -> None:
        """Run a Confer node. With no arguments: a single-node cluster in ./confer-data."""
        from confer.cli.serve import run
        from confer.server.config import ConfigError, load_config

        overrides = {("node_id" if k == "id" else k): v for k, v in flags.items()}
        try:
            cfg = load_config(config_file, overrides)
        except ConfigError as e:
            raise click.UsageError(str(e)) from None
        raise SystemExit(run(cfg))

    for flag, kwargs in reversed(SERVE_OPTIONS):
        serve_cmd = click.option(flag, **kwargs)(serve_cmd)
    return cli.command("serve")(serve_cmd)


_serve_command()


def _client_commands() -> None:
    from confer.cli import commands, coord, snapshot

    commands.register(cli)
    coord.register(cli)
    snapshot.register(cli)


_client_commands()


def main() -> None:
    cli()
