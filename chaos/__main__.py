"""``python -m chaos``: one fault-injection run of any length and nemesis mix."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from chaos.nemesis import KINDS
from chaos.runner import RunConfig, run


def _nemeses(_ctx: click.Context, _param: click.Parameter, value: str) -> list[str]:
    if value == "none":
        return []
    names = list(KINDS) if value == "all" else [v.strip() for v in value.split(",") if v]
    unknown = [n for n in names if n not in KINDS]
    if unknown:
        raise click.BadParameter(f"unknown {', '.join(unknown)}; choose from "
                                 f"{', '.join(KINDS)}, all or none")
    return names


def _clients(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, ...]:
    parts = value.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise click.BadParameter("expected REGISTER,TXN,LOCK client counts, e.g. 4,2,3")
    return tuple(int(p) for p in parts)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--seed", type=int, default=1, show_default=True,
              help="Fixes the workload choices and the fault schedule.")
@click.option("--nodes", type=click.IntRange(3, 7), default=3, show_default=True)
@click.option("--duration", type=click.FloatRange(1, 7 * 24 * 3600), default=30,
              show_default=True, help="Seconds of load and faults.")
@click.option("--nemesis", "nemeses", default="kill,pause,partition", show_default=True,
              callback=_nemeses, help=f"Comma list of {', '.join(KINDS)}; all; none.")
@click.option("--clients", default="4,2,3", show_default=True, callback=_clients,
              help="Register, transaction and lock clients.")
@click.option("--watchers", type=click.IntRange(0, 50), default=2, show_default=True)
@click.option("--keys", type=click.IntRange(1, 1000), default=4, show_default=True,
              help="Register keys.")
@click.option("--groups", type=click.IntRange(0, 1000), default=0, show_default=True,
              help="Transaction key groups [0: one per 150 s of run, at least 2].")
@click.option("--stale-reads", is_flag=True,
              help="Read serializably (stale under partitions): shows the checker catches it.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("chaos-runs"), show_default=True, help="Report directories go here.")
def main(seed: int, nodes: int, duration: float, nemeses: list[str],
         clients: tuple[int, int, int], watchers: int, keys: int, groups: int,
         stale_reads: bool,
         out: Path) -> None:
    """Run real Confer nodes under faults, record a history, check it, write a report."""
    cfg = RunConfig(seed=seed, nodes=nodes, duration=duration, nemeses=nemeses,
                    register_clients=clients[0], txn_clients=clients[1],
                    lock_clients=clients[2], watchers=watchers, keys=keys, groups=groups,
                    stale_reads=stale_reads, out=out)
    result = run(cfg)
    click.echo(result.summary)
    click.echo(f"report: {result.report_dir}")
    if not result.valid:
        click.echo(f"FAILED — seed {seed}; reproduce with:\n  {cfg.command()}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
