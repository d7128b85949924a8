"""The fault-injecting proxy network: byte forwarding, each fault mode, the fault plans, cleanup,
and real gRPC through a link."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from chaos.proxy import Fault, Mode, ProxyNetwork

QUIET_S = 0.3
"""How long a blackholed connection must stay silent."""
PROMPT_S = 3.0
"""Generous bound on "fails quickly" (a drop or a heal is instant on an idle machine)."""


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(10)  # bounded even if a test leaves a connection hanging
        with contextlib.suppress(OSError):  # the proxy resets connections: that is the point
            while data := self.request.recv(1 << 16):
                self.request.sendall(data)


@pytest.fixture
def echo_addr() -> Iterator[str]:
    """A threaded TCP echo server on loopback."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo, bind_and_activate=True)
    server.daemon_threads = True
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def net(echo_addr: str) -> Iterator[ProxyNetwork]:
    """Nodes 1 and 2, both "listening" on the echo server; tests use the link 1->2."""
    with ProxyNetwork({1: echo_addr, 2: echo_addr}, seed=7) as network:
        yield network


def _connect(addr: str) -> socket.socket:
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=PROMPT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed early")
        buf += chunk
    return bytes(buf)


def _echoes(sock: socket.socket, payload: bytes) -> bool:
    sock.sendall(payload)
    return _recv_exactly(sock, len(payload)) == payload


def _closed_by_proxy(sock: socket.socket) -> bool:
    """True if the connection is (or promptly gets) reset or closed; False if it stays open."""
    sock.settimeout(PROMPT_S)
    try:
        sock.sendall(b"x")
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:  # reset, broken pipe
        return True


def _new_connection_fails(addr: str) -> bool:
    """True if a new connection is promptly reset (at connect, or at its first exchange)."""
    try:
        sock = _connect(addr)
    except TimeoutError:
        return False
    except OSError:  # the RST can arrive before connect() returns
        return True
    with sock:
        return _closed_by_proxy(sock)


def _silent(sock: socket.socket) -> bool:
    """True if nothing (not even a close) arrives for QUIET_S."""
    sock.settimeout(QUIET_S)
    try:
        sock.recv(1)
    except TimeoutError:
        return True
    return False


def _refused(addr: str) -> bool:
    try:
        _connect(addr).close()
    except ConnectionRefusedError:
        return True
    return False


# -- bytes on the wire --


def test_pass_forwards_both_ways_and_half_close(net: ProxyNetwork) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB: spans many reads and the write buffers
    with _connect(net.route(1)[2]) as sock:
        assert _echoes(sock, b"hello")
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)  # the EOF reaches the server, which closes after echoing
        got = bytearray()
        while chunk := sock.recv(1 << 16):
            got += chunk
    assert got == payload


def test_drop_resets_connections_and_refuses_new_ones_until_heal(net: ProxyNetwork) -> None:
    addr = net.route(1)[2]
    with _connect(addr) as old:
        assert _echoes(old, b"before")
        net.set_link(1, 2, "drop")
        assert _closed_by_proxy(old)
    assert _new_connection_fails(addr)
    net.heal()
    with _connect(addr) as healed:
        assert _echoes(healed, b"after")


def test_drop_is_directional(net: ProxyNetwork) -> None:
    net.one_way(1, 2)
    assert _new_connection_fails(net.route(1)[2])
    with _connect(net.route(2)[1]) as open_:
        assert _echoes(open_, b"still fine")


def test_blackhole_swallows_bytes_and_heal_resets_stuck_connections(net: ProxyNetwork) -> None:
    addr = net.route(1)[2]
    with _connect(addr) as old:
        assert _echoes(old, b"before")
        net.set_link(1, 2, "blackhole")
        old.sendall(b"into the void")
        assert _silent(old)
        with _connect(addr) as new:  # accepted, then nothing
            new.sendall(b"hello?")
            assert _silent(new)
            net.heal()
            assert _closed_by_proxy(old)
            assert _closed_by_proxy(new)
    with _connect(addr) as healed:
        assert _echoes(healed, b"after")


