"""Command encoding, decoding and the guarantee that apply() never raises for bad input."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confer.kv import (
    BadCommand,
    Compact,
    Compare,
    CompareTarget,
    DeleteRange,
    ErrorCode,
    ErrorResult,
    InvalidArgument,
    KVStore,
    LeaseGrant,
    Put,
    PutResult,
    RangeOp,
    Txn,
    decode_command,
    encode_command,
    validate_command,
)
from confer.raft.types import Entry

from .strategies import any_commands


@settings(max_examples=120, deadline=None)
@given(any_commands)
def test_encoding_round_trips(cmd: object) -> None:
    data = encode_command(cmd)  # type: ignore[arg-type]
    assert data[0] == 1
    assert decode_command(data) == cmd


def test_a_put_encodes_compactly() -> None:
    data = encode_command(Put(b"/k", b"v" * 1024, prev_kv=True))
    assert len(data) < 1024 + 16
    assert msgpack.unpackb(data[1:]) == [0, b"/k", b"v" * 1024, 0, 1]


@pytest.mark.parametrize("data", [
    b"", b"\x02" + msgpack.packb([0, b"k", b"v", 0, 0]), b"\x01", b"\x01\xc1",
    b"\x01" + msgpack.packb([0, b"k", b"v", 0, 0]) + b"trailing",
    b"\x01" + msgpack.packb([0, "k", b"v", 0, 0]),  # str key
    b"\x01" + msgpack.packb([0, b"k", b"v", 0, 8]),  # unknown flag
    b"\x01" + msgpack.packb([0, b"k", b"v", True, 0]),  # bool lease
    b"\x01" + msgpack.packb([1, b"k", b"", 2]),
    b"\x01" + msgpack.packb([2, b"k", b"", 0, 0, 0, 0, 0, 0, 0, 0, 0]),  # bare range
    b"\x01" + msgpack.packb([3, [[b"k", b"", 9, 0, 1]], [], []]),  # bad target
    b"\x01" + msgpack.packb([3, [[b"k", b"", 3, 0, 1]], [], []]),  # VALUE vs int
    b"\x01" + msgpack.packb([3, [], [[4, 1]], []]),  # compact inside a txn
    b"\x01" + msgpack.packb([4, b"1"]),
    b"\x01" + msgpack.packb([5, 1, 10.0]),  # float TTL
    b"\x01" + msgpack.packb([6, True]),  # bool lease id
    b"\x01" + msgpack.packb({b"k": 1}),
    b"\x01" + msgpack.packb([]),
    b"\x01" + msgpack.packb([9]),
])
def test_malformed_payloads_are_bad_commands(data: bytes) -> None:
    with pytest.raises(BadCommand):
        decode_command(data)


def test_deep_nesting_is_refused() -> None:
    cmd: object = Put(b"k")
    for _ in range(40):
        cmd = Txn([], [cmd], [])  # type: ignore[list-item]
    with pytest.raises(BadCommand, match="nested deeper"):
        decode_command(encode_command(cmd))  # type: ignore[arg-type]


def test_validate_command() -> None:
    validate_command(Put(b"k", b"v"))
    validate_command(Compact(3))
    for bad in (Put(b""), Put("k", b"v"), DeleteRange(b""), Compact(0), Compact(-1),  # type: ignore
                Txn([], [RangeOp(b"")], []),
                Txn([Compare(b"k", target=CompareTarget.LEASE, value=b"")], [], [])):
        with pytest.raises(InvalidArgument):
            validate_command(bad)  # type: ignore[arg-type]


def state(store: KVStore) -> bytes:
    index, store.applied_index = store.applied_index, 0
    try:
        return store.snapshot()
    finally:
        store.applied_index = index


def seeded() -> KVStore:
    store = KVStore()
    store.execute(LeaseGrant(10, 5))
    store.execute(Put(b"/a", b"1"))
    store.execute(Put(b"/a/x", b"2", lease=5))
    return store


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_apply_never_raises_on_random_bytes(data: bytes) -> None:
    store = seeded()
    before = state(store)
    result = store.apply(Entry(7, 1, data))
    assert store.applied_index == 7
    if isinstance(result, ErrorResult):
        assert state(store) == before


junk = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 300) | st.binary(max_size=3)
    | st.text(max_size=2) | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.binary(max_size=2), inner,
                                                                 max_size=2),
    max_leaves=20)
shaped = st.tuples(st.integers(0, 7), st.lists(junk, max_size=11)).map(
    lambda t: [t[0], *t[1]])


@settings(max_examples=150, deadline=None)
@given(shaped | junk)
def test_apply_never_raises_on_structured_junk(obj: object) -> None:
    store = seeded()
    before = state(store)
    result = store.apply(Entry(3, 1, b"\x01" + msgpack.packb(obj)))
    if isinstance(result, ErrorResult):
        assert state(store) == before
        assert isinstance(result.to_exception(), Exception)


@settings(max_examples=120, deadline=None)
@given(any_commands)
def test_apply_never_raises_on_any_command(cmd: object) -> None:
    store = seeded()
    before = state(store)
    result = store.apply(Entry(3, 1, encode_command(cmd)))  # type: ignore[arg-type]
    if isinstance(result, ErrorResult):
        assert state(store) == before


def test_an_undecodable_entry_is_an_error_result() -> None:
    store = seeded()
    result = store.apply(Entry(9, 2, b"\x01\x93garbage"))
    assert isinstance(result, ErrorResult) and result.code == ErrorCode.BAD_COMMAND
    assert result.revision == 3 and store.applied_index == 9
    assert isinstance(store.apply(Entry(10, 2, encode_command(Put(b"/b", b"")))), PutResult)
