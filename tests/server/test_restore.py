"""Backup and disaster recovery with real processes (docs/operations.md, "Backup and disaster
recovery"): a snapshot of a loaded cluster restored into a new cluster holds every key,
revision, history and lease; losing one member; losing the majority."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from confer.client import Client, EventType, Op
from confer.kv import KVStore, Put
from confer.server import restore as restore_module
from confer.server.config import ServerConfig
from confer.server.members import Member, cluster_id_for
from confer.server.restore import RestoreError, restore
from confer.server.snapshot_file import frame, unframe
from testing import ProcessCluster
from tests.cli.test_cli import confer, ok

LAST = "/zz/last"
"""The loader's last key: a watch replaying the history has seen it all when it sees this."""


def load(c: Client) -> int:
    """Keys with history (created, updated, deleted, in a transaction), a compaction, and a
    lease with keys; returns the final revision."""
    for i in range(40):
        c.put(f"/data/k{i:02}", f"v{i}-0")
    compact_at = c.put("/data/k00", "v0-1").revision
    c.compact(compact_at)  # history before it goes; the snapshot keeps the compact revision
    for i in range(0, 40, 3):
        c.put(f"/data/k{i:02}", f"v{i}-2")
    for i in range(0, 40, 7):
        c.delete(f"/data/k{i:02}")
    lease = c.lease_grant(600).id
    for i in range(3):
        c.put(f"/leased/k{i}", "held", lease=lease)
    c.put(f"/data/k{1:02}", b"\x00\xffbinary")
    return c.put(LAST, "end").revision


def dump(c: Client) -> dict[str, Any]:
    """Everything a restore must keep: the revisions, every key, the history since the
    compaction, and the leases with their keys."""
    listing = c.list("/")
    status = c.status()
    history = []
    watch = c.watch("/", recursive=True, start_revision=status.compact_revision + 1)
    try:
        for event in watch:
            history.append((event.type, event.kv, event.revision))
            if event.type is EventType.PUT and event.kv.path == LAST:
                break
    finally:
        watch.cancel()
    leases = {}
    for lease in c.lease_list():
        ttl = c.lease_time_to_live(lease.id, keys=True)
        assert ttl is not None
        leases[lease.id] = (lease.granted_ttl, sorted(ttl.keys))
    return {"revision": status.revision, "compact_revision": status.compact_revision,
            "kvs": listing.kvs, "history": history, "leases": leases}


def restored_cluster(snapshot: Path, base: Path, size: int) -> ProcessCluster:
    """A new cluster of ``size`` members (not started), each restored from ``snapshot``
    with the same --initial-cluster, as docs/operations.md tells."""
    cluster = ProcessCluster(size, base)
    initial = ",".join(f"{n.node_id}={n.peer_addr}" for n in cluster.nodes.values())
    with ThreadPoolExecutor(size) as pool:  # as on separate machines: at once
        outs = pool.map(lambda n: ok("snapshot", "restore", str(snapshot), "--data-dir",
                                     str(n.data_dir), "--id", str(n.node_id),
                                     "--initial-cluster", initial), cluster.nodes.values())
        for n, out in zip(cluster.nodes.values(), outs, strict=True):
            assert f"Restored member {n.node_id} of new cluster" in out
    return cluster


def serves(cluster: ProcessCluster, expected: dict[str, Any]) -> None:
    """Every member of the running ``cluster`` holds ``expected``, and the cluster takes
    new writes after it."""
    cluster.leader()
    for endpoint in cluster.endpoints:
        with Client([endpoint]) as c:
            assert dump(c) == expected, endpoint
    with Client(cluster.endpoints) as c:
        assert c.put("/after", "restore").revision == expected["revision"] + 1
        assert {m.id for m in c.member_list()} == set(cluster.nodes)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def cluster_ids(cluster: ProcessCluster) -> int:
    """The cluster id, which every member must report alike."""
    ids = set()
    for n in cluster.nodes.values():
        status = n.status(timeout=5)
        assert status is not None
        ids.add(status.header.cluster_id)
    assert len(ids) == 1 and 0 not in ids, ids
    return ids.pop()


def test_losing_one_member_the_others_go_on_and_a_new_member_replaces_it(
        tmp_path: Path) -> None:
    """docs/operations.md: a lost member is removed and a new one joins with an empty data
    dir; no backup needed while a majority is up."""
    with ProcessCluster(3, tmp_path) as c:
        c.leader()
        with Client(c.endpoints) as client:
            load(client)
            c.nodes[3].kill()  # gone for good, with its disk
            expected = dump(client)
            assert "removed" in ok("member", "remove", "3", "--endpoints",
                                   c.nodes[1].client_addr)
            new = c.add_node(4, join=c.nodes[1].client_addr)
            wait_for(lambda: {m.id: m.is_learner for m in client.member_list()}
                     == {1: False, 2: False, 4: False}, 60, "node 4 to join as a voter")
        with Client([new.client_addr]) as client:
            assert dump(client) == expected


