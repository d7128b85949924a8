"""Incremental snapshots of an app's state: a large state is snapshotted a chunk per step while
commands go on being applied, restores as it was captured, and a lagging member catches up
from it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from confer.raft.types import Entry
from confer.replicated import StateMachine, command, query
from confer.replicated.machine import SNAPSHOT_SLICE, field, methods_of, pack, unpack
from confer.replicated.replica import Replica, encode_entry
from confer.server.fsm import ServerStateMachine
from tests.replicated.apps import Register
from tests.replicated.test_operations import Group

BIG = 200_000


class BigMap(StateMachine):
    entries: dict[str, int] = field(dict)
    order: list[int] = field(list)
    small: int = 0

    @command
    def fill(self, n: int) -> int:
        self.entries.update((f"k{i}", i) for i in range(len(self.entries), n))
        self.order.extend(range(len(self.order), n))
        return len(self.entries)

    @command
    def change(self, i: int) -> None:
        self.entries[f"k{i}"] = -i  # replaced, added or removed: never mutated in place
        self.entries.pop(f"k{i + 1}", None)
        self.entries[f"new{i}"] = i
        self.order.append(i)
        self.order[i] = -1
        self.small += 1

    @query
    def size(self) -> int:
        return len(self.entries)


def call(name: str, *args: object) -> bytes:
    return encode_entry(1, name, methods_of(BigMap)[name].encode_arguments(args, {}))


def state(machine: BigMap) -> tuple[dict[str, int], list[int], int]:
    return dict(machine.entries), list(machine.order), machine.small


def test_a_large_state_is_snapshotted_in_steps_as_captured_while_commands_apply() -> None:
    fsm = ServerStateMachine(Replica(BigMap))
    fsm.apply(Entry(1, 1, call("fill", BIG)))
    fsm.apply(Entry(2, 1, call("change", 7)))
    assert fsm.app is not None
    replica = fsm.app
    captured = state(replica.machine)
    steps = fsm.snapshot_steps()
    index, data = 3, b""
    for parts in steps:  # a command between every two steps
        if parts is not None:
            data = b"".join(parts)
            break
        fsm.apply(Entry(index, 1, call("change", index * 100)))
        index += 1
    # Two fields of BIG entries, SNAPSHOT_SLICE a chunk: the loop got back that often.
    assert index - 3 >= 2 * BIG // SNAPSHOT_SLICE
    assert state(replica.machine) != captured  # the commands applied meanwhile
    copy = ServerStateMachine(Replica(BigMap))
    copy.restore(data)
    assert copy.app is not None
    assert state(copy.app.machine) == captured  # the state at the start, not a later one


def test_small_fields_and_whole_state_classes_snapshot_in_one_chunk() -> None:
    replica = Replica(Register)
    replica.machine.values = {"a": 1}
    assert len(list(replica.machine.snapshot_chunks())) == 1

    class Whole(StateMachine):
        items: list[int] = field(list)

        def snapshot(self) -> bytes:
            return pack(self.items[::-1])

        def restore(self, data: bytes) -> None:
            self.items = list(reversed(unpack(data)))

    whole = Replica(Whole)
    whole.machine.items = list(range(3 * SNAPSHOT_SLICE))
    assert list(whole.machine.snapshot_chunks()) == [whole.machine.snapshot()]
    again = Replica(Whole)
    again.restore(whole.snapshot())
    assert again.machine.items == whole.machine.items


def test_a_snapshot_of_the_format_before_chunks_still_restores() -> None:
    replica = Replica(Register)
    replica.machine.values = {"a": 1, "b": 2}
    old = pack([1, "Register", 1, 5, replica.machine.snapshot()])
    again = Replica(Register)
    again.restore(old)
    assert again.machine.values == {"a": 1, "b": 2} and again.last_time_ns == 5


def test_a_lagging_member_catches_up_from_a_large_chunked_snapshot(tmp_path: Path) -> None:
    async def main() -> None:
        g = Group(tmp_path, [BigMap] * 3, snapshot_every=4, snapshot_catchup_entries=0)
        for m in g.members:
            await m.start()
        try:
            leader = await g.leader()
            lagging = next(m for m in g.members if m is not leader)
            await lagging.stop()
            assert await leader.fill(BIG) == BIG
            filled = leader.state.index
            storage = leader.server.storage
            assert storage is not None
            changes = 0
            async with asyncio.timeout(60):  # until the leader's log no longer has the fill
                while storage.snapshot().meta.index <= filled and changes < 500:
                    await leader.change(changes * 10)
                    changes += 1
                    await asyncio.sleep(0.02)
            again = g.member(lagging.node_id, BigMap)
            g.members[g.members.index(lagging)] = again
            await again.start()
            async with asyncio.timeout(60):
                while again.state.small != changes:
                    await asyncio.sleep(0.05)
            assert state(again.state) == state(leader.state)
            assert again.server.storage is not None  # it received the leader's snapshot
            assert again.server.storage.snapshot().meta.index > filled
        finally:
            for m in g.members:
                await m.stop()

    asyncio.run(main())


def test_a_malformed_app_snapshot_is_refused_with_its_reason() -> None:
    replica = Replica(Register)
    with pytest.raises(ValueError, match="malformed Register snapshot"):
        replica.restore(pack([2, "Register", 1, 0, b"not a list of chunks"]))
    with pytest.raises(ValueError, match=r"Register\.restore\(\) failed .*declared field"):
        replica.restore(pack([2, "Register", 1, 0, [pack(["nope", 0, 1])]]))
