"""The gRPC peer transport: one long-lived client stream of Raft batches per peer.

Sending never blocks the Raft loop: messages go into a bounded per-peer queue that a sender
task drains, coalescing everything queued into one batch. Raft tolerates loss, so when a peer is
down or its queue is full, messages are dropped and the core is told the peer is unreachable.

Receiving trusts nothing (docs/security.md): a batch must name this node's cluster
and come from a member (:meth:`GrpcPeerTransport.deliver` asks the server's admission check),
else the stream is aborted with PERMISSION_DENIED; its messages must decode as well-formed
Raft messages for this node (codec.py), else the batch is dropped; and proposals forwarded
through it must pass the request layer's write checks (peer_checks.py), else they are dropped.
Every refusal is counted (:class:`PeerStats`) and logged at most once per sender and kind per
minute. With peer TLS (confer.server.tls), members dial each other with their peer
certificate (:func:`dial`), and a stream whose certificate is not a member's (common name,
advertised address) is aborted with PERMISSION_DENIED before any of its batches is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from confer.raft.types import Entry, Message, MessageType
from confer.server.codec import MalformedBatch, decode_messages, encode_messages
from confer.server.log_limit import LogLimiter
from confer.server.metrics import PeerTraffic, Timings
from confer.server.transport import MessageHandler
from confer.v1 import confer_pb2, peer_pb2, peer_pb2_grpc

log = logging.getLogger("confer.peer")

MAX_QUEUED = 4096
_SNAP = int(MessageType.SNAP)  # a plain int: compared for every message sent
REMOVED = "was removed from the cluster"
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
]

Admission = Callable[[int, int], str | None]
"""``(sender id, cluster id) -> why the sender is refused``, or None to admit it."""
ProposalCheck = Callable[[Entry, int], str | None]
"""``(forwarded entry, sender id) -> why it is dropped``, or None to append it."""
IdentityCheck = Callable[[Mapping[str, Iterable[bytes]], int | None], str | None]
"""``(the connection's TLS auth context, the member id it claims or None) -> why the peer is
refused``, or None to admit it."""


def dial(addr: str, creds: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    """A channel to another member with :data:`GRPC_OPTIONS`: TLS with ``creds`` (peer TLS,
    confer.server.tls), plaintext without."""
    if creds is None:
        return grpc.aio.insecure_channel(addr, options=GRPC_OPTIONS)
    return grpc.aio.secure_channel(addr, creds, options=GRPC_OPTIONS)


class PeerRefused(Exception):
    """A peer batch (or internal call) whose sender is not admitted: the stream is aborted."""


@dataclass(slots=True)
class PeerStats:
    """What the peer side refused or dropped since start (issue 14 exports these)."""

    refused_batches: int = 0
    """Batches refused by admission: no or another cluster id, a non-member, wrong ``to``."""
    malformed_batches: int = 0
    """Batches dropped because a message did not decode as a well-formed Raft message."""
    dropped_proposals: int = 0
    """Forwarded entries dropped because they fail the request layer's write checks."""
    bad_snapshots: int = 0
    """Received snapshots dropped because they do not decode as this state machine's."""
    peers: dict[int, PeerTraffic] = field(default_factory=dict)
    """Bytes sent to and received from each peer, and round trips to it."""

    def peer(self, peer_id: int) -> PeerTraffic:
        traffic = self.peers.get(peer_id)
        if traffic is None:
            traffic = self.peers[peer_id] = PeerTraffic()
        return traffic


PROBE_INTERVAL = 5.0
"""Seconds between two round-trip probes of a peer (etcd probes every 5 s too)."""


async def probe_round_trips(channel: grpc.aio.Channel, timings: Timings) -> None:
    """Time a health check on ``channel`` every :data:`PROBE_INTERVAL` seconds (the peer
    port serves health): the round trip etcd's ``peer_round_trip_time_seconds`` reports.
    A probe that fails records nothing; the Raft stream reports the peer down."""
    check = health_pb2_grpc.HealthStub(channel).Check  # type: ignore[attr-defined]  # stubs omit it
    request = health_pb2.HealthCheckRequest()
    while True:
        start = time.perf_counter()
        try:
            await check(request, timeout=PROBE_INTERVAL)
        except grpc.aio.AioRpcError:
            pass
        else:
            timings.observe(time.perf_counter() - start)
        await asyncio.sleep(PROBE_INTERVAL)


class _PeerSender:
    def __init__(self, transport: GrpcPeerTransport, peer_id: int) -> None:
        self.transport = transport
        self.peer_id = peer_id
        self.queue: list[Message] = []
        self.wake = asyncio.Event()
        self.stream = 0
        """Counts the streams opened: the batches of an ended one must stop at once."""
        self.traffic = transport.stats.peer(peer_id)
        self.task = asyncio.create_task(self._run(), name=f"peer-send-{peer_id}")
        self.addr: str | None = None

    def enqueue(self, messages: list[Message]) -> bool:
        if len(self.queue) + len(messages) > MAX_QUEUED:
            return False
        self.queue.extend(messages)
        self.wake.set()
        return True

    async def _batches(self, stream: int) -> AsyncIterator[peer_pb2.RaftBatch]:
        t = self.transport
        while True:
            await self.wake.wait()
            if stream != self.stream:
                # The call this fed has ended, but grpc goes on iterating a failed call's
                # requests (it stops only on cancel()): each such leftover would take the
                # next batch into a dead call. Several did after a peer's restart, and
                # swallowed a failover's votes for seconds.
                return
            self.wake.clear()
            if not self.queue:
                continue
            batch, self.queue = self.queue, []
            cluster_id = t.cluster_id()
            if not cluster_id:
                continue  # peers refuse a batch without one; Raft tolerates the loss
            encoded = encode_messages(batch)
            self.traffic.sent_bytes += len(encoded)
            yield peer_pb2.RaftBatch(cluster_id=cluster_id, to=self.peer_id,
                                     messages=encoded, from_addr=t.own_addr,
                                     **{"from": t.node_id})

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            addr = self.transport.address_of(self.peer_id)
            if not addr:
                self.queue.clear()
                await asyncio.sleep(0.2)
                continue
            channel = self.transport.connect(addr)  # a new channel: rotated certificates count
            probe = asyncio.create_task(probe_round_trips(channel, self.traffic.round_trip),
                                        name=f"peer-probe-{self.peer_id}")
            try:
                stub = peer_pb2_grpc.PeerStub(channel)
                await stub.Raft(self._batches(self.stream))
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.FAILED_PRECONDITION and REMOVED in (
                        e.details() or ""):
                    self.transport.on_removed()
                    return
                if e.code() == grpc.StatusCode.PERMISSION_DENIED:
                    self.transport.warn.warning(
                        log, ("refused by", self.peer_id),
                        "peer %d at %s refuses this node: %s", self.peer_id, addr, e.details(),
                        extra={"peer": self.peer_id})
                if self.queue:
                    log.debug("peer %d at %s: %s", self.peer_id, addr, e.code().name)
                    self.queue.clear()
                    self.transport.report_unreachable(self.peer_id)
            finally:
                self.stream += 1
                self.wake.set()  # lets the ended stream's batches see it
                probe.cancel()
                await channel.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)


