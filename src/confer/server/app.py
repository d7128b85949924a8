"""The Confer server process: storage, Raft node, peer transport, the request layer and the
gRPC services (both APIs' adapters) together."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from confer.kv import Compact, encode_command
from confer.raft.core import Config
from confer.raft.rawnode import bootstrap
from confer.server import config
from confer.server.api import RequestContext, RequestLayer
from confer.server.api.core import ClusterListener
from confer.server.config import ConfigError, ServerConfig
from confer.server.consensus import Consensus
from confer.server.etcd import add_etcd_services
from confer.server.fsm import ServerStateMachine
from confer.server.leases import Lessor
from confer.server.members import Member, MembershipEvent, cluster_id_for, encode_publish
from confer.server.native import add_native_services
from confer.server.node import NodeOptions, RaftNode
from confer.server.peer_transport import GRPC_OPTIONS, GrpcPeerTransport, PeerServicer
from confer.server.registry import GenericHandlersOnly
from confer.server.watch import WatchHub
from confer.storage import DurableStorage
from confer.v1 import kv_pb2, kv_pb2_grpc, peer_pb2_grpc

log = logging.getLogger("confer.server")


class ConferServer:
    """One member: its storage, Raft node, peer transport, request layer and gRPC server."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.data_dir = Path(cfg.data_dir)
        self.fsm = ServerStateMachine()
        self.hub = WatchHub(self.fsm.kv)
        self.node: RaftNode | None = None
        self.storage: DurableStorage | None = None
        self.node_id = cfg.node_id
        self.grpc_server: grpc.aio.Server | None = None
        self.health = health.aio.HealthServicer() if hasattr(health, "aio") else None
        self.client_port = 0
        self.peer_port = 0
        self.stopped = asyncio.Event()
        self.cluster_listeners: list[ClusterListener] = []
        """Called with (kind, member, leader id) on membership and leader changes."""
        self._routes = cfg.routes()
        self._routes_mtime = self._routes_file_mtime()
        self._transport: GrpcPeerTransport | None = None
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

    # -- identity -----------------------------------------------------------------------------
    @property
    def _identity_file(self) -> Path:
        return self.data_dir / "member.json"

    def _load_identity(self) -> None:
        if self._identity_file.exists():
            ident = json.loads(self._identity_file.read_text())
            if self.cfg.node_id and self.cfg.node_id != ident["id"]:
                raise SystemExit(f"data dir {self.data_dir} belongs to node {ident['id']}, "
                                 f"not {self.cfg.node_id}")
            self.node_id = ident["id"]

    def _save_identity(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._identity_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"id": self.node_id, "name": self.cfg.name}))
        tmp.replace(self._identity_file)

    def member(self) -> Member:
        return Member(self.node_id, self.cfg.name, self.cfg.peer_url, self.cfg.client_url)

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.cfg
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._load_identity()
        await self._start_grpc()
        self.storage = DurableStorage.open(self.data_dir / "raft")
        fresh = self.storage.last_index() == 0
        if fresh and cfg.join:
            if not self._identity_file.exists():
                await self._join(cfg.join)
        elif fresh and not cfg.wait_init:
            founders = cfg.founders() or [(self.node_id or 1, cfg.name, cfg.peer_url)]
            if not self.node_id:
                self.node_id = founders[0][0]
            self._bootstrap([Member(i, name, peer, cfg.client_url if i == self.node_id else "")
                             for i, name, peer in founders])
        if not self.node_id:
            self.node_id = cfg.node_id or 1
        self._save_identity()
        self._start_node()
        if cfg.join and fresh:
            self._background.append(asyncio.create_task(self._promote_when_caught_up()))
        self._background.append(asyncio.create_task(self._publish_attributes()))
        self._background.append(asyncio.create_task(self.lessor.run()))
        if cfg.auto_compaction_retention:
            self._background.append(asyncio.create_task(self._auto_compact()))
        log.info("node %d (%s) serving clients on %s, peers on %s", self.node_id, cfg.name,
                 cfg.client_url, cfg.peer_url)

    def _bootstrap(self, founders: list[Member]) -> None:
        assert self.storage is not None
        cid = cluster_id_for(self.cfg.cluster_token, founders)
        bootstrap(self.storage, [m.id for m in founders],
                  {m.id: m.context(cid) for m in founders})

    def _start_node(self) -> None:
        assert self.storage is not None
        cfg = self.cfg
        self._transport = GrpcPeerTransport(
            self.node_id, self.cfg.peer_url, self._peer_addr,
            lambda: self.fsm.membership.cluster_id, self._report_unreachable,
            self._told_removed)
        self._peer_servicer.transport = self._transport
        node = RaftNode(
            Config(id=self.node_id, election_tick=cfg.election_ticks, heartbeat_tick=1),
            self.storage, self._transport, self.fsm,
            NodeOptions(tick_interval=cfg.tick_ms / 1000, snapshot_every=cfg.snapshot_every,
                        keep_entries=cfg.snapshot_catchup_entries,
                        batch_window=cfg.batch_window_ms / 1000),
        )
        node.leader_listeners.append(self._on_leader)
        self.node = node
        if node.status().conf_state.voters == {self.node_id}:
            node.campaign()  # sole voter: no reason to wait out an election timeout
        self._background.append(asyncio.create_task(node.start()))

    async def _start_grpc(self) -> None:
        # No SO_REUSEPORT (grpcio sets it on Linux): a second process on the same port must
        # fail to start, not silently take half of this one's connections.
        server = grpc.aio.server(options=[*GRPC_OPTIONS, ("grpc.so_reuseport", 0),
                                          ("grpc.max_concurrent_streams",
                                           config.MAX_CONCURRENT_STREAMS)])
        services = GenericHandlersOnly(server)
        # The busiest first: a call's method is looked up in one service after another.
        # etcd's v3 API is on the same port (docs/etcd-compatibility.md).
        add_etcd_services(self.api, services)
        add_native_services(self.api, services)
        services.add_generic_rpc_handlers([self.api.leader_service.handlers()])
        self._peer_servicer = PeerServicer(
            None, lambda cmd: self.consensus.propose_here(cmd, 10.0),
            self.fsm.membership.removed.__contains__)
        peer_pb2_grpc.add_PeerServicer_to_server(self._peer_servicer, services)
        if self.health is not None:
            # GenericHandlersOnly stands in for the server (see registry.py).
            health_pb2_grpc.add_HealthServicer_to_server(self.health,
                                                         cast(grpc.aio.Server, services))
        self.client_port = _listen(server, self.cfg.listen_client, "client")
        if self.cfg.listen_peer != self.cfg.listen_client:
            self.peer_port = _listen(server, self.cfg.listen_peer, "peer")
        else:
            self.peer_port = self.client_port
        await server.start()
        self.grpc_server = server
        if self.health is not None:
            await self.health.set("", health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float = 1.0) -> None:
        if self.stopped.is_set():
            return
        log.info("node %d shutting down", self.node_id)
        if self.health is not None:
            await self.health.enter_graceful_shutdown()
        self.hub.close()
        current = asyncio.current_task()
        for task in self._background:
            if task is not current:  # stop() may run inside one of them
                task.cancel()
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace)
        if self.node is not None:
            await self.node.stop()
        await self.api.close()
        if self.storage is not None:
            self.storage.close()
        self.stopped.set()

    # -- Raft plumbing ------------------------------------------------------------------------
    def _peer_addr(self, node_id: int) -> str | None:
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

    def storage_bytes(self) -> int:
        if self.storage is None:
            return 0
        try:
            return self.storage.disk_usage()
        except OSError:  # a file vanished under compaction (which runs in the sync thread)
            return 0

    async def _publish_attributes(self) -> None:
        """Make sure the member table holds this node's current name and client address."""
        node = self.consensus.require_node()
        while True:
            await asyncio.sleep(self.cfg.tick_ms / 1000 * 2)
            me = self.fsm.membership.members.get(self.node_id)
            if me is None or (me.client_addr == self.cfg.client_url
                              and me.name == self.cfg.name):
                if me is not None:
                    return
                continue
            if not node.leader:
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
        ch = grpc.aio.insecure_channel(addr, options=GRPC_OPTIONS)
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


def _listen(server: grpc.aio.Server, addr: str, what: str) -> int:
    """Bind ``addr``; the port bound (``:0`` picks one). Exits with one line if it cannot."""
    try:
        port = server.add_insecure_port(addr)
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

