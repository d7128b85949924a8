"""Path rules and the path-to-range helpers."""

from __future__ import annotations

import pytest

from confer.kv import InvalidArgument, prefix_end, subtree_range, validate_key, validate_path
from confer.kv.paths import validate_value


@pytest.mark.parametrize("path", ["/", "/a", "/app/config/db", "/a-b.c/d_e", "/ünï/cødé"])
def test_valid_paths_come_back_as_utf8(path: str) -> None:
    assert validate_path(path) == path.encode()


@pytest.mark.parametrize(("path", "rule"), [
    ("", "must start with '/'"),
    ("a/b", "must start with '/'"),
    ("/a//b", "empty segment"),
    ("//", "must not end with '/'"),
    ("/a/", "must not end with '/'"),
    ("/a/./b", "relative segment"),
    ("/a/..", "relative segment"),
    ("/a\x00b", "NUL"),
])
def test_invalid_paths_name_the_rule_and_the_path(path: str, rule: str) -> None:
    with pytest.raises(InvalidArgument, match=rule) as info:
        validate_path(path)
    assert str(info.value).startswith(f"invalid path {path!r}")


def test_path_size_limit_counts_utf8_bytes() -> None:
    assert validate_path("/" + "a" * 4095) == b"/" + b"a" * 4095
    with pytest.raises(InvalidArgument, match="4097 bytes"):
        validate_path("/" + "a" * 4096)
    with pytest.raises(InvalidArgument, match="bytes"):
        validate_path("/" + "é" * 2048)  # 4097 bytes, 2049 characters
    assert validate_path("/abc", max_bytes=4) == b"/abc"


def test_root_lists_but_is_not_a_key() -> None:
    assert validate_path("/") == b"/"
    with pytest.raises(InvalidArgument, match="root"):
        validate_key("/")
    assert validate_key("/x") == b"/x"


def test_bytes_paths_must_be_utf8() -> None:
    assert validate_path(b"/a/b") == b"/a/b"
    with pytest.raises(InvalidArgument, match="UTF-8"):
        validate_path(b"/\xff")
    with pytest.raises(InvalidArgument, match="string"):
        validate_path(42)  # type: ignore[arg-type]


def test_validate_value() -> None:
    assert validate_value(bytearray(b"abc")) == b"abc"
    assert validate_value(b"x" * (1 << 20)) == b"x" * (1 << 20)
    with pytest.raises(InvalidArgument, match="at most"):
        validate_value(b"x" * ((1 << 20) + 1))
    with pytest.raises(InvalidArgument, match="expected bytes"):
        validate_value("text")  # type: ignore[arg-type]


def test_subtree_range_respects_the_path_boundary() -> None:
    start, end = subtree_range("/app")
    assert (start, end) == (b"/app/", b"/app0")
    inside = [b"/app/x", b"/app/x/y", b"/app/\xff"]
    outside = [b"/app", b"/application", b"/app-1", b"/app0", b"/apq"]
    assert all(start <= k < end for k in inside)
    assert not any(start <= k < end for k in outside)
    assert subtree_range("/") == (b"/", b"0")
    assert subtree_range(b"/a/b") == (b"/a/b/", b"/a/b0")


def test_prefix_end_matches_etcd() -> None:
    assert prefix_end(b"/app") == b"/apq"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"a\xff\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"  # no end: every key from the prefix on
    assert prefix_end(b"") == b"\0"
