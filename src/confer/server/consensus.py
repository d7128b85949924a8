"""Waiting on Raft for a request: a leader, a linearizable read point, a replicated write.

Every loop that waits for a leader lives here, once: the request layer's writes and reads,
the lessor's leadership confirmation and the process's own background proposals all use it.
Deadlines are absolute ``time.monotonic()`` values, so a request's budget is spent once
across all of its waits and retries.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from confer.raft.errors import NotLeader
from confer.raft.types import StateRole
from confer.server.node import RaftNode


class NoLeader(Exception):
    """No leader is known (or none confirmed the request) within the request's deadline."""


class Consensus:
    """The request-facing side of this member's Raft node.

    Args:
        node: returns the current node, or None while the member waits to be initialised or
            to join (the node is replaced by ``Init``).
        retry_interval: how long to pause between looks for a leader (one tick).
    """

    def __init__(self, node: Callable[[], RaftNode | None], retry_interval: float) -> None:
        self._node = node
        self.retry_interval = retry_interval

    def require_node(self) -> RaftNode:
        node = self._node()
        if node is None:
            raise NoLeader("this node is not initialised yet (waiting for Init or to join)")
        return node

    def is_leader(self) -> bool:
        node = self._node()
        return node is not None and node.role == StateRole.LEADER

    async def wait_for_leader(self, deadline: float) -> int:
        """The leader's id, once one is known; NoLeader at ``deadline``."""
        node = self.require_node()
        while not node.leader:
            if time.monotonic() >= deadline:
                raise NoLeader("no leader: the cluster has no quorum or is electing")
            await asyncio.sleep(self.retry_interval)
        return node.leader

    async def read_barrier(self, deadline: float) -> None:
        """Wait until local state reflects every write acknowledged before this call."""
        node = self.require_node()
        while True:
            await self.wait_for_leader(deadline)
            try:
                # asyncio.timeout, unlike wait_for, creates no extra task per request.
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await node.read_barrier()
                return
            except NotLeader:
                if time.monotonic() >= deadline:
                    raise NoLeader("no leader confirmed the read in time") from None
                await asyncio.sleep(self.retry_interval)
            except TimeoutError:
                raise NoLeader("no leader confirmed the read in time") from None

    async def replicate(self, data: bytes, deadline: float) -> Any:
        """Replicate an encoded command and return this node's result of applying it.

        A follower forwards it to the leader through Raft (batched with its other writes);
        while no leader is known (an election), it waits for one and proposes again.
        """
        node = self.require_node()
        while True:
            try:
                return await node.propose(data, True, max(0.0, deadline - time.monotonic()))
            except NotLeader:
                await asyncio.sleep(self.retry_interval)
                await self.wait_for_leader(deadline)

    async def propose_here(self, data: bytes, timeout: float) -> Any:
        """Propose on this node only if it leads (else NotLeader): for leader duties such as
        lease expiry and auto-compaction, which must not be forwarded."""
        node = self.require_node()
        if node.role != StateRole.LEADER:
            raise NotLeader(node.leader)
        return await node.propose(data, False, timeout)
