"""The replica and the server's state machine with an app: apply, errors, snapshots, versions
(no processes, no network)."""

from __future__ import annotations

import msgpack
import pytest

from confer.envelope import MalformedEntry
from confer.kv import Put, encode_command
from confer.raft.types import Entry
from confer.replicated import CommandError, StateMachine, VersionTooNew, command
from confer.replicated.machine import methods_of, pack
from confer.replicated.replica import Replica, encode_entry
from confer.server.fsm import ServerStateMachine
from tests.replicated.apps import Register, RegisterV2


def call(name: str, *args: object, version: int = 1, now_ns: int = 1_000) -> bytes:
    arguments = methods_of(Register)[name].encode_arguments(args, {})
    return encode_entry(version, name, arguments, now_ns)


def server(cls: type[StateMachine] = Register) -> ServerStateMachine:
    return ServerStateMachine(Replica(cls))


def test_entries_apply_with_results_and_errors_as_values() -> None:
    fsm = server()
    assert fsm.apply(Entry(1, 1, call("set", "a", 1))).unwrap() is None
    assert fsm.apply(Entry(2, 1, call("add", "a", 2))).unwrap() == 3
    failed = fsm.apply(Entry(3, 1, call("add", "zz")))
    with pytest.raises(KeyError, match="no key 'zz'"):
        failed.unwrap()
    assert fsm.applied_index == 3  # an error is applied like any result
    # Garbage from a faulty peer, or a command the code does not have: error results too.
    assert fsm.apply(Entry(4, 1, b"\x02\xc1")).error_type == "BadEntry"
    missing = fsm.apply(Entry(5, 1, encode_entry(1, "drop", pack([[], {}]))))
    assert missing.error_type == "AttributeError"
    wrong = fsm.apply(Entry(6, 1, encode_entry(1, "set", pack([["a"], {}]))))
    assert wrong.error_type == "TypeError" and "missing a required argument" in \
        wrong.error_message


def test_replicated_time_never_goes_back_and_randomness_follows_the_entry() -> None:
    a, b = Replica(Register), Replica(Register)
    for replica in (a, b):
        first = replica.apply(Entry(7, 2, call("stamp", now_ns=5_000_000_000))).unwrap()
        second = replica.apply(Entry(8, 2, call("stamp", now_ns=4_000_000_000))).unwrap()
        assert first[0] == second[0] == 5.0  # a proposer with a slower clock: no step back
        assert first[2:] == [7] and second[2:] == [8]
    assert a.machine.values == b.machine.values
    x = a.apply(Entry(9, 2, call("stamp"))).unwrap()
    y = b.apply(Entry(9, 2, call("stamp"))).unwrap()
    assert x == y  # same entry, same numbers


def test_a_snapshot_carries_the_app_and_restores_it() -> None:
    fsm = server()
    fsm.apply(Entry(1, 1, encode_command(Put(b"/k", b"v"))))
    fsm.apply(Entry(2, 1, call("set", "a", 1, now_ns=9_000)))
    fsm.apply(Entry(3, 1, call("add", "nope")))
    steps = list(fsm.snapshot_steps())
    data = b"".join(steps[-1] or [])
    assert data == fsm.snapshot()
    assert ServerStateMachine.snapshot_is_valid(data)
    copy = server()
    copy.restore(data)
    assert copy.app is not None and isinstance(copy.app, Replica)
    assert copy.app.machine.values == {"a": 1} and copy.app.machine.log == ["missing nope"]
    assert copy.app.last_time_ns == 9_000 and copy.kv.get(b"/k") is not None
    # A KV-only member cannot take an app's snapshot; a snapshot taken before a cluster
    # ran an app (none of its entries can be app commands) gives the app its empty state.
    with pytest.raises(MalformedEntry, match="runs none"):
        ServerStateMachine().restore(data)
    copy.restore(ServerStateMachine().snapshot())
    assert copy.app.machine.values == {} and copy.app.last_time_ns == 0


def test_newer_code_stops_an_older_member() -> None:
    fsm = server()
    with pytest.raises(VersionTooNew, match="entry 1 was written by Register version 2; "
                                            "this member runs version 1"):
        fsm.apply(Entry(1, 1, call("set", "a", 1, version=2)))
    assert fsm.applied_index == 0
    newer = server(RegisterV2)
    newer.apply(Entry(1, 1, call("set", "a", 1)))  # older entries apply on newer code
    with pytest.raises(VersionTooNew, match="snapshot was taken by Register version 2"):
        server().restore(newer.snapshot())


class Fragile(StateMachine):
    items: list[int] = []  # noqa: RUF012 - the literal default is copied per instance

    @command
    def push(self, n: int) -> int:
        self.items.append(n)
        return len(self.items)

    def restore(self, data: bytes) -> None:
        raise RuntimeError("this code cannot read its old snapshots")


def test_a_snapshot_that_fails_to_restore_says_why() -> None:
    fsm = ServerStateMachine(Replica(Fragile))
    fsm.apply(Entry(1, 1, encode_entry(1, "push", pack([[1], {}]))))
    assert Fragile().items == []  # every instance starts from its own copy
    with pytest.raises(ValueError, match=r"Fragile.restore\(\) failed .*RuntimeError: this "
                                         "code cannot read"):
        ServerStateMachine(Replica(Fragile)).restore(fsm.snapshot())


def test_declaration_errors_are_caught_at_class_definition() -> None:
    with pytest.raises(TypeError, match="needs a default"):
        class NoDefault(StateMachine):
            value: int

    with pytest.raises(TypeError, match="version must be a positive int"):
        class BadVersion(StateMachine):
            version = 0
    with pytest.raises(TypeError, match="not a subclass"):
        methods_of(int)  # type: ignore[arg-type]


def test_errors_of_builtin_names_are_those_exceptions() -> None:
    from confer.replicated.machine import command_error
    err = command_error("ValueError", "bad")
    assert isinstance(err, ValueError) and isinstance(err, CommandError)
    custom = command_error("QueueEmpty", "nothing to take")
    assert type(custom) is CommandError and str(custom) == "QueueEmpty: nothing to take"
    assert msgpack.unpackb(pack((1, 2))) == [1, 2]