def test_delay_adds_latency_each_way(net: ProxyNetwork) -> None:
    with _connect(net.route(1)[2]) as sock:
        assert _echoes(sock, b"warm up")
        net.set_link(1, 2, "delay", delay_ms=100)
        start = time.monotonic()
        assert _echoes(sock, b"slow")
        # The request and the echo each wait 100 ms on the link.
        assert time.monotonic() - start >= 0.2


def test_delay_with_jitter_keeps_byte_order(net: ProxyNetwork) -> None:
    net.delay_all(5, jitter_ms=5)
    chunks = [f"<{i:04d}>".encode() for i in range(300)]
    with _connect(net.route(1)[2]) as sock:
        for chunk in chunks:
            sock.sendall(chunk)  # separate segments (TCP_NODELAY), each with its own jitter
        assert _recv_exactly(sock, sum(map(len, chunks))) == b"".join(chunks)


def test_target_down_resets_the_client(echo_addr: str) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{unused.getsockname()[1]}"  # bound, not listening: refuses
        with ProxyNetwork({1: echo_addr, 2: dead}) as network:
            assert _new_connection_fails(network.route(1)[2])


# -- lifecycle and membership --


def test_close_stops_the_thread_and_every_socket(echo_addr: str) -> None:
    before = set(threading.enumerate())
    network = ProxyNetwork({1: echo_addr, 2: echo_addr, 3: echo_addr})
    network.start()
    addrs = [addr for node in network.nodes for addr in network.route(node).values()]
    assert len(addrs) == 6
    sock = _connect(addrs[0])
    try:
        assert _echoes(sock, b"open")
        network.close()
        assert _closed_by_proxy(sock)
    finally:
        sock.close()
        network.close()  # idempotent; cleans up if an assertion failed before
    # The echo server's thread for the closed connection ends when it reads the close: soon,
    # but not necessarily before close() returns. The proxy's own threads must all end too.
    deadline = time.monotonic() + 10
    while not set(threading.enumerate()) <= before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert set(threading.enumerate()) <= before
    assert all(_refused(addr) for addr in addrs)


def test_add_and_remove_nodes_while_running(net: ProxyNetwork, echo_addr: str) -> None:
    net.partition([{1}, {2}])
    net.add_node(3, echo_addr)
    assert net.faults()[(1, 3)] == Fault() and net.faults()[(3, 2)] == Fault()
    to_3 = net.route(1)[3]
    with _connect(to_3) as sock, _connect(net.route(3)[1]) as back:
        assert _echoes(sock, b"new link") and _echoes(back, b"and back")
    net.remove_node(3)
    assert set(net.route(1)) == {2}
    assert _refused(to_3)
    assert [what for _, what in net.timeline][-2:] == [f"add node 3 at {echo_addr}",
                                                       "remove node 3"]


# -- fault plans (no sockets) --


def _plan(n: int) -> ProxyNetwork:
    return ProxyNetwork({i: f"127.0.0.1:{9000 + i}" for i in range(1, n + 1)})


def _both_ways(a: set[int], b: set[int]) -> set[tuple[int, int]]:
    return {(i, j) for i in a for j in b} | {(j, i) for i in a for j in b}


def test_partition_blocks_links_between_groups_and_isolates_the_ungrouped() -> None:
    p = _plan(5)
    p.partition([{1, 2}, {3, 4}], mode="blackhole")
    assert p.blocked() == _both_ways({1, 2}, {3, 4}) | _both_ways({5}, {1, 2, 3, 4})
    faults = p.faults()
    assert faults[(1, 3)] == Fault(Mode.BLACKHOLE) and faults[(1, 2)] == Fault(Mode.PASS)
    p.partition([{1, 2, 3, 4, 5}])  # replaces the previous grid
    assert p.blocked() == set()


