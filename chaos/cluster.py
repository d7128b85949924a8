"""A cluster of real ``confer`` processes whose peer links all pass through fault proxies.

Node i reaches node j through the link proxy L(i→j) (``--peer-routes @FILE``; the file is
rewritten when members are added, and the node re-reads it), so the harness can cut, blackhole
or delay any link in either direction. Clients talk to the members' client ports directly.
Every process is ours, tracked by PID, and killed and reaped by :meth:`stop`.
"""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path

import grpc

from chaos.proxy import ProxyNetwork
from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.failpoints import ENV as FAILPOINTS_ENV
from confer.nodeproc import NodeProcess
from testing.procs import ProcessCluster


class ChaosCluster:
    """``size`` founding members plus room to add members while the run goes on."""

    def __init__(self, size: int, base_dir: Path, *, seed: int, tick_ms: int = 50,
                 snapshot_every: int = 200, snapshot_catchup_entries: int = 50) -> None:
        self.base_dir = Path(base_dir)
        # The checker replays every event from revision 1: keep the whole history.
        self.procs = ProcessCluster(size, self.base_dir, tick_ms=tick_ms, seed=seed, extra_args=[
            "--snapshot-every", str(snapshot_every),
            "--snapshot-catchup-entries", str(snapshot_catchup_entries),
            "--auto-compaction-retention", "0"])
        self.members: set[int] = set(self.procs.nodes)
        """Ids the harness believes are members (it makes every membership change)."""
        self.paused: set[int] = set()
        self.net = ProxyNetwork({i: n.peer_addr for i, n in self.procs.nodes.items()})
        self._next_id = size + 1
        for n in self.procs.nodes.values():
            n.args += ["--peer-routes", f"@{self._routes_file(n.node_id)}"]

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> None:
        """Start the proxies and every member; return once they agree on a leader."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.net.start()
        self._write_routes()
        self.procs.start()
        for n in self.procs.nodes.values():
            n.wait_ready(timeout)
        self.procs.leader(timeout)

    def stop(self) -> None:
        """Resume paused nodes, stop every process (SIGTERM, then SIGKILL), close proxies."""
        for i in list(self.paused):
            self.resume(i)
        try:
            self.procs.stop()
        finally:
            self.net.close()

    def __enter__(self) -> ChaosCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------------
    def node(self, node_id: int) -> NodeProcess:
        return self.procs.nodes[node_id]

    def endpoints(self) -> list[str]:
        """Client addresses of the current members (running or not)."""
        return [self.procs.nodes[i].client_addr for i in sorted(self.members)]

    def _routes_file(self, node_id: int) -> Path:
        return self.base_dir / f"routes-{node_id}"

    def _write_routes(self) -> None:
        for i in self.procs.nodes:
            routes = self.net.route(i)
            text = "".join(f"{j}={addr}\n" for j, addr in sorted(routes.items()))
            path = self._routes_file(i)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)  # atomic: a node never reads half a file

    # -- faults on processes -------------------------------------------------------------------
    def kill(self, node_id: int) -> None:
        """kill -9 (a crash), and reap."""
        self.paused.discard(node_id)
        self.node(node_id).kill()

    def restart(self, node_id: int, failpoints: str = "") -> None:
        """Start a stopped member again, optionally with crash points armed."""
        node = self.node(node_id)
        if node.alive():
            return
        node.start(env={FAILPOINTS_ENV: failpoints} if failpoints else None)

    def pause(self, node_id: int) -> None:
        node = self.node(node_id)
        if node.alive():
            node.signal(signal.SIGSTOP)
            self.paused.add(node_id)

    def resume(self, node_id: int) -> None:
        if node_id in self.paused:
            self.paused.discard(node_id)
            self.node(node_id).signal(signal.SIGCONT)

    def running(self) -> list[int]:
        return [i for i in sorted(self.members) if self.node(i).alive()]

    def leader(self, timeout: float = 10.0) -> int:
        return self.procs.leader(timeout, among=sorted(self.members))

    # -- membership ----------------------------------------------------------------------------
    def _cluster_call(self, method: str, request: object, timeout: float = 10.0) -> object:
        """Call an etcd Cluster RPC on any running member (followers forward to the leader)."""
        last: Exception | None = None
        for addr in (self.node(i).client_addr for i in self.running()):
            with grpc.insecure_channel(addr) as ch:
                try:
                    return getattr(rpc_pb2_grpc.ClusterStub(ch), method)(request,
                                                                         timeout=timeout)
                except grpc.RpcError as e:
                    last = e
        raise RuntimeError(f"{method} failed on every member: {last}")

    def remove_member(self, node_id: int, timeout: float = 20.0) -> None:
        """Remove a member; it should shut itself down, else it is killed."""
        self._cluster_call("MemberRemove", rpc_pb2.MemberRemoveRequest(ID=node_id))
        self.members.discard(node_id)
        node = self.node(node_id)
        deadline = time.monotonic() + timeout
        while node.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        node.kill()
        self._write_routes()

    def add_member(self, timeout: float = 60.0) -> int:
        """Start a fresh node that joins as a learner, and wait until it is a voter."""
        node_id = self._next_id
        self._next_id += 1
        node = self.procs.new_node(node_id)
        self.net.add_node(node_id, node.peer_addr)
        self.procs.nodes[node_id] = node
        self._write_routes()
        node.args = ["--join", self.endpoints()[0], "--tick-ms", str(self.procs.tick_ms),
                     *self.procs.extra_args, "--peer-routes", f"@{self._routes_file(node_id)}"]
        self.members.add(node_id)
        node.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not node.alive():  # its join was refused: it never became a member
                self.members.discard(node_id)
                self._write_routes()
                raise RuntimeError(f"node {node_id} exited: {node.log_text()[-300:]}")
            with contextlib.suppress(Exception):
                resp = self._cluster_call("MemberList", rpc_pb2.MemberListRequest(), 2.0)
                if any(node_id == m.ID and not m.isLearner
                       for m in resp.members):  # type: ignore[attr-defined]  # a MemberListResponse
                    return node_id
            time.sleep(0.2)
        raise TimeoutError(f"node {node_id} did not become a voter in {timeout}s")
