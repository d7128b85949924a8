"""The recorders the metrics read at scrape time: histogram buckets as Prometheus reads them,
and snapshot sends timed by the peer transport from their first chunk to their last."""

from __future__ import annotations

import asyncio

from confer.raft.types import Message, MessageType
from confer.server.metrics import PeerTraffic, Timings
from confer.server.peer_transport import GrpcPeerTransport


def test_timings_buckets_are_inclusive_upper_bounds_and_cumulative() -> None:
    t = Timings((0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 1.0, 3.0):
        t.observe(seconds)
    assert list(t.cumulative()) == [(0.1, 2), (1.0, 4), (float("inf"), 5)]
    assert t.count == 5 and abs(t.total - 4.65) < 1e-9


def test_a_snapshot_send_is_timed_from_its_first_chunk_to_its_last() -> None:
    traffic = PeerTraffic()
    traffic.snapshot_chunk_sent(False, True, 1.0)  # the end of a send never seen starting
    assert traffic.snapshot_send.count == 0
    traffic.snapshot_chunk_sent(True, False, 10.0)
    traffic.snapshot_chunk_sent(True, False, 12.0)  # the first chunk resent: starts again
    traffic.snapshot_chunk_sent(False, False, 13.0)
    traffic.snapshot_chunk_sent(False, True, 14.5)
    assert traffic.snapshot_send.count == 1 and traffic.snapshot_send.total == 2.5
    traffic.snapshot_chunk_sent(True, True, 20.0)  # a snapshot in one chunk
    assert traffic.snapshot_send.count == 2


def test_the_peer_transport_times_the_snapshots_it_sends() -> None:
    async def send_snapshot() -> PeerTraffic:
        transport = GrpcPeerTransport(1, "127.0.0.1:1", lambda _peer: None, lambda: 7,
                                      lambda _sender, _cluster: None)
        try:
            transport.send([Message(MessageType.SNAP, to=2, snap_offset=0, snap_data=b"ab")])
            transport.send([Message(MessageType.APP, to=2),
                            Message(MessageType.SNAP, to=2, snap_offset=2, snap_data=b"c",
                                    snap_done=True)])
            return transport.stats.peers[2]
        finally:
            await transport.close()

    traffic = asyncio.run(send_snapshot())
    assert traffic.snapshot_send.count == 1 and traffic.snapshot_started is None
