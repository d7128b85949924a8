"""The gRPC peer transport: one long-lived client stream of Raft batches per peer.

Sending never blocks the Raft loop: messages go into a bounded per-peer queue that a sender
task drains, coalescing everything queued into one batch. Raft tolerates loss, so when a peer is
down or its queue is full, messages are dropped and the core is told the peer is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from confer.raft.types import Message
from confer.server.codec import decode_messages, encode_messages
from confer.server.transport import MessageHandler
from confer.v1 import confer_pb2, peer_pb2, peer_pb2_grpc

log = logging.getLogger("confer.peer")

MAX_QUEUED = 4096
REMOVED = "was removed from the cluster"
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
]


class _PeerSender:
    def __init__(self, transport: GrpcPeerTransport, peer_id: int) -> None:
        self.transport = transport
        self.peer_id = peer_id
        self.queue: list[Message] = []
        self.wake = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"peer-send-{peer_id}")
        self.addr: str | None = None

    def enqueue(self, messages: list[Message]) -> bool:
        if len(self.queue) + len(messages) > MAX_QUEUED:
            return False
        self.queue.extend(messages)
        self.wake.set()
        return True

    async def _batches(self) -> AsyncIterator[peer_pb2.RaftBatch]:
        t = self.transport
        while True:
            await self.wake.wait()
            self.wake.clear()
            if not self.queue:
                continue
            batch, self.queue = self.queue, []
            yield peer_pb2.RaftBatch(cluster_id=t.cluster_id(), to=self.peer_id,
                                     messages=encode_messages(batch), from_addr=t.own_addr,
                                     **{"from": t.node_id})

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            addr = self.transport.address_of(self.peer_id)
            if not addr:
                self.queue.clear()
                await asyncio.sleep(0.2)
                continue
            channel = grpc.aio.insecure_channel(addr, options=GRPC_OPTIONS)
            try:
                stub = peer_pb2_grpc.PeerStub(channel)
                await stub.Raft(self._batches())
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.FAILED_PRECONDITION and REMOVED in (
                        e.details() or ""):
                    self.transport.on_removed()
                    return
                if self.queue:
                    log.debug("peer %d at %s: %s", self.peer_id, addr, e.code().name)
                    self.queue.clear()
                    self.transport.report_unreachable(self.peer_id)
            finally:
                await channel.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)


class GrpcPeerTransport:
    """Implements :class:`~confer.server.transport.Transport` over the ``Peer`` gRPC service."""

    def __init__(self, node_id: int, own_addr: str, resolve: Callable[[int], str | None],
                 cluster_id: Callable[[], int],
                 report_unreachable: Callable[[int], None] = lambda _peer: None,
                 on_removed: Callable[[], None] = lambda: None) -> None:
        self.node_id = node_id
        self.own_addr = own_addr
        self.resolve = resolve
        self._learned: dict[int, str] = {}  # addresses seen on inbound batches
        self.cluster_id = cluster_id
        self.report_unreachable = report_unreachable
        self.on_removed = on_removed
        """Called when a peer says this node was removed from the cluster."""
        self._handler: MessageHandler | None = None
        self._senders: dict[int, _PeerSender] = {}

    def send(self, messages: list[Message]) -> None:
        by_peer: dict[int, list[Message]] = {}
        for m in messages:
            by_peer.setdefault(m.to, []).append(m)
        for peer, msgs in by_peer.items():
            sender = self._senders.get(peer)
            if sender is None:
                sender = self._senders[peer] = _PeerSender(self, peer)
            if not sender.enqueue(msgs):
                self.report_unreachable(peer)

    def set_handler(self, handler: MessageHandler) -> None:
        self._handler = handler

    def address_of(self, peer: int) -> str | None:
        """The peer's address from the membership, else as the peer announced it."""
        return self.resolve(peer) or self._learned.get(peer)

    def drop_peer(self, peer: int) -> None:
        """Stop sending to a removed member."""
        sender = self._senders.pop(peer, None)
        if sender is not None:
            sender.task.cancel()

    async def close(self) -> None:
        senders, self._senders = list(self._senders.values()), {}
        for s in senders:
            s.task.cancel()
        for s in senders:
            with contextlib.suppress(asyncio.CancelledError):
                await s.task
        self._handler = None

    def deliver(self, batch: peer_pb2.RaftBatch) -> None:
        """Hand an inbound batch to the node (called by the Peer servicer)."""
        cid = self.cluster_id()
        if cid and batch.cluster_id and batch.cluster_id != cid:
            raise PermissionError(
                f"message from cluster {batch.cluster_id:x}, this is cluster {cid:x}"
            )
        if batch.to != self.node_id:
            raise PermissionError(f"message for node {batch.to} reached node {self.node_id}")
        if batch.from_addr:
            self._learned[getattr(batch, "from")] = batch.from_addr
        handler = self._handler
        if handler is None:
            return
        for m in decode_messages(batch.messages):
            handler(m)


class PeerServicer(peer_pb2_grpc.PeerServicer):
    def __init__(self, transport: GrpcPeerTransport | None,
                 propose: Callable[[bytes], Awaitable[object]],
                 is_removed: Callable[[int], bool]) -> None:
        self.transport = transport
        self.propose = propose
        self.is_removed = is_removed

    async def Propose(
            self, request: peer_pb2.ProposeRequest,
            context: grpc.aio.ServicerContext[peer_pb2.ProposeRequest, confer_pb2.Empty],
    ) -> confer_pb2.Empty:
        try:
            await self.propose(request.command)
        except Exception as e:  # the caller retries; say why it failed
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{type(e).__name__}: {e}")
        return confer_pb2.Empty()

    async def Raft(self, request_iterator: AsyncIterator[peer_pb2.RaftBatch],
                   context: grpc.aio.ServicerContext[peer_pb2.RaftBatch, confer_pb2.Empty],
                   ) -> confer_pb2.Empty:
        async for batch in request_iterator:
            sender = getattr(batch, "from")
            if self.is_removed(sender):
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                    f"member {sender} {REMOVED}")
            if self.transport is None:
                continue  # not started yet: Raft tolerates the loss
            try:
                self.transport.deliver(batch)
            except PermissionError as e:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        return confer_pb2.Empty()
