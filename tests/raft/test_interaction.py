"""Runs each Raft interaction transcript (tests/raft/testdata/*.txt) and compares its output.

On a mismatch the failure shows a unified diff. After an intended change of behaviour,
regenerate the outputs with ``pytest tests/raft/test_interaction.py --rewrite`` (or
``python -m tests.raft.interaction --rewrite``) and review the diff before committing it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.raft.interaction import ScriptError, diff, parse, render, run_transcript, transcripts

FILES = transcripts()


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_transcript(path: Path, rewrite: bool) -> None:
    expected = path.read_text()
    actual = run_transcript(expected, str(path))
    if rewrite:
        if actual != expected:
            path.write_text(actual)
        return
    if actual != expected:
        pytest.fail(f"transcript output changed; rerun with --rewrite if intended:\n"
                    f"{diff(expected, actual, path.name)}", pytrace=False)


def test_there_are_transcripts_for_every_scenario_family() -> None:
    assert len(FILES) >= 15


def test_rewrite_replaces_only_outputs() -> None:
    text = "# a comment\n\ncampaign 1\n----\nstale\nlines\n\n# another\nheal\n----\nx\n"
    chunks = parse(text)
    assert render(chunks, [["new"], ["ok"]]) == (
        "# a comment\n\ncampaign 1\n----\nnew\n\n# another\nheal\n----\nok\n"
    )


def test_a_command_without_separator_is_a_script_error() -> None:
    with pytest.raises(ScriptError, match=":1: expected '----'"):
        parse("campaign 1\nok\n")


def test_an_unknown_option_is_a_script_error() -> None:
    with pytest.raises(ScriptError, match="unknown options"):
        run_transcript("add-nodes 1 voters=(1) prevte=false\n----\nok\n")
