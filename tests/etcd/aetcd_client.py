"""Scenarios run through the ``aetcd`` client library (PyPI), one per process.

Run by tests/etcd/test_aetcd.py as ``python aetcd_client.py SCENARIO HOST:PORT``; prints one
JSON object with what the client observed, and the test asserts on it.

This runs in its own process because aetcd ships its own generated etcd protos (packages
``etcdserverpb``, ``mvccpb``, ``authpb``), which register the same message names as
``confer.etcdpb`` in protobuf's default descriptor pool: the two cannot be imported into one
process (``TypeError: Couldn't build proto file into descriptor pool: duplicate symbol``).
Nothing from confer is imported here.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aetcd

Scenario = Callable[[aetcd.Client], Awaitable[dict[str, Any]]]
SCENARIOS: dict[str, Scenario] = {}


def scenario(f: Scenario) -> Scenario:
    SCENARIOS[f.__name__] = f
    return f


def s(b: bytes | None) -> str | None:
    return None if b is None else b.decode()


@scenario
async def kv(client: aetcd.Client) -> dict[str, Any]:
    await client.delete_prefix(b"/aetcd/kv")
    put = await client.put(b"/aetcd/kv/a", b"1")
    await client.put(b"/aetcd/kv/b", b"2")
    await client.put(b"/aetcd/kv/c", b"3")
    await client.put(b"/aetcd/kvx", b"outside the prefix")
    got = await client.get(b"/aetcd/kv/a")
    missing = await client.get(b"/aetcd/kv/none")
    prev = await client.put(b"/aetcd/kv/a", b"one", prev_kv=True)
    changed = await client.get(b"/aetcd/kv/a")
    prefix = await client.get_prefix(b"/aetcd/kv/")
    ranged = await client.get_range(b"/aetcd/kv/a", b"/aetcd/kv/c")
    deleted = await client.delete(b"/aetcd/kv/b", prev_kv=True)
    after = await client.get_prefix(b"/aetcd/kv/")
    dropped = await client.delete_prefix(b"/aetcd/kv/")
    after_all = await client.get_prefix(b"/aetcd/kv")
    return {
        "put_revision": put.header.revision,
        "get": [s(got.key), s(got.value), got.version, got.create_revision, got.mod_revision],
        "get_header_revision": got.header.revision,
        "missing": missing,
        "prev_kv": s(prev.prev_kv.value) if prev.prev_kv else None,
        "changed": [s(changed.value), changed.version, changed.create_revision],
        "prefix": [[s(kv.key), s(kv.value)] for kv in prefix],
        "prefix_count": prefix.count,
        "range": [s(kv.key) for kv in ranged],
        "deleted": [deleted.deleted, s(deleted.prev_kv.value) if deleted.prev_kv else None],
        "after_delete": [s(kv.key) for kv in after],
        "delete_prefix": dropped.deleted,
        "left": [s(kv.key) for kv in after_all],
    }


@scenario
async def txn(client: aetcd.Client) -> dict[str, Any]:
    await client.delete_prefix(b"/aetcd/txn/")
    t = client.transactions
    await client.put(b"/aetcd/txn/k", b"x")
    ok, responses = await client.transaction(
        compare=[t.value(b"/aetcd/txn/k") == b"x", t.version(b"/aetcd/txn/k") > 0],
        success=[t.put(b"/aetcd/txn/k", b"y"), t.get(b"/aetcd/txn/k")],
        failure=[t.put(b"/aetcd/txn/k", b"failed")],
    )
    success_get = [s(value) for value, _ in responses[1]]
    failed, failure_responses = await client.transaction(
        compare=[t.value(b"/aetcd/txn/k") == b"x"],
        success=[t.put(b"/aetcd/txn/k", b"wrong")],
        failure=[t.delete(b"/aetcd/txn/k"), t.put(b"/aetcd/txn/other", b"z")],
    )
    replaced = await client.replace(b"/aetcd/txn/other", b"z", b"zz")
    not_replaced = await client.replace(b"/aetcd/txn/other", b"z", b"zzz")
    left = await client.get_prefix(b"/aetcd/txn/")
    await client.delete_prefix(b"/aetcd/txn/")
    return {
        "succeeded": ok,
        "success_get": success_get,
        "failed": failed,
        "failure_deleted": failure_responses[0].response_delete_range.deleted,
        "replaced": replaced,
        "not_replaced": not_replaced,
        "left": [[s(kv.key), s(kv.value)] for kv in left],
    }


@scenario
async def watch(client: aetcd.Client) -> dict[str, Any]:
    await client.delete_prefix(b"/aetcd/w/")
    first = await client.put(b"/aetcd/w/a", b"0")
    live = await client.watch_prefix(b"/aetcd/w/", prev_kv=True)
    await client.put(b"/aetcd/w/a", b"1")
    await client.put(b"/aetcd/w/b", b"2")
    await client.put(b"/aetcd/other", b"not watched")
    await client.delete(b"/aetcd/w/a")
    events: list[list[Any]] = []

    async def collect(w: Any, into: list[list[Any]], n: int) -> None:
        async for ev in w:
            # With prev_kv requested aetcd always hands out a prev_kv, empty (no key) when the
            # server sent none (a created key), for etcd too: report that as None.
            prev = s(ev.prev_kv.value) if ev.prev_kv and ev.prev_kv.key else None
            into.append([str(ev.kind), s(ev.kv.key), s(ev.kv.value), prev, ev.kv.mod_revision])
            if len(into) == n:
                return

    await asyncio.wait_for(collect(live, events, 3), 10)
    await live.cancel()
    # A second watch of one key, replaying history from the first revision.
    replay = await client.watch(b"/aetcd/w/a", start_revision=first.header.revision)
    replayed: list[list[Any]] = []
    await asyncio.wait_for(collect(replay, replayed, 3), 10)
    await replay.cancel()
    once = await client.watch_once(b"/aetcd/w/a", timeout=5,
                                   start_revision=first.header.revision)
    await client.delete_prefix(b"/aetcd/w/")
    return {"first_revision": first.header.revision, "live": events, "replay": replayed,
            "once": [str(once.kind), s(once.kv.value)]}


@scenario
async def watch_many(client: aetcd.Client) -> dict[str, Any]:
    """20 watches of one client at once: aetcd sends them all on its one Watch stream with
    watch_id 0 ("server chooses"), as Go's clientv3 does."""
    await client.delete_prefix(b"/aetcd/many/")
    watches = [await client.watch(b"/aetcd/many/%02d" % i) for i in range(20)]
    watcher = client._watcher  # one Watcher: one request handler task, one stream
    for i in range(20):
        await client.put(b"/aetcd/many/%02d" % i, b"v%d" % i)
    events: dict[str, list[Any]] = {}

    async def first(i: int, w: Any) -> None:
        async for ev in w:
            events[str(i)] = [s(ev.kv.key), s(ev.kv.value)]
            return

    await asyncio.wait_for(asyncio.gather(*(first(i, w) for i, w in enumerate(watches))), 20)
    ids = [w.watch_id for w in watches]
    for w in watches:
        await w.cancel()
    await client.delete_prefix(b"/aetcd/many/")
    return {"streams": 1 if watcher._request_handler is not None else 0, "watch_ids": ids,
            "events": events}


