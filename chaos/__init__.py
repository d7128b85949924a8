"""Jepsen-style fault injection against real Confer processes.

Clients record every operation as a history (JSON lines), nemeses inject faults (kill -9,
SIGSTOP, partitions through a fault-injecting TCP proxy, membership changes), and checkers
decide whether the history is linearizable, whether acknowledged writes survived, and
whether watches kept their guarantees. ``python -m chaos`` runs it for any duration.
"""
