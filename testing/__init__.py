"""Test-side helpers that run real Confer processes on loopback (not part of the package).

Importable from the repository root (pytest's ``pythonpath`` setting puts it on the path).
"""

from testing.procs import ProcessCluster, free_port

__all__ = ["ProcessCluster", "free_port"]
