"""An in-process cluster: N :class:`RaftNode` s over a :class:`LocalNetwork`.

Used by the demo, the benchmarks and tests. Storage is pluggable, so the same cluster runs on
the in-memory twin or on the real write-ahead log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable

from confer.raft.core import Config
from confer.raft.fsm import ListStateMachine, StateMachine
from confer.raft.rawnode import bootstrap
from confer.raft.storage import MemoryStorage, WritableLogStorage
from confer.raft.types import StateRole
from confer.server.node import NodeOptions, RaftNode
from confer.server.transport import LocalNetwork

StorageFactory = Callable[[int], WritableLogStorage]


class LocalCluster:
    def __init__(self, size: int = 3, storage_factory: StorageFactory | None = None,
                 fsm_factory: Callable[[], StateMachine] = ListStateMachine,
                 options: NodeOptions | None = None, config: Config | None = None,
                 seed: int = 0) -> None:
        self.ids = list(range(1, size + 1))
        self.network = LocalNetwork()
        self.storage_factory = storage_factory or (lambda _id: MemoryStorage())
        self.fsm_factory = fsm_factory
        self.options = options or NodeOptions()
        self.config = config or Config(id=1)
        self.rng = random.Random(seed)
        self.storages: dict[int, WritableLogStorage] = {}
        self.nodes: dict[int, RaftNode] = {}

    async def start(self) -> None:
        for node_id in self.ids:
            storage = self.storage_factory(node_id)
            if storage.last_index() == 0:
                bootstrap(storage, self.ids)
            self.storages[node_id] = storage
            await self.start_node(node_id)

    async def start_node(self, node_id: int) -> RaftNode:
        """(Re)start a node over its existing storage."""
        cfg = dataclasses.replace(self.config, id=node_id)
        node = RaftNode(cfg, self.storages[node_id], self.network.transport(node_id),
                        self.fsm_factory(), self.options,
                        random.Random(self.rng.getrandbits(32)))
        self.nodes[node_id] = node
        await node.start()
        return node

    async def stop_node(self, node_id: int) -> None:
        node = self.nodes.pop(node_id)
        await node.stop()

    async def stop(self) -> None:
        for node_id in list(self.nodes):
            await self.stop_node(node_id)

    def leader(self) -> RaftNode | None:
        leaders = [n for n in self.nodes.values() if n.role == StateRole.LEADER]
        return max(leaders, key=lambda n: n.status().term) if leaders else None

    async def wait_leader(self, timeout: float = 10.0,
                          exclude: int | None = None) -> RaftNode:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lead = self.leader()
            if lead is not None and lead.id != exclude:
                return lead
            await asyncio.sleep(self.options.tick_interval / 2)
        raise TimeoutError(f"no leader elected within {timeout}s")

