"""Replay mutants that survived ``mutmut run`` against a wide simulator sweep.

mutmut's own pass runs only the unit tests (CPU is scarce). A mutant that survives them is
replayed here against the simulator: the scripted scenarios and ``--seeds`` random seeds of
each flavour (``tests/sim/mutation_seeds.py``), failing at the first violation, through
mutmut's trampolines in ``mutants/`` (``MUTANT_UNDER_TEST`` picks the mutant). A mutant the
sweep kills is a rule the simulator catches but the unit tests do not; one that survives the
sweep too is a rule the simulator cannot catch (see docs/mutation-testing.md).

Usage (from the repository root, after ``mutmut run``)::

    python scripts/mutation_sweep.py [--seeds 10] [--jobs 2] [--timeout 600] [GLOB ...]
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"


def survivors(globs: list[str]) -> list[str]:
    """Names of the mutants mutmut reports as survived, matching any of ``globs``."""
    out = subprocess.run([str(Path(sys.executable).parent / "mutmut"), "results"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    names = [line.strip().rpartition(":")[0] for line in out.splitlines()
             if line.strip().endswith(": survived")]
    return [n for n in names if not globs or any(fnmatch.fnmatch(n, g) for g in globs)]


def sweep(name: str, seeds: int, timeout: float) -> str:
    """``killed``, ``survived`` or ``timeout`` for one mutant."""
    env = dict(os.environ, MUTANT_UNDER_TEST=name, CONFER_MUTATION_SWEEP=str(seeds),
               PYTHONPATH=str(MUTANTS / "src"))
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly",
           "-p", "no:cacheprovider", "tests/sim/test_scenarios.py", "tests/sim/mutation_seeds.py"]
    try:
        rc = subprocess.run(cmd, cwd=MUTANTS, env=env, capture_output=True,
                            timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        return "timeout"
    if rc not in (0, 1):
        raise SystemExit(f"pytest failed to run for {name} (exit {rc})")
    return "killed" if rc == 1 else "survived"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10, help="seeds of each flavour (default 10)")
    p.add_argument("--jobs", type=int, default=2, help="mutants replayed at once (default 2)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant")
    p.add_argument("globs", nargs="*", help="only survivors matching these mutant globs")
    args = p.parse_args()
    if not MUTANTS.is_dir():
        raise SystemExit("no mutants/ directory: run mutmut first")
    names = survivors(args.globs)
    verdicts: dict[str, list[str]] = {"killed": [], "survived": [], "timeout": []}
    t0 = time.monotonic()
    with ThreadPoolExecutor(args.jobs) as pool:  # threads only wait on the pytest processes
        runs = {pool.submit(sweep, name, args.seeds, args.timeout): name for name in names}
        for i, done in enumerate(as_completed(runs), 1):
            verdicts[done.result()].append(runs[done])
            print(f"[{i}/{len(names)}] {done.result():8} {runs[done]} "
                  f"({time.monotonic() - t0:.0f}s)", flush=True)
    print(f"\nsweep of {args.seeds} seeds per flavour over {len(names)} survivors: "
          + ", ".join(f"{len(v)} {k}" for k, v in verdicts.items()))


if __name__ == "__main__":
    main()
