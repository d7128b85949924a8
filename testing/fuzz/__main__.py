"""``python -m testing.fuzz --requests 20000 --seed 1``: a long fuzz run (docs/fuzzing.md).

Prints the counts per service and status and every failure class with a reproduction; exits 1
if anything failed.
"""

from __future__ import annotations

import argparse
import signal
import sys

from testing.fuzz.run import PHASES, FuzzConfig, fuzz
from testing.fuzz.target import IDENTITIES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testing.fuzz", description=__doc__)
    parser.add_argument("--requests", type=int, default=20000,
                        help="calls of the Hypothesis phases (structured, raw, peer)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"comma-separated, run in this order (default: all: {PHASES})")
    parser.add_argument("--check-every", type=int, default=200,
                        help="calls between two canary and state checks")
    parser.add_argument("--stream-scale", type=int, default=4,
                        help="multiplies the stream scenarios' streams and bytes")
    parser.add_argument("--peer-kinds", default="leader-call,leader-renew,propose,raft",
                        help="what the peer phase sends (comma-separated)")
    parser.add_argument("--exclude", default="",
                        help="regular expression of client method paths not to fuzz")
    parser.add_argument("--auth-as", choices=IDENTITIES, default="",
                        help="run the node with mTLS on both ports and auth on, and fuzz as "
                             "this identity (default: a plaintext node without auth)")
    parser.add_argument("--keep", action="store_true", help="keep the node's data dir and log")
    args = parser.parse_args(argv)
    phases = tuple(p for p in args.phases.split(",") if p)
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        parser.error(f"unknown phase {unknown[0]!r}; choose from {', '.join(PHASES)}")
    cfg = FuzzConfig(seed=args.seed, requests=args.requests, phases=phases,
                     check_every=args.check_every, stream_scale=args.stream_scale,
                     exclude=args.exclude, auth_as=args.auth_as,
                     peer_kinds=tuple(k for k in args.peer_kinds.split(",") if k),
                     progress=lambda line: print(line, file=sys.stderr, flush=True))
    # SIGTERM unwinds like an error, so the node is still killed and its data dir removed.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    report = fuzz(cfg, keep_dir=args.keep)
    print(report.render())
    return 1 if report.classes else 0


if __name__ == "__main__":
    sys.exit(main())
