"""Replicate your own Python state machine on Confer's Raft, storage and transport.

Declare it (:class:`StateMachine`, :func:`command`, :func:`query`), run members of it
(:class:`Member`, :class:`ThreadedMember`, or ``confer serve --app module:Class``) and call
it from other processes (:class:`AppClient`, :class:`AsyncAppClient`), and test it in the
deterministic simulator (:func:`simulate`). See docs/platform.md.
"""

from confer.replicated.client import AppClient, AsyncAppClient
from confer.replicated.machine import (
    CommandError,
    StateMachine,
    VersionTooNew,
    command,
    field,
    query,
)
from confer.replicated.member import CannotStart, Member, ThreadedMember
from confer.replicated.simulation import Simulation, SimulationFailed, simulate

__all__ = [
    "AppClient",
    "AsyncAppClient",
    "CannotStart",
    "CommandError",
    "Member",
    "Simulation",
    "SimulationFailed",
    "StateMachine",
    "ThreadedMember",
    "VersionTooNew",
    "command",
    "field",
    "query",
    "simulate",
]
