"""Deterministic simulation of Confer's Raft core and durable storage.

The real :class:`~confer.raft.RawNode` and the real :class:`~confer.storage.DurableStorage`
run on a simulated network (delays, drops, duplicates, reordering, symmetric and one-way
partitions), simulated file systems (a power cut keeps what was synced and a random part of
the rest, and may strike in the middle of any call) and a virtual clock, all driven by one
seed. An invariant checker
watches every event. Same seed, same run: a failing seed is a bug report.

- :class:`Cluster` is the test bed; scripted tests drive it step by step.
- :func:`run_scenario` runs one randomized scenario (chaos, heal, liveness) for a seed.
- ``python -m confer.sim --seeds N`` runs many and prints the command replaying any failure.

Modules: ``events`` (clock and queue), ``network``, ``fs`` (the file system), ``disk`` (a
node's storage: durable, or a model), ``fsm`` (the application),
``node`` (one server and the Ready loop), ``checker`` (invariants), ``cluster``, ``scenario``
(what a seed means), ``runner``.
"""

from confer.sim.checker import InvariantViolation, Rule
from confer.sim.cluster import Cluster, ClusterConfig, NodeUnavailable
from confer.sim.network import LinkConditions
from confer.sim.node import CrashPoint, CrashTrigger, NodeState, Outcome, Proposal, Read
from confer.sim.runner import ScenarioResult, reproduce_command, run_scenario
from confer.sim.scenario import DEFAULT_STEPS, Flavour, Scenario

__all__ = [
    "DEFAULT_STEPS",
    "Cluster",
    "ClusterConfig",
    "CrashPoint",
    "CrashTrigger",
    "Flavour",
    "InvariantViolation",
    "LinkConditions",
    "NodeState",
    "NodeUnavailable",
    "Outcome",
    "Proposal",
    "Read",
    "Rule",
    "Scenario",
    "ScenarioResult",
    "reproduce_command",
    "run_scenario",
]
