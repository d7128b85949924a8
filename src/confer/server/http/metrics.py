"""``/metrics``: the member's state and the counters it keeps (``confer.server.metrics``), in
Prometheus's text format, read at scrape time (nothing is exported on the request path).

Where etcd has a metric of the same meaning, it has etcd's name (and labels), so that etcd's
dashboards and alerts work; the others start with ``confer_``. The list, with meanings, is in
docs/operations.md ("Metrics").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from confer.raft.types import StateRole
from confer.server.http.member import Member
from confer.server.members import Member as MemberInfo
from confer.server.metrics import MethodCalls, Timings

WATCH_METHODS = frozenset({"Watch"})
"""RPCs whose calls in flight are watch streams (both APIs name theirs ``Watch``; health's
``Watch`` is not one)."""
HEALTH_SERVICE = "grpc.health.v1.Health"


def metrics_routes(member: Member) -> list[web.RouteDef]:
    registry = member_registry(member)

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    return [web.get("/metrics", metrics)]


def member_registry(member: Member) -> CollectorRegistry:
    """A registry of its own for ``member`` (several members may share a test process):
    its :class:`MemberCollector`, and the process's CPU, memory and file descriptors."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(MemberCollector(member))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def _histogram(family: HistogramMetricFamily, labels: list[str], timings: Timings) -> None:
    family.add_metric(labels, [(_bound(b), n) for b, n in timings.cumulative()],
                      timings.total)


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def _peer_label(peer_id: int) -> str:
    return f"{peer_id:x}"  # etcd names members in hex


