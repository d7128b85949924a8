"""Helpers for tests and tools that run real Confer processes on loopback."""

from confer.testing.procs import NodeProcess, ProcessCluster, free_port

__all__ = ["NodeProcess", "ProcessCluster", "free_port"]
