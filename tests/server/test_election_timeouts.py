"""The node driver's election timeouts: drawn from a fresh random source unless a test seeds
them. The core's default source is seeded with the node id, so every start of a member drew
the same timeouts, and members of one cluster drew equal ones at the same step: after a
leader crash both survivors timed out together and split the vote."""

from __future__ import annotations

import random

from confer.raft import Config, MemoryStorage, bootstrap
from confer.raft.fsm import ListStateMachine
from confer.server.node import RaftNode
from confer.server.transport import LocalNetwork


def _node(node_id: int, rng: random.Random | None = None) -> RaftNode:
    storage = MemoryStorage()
    bootstrap(storage, [1, 2, 3])
    return RaftNode(Config(id=node_id), storage, LocalNetwork().transport(node_id),
                    ListStateMachine(), rng=rng)


def _timeouts(node: RaftNode, draws: int = 40) -> list[int]:
    raft = node.node.raft
    return [raft.cfg.election_tick + raft.rng.randrange(raft.cfg.election_tick)
            for _ in range(draws)]


def test_each_start_of_a_member_draws_its_own_election_timeouts() -> None:
    # 40 draws of 10 values alike by chance: 1 in 10**40.
    assert _timeouts(_node(1)) != _timeouts(_node(1))
    assert _timeouts(_node(1)) != _timeouts(_node(3))


def test_a_seeded_node_draws_the_same_timeouts_every_time() -> None:
    assert _timeouts(_node(1, random.Random(7))) == _timeouts(_node(1, random.Random(7)))
