"""Clusters of real `confer serve` processes on 127.0.0.1, each with its own data dir.

Every process is started by us, tracked by PID, and killed and reaped on exit, even when
the caller fails. Ports come from 20000-32767, below Linux's ephemeral range.
"""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import time
from pathlib import Path
from types import TracebackType

import grpc

from confer.nodeproc import NodeProcess

_used_ports: set[int] = set()


def free_port(rng: random.Random | None = None) -> int:
    """A currently free TCP port on 127.0.0.1 in 20000-32767, not handed out before."""
    rng = rng or random.Random()
    for _ in range(1000):
        port = rng.randrange(20000, 32768)
        if port in _used_ports:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _used_ports.add(port)
        return port
    raise RuntimeError("no free port found in 20000-32767")


class ProcessCluster:
    """N founding members on loopback. Use as a context manager."""

    def __init__(self, size: int, base_dir: Path, *, tick_ms: int = 50,
                 extra_args: list[str] | None = None, seed: int | None = None,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        self.base_dir = Path(base_dir)
        self.credentials = credentials
        """How to reach the client ports when they serve TLS (None: plaintext)."""
        self.rng = random.Random(seed)
        self.tick_ms = tick_ms
        self.extra_args = extra_args or []
        self.nodes: dict[int, NodeProcess] = {}
        for i in range(1, size + 1):
            self.nodes[i] = self.new_node(i)
        initial = ",".join(f"{n.node_id}={n.peer_addr}" for n in self.nodes.values())
        for n in self.nodes.values():
            n.args = ["--initial-cluster", initial, *self._common_args()]

    def _common_args(self) -> list[str]:
        # No HTTP listener nor DNS interface unless a test asks for one (extra_args: the
        # last flag wins): their default addresses (the client port + 1000, + 1221) could
        # be ports handed to another node not started yet, and starting one costs a node a
        # few tenths of a second.
        return ["--tick-ms", str(self.tick_ms), "--listen-metrics", "none", "--listen-dns",
                "none", *self.extra_args]

    def new_node(self, node_id: int) -> NodeProcess:
        """A node process with fresh ports and data dir, not started and not a member yet."""
        return NodeProcess(node_id, self.base_dir / f"node{node_id}", free_port(self.rng),
                           free_port(self.rng), credentials=self.credentials)

    @property
    def endpoints(self) -> list[str]:
        return [n.client_addr for n in self.nodes.values()]

    def start(self) -> ProcessCluster:
        for n in self.nodes.values():
            n.start()
        return self

    def add_node(self, node_id: int, join: str | None = None) -> NodeProcess:
        """A new process that joins through ``join`` (a member's client address)."""
        node = self.new_node(node_id)
        node.args = ["--join", join or self.endpoints[0], *self._common_args()]
        self.nodes[node_id] = node
        node.start()
        return node

    def leader(self, timeout: float = 20.0, among: list[int] | None = None) -> int:
        """The id of the leader that the running members agree on."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leaders = set()
            for i, n in self.nodes.items():
                if (among is None or i in among) and n.alive():
                    st = n.status(timeout=0.5)
                    if st is not None and st.leader_id:
                        leaders.add(st.leader_id)
            if len(leaders) == 1:
                leader = leaders.pop()
                if leader in self.nodes and self.nodes[leader].alive():
                    return leader
            time.sleep(0.05)
        raise TimeoutError(f"no agreed leader within {timeout}s\n{self.logs()}")

    def logs(self, tail: int = 40) -> str:
        out = []
        for n in self.nodes.values():
            lines = n.log_text().splitlines()[-tail:]
            out.append(f"--- node {n.node_id} (pid {n.pid}) ---\n" + "\n".join(lines))
        return "\n".join(out)

    def stop(self) -> None:
        """SIGTERM every node at once, give them 5 s to exit, then SIGKILL and reap."""
        for n in self.nodes.values():
            with contextlib.suppress(Exception):
                n.signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for n in self.nodes.values():
            with contextlib.suppress(Exception):
                if n.proc is not None:
                    n.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for n in self.nodes.values():
            with contextlib.suppress(Exception):
                n.kill()

    def __enter__(self) -> ProcessCluster:
        """Start every node and wait until each answers (a test's first call must not race a
        node that is still starting); on failure, stop them all."""
        self.start()
        try:
            for n in self.nodes.values():
                n.wait_ready(30)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        if exc is not None and not isinstance(exc, KeyboardInterrupt):
            # pytest shows a failed test's output: the nodes' own account of what happened.
            for n in self.nodes.values():
                print(f"--- node {n.node_id} log (last 60 lines) ---")
                print("\n".join(n.log_text().splitlines()[-60:]))