def test_bridge_lets_only_the_bridge_node_talk_to_both_halves() -> None:
    p = _plan(5)
    p.bridge({1, 2}, {4, 5}, via=3)
    assert p.blocked() == _both_ways({1, 2}, {4, 5})


def test_isolate_and_one_way() -> None:
    p = _plan(3)
    p.isolate(2)
    assert p.blocked() == _both_ways({2}, {1, 3})
    p.heal()
    p.one_way(1, 3)
    p.one_way(3, 2, mode="blackhole")  # adds to the grid
    assert p.blocked() == {(1, 3), (3, 2)}
    assert p.faults()[(3, 2)].mode is Mode.BLACKHOLE


def test_delay_all_is_the_baseline_until_heal() -> None:
    p = _plan(3)
    p.isolate(1)
    p.delay_all(50, jitter_ms=10)
    delayed = Fault(Mode.DELAY, 50, 10)
    assert {pair for pair, f in p.faults().items() if f == delayed} == _both_ways({2}, {3})
    p.partition([{1, 2}, {3}])  # unblocked links keep the baseline latency
    assert p.faults()[(1, 2)] == delayed and p.faults()[(2, 1)] == delayed
    p.heal()
    assert set(p.faults().values()) == {Fault()}
    assert [what for _, what in p.timeline] == [
        "isolate 1 drop", "delay all delay 50±10ms", "partition 1,2 | 3 drop", "heal"]
    times = [t for t, _ in p.timeline]
    assert times == sorted(times)


def test_invalid_requests_are_rejected() -> None:
    p = _plan(3)
    with pytest.raises(ValueError):
        p.set_link(1, 1, "drop")
    with pytest.raises(KeyError):
        p.partition([{1, 7}])
    with pytest.raises(ValueError):
        p.one_way(1, 2, mode="delay")
    with pytest.raises(ValueError):
        p.set_link(1, 2, "drop", delay_ms=5)
    with pytest.raises(ValueError):
        ProxyNetwork({1: "nowhere"})
    with pytest.raises(RuntimeError):
        p.route(1)  # not started: no ports yet


# -- real gRPC through a link --


async def _check(stub: health_pb2_grpc.HealthStub, timeout: float,
                 wait_for_ready: bool = False) -> grpc.StatusCode:
    try:
        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout,
                                 wait_for_ready=wait_for_ready)
    except grpc.aio.AioRpcError as e:
        return e.code()
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    return grpc.StatusCode.OK


async def _recovers(stub: health_pb2_grpc.HealthStub) -> bool:
    """True once a check succeeds within PROMPT_S.

    An RPC can still go out on the connection the heal is resetting (the channel has not seen
    the RST yet) and fail UNAVAILABLE; the next one waits for the reconnect.
    """
    deadline = time.monotonic() + PROMPT_S
    for _ in range(10):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if await _check(stub, left, wait_for_ready=True) is grpc.StatusCode.OK:
            return True
    return False


async def _grpc_scenario() -> None:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    # Fast reconnects, so the channel recovers promptly after a heal.
    options = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 200)]
    try:
        # The test's own loop keeps running while the proxies run on their thread.
        with ProxyNetwork({1: "127.0.0.1:1", 2: f"127.0.0.1:{port}"}) as network:
            # One long-lived channel, like a node's peer link: faults hit its open connection.
            async with grpc.aio.insecure_channel(network.route(1)[2], options=options) as ch:
                stub = health_pb2_grpc.HealthStub(ch)
                assert await _check(stub, 2.0) is grpc.StatusCode.OK
                failed = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
                for mode in ("drop", "blackhole"):
                    network.set_link(1, 2, mode)
                    start = time.monotonic()
                    assert await _check(stub, 0.5) in failed, mode
                    assert time.monotonic() - start < PROMPT_S
                    network.heal()
                    assert await _recovers(stub), mode
    finally:
        await server.stop(None)


def test_grpc_health_check_through_a_link() -> None:
    asyncio.run(_grpc_scenario())