def test_a_loaded_3_node_cluster_backed_up_then_lost_restores_into_a_new_3_node_cluster(
        tmp_path: Path) -> None:
    """A backup of a loaded 3-member cluster, and then docs/operations.md's majority loss:
    with 2 of 3 members gone for good the survivor cannot write, but, restarted alone, it
    still serves `snapshot save`; its snapshot restores into a new 3-member cluster that
    holds every key, revision, history and lease, under a new cluster id."""
    backup, rescue = tmp_path / "backup.snap", tmp_path / "survivor.snap"
    with ProcessCluster(3, tmp_path / "old") as old:
        old.leader()
        with Client(old.endpoints) as c:
            load(c)
        survivor = old.nodes[1]
        with Client([survivor.client_addr]) as c:
            expected = dump(c)  # a linearizable read there: it has applied every write
        with Client([old.nodes[2].client_addr]) as c:
            assert dump(c) == expected
        # A routine backup, from another member.
        ok("snapshot", "save", str(backup), "--endpoints", old.nodes[2].client_addr)
        old_cluster_id = cluster_ids(old)
        old.nodes[2].kill()
        old.nodes[3].kill()
        assert survivor.stop() == 0
        survivor.start()
        survivor.wait_ready()
        # Step 1 of the procedure: the survivor's revision, though it has no quorum.
        rows = confer("status", "--endpoints", survivor.client_addr,
                      "--timeout", "1").stdout.splitlines()
        column = rows[0].split().index("REVISION")
        assert rows[2].split()[column] == str(expected["revision"]), rows
        out = ok("snapshot", "save", str(rescue), "--endpoints", survivor.client_addr)
        assert f"revision {expected['revision']}" in out
    assert expected["compact_revision"] > 0 and len(expected["leases"]) == 1
    saved = [json.loads(ok("snapshot", "status", str(f), "-o", "json")) for f in (backup, rescue)]
    assert [(s["revision"], s["compact_revision"], s["keys"], s["leases"]) for s in saved] == [
        (expected["revision"], expected["compact_revision"], len(expected["kvs"]), 1)] * 2
    with restored_cluster(rescue, tmp_path / "new", 3) as new:
        serves(new, expected)
        assert cluster_ids(new) != old_cluster_id


def test_a_snapshot_taken_under_writes_is_the_store_at_one_revision(tmp_path: Path) -> None:
    """The member goes on applying writes while it serialises a large store a slice at a
    time; the file still holds the store as of one revision, no write after it."""
    backup = tmp_path / "busy.snap"
    stop = threading.Event()
    with ProcessCluster(1, tmp_path / "old") as old:
        old.leader()
        with Client(old.endpoints) as c:
            for start in range(0, 6000, 120):  # several slices of the member's snapshot
                c.txn().then(*(Op.put(f"/bulk/{i:05}", "v" * 20)
                               for i in range(start, start + 120))).commit()

            def write() -> None:
                for i in range(10_000):
                    if stop.is_set():
                        return
                    c.put(f"/busy/{i % 50}", str(i))

            writer = threading.Thread(target=write)
            writer.start()
            try:
                time.sleep(0.3)
                ok("snapshot", "save", str(backup), "--endpoints", old.endpoints[0])
            finally:
                stop.set()
                writer.join(30)
            revision = json.loads(ok("snapshot", "status", str(backup), "-o", "json"))[
                "revision"]
            assert c.status().revision > revision  # written to after the snapshot
            expected = c.list("/", revision=revision).kvs
    with restored_cluster(backup, tmp_path / "new", 1) as new, Client(new.endpoints) as c:
        new.leader()
        assert c.status().revision == revision
        assert c.list("/").kvs == expected


@pytest.mark.parametrize("existing", [False, True], ids=["new dir", "existing empty dir"])
def test_a_restore_that_fails_half_way_removes_what_it_wrote(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool) -> None:
    """A write that fails after the log is in place (here: moving the identity file, the
    last step) leaves the data dir as it was: absent, or empty."""
    store = KVStore()
    store.execute(Put(b"/a", b"1"))
    snap = unframe(frame(store.snapshot()))
    target = tmp_path / "member"
    if existing:
        target.mkdir()
    real_rename = os.rename

    def rename(src: Any, dst: Any) -> None:
        if Path(dst).name in ("member", "member.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_rename(src, dst)

    monkeypatch.setattr(restore_module.os, "rename", rename)
    with pytest.raises(RestoreError, match=r"cannot write .*No space left on device"):
        restore(snap, target, ServerConfig())
    assert os.listdir(tmp_path) == (["member"] if existing else [])
    assert not existing or os.listdir(target) == []


def test_members_restored_from_one_file_share_a_cluster_id_that_is_not_the_old_one(
        tmp_path: Path) -> None:
    """Even with the members and token of the backed-up cluster: its surviving members
    must not be able to talk to the new one."""
    initial = "1=127.0.0.1:20001,2=127.0.0.1:20002"
    old_id = cluster_id_for("confer", [Member(i, name, peer, "") for i, name, peer in
                                       ServerConfig(initial_cluster=initial).founders()])
    snap = unframe(frame(KVStore().snapshot()))
    first = restore(snap, tmp_path / "a", ServerConfig(initial_cluster=initial, node_id=1))
    second = restore(snap, tmp_path / "b", ServerConfig(initial_cluster=initial, node_id=2))
    assert first.cluster_id == second.cluster_id != old_id
    assert (first.node_id, second.node_id) == (1, 2)
