"""Hypothesis strategies for commands, shared by the kv tests."""

from __future__ import annotations

from hypothesis import strategies as st

from confer.kv import (
    Compact,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRange,
    LeaseGrant,
    LeaseRevoke,
    Put,
    RangeOp,
    SortOrder,
    SortTarget,
    Txn,
)

KEYS = [b"/a", b"/a/x", b"/a/y", b"/ab", b"/b", b"/c"]
keys = st.sampled_from(KEYS)
values = st.binary(max_size=8)
range_ends = st.sampled_from([b"", b"", b"\0", b"/a0", b"/b", b"/c", b"/a/"])

puts = st.builds(Put, keys, values, st.sampled_from([0, 0, 5, 7]), st.booleans())
deletes = st.builds(DeleteRange, keys, range_ends, st.booleans())
ranges = st.builds(RangeOp, keys, range_ends, st.integers(-1, 30), st.integers(0, 3),
                   st.booleans(), st.booleans(), st.sampled_from(SortOrder),
                   st.sampled_from(SortTarget), st.integers(0, 5), st.integers(0, 30),
                   st.integers(0, 5), st.integers(0, 30))


@st.composite
def compares(draw: st.DrawFn) -> Compare:
    target = draw(st.sampled_from(CompareTarget))
    value = draw(values) if target == CompareTarget.VALUE else draw(st.integers(-1, 12))
    return Compare(draw(keys), draw(range_ends), target, draw(st.sampled_from(CompareResult)),
                   value)


def txns(ops: st.SearchStrategy[object]) -> st.SearchStrategy[Txn]:
    return st.builds(Txn, st.lists(compares(), max_size=2), st.lists(ops, max_size=3),
                     st.lists(ops, max_size=3))


any_ops = st.recursive(puts | deletes | ranges, txns, max_leaves=6)
any_commands = (puts | deletes | txns(any_ops) | st.builds(Compact, st.integers(-1, 30))
                | st.builds(LeaseGrant, st.integers(-1, 30), st.sampled_from([0, 5, -1]))
                | st.builds(LeaseRevoke, st.sampled_from([0, 5, 7])))
