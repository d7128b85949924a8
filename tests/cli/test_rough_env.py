"""One naming rule for the environment: a flag ``--some-name`` reads ``CONFER_SOME_NAME``
(``--id``: ``CONFER_ID``); old names still work with a warning; unknown ``CONFER_*``
variables are reported in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

from confer.cli import cli
from confer.cli.context import CONNECTION_OPTIONS, env_name
from confer.server.config import env_vars, load_config


def test_id_reads_confer_id() -> None:
    assert load_config(None, {}, environ={"CONFER_ID": "3"}).node_id == 3
    assert load_config(None, {"node_id": 5}, environ={"CONFER_ID": "3"}).node_id == 5


def test_the_old_name_still_works_with_a_warning_and_the_new_one_wins() -> None:
    warnings: list[str] = []
    assert load_config(None, {}, {"CONFER_NODE_ID": "4"}, warnings.append).node_id == 4
    assert warnings == ["CONFER_NODE_ID is deprecated: use CONFER_ID"]
    assert load_config(None, {}, {"CONFER_NODE_ID": "4", "CONFER_ID": "6"}).node_id == 6


def test_a_config_file_names_settings_as_the_flags_do(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text('id = 7\ndata-dir = "d"\n')
    cfg = load_config(tmp_path / "c.toml", {}, environ={})
    assert cfg.node_id == 7 and cfg.data_dir == Path("d")


def test_every_flag_reads_the_variable_the_rule_names() -> None:
    serve = cli.commands["serve"]
    flags = [p.opts[-1] for p in serve.params if isinstance(p, click.Option)
             and p.name not in ("config_file", "help")]
    assert "--id" in flags and "--data-dir" in flags
    assert {env_name(f) for f in flags} == env_vars()
    for o in CONNECTION_OPTIONS:  # before the command, the group reads them
        [param] = [p for p in cli.params if p.name == o.name]
        assert param.envvar == env_name(o.flags[-1])


def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONFER_")}
    return subprocess.run([sys.executable, "-m", "confer", "--version"], capture_output=True,
                          text=True, env={**base, **env}, timeout=60)


def test_unknown_confer_variables_are_reported_in_one_line() -> None:
    r = run({"CONFER_ENDPOINT": "127.0.0.1:7379", "CONFER_DATADIR": "x", "CONFER_ID": "2",
             "CONFER_ENDPOINTS": "127.0.0.1:7379", "CONFER_DATA_DIR": "d"})
    assert r.returncode == 0
    assert r.stderr == ("confer: warning: ignoring unknown environment variables "
                        "CONFER_DATADIR, CONFER_ENDPOINT (a flag --some-name reads "
                        "CONFER_SOME_NAME)\n")
    assert run({"CONFER_ID": "2", "CONFER_TIMEOUT": "3", "CONFER_FENCING_TOKEN": "1"}
               ).stderr == ""
