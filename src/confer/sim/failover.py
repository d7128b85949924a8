"""Failover in the simulator: crash the leader, count the ticks until the next leader.

One seed: a cluster whose nodes tick out of step (``ClusterConfig.tick_skew``, as real nodes'
timers are) elects a leader and commits a write; at a moment within the heartbeat interval
drawn from the seed, the leader crashes. :func:`measure_failover` reports when the first
surviving voter's election timeout fires (from the timers as they stand at the crash) and
when a new leader is first seen. An election that does not split (one new term) ends a few
ticks after that first timeout: message delays and a lease that still holds on a follower
whose timer runs behind may cost a tick or two, never another election timeout.

    python -m confer.sim.failover --seeds 1000      # the distribution over a sweep
"""

from __future__ import annotations

import argparse
import random
import statistics
from dataclasses import dataclass

from confer.raft import StateRole
from confer.sim.cluster import Cluster, ClusterConfig
from confer.sim.events import TICK_UNITS

SINGLE_ELECTION_SLACK = 3
"""Ticks an election that does not split may take after the first election timeout fires:
pre-vote, vote and their answers (message delays of up to half a tick each), and up to a
tick more for a voter whose lease ends a tick after that timeout."""


@dataclass(frozen=True, slots=True)
class FailoverResult:
    """What one seed's failover took, in ticks from the crash (fractions: messages arrive
    between ticks)."""

    seed: int
    first_timeout: float
    """Until the first surviving voter's election timeout fires (it campaigns)."""
    new_leader: float
    """Until a new leader is first seen."""
    terms: int
    """Terms the election took: 1, unless votes split."""

    @property
    def within_bound(self) -> bool:
        """A single election ends within :data:`SINGLE_ELECTION_SLACK` of the first timeout."""
        return self.terms > 1 or self.new_leader <= self.first_timeout + SINGLE_ELECTION_SLACK


_CAMPAIGNING = (StateRole.PRE_CANDIDATE, StateRole.CANDIDATE)


def measure_failover(seed: int, nodes: int = 3, election_tick: int = 10) -> FailoverResult:
    """Crash the leader of a ``nodes``-node cluster and time the next election."""
    c = Cluster(ClusterConfig(nodes=nodes, election_tick=election_tick, tick_skew=True),
                seed=seed)
    old = c.wait_for_leader()
    write = c.propose(old, b"before the crash")
    c.wait_for(write)
    c.run_ticks(election_tick)  # a few heartbeat rounds: every follower is in step
    c.run_units(random.Random(seed).randrange(TICK_UNITS))  # crash anywhere within a tick
    old_term = c.node(old).term
    survivors = [n for n in c.up() if n != old]
    c.crash(old)
    crashed_at = c.now
    first_timeout: int | None = None
    leader: int | None = None
    limit = crashed_at + 10 * election_tick * TICK_UNITS
    while leader is None:
        if c.now >= limit:
            raise AssertionError(f"seed {seed}: no leader within {10 * election_tick} ticks "
                                 f"after the crash\n{c.describe()}")
        c.run_units(1)
        if first_timeout is None and any(c.node(n).role in _CAMPAIGNING for n in survivors):
            first_timeout = c.now
        leader = next((n for n in survivors if c.node(n).role is StateRole.LEADER), None)
    assert first_timeout is not None
    return FailoverResult(seed, (first_timeout - crashed_at) / TICK_UNITS,
                          (c.now - crashed_at) / TICK_UNITS, c.node(leader).term - old_term)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m confer.sim.failover", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=200, help="how many crashes to simulate")
    p.add_argument("--start", type=int, default=0, help="first seed")
    p.add_argument("--nodes", type=int, choices=(3, 5), default=3)
    p.add_argument("--election-tick", type=int, default=10)
    args = p.parse_args(argv)
    results = [measure_failover(s, args.nodes, args.election_tick)
               for s in range(args.start, args.start + args.seeds)]
    ticks = sorted(r.new_leader for r in results)
    split = sum(r.terms > 1 for r in results)
    late = [r for r in results if not r.within_bound]
    print(f"{len(results)} leader crashes, {args.nodes} nodes, election timeout "
          f"{args.election_tick} ticks: a new leader after median {statistics.median(ticks):.1f}"
          f" ticks, p90 {ticks[int(0.9 * (len(ticks) - 1))]:.1f}, max {ticks[-1]:.1f}; "
          f"{split} split vote(s); {len(late)} single election(s) later than the first "
          f"timeout + {SINGLE_ELECTION_SLACK} ticks")
    for r in late:
        print(f"  seed {r.seed}: first timeout after {r.first_timeout:.1f} ticks, "
              f"leader after {r.new_leader:.1f}")
    return 1 if late else 0


if __name__ == "__main__":
    raise SystemExit(main())