class MemberCollector(Collector):
    """Reads one member's state and counters each time it is collected."""

    def __init__(self, member: Member) -> None:
        self.member = member
        self.leader_changes = 0
        member.cluster_listeners.append(self._on_cluster_event)

    def _on_cluster_event(self, kind: str, _member: MemberInfo | None, leader: int) -> None:
        if kind == "leader" and leader:  # as etcd counts: each new leader seen
            self.leader_changes += 1

    def collect(self) -> Iterator[Metric]:
        yield from self._server()
        yield from self._disk()
        yield from self._store()
        yield from self._network()
        yield from self._grpc(self.member.api.calls.methods)
        yield from self._grpc(self.member.api.peer_calls.methods, "confer_peer_")

    def _server(self) -> Iterable[Metric]:
        m = self.member
        node = m.node
        st = node.basic_status() if node is not None else None
        core = m.api.core

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        yield gauge("etcd_server_has_leader", "Whether or not a leader exists: 1 is existence, "
                    "0 is not.", int(bool(st and st.leader)))
        yield gauge("etcd_server_is_leader", "Whether or not this member is a leader: 1 if "
                    "is, 0 otherwise.", int(bool(st and st.role == StateRole.LEADER)))
        yield gauge("etcd_server_is_learner", "Whether or not this member is a learner: 1 if "
                    "is, 0 otherwise.",
                    int(node is not None and m.node_id in node.conf_state.learners))
        yield CounterMetricFamily("etcd_server_leader_changes_seen",
                                  "The number of leader changes seen.",
                                  value=self.leader_changes)
        ident = GaugeMetricFamily("etcd_server_id", "Server or member ID in hexadecimal "
                                  "format: 1 for 'server_id' label with current ID.",
                                  labels=["server_id"])
        ident.add_metric([_peer_label(m.node_id)], 1)
        yield ident
        yield gauge("confer_server_term", "The Raft term this member is in.",
                    st.term if st else 0)
        yield gauge("etcd_server_proposals_committed_total", "The total number of consensus "
                    "proposals committed: this member's commit index.", st.commit if st else 0)
        yield gauge("etcd_server_proposals_applied_total", "The total number of consensus "
                    "proposals applied: this member's applied index.", st.applied if st else 0)
        yield gauge("etcd_server_proposals_pending", "The current number of pending "
                    "proposals to commit: writes of this member's clients in flight.",
                    core.limits.pending)
        yield CounterMetricFamily("etcd_server_proposals_failed", "The total number of failed "
                                  "proposals seen: writes that failed to replicate (no leader, "
                                  "timeout, leader change, caller gone).",
                                  value=core.failed_writes)
        yield gauge("etcd_server_quota_backend_bytes", "Current backend storage quota size in "
                    "bytes (0: no quota).", core.limits.quota_bytes)

    def _disk(self) -> Iterable[Metric]:
        node = self.member.node
        if node is None:
            return
        t = node.timings
        for name, doc, timings in (
                ("etcd_disk_wal_fsync_duration_seconds",
                 "The latency distributions of fsync called by WAL.", t.fsync),
                ("confer_disk_wal_append_duration_seconds",
                 "The latency distributions of appending a round's entries to the WAL "
                 "(before its fsync).", t.append),
                ("etcd_debugging_snap_save_total_duration_seconds",
                 "The total latency distributions of save called by snapshot: serialising "
                 "the state and writing the file.", t.snapshot_save),
                ("confer_snapshot_apply_duration_seconds",
                 "The latency distributions of restoring a snapshot received from the "
                 "leader.", t.snapshot_apply)):
            family = HistogramMetricFamily(name, doc)
            _histogram(family, [], timings)
            yield family
        yield GaugeMetricFamily("confer_disk_usage_bytes", "Bytes of this member's WAL and "
                                "snapshot files.", value=self.member.storage_bytes())

    def _store(self) -> Iterable[Metric]:
        m = self.member
        kv = m.fsm.kv
        hub = m.hub
        yield GaugeMetricFamily("etcd_mvcc_db_total_size_in_bytes", "Total size of the "
                                "store in bytes: keys, values and history (what the quota "
                                "measures).", value=kv.size_bytes())
        yield GaugeMetricFamily("etcd_debugging_mvcc_keys_total", "Total number of keys.",
                                value=len(kv))
        yield GaugeMetricFamily("etcd_mvcc_current_revision",  # etcd 3.6's name
                                "The current revision of the store.", value=kv.revision)
        yield GaugeMetricFamily("etcd_mvcc_compact_revision",
                                "The revision of the last compaction in the store.",
                                value=kv.compact_revision)
        yield GaugeMetricFamily("etcd_debugging_mvcc_watcher_total",
                                "Total number of watchers.", value=len(hub.watchers))
        yield GaugeMetricFamily("etcd_debugging_mvcc_slow_watcher_total",
                                "Total number of unsynced slow watchers: catching up from "
                                "history.", value=sum(not w.synced for w in hub.watchers.values()))
        streams = sum(c.in_flight for c in m.api.calls.methods
                      if c.method in WATCH_METHODS and c.service != HEALTH_SERVICE)
        yield GaugeMetricFamily("etcd_debugging_mvcc_watch_stream_total",
                                "Total number of watch streams (both APIs).", value=streams)
        yield CounterMetricFamily("etcd_debugging_mvcc_events",
                                  "Total number of events sent by this member.",
                                  value=hub.events_sent)
        yield GaugeMetricFamily("confer_leases", "Leases granted and not yet revoked or "
                                "expired.", value=len(kv.leases()))

    def _network(self) -> Iterable[Metric]:
        stats = self.member.peer_stats
        if stats is None:
            return
        rtt = HistogramMetricFamily("etcd_network_peer_round_trip_time_seconds",
                                    "Round-Trip-Time histogram between peers (a health "
                                    "check on the peer connection every 5 s).", labels=["To"])
        sent = CounterMetricFamily("etcd_network_peer_sent_bytes", "The total number of "
                                   "bytes sent to peers.", labels=["To"])
        received = CounterMetricFamily("etcd_network_peer_received_bytes", "The total number "
                                       "of bytes received from peers.", labels=["From"])
        snapshots = HistogramMetricFamily("etcd_network_snapshot_send_total_duration_seconds",
                                          "Total latency distributions of v3 snapshot sends: "
                                          "from the first chunk to the last.", labels=["To"])
        for peer_id, traffic in sorted(stats.peers.items()):
            label = [_peer_label(peer_id)]
            _histogram(rtt, label, traffic.round_trip)
            sent.add_metric(label, traffic.sent_bytes)
            received.add_metric(label, traffic.received_bytes)
            if traffic.snapshot_send.count:
                _histogram(snapshots, label, traffic.snapshot_send)
        yield from (rtt, sent, received, snapshots)
        refused = CounterMetricFamily("confer_peer_refused", "Peer messages refused or "
                                      "dropped, by reason (docs/security.md).",
                                      labels=["reason"])
        for reason, count in (("not_admitted", stats.refused_batches),
                              ("malformed", stats.malformed_batches),
                              ("bad_proposal", stats.dropped_proposals),
                              ("bad_snapshot", stats.bad_snapshots)):
            refused.add_metric([reason], count)
        yield refused

    def _grpc(self, methods: list[MethodCalls], prefix: str = "") -> Iterable[Metric]:
        """go-grpc-prometheus's families for ``methods``; ``prefix``: another port's."""
        names = ["grpc_type", "grpc_service", "grpc_method"]
        started = CounterMetricFamily(f"{prefix}grpc_server_started", "Total number of RPCs "
                                      "started on the server.", labels=names)
        handled = CounterMetricFamily(f"{prefix}grpc_server_handled", "Total number of RPCs "
                                      "completed on the server, regardless of success or "
                                      "failure.", labels=[*names, "grpc_code"])
        seconds = HistogramMetricFamily(f"{prefix}grpc_server_handling_seconds", "Histogram "
                                        "of response latency (seconds) of gRPC that had been "
                                        "application-level handled by the server.",
                                        labels=[*names, "grpc_code"])
        for calls in methods:
            if not calls.started:
                continue  # as go-grpc-prometheus: a method appears once called
            labels = [calls.kind, calls.service, calls.method]
            started.add_metric(labels, calls.started)
            for code, timings in sorted(calls.by_code.items()):
                handled.add_metric([*labels, code], timings.count)
                _histogram(seconds, [*labels, code], timings)
        yield from (started, handled, seconds)
