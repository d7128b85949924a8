"""The server state machine refuses to apply an entry twice: a diverging node stops instead."""

from __future__ import annotations

import pytest

from confer.kv.commands import Put, encode_command
from confer.raft.types import Entry
from confer.server.fsm import AppliedTwice, ServerStateMachine


def put(index: int, value: bytes) -> Entry:
    return Entry(index=index, term=1, data=encode_command(Put(b"/k", value)))


def test_an_entry_at_or_below_the_applied_index_is_refused_and_changes_nothing() -> None:
    fsm = ServerStateMachine()
    fsm.apply(put(1, b"a"))
    fsm.apply(put(2, b"b"))
    with pytest.raises(AppliedTwice, match="entry 2 applied again"):
        fsm.apply(put(2, b"c"))
    assert fsm.kv.revision == 3 and fsm.kv.get(b"/k").value == b"b"


def test_the_applied_index_comes_back_with_a_snapshot() -> None:
    fsm = ServerStateMachine()
    fsm.apply(put(1, b"a"))
    fsm.apply(put(2, b"b"))
    restored = ServerStateMachine()
    restored.restore(fsm.snapshot())
    with pytest.raises(AppliedTwice):
        restored.apply(put(2, b"b"))
    restored.apply(put(3, b"c"))
    assert restored.kv.revision == 4
