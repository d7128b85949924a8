"""The installed distribution holds the product only.

The fault-injection suite (``chaos/``) and the process helpers (``testing/``) live beside
``tests/`` and are not installed; plotting (matplotlib, used by ``chaos/report.py``) is a test
dependency, and importing the product never loads it.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from setuptools import find_namespace_packages, find_packages

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def installed_packages() -> list[str]:
    """The packages ``pip install .`` puts in the wheel, found as setuptools finds them from
    ``[tool.setuptools.packages.find]`` (whose ``namespaces`` defaults to true)."""
    cfg = PYPROJECT["tool"]["setuptools"]["packages"]["find"]
    finder = find_namespace_packages if cfg.get("namespaces", True) else find_packages
    (where,) = cfg.get("where", ["."])
    return finder(where=str(ROOT / where), include=cfg.get("include", ("*",)),
                  exclude=cfg.get("exclude", ()))


def test_the_distribution_contains_only_confer_packages() -> None:
    packages = installed_packages()
    assert {"confer", "confer.cli", "confer.raft", "confer.v1"} <= set(packages)
    assert [p for p in packages if p != "confer" and not p.startswith("confer.")] == []
    assert not {"chaos", "testing", "confer.chaos", "confer.testing"} & set(packages)
    # The test tooling does exist, beside tests/: the find config is what keeps it out.
    assert (ROOT / "chaos" / "__init__.py").is_file()
    assert (ROOT / "testing" / "__init__.py").is_file()


def test_every_installed_package_has_code() -> None:
    """A directory left behind by a move (only a __pycache__ in it) would still be found as a
    namespace package, and ``import confer.chaos`` would then succeed on that tree."""
    (where,) = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["where"]
    empty = [p for p in installed_packages()
             if not any((ROOT / where / p.replace(".", "/")).glob("*.py"))]
    assert empty == [], f"package directories without Python files (delete them): {empty}"


def test_plotting_is_a_test_dependency_only() -> None:
    project = PYPROJECT["project"]
    assert not [d for d in project["dependencies"] if d.startswith("matplotlib")]
    extras = {name: deps for name, deps in project["optional-dependencies"].items()
              if any(d.startswith("matplotlib") for d in deps)}
    assert list(extras) == ["test"]


def test_importing_the_product_loads_no_plotting_library() -> None:
    # A fresh interpreter: this test process may already have imported matplotlib.
    code = ("import sys, confer, confer.cli, confer.server.app\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('matplotlib', 'chaos', 'testing')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60, cwd=ROOT / "src").stdout
    assert out.strip() == "[]"