class GrpcPeerTransport:
    """Implements :class:`~confer.server.transport.Transport` over the ``Peer`` gRPC service.

    Args:
        cluster_id: this node's cluster id (0 while it does not know it yet).
        admit: the server's admission check of a batch's sender and cluster id.
        check_proposal: why a forwarded entry must be dropped (None: append it).
        connect: opens a channel to a peer address (TLS when peer TLS is on).
    """

    def __init__(self, node_id: int, own_addr: str, resolve: Callable[[int], str | None],
                 cluster_id: Callable[[], int], admit: Admission,
                 check_proposal: ProposalCheck | None = None,
                 report_unreachable: Callable[[int], None] = lambda _peer: None,
                 on_removed: Callable[[], None] = lambda: None,
                 connect: Callable[[str], grpc.aio.Channel] = lambda addr: dial(addr, None),
                 ) -> None:
        self.node_id = node_id
        self.connect = connect
        self.own_addr = own_addr
        self.resolve = resolve
        self._learned: dict[int, str] = {}  # addresses seen on inbound batches
        self.cluster_id = cluster_id
        self.admit = admit
        self.check_proposal = check_proposal
        self.report_unreachable = report_unreachable
        self.on_removed = on_removed
        """Called when a peer says this node was removed from the cluster."""
        self.stats = PeerStats()
        self.warn = LogLimiter()
        self._handler: MessageHandler | None = None
        self._senders: dict[int, _PeerSender] = {}

    def send(self, messages: list[Message]) -> None:
        by_peer: dict[int, list[Message]] = {}
        for m in messages:
            by_peer.setdefault(m.to, []).append(m)
            if m.type == _SNAP:
                self.stats.peer(m.to).snapshot_chunk_sent(m.snap_offset == 0, m.snap_done,
                                                          time.perf_counter())
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
        """Hand an inbound batch to the node (called by the Peer servicer).

        Raises :class:`PeerRefused` if its sender is not admitted; drops (and counts) a batch
        that does not decode, and forwarded proposals that fail the write checks.
        """
        sender = getattr(batch, "from")
        why = self.admit(sender, batch.cluster_id)
        if why is None and batch.to != self.node_id:
            why = f"message for node {batch.to} reached node {self.node_id}"
        if why is not None:
            self.stats.refused_batches += 1
            self.warn.warning(log, ("refused", sender),
                              "refusing peer messages from %d (%s): %s",
                              sender, batch.from_addr[:100], why, extra={"peer": sender})
            raise PeerRefused(why)
        try:
            messages = decode_messages(batch.messages, self.node_id)
            for m in messages:
                # A forwarded leadership transfer names its target, not its sender.
                if m.frm != sender and m.type != MessageType.TRANSFER_LEADER:
                    raise MalformedBatch(f"a message from {m.frm} in a batch from {sender}")
        except MalformedBatch as e:
            self.stats.malformed_batches += 1
            self.warn.warning(log, ("malformed", sender),
                              "dropped a malformed batch from peer %d: %s", sender, e,
                              extra={"peer": sender})
            return
        self.stats.peer(sender).received_bytes += len(batch.messages)
        if batch.from_addr:
            self._learned[sender] = batch.from_addr
        handler = self._handler
        if handler is None:
            return
        check = self.check_proposal
        for m in messages:
            if m.type == MessageType.PROP and check is not None:
                m.entries = self._checked_proposals(m.entries, sender, check)
                if not m.entries:
                    continue
            handler(m)

    def _checked_proposals(self, entries: list[Entry], sender: int,
                           check: ProposalCheck) -> list[Entry]:
        kept = []
        for e in entries:
            why = check(e, sender)
            if why is None:
                kept.append(e)
                continue
            self.stats.dropped_proposals += 1
            self.warn.warning(log, ("proposal", sender),
                              "dropped a proposal forwarded by peer %d: %s", sender, why,
                              extra={"peer": sender})
        return kept


