"""What the HTTP routes read of the member they serve (implemented by ``ConferServer``)."""

from __future__ import annotations

import asyncio
from typing import Protocol

from confer.server.api import RequestLayer
from confer.server.api.core import ClusterListener
from confer.server.config import ServerConfig
from confer.server.consensus import Consensus
from confer.server.fsm import ServerStateMachine
from confer.server.node import RaftNode
from confer.server.peer_transport import PeerStats
from confer.server.watch import WatchHub


class Member(Protocol):
    """One member process: its settings, Raft node, state machine and request layer."""

    cfg: ServerConfig
    node_id: int
    fsm: ServerStateMachine
    hub: WatchHub
    api: RequestLayer
    consensus: Consensus
    stopped: asyncio.Event
    fatal: str | None
    cluster_listeners: list[ClusterListener]

    @property
    def node(self) -> RaftNode | None: ...

    @property
    def peer_stats(self) -> PeerStats | None:
        """The peer transport's counters (None before the node starts)."""
        ...

    def storage_bytes(self) -> int:
        """The bytes of the member's log and snapshots on disk."""
        ...
