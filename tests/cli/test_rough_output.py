"""How the CLI shows values and errors: cut table cells, escaped and hex values, base64 JSON,
error lines without internals."""

from __future__ import annotations

import json

import pytest

from confer.cli.output import MAX_CELL, plain, print_json, print_table, show_value
from confer.client import KeyValue


def test_show_value_escapes_control_and_invalid_bytes() -> None:
    assert show_value(b"a\tb\n\x00\xff\xc3\xa9") == "a\\tb\\n\\x00\\xffé"
    assert show_value(b"\x00\xff", hex_=True) == "00ff"


def test_show_value_cuts_at_the_limit_and_says_so() -> None:
    assert show_value(b"abc", limit=10) == "abc"
    assert show_value(b"x" * 10, limit=10) == "x" * 10
    assert show_value(b"x" * 11, limit=10) == "xxxxxxx..."
    assert show_value(b"\x00" * 100, limit=10) == "\\x00\\x0..."
    assert show_value(b"ab" * 1000, hex_=True, limit=10) == "6162616..."
    assert show_value("é".encode() * 100, limit=10) == "éééééé" + "é..."


def test_table_cells_are_cut(capsys: pytest.CaptureFixture[str]) -> None:
    print_table(["A", "B"], [["x" * 500, 1], ["y", 2]])
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 2 * MAX_CELL + 2
    assert lines[2].startswith("x" * (MAX_CELL - 3) + "...")


def test_json_values_are_base64(capsys: pytest.CaptureFixture[str]) -> None:
    print_json(KeyValue("/k", b"text", 1, 1, 1, 0))
    print_json(KeyValue("/k", b"\xff", 1, 1, 1, 0))
    first, second = map(json.loads, capsys.readouterr().out.splitlines())
    assert (first["path"], first["value"], second["value"]) == ("/k", "dGV4dA==", "/w==")


@pytest.mark.parametrize("raw, shown", [
    ("Put /x: etcdserver: requested lease not found: lease 999 (0x3e7) (put b'/x')",
     "Put /x: requested lease not found: lease 999"),
    ("Put /x: put b'/x': value is provided with ignore_value",
     "Put /x: put /x: value is provided with ignore_value"),
    ("Get /a: mvcc: required revision has been compacted (compact revision 5)",
     "Get /a: required revision has been compacted (compact revision 5)"),
    ("Get bad: invalid path 'bad': must start with '/'",
     "Get bad: invalid path 'bad': must start with '/'"),
])
def test_error_lines_drop_internals(raw: str, shown: str) -> None:
    assert plain(raw) == shown
