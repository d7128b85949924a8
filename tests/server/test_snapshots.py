"""Snapshots are built beside the Raft loop: a slice of the state per loop turn, the file
written in a thread, then recorded. Writes go on meanwhile, and what was recorded restores
to the state at the snapshot's index."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from confer.kv import Compact, Put, encode_command
from confer.raft.fsm import ListStateMachine
from confer.server.fsm import ServerStateMachine
from confer.server.local import LocalCluster
from confer.server.node import NodeOptions
from confer.storage import DurableStorage


def test_background_snapshots_record_the_state_at_their_index(tmp_path: Path) -> None:
    async def main() -> None:
        options = NodeOptions(tick_interval=0.02, snapshot_every=300, keep_entries=20)
        c = LocalCluster(3, storage_factory=lambda i: DurableStorage.open(tmp_path / f"n{i}"),
                         fsm_factory=ServerStateMachine, options=options, seed=5)
        await c.start()
        try:
            lead = await c.wait_leader()
            for batch in range(12):
                await asyncio.gather(*(
                    lead.propose(encode_command(Put(b"/k/%d" % (i % 250), b"v%d" % batch)))
                    for i in range(100)))
                if batch == 6:  # a compaction may overtake a snapshot under way
                    await lead.propose(encode_command(Compact(lead.fsm.kv.revision - 50)))  # type: ignore[attr-defined]
            await asyncio.sleep(0.3)
            for node in c.nodes.values():
                storage = c.storages[node.id]
                snap = storage.snapshot()
                assert snap.meta.index >= 600, (node.id, snap.meta)
                assert storage.first_index() > 1  # the log was compacted behind it
                # The recorded bytes are the state machine at that index.
                restored = ServerStateMachine()
                restored.restore(snap.data)
                assert restored.kv.applied_index == snap.meta.index
                assert restored.kv.revision <= node.fsm.kv.revision  # type: ignore[attr-defined]
        finally:
            await c.stop()
            for storage in c.storages.values():
                storage.close()  # type: ignore[attr-defined]
        # Reopened, each node recovers the latest recorded snapshot and the log after it.
        for i in c.ids:
            with DurableStorage.open(tmp_path / f"n{i}") as storage:
                restored = ServerStateMachine()
                restored.restore(storage.snapshot().data)
                assert restored.kv.applied_index == storage.snapshot().meta.index
                assert storage.last_index() >= 1200

    asyncio.run(main())


@pytest.mark.parametrize("background", [True, False])
def test_a_state_machine_that_does_not_slice_snapshots_through_the_protocol_default(
        background: bool) -> None:
    """ListStateMachine has only the default snapshot_steps (one step) and MemoryStorage
    writes no file: the driver takes and records snapshots through the same protocol calls."""
    async def main() -> None:
        options = NodeOptions(tick_interval=0.02, snapshot_every=50, keep_entries=10,
                              background_snapshots=background)
        c = LocalCluster(3, options=options, seed=3)
        await c.start()
        try:
            lead = await c.wait_leader()
            for i in range(120):
                await lead.propose(b"w%d" % i)
            await asyncio.sleep(0.2)
            for node in c.nodes.values():
                storage = c.storages[node.id]
                snap = storage.snapshot()
                assert snap.meta.index >= 100, (node.id, snap.meta)
                assert storage.first_index() == snap.meta.index - 10 + 1
                restored = ListStateMachine()
                restored.restore(snap.data)
                applied = node.fsm.applied  # type: ignore[attr-defined]
                # Every entry up to the snapshot's index is in it: the payloads proposed
                # plus the leader's empty entries, which the driver does not apply.
                assert restored.applied == applied[:len(restored.applied)]
                assert restored.applied[-1] == b"w%d" % (len(restored.applied) - 1)
        finally:
            await c.stop()

    asyncio.run(main())
