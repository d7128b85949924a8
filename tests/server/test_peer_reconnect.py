"""The peer transport across failed streams: every batch sent once the peer admits us arrives.

A stream call that fails (the peer is down, or refuses us) leaves grpc iterating its request
generator; such leftovers once took the next batches into dead calls, one each, so a member
that came back lost the first messages sent to it: during a failover, the very votes that
elect the next leader.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from confer.raft.types import Message, MessageType
from confer.server.peer_transport import GrpcPeerTransport, PeerServicer
from confer.v1 import confer_pb2, peer_pb2, peer_pb2_grpc
from testing.procs import free_port

from .test_peer_attacks import run, wait_until

CLUSTER = 5


class _CountingServicer(PeerServicer):
    streams = 0

    async def Raft(self, request_iterator: AsyncIterator[peer_pb2.RaftBatch],
                   context: grpc.aio.ServicerContext[peer_pb2.RaftBatch, confer_pb2.Empty],
                   ) -> confer_pb2.Empty:
        self.streams += 1
        return await super().Raft(request_iterator, context)


def _heartbeat(term: int) -> Message:
    return Message(MessageType.HEARTBEAT, to=2, frm=1, term=term)


@run
async def test_every_batch_sent_after_failed_streams_arrives() -> None:
    addr = f"127.0.0.1:{free_port()}"
    sender = GrpcPeerTransport(1, "127.0.0.1:1", {2: addr}.get, lambda: CLUSTER,
                               lambda _s, _c: None)
    refuse = True
    receiver = GrpcPeerTransport(2, addr, lambda _: None, lambda: CLUSTER,
                                 lambda _s, _c: "not yet" if refuse else None)
    got: list[Message] = []
    receiver.set_handler(got.append)
    servicer = _CountingServicer(receiver, lambda _: False)
    server = grpc.aio.server()
    peer_pb2_grpc.add_PeerServicer_to_server(servicer, server)
    server.add_insecure_port(addr)
    await server.start()
    try:
        # Refused: each stream fails at its first batch (and the sender backs off).
        while servicer.streams < 4:
            sender.send([_heartbeat(1)])
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # the last refusal is back: nothing of before is in flight
        refuse = False
        for term in range(2, 8):
            sender.send([_heartbeat(term)])
            await wait_until(lambda term=term: term in [m.term for m in got],
                             f"the heartbeat of term {term}")
        assert [m.term for m in got] == list(range(2, 8))
    finally:
        await sender.close()
        await receiver.close()
        await server.stop(None)
