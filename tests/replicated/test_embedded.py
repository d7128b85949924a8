"""Members embedded in a process (asyncio): commands, queries, errors, failover, restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from confer.client import DeadlineExceeded, OutcomeUnknown, Unavailable
from confer.replicated import CommandError, Member, StateMachine
from testing.procs import free_port
from tests.replicated.apps import Register

TICK_MS = 20


def members(tmp_path: Path, cls: type[StateMachine] = Register, n: int = 3
            ) -> list[Member[StateMachine]]:
    peers = {i: f"127.0.0.1:{free_port()}" for i in range(1, n + 1)}
    initial = ",".join(f"{i}={addr}" for i, addr in peers.items())
    return [Member(cls, node_id=i, data_dir=tmp_path / f"m{i}", listen_peer=peers[i],
                   listen_client=f"127.0.0.1:{free_port()}", initial_cluster=initial,
                   tick_ms=TICK_MS, listen_metrics="none")
            for i in peers]


async def leader_of(group: list[Member[StateMachine]], timeout: float = 10.0
                    ) -> Member[StateMachine]:
    async with asyncio.timeout(timeout):
        while True:
            leaders = [m for m in group if m.is_leader]
            if len(leaders) == 1:
                return leaders[0]
            await asyncio.sleep(0.02)


def test_commands_queries_errors_and_failover(tmp_path: Path) -> None:
    async def main() -> None:
        group = members(tmp_path)
        for m in group:
            await m.start()
        try:
            leader = await leader_of(group)
            follower = next(m for m in group if m is not leader)
            assert await follower.set("a", 1) is None  # forwarded to the leader
            assert await follower.call("set", "a", 5) == 1
            assert await leader.get("a") == 5
            # A command that raises: its error comes back, its own change stays, everywhere.
            with pytest.raises(KeyError) as info:
                await leader.add("b")
            assert isinstance(info.value, CommandError)
            assert info.value.type_name == "KeyError" and "no key 'b'" in str(info.value)
            # Replicated time and randomness: the same on every member.
            now, rnd, index = await follower.stamp()
            assert now > 1e9 and 0 <= rnd < 1 and index > 0
            async with asyncio.timeout(5):
                while not all(m.state.log == ["missing b"] for m in group):
                    await asyncio.sleep(0.02)
            # Bad arguments are refused before anything is proposed.
            with pytest.raises(TypeError, match="argument 'value' must be int, not str"):
                await leader.set("a", "x")
            with pytest.raises(TypeError, match="missing a required argument"):
                await leader.set("a")
            with pytest.raises(TypeError, match="cannot be sent"):
                await leader.call("set", "a", 2**70)
            with pytest.raises(AttributeError, match="no command or query 'nope'"):
                await leader.nope()
            # The leader stops: the others elect a new one and keep every acknowledged write.
            await leader.stop()
            rest = [m for m in group if m is not leader]
            new = await leader_of(rest)
            assert await new.get("a") == 5
            assert await new.add("a", 2) == 7
            assert await rest[0].size() == 1  # serializable by the query's default
            # Without a quorum, the cluster's failures are the client's errors.
            last = next(m for m in rest if m is not new)
            await new.stop()
            with pytest.raises((OutcomeUnknown, Unavailable)):
                await last.call("add", "a", 1, timeout=1.0)
            with pytest.raises((DeadlineExceeded, Unavailable)):
                await last.call("get", "a", timeout=1.0)
        finally:
            for m in group:
                await m.stop()

    asyncio.run(main())


def test_restart_replays_the_log(tmp_path: Path) -> None:
    async def main() -> None:
        (m,) = members(tmp_path, n=1)
        async with m:
            await leader_of([m])
            for i in range(5):
                await m.set(f"k{i}", i)
        (again,) = [Member(Register, node_id=1, data_dir=tmp_path / "m1",
                           listen_peer=f"127.0.0.1:{free_port()}",
                           listen_client=f"127.0.0.1:{free_port()}", tick_ms=TICK_MS,
                           listen_metrics="none")]
        async with again:
            await leader_of([again])
            assert await again.get("k4") == 4
            assert again.state.values == {f"k{i}": i for i in range(5)}

    asyncio.run(main())


def test_bad_settings_are_refused_with_the_rule() -> None:
    with pytest.raises(TypeError, match="unknown setting 'datadir': the settings are "
                                        "confer serve's"):
        Member(Register, datadir="x")
    with pytest.raises(ValueError, match="tick-ms must be positive"):
        Member(Register, tick_ms=-1)
    with pytest.raises(TypeError, match=r"is not a subclass of confer\.replicated\.StateMachine"):
        Member(int)  # type: ignore[type-var]
