"""The coordination handles are typed by their client: ``Lock[confer.Client]`` blocks and
returns values, ``Lock[confer.aio.Client]`` returns coroutines, from one implementation.

:func:`_typed_usage` is never run: a type checker reads it (``mypy tests/client``), and
``assert_type`` fails there if a handle method's type is wrong. The tests below pin what the
shared methods look like at run time and that each client's handle runs its plans its way.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, assert_type

import pytest

import confer
import confer.aio
from confer.client.coord import Election, Lease, Lock, Registration
from confer.client.models import KeyValue, LeaseRevokeResult, LeaseTimeToLive
from confer.client.plans import Plan

UNREACHABLE = "127.0.0.1:9"  # nothing is sent: the tests replace the I/O layer's run


async def _typed_usage(sync: confer.Client, aio: confer.aio.Client) -> None:
    lock = sync.lock("/locks/a")
    assert_type(lock, Lock[confer.Client])
    assert_type(lock.acquire(1.0), Lock[confer.Client])
    assert_type(lock.release(), None)
    assert_type(lock.wait_lost(1.0), bool)
    with sync.lock("/locks/b") as held:
        assert_type(held, Lock[confer.Client])
    election = sync.election("/elections/a")
    assert_type(election.campaign("me", timeout=1.0), Election[confer.Client])
    assert_type(election.proclaim("me"), int)
    assert_type(election.leader(), KeyValue | None)
    assert_type(election.observe(), confer.Watch[KeyValue])
    lease = sync.lease(10)
    assert_type(lease, Lease[confer.Client])
    assert_type(lease.time_to_live(keys=True), LeaseTimeToLive | None)
    assert_type(lease.revoke(), LeaseRevokeResult | None)
    assert_type(sync.lock("/locks/c", lease=lease), Lock[confer.Client])
    assert_type(sync.register("api", "i1", "h:1"), Registration[confer.Client])

    alock = aio.lock("/locks/a")
    assert_type(alock, Lock[confer.aio.Client])
    assert_type(await alock.acquire(), Lock[confer.aio.Client])
    assert_type(await alock.wait_lost(1.0), bool)
    async with aio.lock("/locks/b") as aheld:
        assert_type(aheld, Lock[confer.aio.Client])
    aelection = aio.election("/elections/a")
    assert_type(await aelection.campaign("me"), Election[confer.aio.Client])
    assert_type(await aelection.leader(), KeyValue | None)
    assert_type(aelection.observe(), confer.aio.Watch[KeyValue])
    alease = await aio.lease(10)
    assert_type(alease, Lease[confer.aio.Client])
    assert_type(await alease.revoke(), LeaseRevokeResult | None)
    async with aio.register("api", "i1", "h:1") as registration:
        assert_type(registration, Registration[confer.aio.Client])
        assert_type(await registration.close(), None)


def test_handle_methods_show_the_plan_s_signature_value_and_docstring() -> None:
    with confer.Client([UNREACHABLE]) as client:
        acquire = client.lock("/locks/a").acquire
        assert acquire.__qualname__ == "Lock.acquire"
        assert acquire.__doc__ is not None and "Wait until the lock is held" in acquire.__doc__
        sig = inspect.signature(acquire)
        assert list(sig.parameters) == ["timeout"]
        assert sig.return_annotation == "Lock[ClientT]"  # the plan's value, not the plan
        campaign = inspect.signature(client.election("/elections/a").campaign)
        assert campaign.parameters["timeout"].kind is inspect.Parameter.KEYWORD_ONLY


def _recording_run(client: Any, values: dict[str, Any]) -> list[str]:
    """Replace the client's I/O ``run``: record each plan's method and return a canned
    value for it (with the asyncio client, as a coroutine, as its I/O layer does)."""
    ran: list[str] = []

    def run(plan: Plan[Any]) -> Any:
        name = plan.gi_code.co_name  # type: ignore[attr-defined]
        ran.append(name)
        plan.close()
        value = values.get(name)
        if not client._io.asynchronous:
            return value

        async def result() -> Any:
            return value

        return result()

    client._io.run = run
    return ran


def test_a_blocking_client_s_handle_returns_the_plan_s_value() -> None:
    client = confer.Client([UNREACHABLE])
    try:
        ran = _recording_run(client, {"_acquire_plan": "held", "_proclaim_plan": 7})
        lock = client.lock("/locks/a", timeout=3.0)
        assert lock.acquire() == "held"
        election = client.election("/elections/a")
        assert election.proclaim("me") == 7
        assert lock.release() is None
        assert ran == ["_acquire_plan", "_proclaim_plan", "_exit_plan"]
    finally:
        client.close()


def test_an_asyncio_client_s_handle_returns_coroutines_of_the_plan_s_value() -> None:
    async def main() -> None:
        client = confer.aio.Client([UNREACHABLE])
        try:
            ran = _recording_run(client, {"_acquire_plan": "held"})
            lock = client.lock("/locks/a")
            pending = lock.acquire(timeout=2.0)
            assert inspect.iscoroutine(pending)
            assert await pending == "held"
            assert ran == ["_acquire_plan"]
            with pytest.raises(TypeError, match="async with"), lock:
                pass
        finally:
            await client.close()

    asyncio.run(main())
