"""The seam between a node and its peers: deliver Raft messages.

:class:`LocalNetwork` is the in-process twin, used by benchmarks, the demo and tests; the
gRPC peer transport implements the same :class:`Transport` protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from confer.raft.types import Message

MessageHandler = Callable[[Message], None]


class Transport(Protocol):
    def send(self, messages: list[Message]) -> None:
        """Queue messages for delivery. Never blocks; delivery is best effort."""
        ...

    def set_handler(self, handler: MessageHandler) -> None:
        """Route messages addressed to this node to ``handler``."""
        ...

    async def close(self) -> None: ...


class LocalNetwork:
    """A hub connecting in-process nodes. Supports cutting links, to model partitions."""

    def __init__(self) -> None:
        self._handlers: dict[int, MessageHandler] = {}
        self._blocked: set[tuple[int, int]] = set()

    def transport(self, node_id: int) -> LocalTransport:
        return LocalTransport(self, node_id)

    def isolate(self, node_id: int) -> None:
        """Cut every link to and from ``node_id``."""
        for other in self._handlers:
            if other != node_id:
                self._blocked.add((node_id, other))
                self._blocked.add((other, node_id))

    def heal(self) -> None:
        self._blocked.clear()

    def _register(self, node_id: int, handler: MessageHandler | None) -> None:
        if handler is None:
            self._handlers.pop(node_id, None)
        else:
            self._handlers[node_id] = handler

    def _deliver(self, frm: int, messages: list[Message]) -> None:
        handlers = self._handlers
        blocked = self._blocked
        for m in messages:
            handler = handlers.get(m.to)
            if handler is not None and (frm, m.to) not in blocked:
                handler(m)


class LocalTransport:
    """One node's end of a :class:`LocalNetwork`. Delivery happens on the next loop turn,
    like a real network, so a node never re-enters itself while handling a Ready."""

    def __init__(self, network: LocalNetwork, node_id: int) -> None:
        self._network = network
        self._id = node_id

    def send(self, messages: list[Message]) -> None:
        if messages:
            asyncio.get_running_loop().call_soon(self._network._deliver, self._id, messages)

    def set_handler(self, handler: MessageHandler) -> None:
        self._network._register(self._id, handler)

    async def close(self) -> None:
        self._network._register(self._id, None)
