"""The log-entry envelope: every kind round-trips, and an unknown kind is refused (the node
stops) rather than skipped."""

from __future__ import annotations

import asyncio

import msgpack
import pytest

from confer.envelope import (
    EntryKind,
    MalformedEntry,
    UnknownEntryKind,
    kind_of,
    unwrap_forwarded,
    wrap_forwarded,
)
from confer.kv import Put, decode_command, encode_command
from confer.kv.commands import LeaseGrant, Txn
from confer.raft.types import Entry
from confer.server.fsm import ServerStateMachine
from confer.server.local import LocalCluster
from confer.server.members import Member, decode_publish, encode_publish
from confer.server.node import NodeOptions, NodeStopped, OutcomeUnknown

MEMBER = Member(2, "node-2", "127.0.0.1:7380", "127.0.0.1:7379")


def test_the_kind_bytes_are_those_existing_data_directories_hold() -> None:
    # KV commands began with their format version 1, forwarded writes with 0xFE, member
    # publications with 0xFF: a WAL written before the envelope reads the same.
    assert encode_command(Put(b"/k", b"v")) == b"\x01" + msgpack.packb([0, b"/k", b"v", 0, 0])
    assert encode_publish(MEMBER)[0] == 0xFF
    assert wrap_forwarded(7, b"x") == b"\xfe" + (7).to_bytes(8, "big") + b"x"


@pytest.mark.parametrize("cmd", [Put(b"/k", b"v", lease=3, prev_kv=True), LeaseGrant(10, 4),
                                 Txn([], [Put(b"/a")], [])])
def test_kv_commands_round_trip(cmd: Put | LeaseGrant | Txn) -> None:
    data = encode_command(cmd)
    assert kind_of(data) is EntryKind.KV_COMMAND
    assert decode_command(data) == cmd


def test_member_publications_round_trip() -> None:
    data = encode_publish(MEMBER)
    assert kind_of(data) is EntryKind.MEMBER_PUBLISH
    assert decode_publish(data) == (2, "node-2", "127.0.0.1:7379")


def test_the_empty_entry_is_a_noop() -> None:
    assert kind_of(b"") is EntryKind.NOOP


@pytest.mark.parametrize("inner", [encode_command(Put(b"/k", b"v")), encode_publish(MEMBER), b""])
def test_forwarded_entries_wrap_any_other_kind(inner: bytes) -> None:
    rid = 0xFFFF_FFFF_FFFF_FFFE
    data = wrap_forwarded(rid, inner)
    assert kind_of(data) is EntryKind.FORWARDED
    assert unwrap_forwarded(data) == (rid, inner)


@pytest.mark.parametrize("data", [b"\x00", b"\x04" + msgpack.packb([0, b"/k", b"v", 0, 0]),
                                  b"\x7f junk", b"\xfd"])
def test_an_unknown_kind_is_refused_with_its_byte(data: bytes) -> None:
    with pytest.raises(UnknownEntryKind, match=f"unknown kind {data[0]:#04x}"):
        kind_of(data)


def test_a_truncated_or_unwrapped_forwarded_entry_is_refused() -> None:
    with pytest.raises(MalformedEntry, match="shorter than its header"):
        unwrap_forwarded(b"\xfe\x00\x01")
    with pytest.raises(MalformedEntry, match="not a forwarded entry"):
        unwrap_forwarded(encode_command(Put(b"/k")))


def test_the_state_machine_refuses_an_unknown_kind_and_changes_nothing() -> None:
    fsm = ServerStateMachine()
    fsm.apply(Entry(1, 1, encode_command(Put(b"/k", b"a"))))
    for data in (b"\x04" + msgpack.packb([0, b"/k", b"b", 0, 0]),
                 wrap_forwarded(1, encode_command(Put(b"/k", b"b")))):  # never unwrapped
        with pytest.raises(MalformedEntry):
            fsm.apply(Entry(2, 1, data))
    assert fsm.applied_index == 1 and fsm.kv.get(b"/k").value == b"a"  # type: ignore[union-attr]
    fsm.apply(Entry(2, 1, encode_publish(MEMBER)))  # the next entry still applies
    assert fsm.applied_index == 2


def test_a_node_stops_at_an_entry_of_unknown_kind(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        c = LocalCluster(1, fsm_factory=ServerStateMachine,
                         options=NodeOptions(tick_interval=0.02))
        await c.start()
        lead = await c.wait_leader()
        try:
            await lead.propose(encode_command(Put(b"/k", b"a")))
            with pytest.raises(OutcomeUnknown):  # committed: other versions may apply it
                await lead.propose(b"\x04 from a newer version")
            with pytest.raises(NodeStopped):
                await lead.propose(encode_command(Put(b"/k", b"b")))
            assert lead.fsm.kv.get(b"/k").value == b"a"  # type: ignore[attr-defined]
        finally:
            await c.stop()
        assert all(t.done() for t in lead._tasks)  # a failed node still stops cleanly

    asyncio.run(main())
    assert "log entry of unknown kind 0x04" in caplog.text