class PeerServicer(peer_pb2_grpc.PeerServicer):
    """Serves ``confer.v1.Peer`` (on the peer port only)."""

    def __init__(self, transport: GrpcPeerTransport | None,
                 is_removed: Callable[[int], bool],
                 identity_refusal: IdentityCheck = lambda _auth, _member: None) -> None:
        self.transport = transport
        self.is_removed = is_removed
        self.identity_refusal = identity_refusal
        self.warn = LogLimiter()

    async def Raft(self, request_iterator: AsyncIterator[peer_pb2.RaftBatch],
                   context: grpc.aio.ServicerContext[peer_pb2.RaftBatch, confer_pb2.Empty],
                   ) -> confer_pb2.Empty:
        auth = context.auth_context()
        # Before reading anything: is the certificate a member's at all? Then, for each
        # member id the stream claims, is it that member's?
        await self._check_identity(context, auth, None)
        checked = None
        async for batch in request_iterator:
            sender = getattr(batch, "from")
            if sender != checked:
                await self._check_identity(context, auth, sender)
                checked = sender
            if self.is_removed(sender):
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                    f"member {sender} {REMOVED}")
            if self.transport is None:
                continue  # not started yet: Raft tolerates the loss
            try:
                self.transport.deliver(batch)
            except PeerRefused as e:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
        return confer_pb2.Empty()

    async def _check_identity(self, context: grpc.aio.ServicerContext[Any, Any],
                              auth: Mapping[str, Iterable[bytes]], member: int | None) -> None:
        why = self.identity_refusal(auth, member)
        if why is None:
            return
        if self.transport is not None:
            self.transport.stats.refused_batches += 1
        self.warn.warning(log, ("identity", context.peer()),
                          "refusing a peer connection from %s: %s", context.peer(), why)
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, why)
