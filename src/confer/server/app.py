"""The Confer server process: storage, Raft node, peer transport, the request layer and the
gRPC services (both APIs' adapters) together."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
import time
from collections.abc import Coroutine, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from confer.kv import Compact, encode_command
from confer.raft.core import Config
from confer.raft.rawnode import bootstrap
from confer.server import config
from confer.server.api import RequestContext, RequestLayer
from confer.server.api.core import ClusterListener
from confer.server.api.forwarding import SERVICE as LEADER_SERVICE
from confer.server.config import ConfigError, ServerConfig
from confer.server.consensus import Consensus
from confer.server.datadir import IDENTITY_FILE, RAFT_DIR, save_identity
from confer.server.dns import start_dns
from confer.server.etcd import add_etcd_services
from confer.server.fsm import AppStateMachine, ServerStateMachine
from confer.server.health_service import HealthService
from confer.server.http import start_http
from confer.server.leases import Lessor
from confer.server.members import Member, MembershipEvent, cluster_id_for, encode_publish
from confer.server.native import add_native_services
from confer.server.node import NodeOptions, RaftNode, describe_failure
from confer.server.peer_checks import ProposalChecks
from confer.server.peer_transport import (
    GRPC_OPTIONS,
    GrpcPeerTransport,
    PeerServicer,
    PeerStats,
    dial,
)
from confer.server.reflection import enable_reflection
from confer.server.rpc import register_measured, register_refusing
from confer.server.tls import (
    PeerChannelCredentials,
    RevocationList,
    TlsError,
    address_refusal,
    client_port_credentials,
    identity_refusal,
    load_pems,
    server_credentials,
)
from confer.server.watch import WatchHub
from confer.storage import (
    Disk,
    DurableStorage,
    SnapshotCorruptionError,
    StorageError,
    WALCorruptionError,
)
from confer.storage.disk import DIR_MODE
from confer.v1 import kv_pb2, kv_pb2_grpc, peer_pb2_grpc

if TYPE_CHECKING:
    from confer.server.dns_server import DnsListener
    from confer.server.http.listener import HttpListener

log = logging.getLogger("confer.server")


class App(Protocol):
    """A user's state machine that a member replicates beside its KV store
    (:mod:`confer.replicated`)."""

    @property
    def state(self) -> AppStateMachine:
        """Applies the app's entries (the server's state machine hands them over)."""
        ...

    def add_services(self, server: ConferServer, grpc_server: grpc.aio.Server) -> None:
        """Register the gRPC services that call the app on the client port."""
        ...


class ConferServer:
    """One member: its storage, Raft node, peer transport, request layer and gRPC server.

    ``disk`` is the file-system seam its log and snapshots go through (tests inject faults).
    ``app``: a user's state machine to replicate too, and serve on the client port.
    """

    def __init__(self, cfg: ServerConfig, *, disk: Disk | None = None,
                 app: App | None = None) -> None:
        self.cfg = cfg
        self._disk = disk
        self.data_dir = Path(cfg.data_dir)
        self.app = app
        self.fsm = ServerStateMachine(app.state if app is not None else None)
        self.hub = WatchHub(self.fsm.kv)
        self.node: RaftNode | None = None
        self.storage: DurableStorage | None = None
        self.node_id = cfg.node_id
        self.grpc_server: grpc.aio.Server | None = None
        """Serves clients (both APIs) on the client port."""
        self.peer_server: grpc.aio.Server | None = None
        """Serves the other members (Raft, the internal Leader service) on the peer port."""
        self.health = HealthService()
        self.http: HttpListener | None = None  # its import is deferred (see http/)
        """Serves /metrics and the health checks (--listen-metrics; confer.server.http)."""
        self.dns: DnsListener | None = None  # its import is deferred (see dns.py)
        """Answers DNS queries of the service catalog (--listen-dns; confer.server.dns)."""
        self.client_port = 0
        self.peer_port = 0
        self.stopped = asyncio.Event()
        self.fatal: str | None = None
        """Why the member stopped on its own, if it did (see :meth:`fail`)."""
        self._started = False
        self._stopping = False
        self.cluster_listeners: list[ClusterListener] = []
        """Called with (kind, member, leader id) on membership and leader changes."""
        self._routes = cfg.routes()
        self._routes_mtime = self._routes_file_mtime()
        self._transport: GrpcPeerTransport | None = None
        self._cluster_id = 0
        """The cluster id as fixed at bootstrap, Init or join (member.json), else as first
        heard from a peer while this node was empty; see :meth:`admit_peer`."""
        self._saved_cluster_id = 0
        self._first_contact = False
        """The cluster id was taken from the first peer that reached this empty node."""
        self._join_peers: set[int] = set()
        """The members that a joining node was told of when it was added: it admits them
        before its own log tells it the membership."""
        self._proposal_checks = ProposalChecks(cfg.max_key_bytes, cfg.max_value_bytes)
        self._background: list[asyncio.Task[Any]] = []
        self._removing = False
        self.fsm.membership_listeners.append(self._on_membership)
        self.consensus = Consensus(lambda: self.node, cfg.tick_ms / 1000)
        self.lessor = Lessor(self.fsm.kv, self.consensus, lambda: self.node,
                             cfg.election_ticks * cfg.tick_ms / 1000)
        """The leader's lease clock: renewals and expiry (confer.server.leases)."""
        self.cluster_listeners.append(self.lessor.on_cluster_event)
        self.api = RequestLayer(self)
        """Every client request of both APIs goes through it (confer.server.api)."""
        self._client_creds: grpc.ServerCredentials | None = None
        self._peer_creds: grpc.ServerCredentials | None = None
        self._peer_dial_creds: PeerChannelCredentials | None = None

    # -- identity -----------------------------------------------------------------------------
    @property
    def _identity_file(self) -> Path:
        return self.data_dir / IDENTITY_FILE

    def _load_identity(self) -> None:
        if self._identity_file.exists():
            try:
                ident = json.loads(self._identity_file.read_text())
                int(ident["id"])
            except (OSError, ValueError, TypeError, KeyError) as e:
                raise SystemExit(f"{self._identity_file}: unreadable member identity ({e}); "
                                 "restore it from a backup or replace the member") from None
            if self.cfg.node_id and self.cfg.node_id != ident["id"]:
                raise SystemExit(f"data dir {self.data_dir} belongs to node {ident['id']}, "
                                 f"not {self.cfg.node_id}")
            self.node_id = ident["id"]
            self._cluster_id = self._saved_cluster_id = int(ident.get("cluster_id", 0))
            self._join_peers = set(ident.get("join_peers", ()))

    def _save_identity(self) -> None:
        ident: dict[str, Any] = {"id": self.node_id, "name": self.cfg.name}
        if self._saved_cluster_id:
            ident["cluster_id"] = self._saved_cluster_id
        if self._join_peers:
            ident["join_peers"] = sorted(self._join_peers)
        save_identity(self.data_dir, ident)

    def _fix_cluster_id(self, cluster_id: int) -> None:
        """Record the cluster id this member belongs to, durably (member.json)."""
        self._cluster_id = self._saved_cluster_id = cluster_id
        self._save_identity()

    def cluster_id(self) -> int:
        """This member's cluster id; 0 while it has none (empty, waiting for Init or its
        first contact)."""
        return self._cluster_id or self.fsm.membership.cluster_id

    def member(self) -> Member:
        return Member(self.node_id, self.cfg.name, self.cfg.peer_url, self.cfg.client_url)

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the data dir, serve, and start Raft. Any reason not to start (the data dir
        in use, unusable or damaged, a port taken) is a SystemExit with one line."""
        cfg = self.cfg
        self._load_certificates()
        self._open_data_dir()
        assert self.storage is not None
        self._load_identity()
        await self._start_grpc()
        self.http = await start_http(self, cfg.metrics_addr,
                                     required=cfg.listen_metrics != "default",
                                     tls=cfg.metrics_tls)
        self.dns = await start_dns(self, cfg.dns_addr, required=cfg.listen_dns != "default")
        fresh = self.storage.last_index() == 0
        if fresh and cfg.join:
            if not self._identity_file.exists():
                await self._join(cfg.join)
        elif fresh and not cfg.wait_init:
            founders = cfg.founders() or [(self.node_id or 1, cfg.name, cfg.peer_url)]
            if not self.node_id:
                self.node_id = founders[0][0]
            # Every founder must start from the same member table: a member's client
            # address reaches the others through the log (_publish_attributes), which it
            # skips when its own table already holds it. (A lone founder has no one to tell.)
            own_client = cfg.client_url if len(founders) == 1 else ""
            self._bootstrap([Member(i, name, peer, own_client) for i, name, peer in founders])
        if not self.node_id:
            self.node_id = cfg.node_id or 1
        self._save_identity()
        try:
            self._start_node()
        except Exception as e:  # the state machine cannot take the recovered snapshot
            raise SystemExit(f"{self.data_dir}: cannot recover this member's state "
                             f"({describe_failure(e)}); {REPLACE_MEMBER}") from None
        if cfg.join and fresh:
            self._spawn(self._promote_when_caught_up(), "self-promotion")
        self._spawn(self._publish_attributes(), "member publication")
        self._spawn(self.lessor.run(), "lease expiry")
        if cfg.auto_compaction_retention:
            self._spawn(self._auto_compact(), "auto-compaction")
        log.info("node %d (%s) serving clients on %s, peers on %s", self.node_id, cfg.name,
                 cfg.client_url, cfg.peer_url)
        self._started = True

    def _load_certificates(self) -> None:
        """Check the TLS files and make the ports' credentials: first, so that an unusable
        certificate or key stops the start (one line naming the file) before anything is
        touched."""
        try:
            if self.cfg.client_tls is not None:
                self._client_creds = server_credentials(self.cfg.client_tls)
            if self.cfg.client_crl_file:
                self.api.crl = RevocationList(self.cfg.client_crl_file,
                                              self.cfg.trusted_ca_file)
            if self.cfg.peer_tls is not None:
                self._peer_creds = server_credentials(self.cfg.peer_tls, "peer-")
                self._peer_dial_creds = PeerChannelCredentials(self.cfg.peer_tls)
            if self.cfg.join and self.cfg.client_tls is not None:
                load_pems(self.cfg.client_tls)  # _join dials with these; checked now
        except TlsError as e:
            raise SystemExit(f"cannot start with TLS: {e}") from None

    def peer_channel_credentials(self) -> grpc.ChannelCredentials | None:
        """How this member dials a peer port: its peer certificate (current files) over
        TLS, or None for plaintext when peer TLS is off."""
        return None if self._peer_dial_creds is None else self._peer_dial_creds.get()

    def dial_peer(self, addr: str) -> grpc.aio.Channel:
        """A new channel to a peer port (TLS when peer TLS is on)."""
        return dial(addr, self.peer_channel_credentials())

    def peer_identity_refusal(self, auth: Mapping[str, Iterable[bytes]],
                              member: int | None = None) -> str | None:
        """Why a peer connection with TLS identity ``auth`` (gRPC's auth context) claiming
        to be ``member`` is refused: its certificate's common name is not allowed, or (with
        ``--peer-cert-match-address``) it is not valid for that member's peer address. None:
        admitted."""
        why = identity_refusal(auth, self.cfg.allowed_peer_cns)
        if why is None and member is not None and self.cfg.peer_cert_match_address:
            known = self.fsm.membership.members.get(member)
            why = address_refusal(auth, member, known.peer_addr if known else None)
        return why

    def _open_data_dir(self) -> None:
        """Make the data dir private, take its lock and recover the log: first, so that a
        second process on the same dir, an unusable dir or a damaged log stop the start
        before any port is bound (one line each, never a traceback)."""
        try:
            _private_dir(self.data_dir)
            self.storage = DurableStorage.open(self.data_dir / RAFT_DIR, disk=self._disk)
        except (WALCorruptionError, SnapshotCorruptionError) as e:
            raise SystemExit(f"{e}; {REPLACE_MEMBER}") from None
        except StorageError as e:
            raise SystemExit(str(e)) from None
        except OSError as e:
            raise SystemExit(f"cannot use data dir {self.data_dir}: {e}") from None

    def _bootstrap(self, founders: list[Member]) -> None:
        assert self.storage is not None
        cid = cluster_id_for(self.cfg.cluster_token, founders)
        bootstrap(self.storage, [m.id for m in founders],
                  {m.id: m.context(cid) for m in founders})
        self._fix_cluster_id(cid)

    def _start_node(self) -> None:
        assert self.storage is not None
        cfg = self.cfg
        self._transport = GrpcPeerTransport(
            self.node_id, self.cfg.peer_url, self.peer_address, self.cluster_id,
            self.admit_peer, self._proposal_checks.refusal, self._report_unreachable,
            self._told_removed, self.dial_peer)
        self._peer_servicer.transport = self._transport
        node = RaftNode(
            Config(id=self.node_id, election_tick=cfg.election_ticks, heartbeat_tick=1,
                   snapshot_check=self._check_snapshot),
            self.storage, self._transport, self.fsm,
            NodeOptions(tick_interval=cfg.tick_ms / 1000, snapshot_every=cfg.snapshot_every,
                        keep_entries=cfg.snapshot_catchup_entries,
                        batch_window=cfg.batch_window_ms / 1000),
        )
        node.leader_listeners.append(self._on_leader)
        node.failure_listeners.append(lambda e: self.fail(describe_failure(e)))
        self.node = node
        if node.status().conf_state.voters == {self.node_id}:
            node.campaign()  # sole voter: no reason to wait out an election timeout
        self._background.append(asyncio.create_task(node.start()))

    async def _start_grpc(self) -> None:
        # Two servers, so that nothing of the peer protocol is reachable where clients are
        # (and no client service where peers are): Raft and the internal Leader service only
        # on the peer port, both APIs only on the client port; health on both. The client
        # port's receive limit follows --max-request-bytes (peers need 64 MiB).
        client = _grpc_server(config.client_grpc_options(self.cfg))
        # The busiest first: a call's method is looked up in one service after another.
        # etcd's v3 API is on the same port (docs/etcd-compatibility.md).
        if self.app is not None:
            self.app.add_services(self, client)
        add_etcd_services(self.api, client)
        add_native_services(self.api, client)
        peer = _grpc_server()
        register_measured(peer, LEADER_SERVICE, self.api.leader_service.method_handlers(),
                          self.api.peer_calls)
        self._peer_servicer = PeerServicer(None, self.fsm.membership.removed.__contains__,
                                           self.peer_identity_refusal)
        register_refusing("peer", peer_pb2_grpc.add_PeerServicer_to_server,
                          self._peer_servicer, peer)
        for server, calls, crl in ((client, self.api.calls, self.api.crl),
                                   (peer, self.api.peer_calls, None)):
            register_refusing("health", health_pb2_grpc.add_HealthServicer_to_server,
                              self.health, server, calls, crl)
        enable_reflection(client, self.api.calls.services(), self.api.calls, self.api.crl)
        self.client_port = _listen(client, self.cfg.listen_client, "client", self._client_creds)
        self.peer_port = _listen(peer, self.cfg.listen_peer, "peer", self._peer_creds)
        await client.start()
        self.grpc_server = client
        await peer.start()
        self.peer_server = peer
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float = 1.0) -> None:
        """Stop serving: health NOT_SERVING first, then gRPC (``grace`` seconds for calls
        in flight), Raft and the log. ``stopped`` is set in the end, whatever fails."""
        if self._stopping:
            await self.stopped.wait()
            return
        self._stopping = True
        try:
            await self._shutdown(grace)
        finally:
            self._close_storage()
            self.stopped.set()

    async def _shutdown(self, grace: float) -> None:
        if self._started:  # not after a failed start: its one line says why
            log.info("node %d shutting down", self.node_id)
        await self.health.enter_graceful_shutdown()
        self.hub.close()
        current = asyncio.current_task()
        for task in self._background:
            if task is not current:  # stop() may run inside one of them
                task.cancel()
        servers = [s for s in (self.grpc_server, self.peer_server) if s is not None]
        await asyncio.gather(*(server.stop(grace) for server in servers))
        if self.http is not None:
            await self.http.stop()
        if self.dns is not None:
            await self.dns.stop()
        if self.node is not None:
            await self.node.stop()
        await self.api.close()

    def fail(self, cause: str) -> None:
        """Stop serving because something essential failed (the Raft loop, the disk, a
        duty such as lease expiry): a node that stays up with a dead loop would answer
        health SERVING and "no leader" for ever. Health turns NOT_SERVING at the next
        turn of the event loop, then the member stops and ``confer serve`` exits with
        status 1 (as etcd exits), so a supervisor restarts it or an operator looks. The
        cause is logged once, by whoever found it."""
        if self._stopping or self.fatal is not None:
            return
        self.fatal = cause
        self._background.append(asyncio.create_task(self.stop(), name="stop-on-failure"))

    def _spawn(self, duty: Coroutine[Any, Any, None], what: str) -> None:
        """Run one of the member's duties beside the Raft loop; if it dies of an
        exception, the member stops (:meth:`fail`)."""
        task = asyncio.create_task(duty, name=what)
        task.add_done_callback(self._duty_ended)
        self._background.append(task)

    def _duty_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._stopping:
            return
        exc = task.exception()
        if exc is None:
            return  # done with its work (promoted, published)
        cause = f"{task.get_name()} failed: {describe_failure(exc)}"
        log.error("node %d: %s; the node stops serving", self.node_id, cause)
        log.debug("node %d: %s", self.node_id, task.get_name(), exc_info=exc)
        self.fail(cause)

    def _close_storage(self) -> None:
        if self.storage is None:
            return
        try:
            self.storage.close()
        except (StorageError, OSError) as e:  # the final sync: the disk failed at the end
            if self.fatal is None:
                self.fatal = f"closing the log failed: {describe_failure(e)}"
                log.error("node %d: %s", self.node_id, self.fatal)

    # -- peer admission ----------------------------------------------------------------------
    def admit_peer(self, sender: int, cluster_id: int, first_contact: bool = True
                   ) -> str | None:
        """Why a peer message from ``sender`` naming ``cluster_id`` is refused, or None.

        The cluster id is mandatory and must be this member's. The sender must be a member:
        in the Raft membership now in force (voter or learner), in the member table, or one
        of the members a joining node was told of. A node that is still empty (no cluster
        id, no membership: waiting for Init, or added by hand and started with
        ``--wait-init``) has nothing to protect and no way to know its cluster: with
        ``first_contact`` it takes the cluster id of the first peer that reaches it, and
        admits that cluster's members until its log names them (trust on first use; TLS,
        issue 13, is what authenticates peers).
        """
        if not cluster_id:
            return "no cluster id: every peer message must name its cluster"
        mine = self.cluster_id()
        if mine and cluster_id != mine:
            return f"message from cluster {cluster_id:x}, this is cluster {mine:x}"
        node = self.node
        conf = node.conf_state.members() if node is not None else frozenset()
        if (sender in conf or sender in self.fsm.membership.members
                or sender in self._join_peers):
            return None
        if not conf and first_contact and (not mine or self._first_contact):
            if not mine:
                log.info("node %d: first contact from member %d of cluster %x", self.node_id,
                         sender, cluster_id)
                self._cluster_id = cluster_id
                self._first_contact = True
            return None  # until its log tells it the members, any of that cluster's
        return f"{sender} is not a member of cluster {mine or cluster_id:x}"

    def _check_snapshot(self, data: bytes) -> bool:
        if self.fsm.snapshot_is_valid(data):
            return True
        if self._transport is not None:
            self._transport.stats.bad_snapshots += 1
            self._transport.warn.warning(
                log, ("snapshot",), "node %d: dropped a received snapshot of %d bytes that "
                "does not decode", self.node_id, len(data))
        return False

    # -- Raft plumbing ------------------------------------------------------------------------
    def peer_address(self, node_id: int) -> str | None:
        """Where to reach member ``node_id``'s peer port (the routes first, see
        ``--peer-routes``), if known."""
        routes = self._current_routes()
        if node_id in routes:
            return routes[node_id]
        m = self.fsm.membership.members.get(node_id)
        return m.peer_addr if m else None

    def _routes_file_mtime(self) -> int:
        spec = self.cfg.peer_routes
        try:
            return os.stat(spec[1:]).st_mtime_ns if spec.startswith("@") else 0
        except OSError:
            return 0

    def _current_routes(self) -> dict[int, str]:
        """The peer routes, re-read when their file changed (peers are redialled rarely)."""
        mtime = self._routes_file_mtime()
        if mtime != self._routes_mtime:
            self._routes_mtime = mtime
            try:
                self._routes = self.cfg.routes()
            except ConfigError as e:
                log.warning("keeping the previous peer routes: %s", e)
        return self._routes

    def _report_unreachable(self, node_id: int) -> None:
        if self.node is not None:
            self.node.report_unreachable(node_id)

    def _on_leader(self, leader: int, term: int) -> None:
        if leader:
            log.info("node %d: leader is now %d (term %d)", self.node_id, leader, term)
        for listener in list(self.cluster_listeners):
            listener("leader", self.fsm.membership.members.get(leader), leader)

    def _on_membership(self, event: MembershipEvent) -> None:
        learned = self.fsm.membership.cluster_id
        if learned and learned != self._saved_cluster_id:
            self._fix_cluster_id(learned)  # learned from the log: a data dir of before
        if self._join_peers and event.member.id == self.node_id and event.kind != "removed":
            self._join_peers = set()  # its log names the members now
            self._save_identity()
        log.info("membership: %s node %d (%s)", event.kind, event.member.id,
                 event.member.peer_addr)
        for listener in list(self.cluster_listeners):
            listener(event.kind, event.member, self.node.leader if self.node else 0)
        if event.kind == "removed":
            if self._transport is not None:
                self._transport.drop_peer(event.member.id)
            if event.member.id == self.node_id and not self._removing:
                log.warning("node %d was removed from the cluster; shutting down", self.node_id)
                self._removing = True
                self._background.append(asyncio.create_task(self._shutdown_after_removal()))

    def _told_removed(self) -> None:
        if not self.stopped.is_set() and not self._removing:
            log.warning("node %d: a peer says this node was removed from the cluster; "
                        "shutting down", self.node_id)
            self._removing = True
            self._background.append(asyncio.create_task(self._shutdown_after_removal()))

    async def _shutdown_after_removal(self) -> None:
        await asyncio.sleep(self.cfg.tick_ms / 1000 * 3)  # let the commit reach the others
        await self.stop()

    @property
    def peer_stats(self) -> PeerStats | None:
        """The peer transport's counters (None before the node starts)."""
        return self._transport.stats if self._transport is not None else None

    def storage_bytes(self) -> int:
        if self.storage is None:
            return 0
        try:
            return self.storage.disk_usage()
        except OSError:  # a file vanished under compaction (which runs in the sync thread)
            return 0

    async def _publish_attributes(self) -> None:
        """Make sure the member table holds this node's current name and client address."""
        while True:
            await asyncio.sleep(self.cfg.tick_ms / 1000 * 2)
            me = self.fsm.membership.members.get(self.node_id)
            if me is None or (me.client_addr == self.cfg.client_url
                              and me.name == self.cfg.name):
                if me is not None:
                    return
                continue
            node = self.node  # looked up each time: Init replaces it
            if node is None or not node.leader:
                continue
            command = encode_publish(self.member())
            try:
                await self.consensus.replicate(command, time.monotonic() + 5.0)
            except Exception as e:
                log.debug("publishing member attributes failed (will retry): %s", e)

    # -- initialisation, joining, promotion ---------------------------------------------------
    async def initialize(self, founders: list[Member]) -> None:
        """The Init RPC: bootstrap a node that was started empty (``--wait-init``)."""
        assert self.storage is not None
        if self.storage.last_index() != 0 or (self.node is not None and self.node.leader):
            raise FileExistsError("this node is already initialised")
        if self.node_id not in {m.id for m in founders}:
            raise ValueError(f"Init must include this node's id {self.node_id}")
        if self.node is not None:
            await self.node.stop()
            self.node = None
        self._bootstrap(founders)
        self._start_node()
        assert self.node is not None
        self.node.campaign()

    async def _join(self, addr: str) -> None:
        """Ask a running member to add this node as a learner.

        Refusals that pass (no leader, a timeout, another membership change still in
        progress) are retried for up to ``JOIN_RETRY_SECONDS``; anything else is final.
        """
        ch = dial(addr, client_port_credentials(self.cfg.client_tls))
        request = kv_pb2.MemberAddRequest(
            id=self.cfg.node_id, name=self.cfg.name, peer_addr=self.cfg.peer_url,
            client_addr=self.cfg.client_url, is_learner=True)
        deadline = time.monotonic() + JOIN_RETRY_SECONDS
        try:
            stub = kv_pb2_grpc.ClusterStub(ch)
            while True:
                try:
                    resp = await stub.MemberAdd(request, timeout=30)
                    break
                except grpc.aio.AioRpcError as e:
                    if not _join_may_succeed_later(e) or time.monotonic() > deadline:
                        raise SystemExit(
                            f"join {addr}: {e.code().name}: {e.details()}") from None
                    log.info("join %s: %s; retrying", addr, e.details())
                    await asyncio.sleep(1.0)
        finally:
            await ch.close()
        self.node_id = resp.member.id
        # Until its log tells it the membership, it admits the members it was told of (the
        # leader among them) from the cluster named in the answer.
        self._join_peers = {m.id for m in resp.members if m.id != self.node_id}
        if resp.header.cluster_id:
            self._fix_cluster_id(resp.header.cluster_id)
        log.info("joined the cluster at %s as learner %d", addr, self.node_id)

    async def _promote_when_caught_up(self) -> None:
        """A joining node asks to become a voter once it holds the leader's log."""
        node = self.consensus.require_node()
        while True:
            await asyncio.sleep(self.cfg.tick_ms / 1000 * 5)
            st = node.status()
            if self.node_id in st.conf_state.voters:
                return
            if self.node_id not in st.conf_state.learners or not node.leader:
                continue
            ctx = RequestContext.with_timeout("internal", "promote-self", 10.0)
            try:
                await self.api.cluster.promote_member(ctx, self.node_id)
                log.info("node %d promoted to voter", self.node_id)
                return
            except Exception as e:  # not caught up yet, no leader, a change in progress
                log.debug("promotion not yet possible: %s", e)

    async def _auto_compact(self) -> None:
        keep = self.cfg.auto_compaction_retention
        while True:
            await asyncio.sleep(max(1.0, self.cfg.tick_ms / 1000 * 50))
            kv = self.fsm.kv
            target = kv.revision - keep
            if self.consensus.is_leader() and target > kv.compact_revision:
                with contextlib.suppress(Exception):
                    await self.consensus.propose_here(encode_command(Compact(target)), 5.0)