@scenario
async def lease(client: aetcd.Client) -> dict[str, Any]:
    granted = await client.lease(30)
    await client.put(b"/aetcd/lease/a", b"1", lease=granted.id)
    await client.put(b"/aetcd/lease/b", b"2", lease=granted.id)
    attached = await client.get(b"/aetcd/lease/a")
    keys = sorted(s(k) for k in await granted.keys())
    remaining = await granted.remaining_ttl()
    granted_ttl = await granted.granted_ttl()
    refreshed = await granted.refresh()
    await granted.revoke()
    after = await client.get_prefix(b"/aetcd/lease/")
    gone = await granted.remaining_ttl()
    # Revoking again: etcd answers NOT_FOUND, which aetcd raises as its own exception.
    try:
        await client.revoke_lease(granted.id)
        revoke_again = "no error"
    except aetcd.exceptions.ClientError as e:
        revoke_again = type(e).__name__ + ": " + str(e)
    return {"id": granted.id, "ttl": granted.ttl, "attached_lease": attached.lease,
            "keys": keys, "remaining": remaining, "granted_ttl": granted_ttl,
            "refreshed_ttl": refreshed.TTL, "after_revoke": [s(kv.key) for kv in after],
            "ttl_after_revoke": gone, "revoke_again": revoke_again}


@scenario
async def status(client: aetcd.Client) -> dict[str, Any]:
    st = await client.status()
    members = [[m.name, list(m.peer_urls), list(m.client_urls)]
               async for m in client.members()]
    return {"version": st.version, "leader": st.leader.id if st.leader else None,
            "raft_term": st.raft_term, "members": members}


async def main(name: str, endpoint: str) -> None:
    host, port = endpoint.rsplit(":", 1)
    async with aetcd.Client(host, int(port), timeout=10) as client:
        print(json.dumps(await SCENARIOS[name](client)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
