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


def test_the_metadata_builds_without_deprecation_warnings() -> None:
    """setuptools deprecated the ``license = {text = ...}`` table: its banner printed three
    times during every ``./dev`` setup. An SPDX string and ``license-files`` replace it."""
    code = ("import warnings\n"
            "from setuptools.config.pyprojecttoml import apply_configuration\n"
            "from setuptools.dist import Distribution\n"
            "warnings.simplefilter('error')\n"
            "dist = apply_configuration(Distribution(), 'pyproject.toml')\n"
            "print(dist.metadata.name, dist.metadata.license_expression)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["confer-kv", "Apache-2.0"]


def test_the_distribution_ships_a_licence_type_hints_and_a_changelog() -> None:
    project = PYPROJECT["project"]
    # `confer` on PyPI is an unrelated project: ours is confer-kv, imported as `confer`.
    assert project["name"] == "confer-kv"
    assert project["scripts"] == {"confer": "confer.cli:main"}
    assert project["license-files"] == ["LICENSE"]
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    assert "License :: " not in " ".join(project["classifiers"])  # the SPDX string says it
    assert "Typing :: Typed" in project["classifiers"]
    assert (ROOT / "src" / "confer" / "py.typed").is_file()
    assert PYPROJECT["tool"]["setuptools"]["package-data"]["confer"] == ["py.typed"]
    assert "## Unreleased" in (ROOT / "CHANGELOG.md").read_text()
    assert "pip install confer-kv" in (ROOT / "README.md").read_text()


def test_the_default_data_dirs_are_ignored_by_git() -> None:
    ignored = (ROOT / ".gitignore").read_text().split()
    assert {"confer-data/", "confer-dev/"} <= set(ignored)


FAKE_PYTHON = """#!/bin/sh
# Stands in for python3 and the venv's python: records what ./dev asks of it.
echo "$*" >> "$DEV_LOG"
if [ "$1 $2" = "-m venv" ]; then
    mkdir -p "$3/bin"
    cp "$0" "$3/bin/python"
    printf '#!/bin/sh\\necho "confer $*" >> "$DEV_LOG"\\n' > "$3/bin/confer"
    chmod +x "$3/bin/confer"
fi
"""


def run_dev(tmp: Path, *args: str) -> list[str]:
    """``./dev ARGS`` in a copy of the repository's ``dev`` and ``pyproject.toml`` whose
    Python only records its arguments: the pip commands, in order."""
    log = tmp / "calls.log"
    log.unlink(missing_ok=True)
    subprocess.run(["sh", str(tmp / "dev"), *args], env={
        "PATH": "/usr/bin:/bin", "PYTHON": str(tmp / "fake-python"), "DEV_LOG": str(log)},
        capture_output=True, timeout=60, check=False)
    return [line for line in log.read_text().splitlines() if "pip install" in line
            or line.startswith("confer")] if log.exists() else []


def test_dev_run_installs_the_server_only_and_test_adds_the_test_extra(tmp_path: Path) -> None:
    for name in ("dev", "pyproject.toml"):
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    (tmp_path / "fake-python").write_text(FAKE_PYTHON)
    (tmp_path / "fake-python").chmod(0o755)
    assert run_dev(tmp_path, "run", "--name", "x") == [
        "-m pip install --quiet --upgrade pip", "-m pip install --quiet -e .",
        "confer serve --name x"]
    assert run_dev(tmp_path, "run") == ["confer serve"]  # installed: not again
    # lint (the fake venv has no ruff, so it stops there) installs the test extra, once.
    assert run_dev(tmp_path, "lint") == [
        "-m pip install --quiet --upgrade pip", "-m pip install --quiet -e .[test]"]
    assert run_dev(tmp_path, "lint") == []
    assert run_dev(tmp_path, "run") == ["confer serve"]  # the test install covers run
