"""What a member counts and times as it runs, for its metrics: recorded cheaply on the paths
that do the work, turned into Prometheus metrics only when scraped (``server/http/metrics.py``).

Recording must cost next to nothing on the request path: a :class:`Timings` observation is a
bisect and two additions, with no lock and no label lookup (the event loop is the only writer,
and a scrape runs on the same loop). This module imports nothing but the standard library, so
the Raft driver and the peer transport record into it without depending on the exporter.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
"""Request durations (seconds): Prometheus's default buckets, with two below 5 ms, where
most of a local cluster's requests fall."""
DISK_BUCKETS = tuple(0.001 * 2**i for i in range(14))
"""etcd's buckets for WAL fsync and snapshot save durations: 1 ms to 8.192 s."""
FAST_BUCKETS = tuple(0.0001 * 2**i for i in range(16))
"""etcd's buckets for peer round trips (100 µs to 3.3 s); also WAL appends."""
SNAPSHOT_SEND_BUCKETS = tuple(0.1 * 2**i for i in range(14))
"""etcd's buckets for snapshot sends: 100 ms to 819 s."""


class Timings:
    """Durations observed into fixed buckets, as a Prometheus histogram reads them."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = REQUEST_BUCKETS) -> None:
        self.bounds = bounds
        """Each bucket's upper bound (inclusive), ascending; +Inf is implied."""
        self.counts = [0] * (len(bounds) + 1)
        """Observations per bucket (not cumulative); the last is above every bound."""
        self.total = 0.0
        """The sum of every duration observed, in seconds."""

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> Iterator[tuple[float, int]]:
        """(upper bound, observations at or below it), ending with (+Inf, count)."""
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            yield bound, running


class MethodCalls:
    """One RPC method's calls: how many started, and how each ended, by status code."""

    __slots__ = ("by_code", "kind", "method", "service", "started")

    def __init__(self, service: str, method: str, kind: str) -> None:
        self.service = service
        """The full gRPC service name, e.g. ``etcdserverpb.KV``."""
        self.method = method
        self.kind = kind
        """``unary``, ``server_stream``, ``client_stream`` or ``bidi_stream`` (as
        go-grpc-prometheus's ``grpc_type``)."""
        self.started = 0
        self.by_code: dict[str, Timings] = {}
        """Status code name (``OK``, ``NOT_FOUND``...) -> the durations of calls ending so."""

    def ended(self, code: str, seconds: float) -> None:
        timings = self.by_code.get(code)
        if timings is None:
            timings = self.by_code[code] = Timings()
        timings.observe(seconds)

    @property
    def in_flight(self) -> int:
        return self.started - sum(t.count for t in self.by_code.values())


class CallStats:
    """Every RPC method served on the client port (both APIs), registered once each by
    ``server/rpc.py``'s registry, which records each call into its :class:`MethodCalls`
    (etcd's JSON gateway on the HTTP listener registers the same methods again: one each)."""

    def __init__(self) -> None:
        self.methods: list[MethodCalls] = []
        self._by_name: dict[tuple[str, str], MethodCalls] = {}

    def method(self, service: str, method: str, kind: str) -> MethodCalls:
        """The calls of ``service``/``method``, added on first use: the client port and
        etcd's JSON gateway (which serves the same handlers) count into the same one."""
        calls = self._by_name.get((service, method))
        if calls is None:
            calls = self._by_name[service, method] = MethodCalls(service, method, kind)
            self.methods.append(calls)
        return calls

    def services(self) -> list[str]:
        """The services registered, in order of registration."""
        return list(dict.fromkeys(m.service for m in self.methods))


class RaftTimings:
    """What the Raft driver times: its disk writes and snapshots."""

    __slots__ = ("append", "fsync", "snapshot_apply", "snapshot_save")

    def __init__(self) -> None:
        self.fsync = Timings(DISK_BUCKETS)
        """Each WAL sync (one per round of the Raft loop that must sync)."""
        self.append = Timings(FAST_BUCKETS)
        """Each round's append of new entries to the WAL (before its sync)."""
        self.snapshot_save = Timings(DISK_BUCKETS)
        """Each snapshot this node took: serialising the state and writing the file."""
        self.snapshot_apply = Timings(DISK_BUCKETS)
        """Each snapshot received from the leader and restored into the state machine."""


class PeerTraffic:
    """What went to and came from one peer over the peer transport."""

    __slots__ = ("received_bytes", "round_trip", "sent_bytes", "snapshot_send",
                 "snapshot_started")

    def __init__(self) -> None:
        self.sent_bytes = 0
        self.received_bytes = 0
        self.round_trip = Timings(FAST_BUCKETS)
        """Round trips of a health probe sent every few seconds on the peer's connection."""
        self.snapshot_send = Timings(SNAPSHOT_SEND_BUCKETS)
        """Snapshots sent: from the first chunk handed to the transport to the last."""
        self.snapshot_started: float | None = None
        """When the snapshot being sent now started (its first chunk)."""

    def snapshot_chunk_sent(self, first: bool, last: bool, now: float) -> None:
        """A snapshot chunk was handed over for sending (a resent first chunk restarts the
        timing)."""
        if first:
            self.snapshot_started = now
        if last and self.snapshot_started is not None:
            self.snapshot_send.observe(now - self.snapshot_started)
            self.snapshot_started = None
