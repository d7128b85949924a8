"""The fuzz suite: one real Confer node driven with structured (Hypothesis), random-byte,
stream and peer requests over every RPC of both APIs and the peer port (docs/fuzzing.md).

Test tooling at the repository root, not installed with the product. A long run:
``python -m testing.fuzz --requests 20000 --seed 1``; a short one is ``tests/fuzz``.
"""

from testing.fuzz.report import Report
from testing.fuzz.run import PHASES, FuzzConfig, fuzz

__all__ = ["PHASES", "FuzzConfig", "Report", "fuzz"]
