"""`confer demo`: a 3-node cluster in one process, on the real write-ahead log, put through
an election, commits, a leader crash, a restart from disk and a partition."""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path

from confer.raft.fsm import ListStateMachine
from confer.raft.storage import MemoryStorage, WritableLogStorage
from confer.raft.types import StateRole
from confer.server.local import LocalCluster
from confer.server.node import NodeOptions, RaftNode

Say = Callable[[str], None]


def _digest(node: RaftNode) -> str:
    fsm = node.fsm
    assert isinstance(fsm, ListStateMachine)
    return hashlib.sha256(b"\n".join(fsm.applied)).hexdigest()[:12]


async def _write(leader: RaftNode, prefix: str, count: int) -> None:
    await asyncio.gather(*(leader.propose(f"{prefix}-{i}".encode()) for i in range(count)))


async def _wait_caught_up(cluster: LocalCluster, timeout: float = 10.0) -> None:
    async def converge() -> None:
        while len({n.applied_index for n in cluster.nodes.values()}) != 1:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(converge(), timeout)


def _describe(cluster: LocalCluster, say: Say) -> None:
    for node_id in cluster.ids:
        node = cluster.nodes.get(node_id)
        if node is None:
            say(f"    node {node_id}: down")
            continue
        st = node.status()
        applied = node.fsm.applied if isinstance(node.fsm, ListStateMachine) else []
        say(f"    node {node_id}: {st.role.name.lower():<9} term {st.term:<3} "
            f"commit {st.commit:<5} applied {len(applied):<5} state {_digest(node)}")


async def run_demo(data_dir: Path | None, in_memory: bool, say: Say) -> bool:
    """Run the scenario; returns True if every node ends with the same state."""
    if in_memory:
        memory: dict[int, WritableLogStorage] = {}

        def factory(node_id: int) -> WritableLogStorage:
            return memory.setdefault(node_id, MemoryStorage())
    else:
        from confer.storage import DurableStorage

        assert data_dir is not None

        def factory(node_id: int) -> WritableLogStorage:
            return DurableStorage.open(data_dir / f"node{node_id}")

    cluster = LocalCluster(3, storage_factory=factory,
                           options=NodeOptions(tick_interval=0.05, snapshot_every=500,
                                               keep_entries=100))
    where = "in memory" if in_memory else f"in {data_dir}"
    say(f"Starting a 3-node Raft cluster {where} (fsync on every batch)...")
    await cluster.start()
    try:
        leader = await cluster.wait_leader()
        say(f"1. Node {leader.id} won the election (term {leader.status().term}).")
        await _write(leader, "config", 300)
        await _wait_caught_up(cluster)
        say("2. Committed 300 entries; every node applied them:")
        _describe(cluster, say)

        crashed = leader.id
        await cluster.stop_node(crashed)
        say(f"3. Crashed the leader, node {crashed}. The others elect a new one...")
        leader = await cluster.wait_leader(exclude=crashed)
        say(f"   Node {leader.id} leads now (term {leader.status().term}); "
            "committing 300 more entries without node " f"{crashed}.")
        await _write(leader, "after-crash", 300)

        if not in_memory:
            storage = cluster.storages[crashed]
            close = getattr(storage, "close", None)
            if close is not None:
                close()
            cluster.storages[crashed] = factory(crashed)
        await cluster.start_node(crashed)
        await _wait_caught_up(cluster)
        say(f"4. Restarted node {crashed} from its log and snapshot on disk; it caught up:")
        _describe(cluster, say)

        follower = next(i for i in cluster.ids if i != leader.id)
        cluster.network.isolate(follower)
        say(f"5. Partitioned follower {follower} away; the majority keeps committing.")
        await _write(leader, "partitioned", 200)
        cluster.network.heal()
        await _wait_caught_up(cluster)
        say(f"   Healed the partition; node {follower} caught up.")

        old = leader.id
        cluster.network.isolate(old)
        say(f"6. Partitioned the leader, node {old}, away from both followers...")
        new = await cluster.wait_leader(exclude=old)
        await _write(new, "new-leader", 100)
        for _ in range(200):
            if cluster.nodes[old].role != StateRole.LEADER:
                break
            await asyncio.sleep(0.05)
        say(f"   Node {new.id} was elected (term {new.status().term}); node {old} stepped "
            f"down on its own (CheckQuorum): it is now a {cluster.nodes[old].role.name.lower()}.")
        cluster.network.heal()
        await _wait_caught_up(cluster)
        say("7. Healed. Final state of every node:")
        _describe(cluster, say)
        digests = {_digest(n) for n in cluster.nodes.values()}
        ok = len(digests) == 1
        say("All nodes agree on the same 900 entries." if ok
            else "ERROR: the nodes disagree!")
        return ok
    finally:
        await cluster.stop()


def demo(data_dir: Path | None, in_memory: bool, say: Say = print) -> bool:
    try:
        import uvloop

        runner: Callable[..., bool] = uvloop.run
    except ImportError:
        runner = asyncio.run
    if in_memory or data_dir is not None:
        return runner(run_demo(data_dir, in_memory, say))
    with tempfile.TemporaryDirectory(prefix="confer-demo-") as tmp:
        return runner(run_demo(Path(tmp), in_memory, say))
