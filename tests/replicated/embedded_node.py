"""A member embedded in a process of its own (``confer.replicated.Member``), for the process
tests: it takes the `confer serve` flags that testing's NodeProcess passes, and runs until
SIGTERM (or a kill)."""

from __future__ import annotations

import argparse
import asyncio
import signal

from confer.replicated import Member
from confer.replicated.member import load_app


async def main() -> None:
    ap = argparse.ArgumentParser()
    for flag in ("--id", "--data-dir", "--listen-client", "--listen-peer",
                 "--initial-cluster", "--tick-ms", "--listen-metrics", "--listen-dns",
                 "--app"):
        ap.add_argument(flag, required=True)
    args = ap.parse_args()
    member = Member(load_app(args.app), node_id=int(args.id), data_dir=args.data_dir,
                    listen_client=args.listen_client, listen_peer=args.listen_peer,
                    initial_cluster=args.initial_cluster, tick_ms=int(args.tick_ms),
                    listen_metrics=args.listen_metrics, listen_dns=args.listen_dns)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with member:
        await asyncio.wait([asyncio.ensure_future(stop.wait()),
                            asyncio.ensure_future(member.stopped.wait())],
                           return_when=asyncio.FIRST_COMPLETED)


if __name__ == "__main__":
    asyncio.run(main())
