"""The `confer` command line."""

from __future__ import annotations

from pathlib import Path

import click


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


def main() -> None:
    cli()