JOIN_RETRY_SECONDS = 60.0

REPLACE_MEMBER = ("do not start this member on this data: remove it from the cluster and add "
                  "a new one with an empty data dir (docs/operations.md, "
                  "'Replacing a damaged member')")


def _private_dir(path: Path) -> None:
    """Create the data dir with mode 0700, or tighten an existing one that other users may
    enter (etcd only warns; Confer closes it, and says so)."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        path.chmod(mode & DIR_MODE)
        log.warning("data dir %s was open to other users (mode %04o); set to %04o", path, mode,
                    mode & DIR_MODE)


def _grpc_server(options: list[tuple[str, int]] | None = None) -> grpc.aio.Server:
    """A gRPC server with the peer transport's options, ``options`` replacing any of the
    same name."""
    mine = dict(options or ())
    # No SO_REUSEPORT (grpcio sets it on Linux): a second process on the same port must
    # fail to start, not silently take half of this one's connections.
    return grpc.aio.server(options=[*(o for o in GRPC_OPTIONS if o[0] not in mine),
                                    *mine.items(), ("grpc.so_reuseport", 0)])


def _listen(server: grpc.aio.Server, addr: str, what: str,
            creds: grpc.ServerCredentials | None) -> int:
    """Bind ``addr`` (TLS with ``creds``); the port bound (``:0`` picks one). Exits with one
    line if it cannot."""
    try:
        port = (server.add_insecure_port(addr) if creds is None
                else server.add_secure_port(addr, creds))
    except RuntimeError:  # grpcio's "Failed to bind": in use, or not an address of this host
        port = 0
    if not port:
        raise SystemExit(f"cannot listen for {what}s on {addr}: the address is in use or "
                         "not available on this host")
    return port


def _join_may_succeed_later(e: grpc.aio.AioRpcError) -> bool:
    code = e.code()
    return code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) or (
        code == grpc.StatusCode.FAILED_PRECONDITION and "in progress" in (e.details() or ""))

