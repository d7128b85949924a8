"""A fault-injecting TCP proxy network between Confer nodes.

Every ordered pair of nodes (i, j) gets its own link proxy L(i→j): node i is told to dial
L(i→j) to reach peer j (``confer serve --peer-routes``), and L(i→j) forwards to j's real peer
port. A link therefore carries the connections *i opens to j*, with bytes flowing both ways on
them (gRPC replies included), and faults are directional per link:

- ``pass``: forward bytes both ways.
- ``drop``: reset every connection of the link, and reset new ones as soon as they are
  accepted (the dialler sees its connection reset, much like a refused connection).
- ``blackhole``: keep connections open and accept new ones, but silently discard every byte in
  both directions; the endpoints see hung connections until their keepalives fire. Leaving a
  blackhole resets the link's connections, since the bytes it swallowed corrupt their streams.
- ``delay``: forward each chunk after ``delay_ms`` (± uniform ``jitter_ms``), preserving the
  byte order of each direction.

The proxies run on an asyncio loop in a daemon thread of their own (`ProxyNetwork.start`), so
they work whatever loop, if any, the caller runs; the control methods are thread-safe and
block until the change is in effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["Fault", "LinkProxy", "Mode", "ProxyNetwork"]

T = TypeVar("T")

LOOPBACK = "127.0.0.1"
CONNECT_TIMEOUT_S = 5.0
"""Bound on dialling a link's target (loopback refuses or accepts at once)."""
CONTROL_TIMEOUT_S = 10.0
"""Bound on waiting for the proxy thread to apply a change."""
JOIN_TIMEOUT_S = 10.0
MAX_QUEUED_BYTES = 4 << 20
"""Delayed bytes held per direction before the sending side stops being read."""
_EOF = b""  # queued after a direction's data: data_received never delivers an empty chunk
_RST_LINGER = struct.pack("ii", 1, 0)  # SO_LINGER on, timeout 0: close() sends a RST


class Mode(StrEnum):
    """What a link does to the bytes it carries."""

    PASS = "pass"
    DROP = "drop"
    BLACKHOLE = "blackhole"
    DELAY = "delay"


@dataclass(frozen=True, slots=True)
class Fault:
    """A link's behaviour: a mode, plus latency parameters for ``delay``."""

    mode: Mode = Mode.PASS
    delay_ms: float = 0.0
    jitter_ms: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", Mode(self.mode))  # accept plain strings
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise ValueError("delay_ms and jitter_ms must be non-negative")
        if self.mode is not Mode.DELAY and (self.delay_ms or self.jitter_ms):
            raise ValueError(f"delay_ms/jitter_ms only apply to mode 'delay', not {self.mode!r}")

    @property
    def blocked(self) -> bool:
        """True for the modes that stop traffic (``drop`` and ``blackhole``)."""
        return self.mode in (Mode.DROP, Mode.BLACKHOLE)

    def __str__(self) -> str:
        if self.mode is not Mode.DELAY:
            return str(self.mode)
        jitter = f"±{self.jitter_ms:g}" if self.jitter_ms else ""
        return f"delay {self.delay_ms:g}{jitter}ms"


PASS = Fault()


def _split_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {addr!r}")
    return host, int(port)


def _reset(transport: asyncio.Transport) -> None:
    """Abort ``transport`` with a RST rather than a FIN, so the peer fails fast."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST_LINGER)
    transport.abort()


class _Half(asyncio.Protocol):
    """One of a proxied connection's two sockets: what it reads goes to ``peer``'s socket.

    Bytes written *to* this socket wait in ``queue`` (with their release times) whenever the
    link delays them or earlier bytes are still waiting, which keeps each direction in order:
    a chunk leaves at its release time or with the chunk before it, whichever is later.
    """

    def __init__(self, conn: _Conn) -> None:
        self.conn = conn
        self.peer: _Half = self  # set by _Conn once both halves exist
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.read_paused = False
        self.write_paused = False
        self.eof_sent = False
        self.finished = False  # an EOF was queued or written: later sends are ignored
        self.queue: deque[tuple[float, bytes]] = deque()
        self.queued_bytes = 0
        self.timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol callbacks --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.conn.dead:  # the connection was torn down while this side was dialling
            _reset(transport)
            return
        self.conn.on_connected(self)

    def data_received(self, data: bytes) -> None:
        if self.conn.link.fault.mode is not Mode.BLACKHOLE:
            self.peer.send(data)

    def eof_received(self) -> bool:
        if self.conn.link.fault.mode is not Mode.BLACKHOLE and self.peer.transport is not None:
            self.peer.send(_EOF)
        return True  # keep the socket open for the other direction (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.eof_sent = True  # nothing more can reach this socket
        self.drop_queue()
        self.conn.on_lost(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        self.peer.update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.peer.update_reading()

    # -- forwarding --

    def send(self, data: bytes) -> None:
        """Write ``data`` (or ``_EOF``) to this socket, now or when the link's delay says."""
        if self.closed or self.transport is None or self.finished:
            return
        self.finished = not data  # nothing may follow an EOF (asyncio refuses writes after it)
        fault = self.conn.link.fault
        if fault.mode is not Mode.DELAY and not self.queue:
            self._write([data])
            return
        loop = self.conn.link.loop
        delay = fault.delay_ms
        if fault.jitter_ms:
            delay = max(0.0, delay + self.conn.link.rng.uniform(-fault.jitter_ms, fault.jitter_ms))
        # The queue is FIFO whatever the release times: jitter delays a chunk, never reorders it.
        release = loop.time() + delay / 1000
        self.queue.append((release, data))
        self.queued_bytes += len(data)
        if self.timer is None:
            self.timer = loop.call_at(release, self._flush)
        if self.queued_bytes > MAX_QUEUED_BYTES:
            self.peer.update_reading()

    def _flush(self) -> None:
        self.timer = None
        now = self.conn.link.loop.time()
        due: list[bytes] = []
        while self.queue and self.queue[0][0] <= now:
            _, data = self.queue.popleft()
            self.queued_bytes -= len(data)
            due.append(data)
        if self.queue:
            self.timer = self.conn.link.loop.call_at(self.queue[0][0], self._flush)
        self._write(due)
        self.peer.update_reading()

    def _write(self, chunks: list[bytes]) -> None:
        """Write ``chunks``, of which only the last may be ``_EOF``."""
        assert self.transport is not None
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)  # one syscall per burst
        if data:
            self.transport.write(data)
        if chunks and not chunks[-1]:
            self._write_eof()

    def _write_eof(self) -> None:
        assert self.transport is not None
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.eof_sent = True
        if self.peer.eof_sent:  # both directions are finished
            self.conn.close()

    def drop_queue(self) -> None:
        """Forget the bytes waiting to be written here (they were lost on the wire)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()
        self.queued_bytes = 0

    def update_reading(self) -> None:
        """Pause reading this socket while its bytes have nowhere to go (backpressure)."""
        transport = self.transport
        if transport is None or self.closed:
            return
        dst = self.peer
        want_pause = self.conn.link.fault.mode is not Mode.BLACKHOLE and (
            dst.transport is None or dst.write_paused or dst.queued_bytes > MAX_QUEUED_BYTES)
        if want_pause != self.read_paused:
            self.read_paused = want_pause
            if want_pause:
                transport.pause_reading()
            else:
                transport.resume_reading()


class _Conn:
    """A proxied connection: the accepted socket (``down``) and the one to the target (``up``)."""

    def __init__(self, link: LinkProxy) -> None:
        self.link = link
        self.down = _Half(self)
        self.up = _Half(self)
        self.down.peer, self.up.peer = self.up, self.down
        self.dead = False
        self.dialling: asyncio.Task[None] | None = None

    def on_connected(self, half: _Half) -> None:
        if half is self.up:
            self.down.update_reading()
            return
        mode = self.link.fault.mode
        if mode is Mode.DROP:
            self.reset()
        elif mode is Mode.BLACKHOLE:
            pass  # a blackholed SYN never reaches the target: read and discard, dial nothing
        else:
            self.down.update_reading()  # hold the client's bytes until the target answers
            self.dialling = self.link.loop.create_task(self._dial())

    async def _dial(self) -> None:
        host, port = self.link.target
        try:
            await asyncio.wait_for(
                self.link.loop.create_connection(lambda: self.up, host, port), CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError):
            self.dialling = None
            self.reset()  # the target is down: the client sees its connection fail
            return
        self.dialling = None

    def on_lost(self, half: _Half) -> None:
        other = half.peer
        if self.link.fault.mode is Mode.BLACKHOLE:
            pass  # nothing crosses a blackhole, not even a close: the other side stays hung
        elif other.transport is None:
            self.reset()  # the client left before the target answered
        else:
            other.send(_EOF)  # deliver what is queued for the other side, then finish it
        if self.down.closed and (self.up.closed or (self.up.transport is None
                                                    and self.dialling is None)):
            self.dead = True
            self.link.conns.discard(self)

    def reset(self) -> None:
        """Abort both sockets with a RST and forget any bytes in flight."""
        self.dead = True
        self.link.conns.discard(self)
        if self.dialling is not None:
            self.dialling.cancel()
            self.dialling = None
        for half in (self.down, self.up):
            half.drop_queue()
            if half.transport is not None and not half.closed:
                _reset(half.transport)

    def close(self) -> None:
        """Close both sockets gracefully (after both directions delivered their EOF)."""
        self.dead = True
        self.link.conns.discard(self)
        for half in (self.down, self.up):
            if half.transport is not None:
                half.transport.close()


class LinkProxy:
    """One directional link: listens on 127.0.0.1 (an ephemeral port) and forwards to ``target``.

    All methods except the read-only properties must be called on the event loop that ran
    `start` (`ProxyNetwork` takes care of that).
    """

    def __init__(self, target: str, fault: Fault = PASS, *,
                 rng: random.Random | None = None) -> None:
        self.target = _split_addr(target)
        self.rng = rng or random.Random()
        self.conns: set[_Conn] = set()
        self._fault = fault
        self._server: asyncio.Server | None = None
        self._port = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def port(self) -> int:
        """The listening port (0 before `start`)."""
        return self._port

    @property
    def addr(self) -> str:
        """``127.0.0.1:<port>``: what the dialling node is told to connect to."""
        return f"{LOOPBACK}:{self._port}"

    @property
    def fault(self) -> Fault:
        """The link's current behaviour."""
        return self._fault

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the link runs on."""
        assert self._loop is not None, "LinkProxy.start() first"
        return self._loop

    async def start(self) -> None:
        """Bind the listening socket and start accepting connections."""
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(self._accept, LOOPBACK, 0)
        self._port = self._server.sockets[0].getsockname()[1]

    def _accept(self) -> _Half:
        conn = _Conn(self)
        self.conns.add(conn)
        return conn.down

    def set_fault(self, fault: Fault) -> None:
        """Change the link's behaviour; connections in place are reset where the mode requires."""
        old, self._fault = self._fault, fault
        conns = list(self.conns)
        if fault.mode is Mode.DROP or (old.mode is Mode.BLACKHOLE
                                       and fault.mode is not Mode.BLACKHOLE):
            for conn in conns:
                conn.reset()
            return
        for conn in conns:
            for half in (conn.down, conn.up):
                if fault.mode is Mode.BLACKHOLE:
                    half.drop_queue()  # bytes still in flight fall into the hole too
                half.update_reading()

    def close(self) -> None:
        """Stop listening (the socket closes at once) and reset every connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self.conns):
            conn.reset()


def _ordered_pairs(nodes: Iterable[int]) -> list[tuple[int, int]]:
    """Every link between ``nodes``: the ordered pairs of distinct nodes."""
    nodes = list(nodes)
    return [(i, j) for i in nodes for j in nodes if i != j]


class ProxyNetwork:
    """The link proxies between a set of nodes, and the faults applied to them.

    ``targets`` maps each node id to its real peer address (``127.0.0.1:port``). Fault controls
    work before `start` too (they only set the plan then; `start` opens the links with it), so
    the plans can be inspected with `faults` and `blocked` without any sockets.

    `partition`, `bridge` and `isolate` replace the whole grid: links they do not block get the
    baseline (``pass``, or the latency set by `delay_all`). `set_link` and `one_way` change one
    link and leave the rest alone. Links created by `add_node` start at the baseline.
    """

    def __init__(self, targets: Mapping[int, str], *, seed: int | None = None) -> None:
        for addr in targets.values():
            _split_addr(addr)
        self._targets = dict(targets)
        self._base = PASS
        self._faults = {pair: PASS for pair in _ordered_pairs(self._targets)}
        self._links: dict[tuple[int, int], LinkProxy] = {}
        self._rng = random.Random(seed)  # used on the proxy thread only
        self._timeline: list[tuple[int, str]] = []
        self._lock = threading.Lock()  # serialises control calls and guards the state above
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- lifecycle --

    def start(self) -> None:
        """Start the proxy thread and open a listening socket for every link."""
        with self._lock:
            if self._closed or self._thread is not None:
                raise RuntimeError("a ProxyNetwork starts once")
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=self._serve, args=(loop,), daemon=True,
                                      name="confer-chaos-proxy")
            thread.start()
            self._loop, self._thread = loop, thread
            plan = {pair: (self._targets[pair[1]], fault) for pair, fault in self._faults.items()}
            try:
                self._links = self._call(self._open(plan))
            except BaseException:
                self._closed = True
                self._stop_thread()
                raise
            self._log(f"start: {len(self._targets)} nodes, {len(self._links)} links")

    def close(self) -> None:
        """Reset every connection, close every listening socket and join the proxy thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            links, self._links = list(self._links.values()), {}
            if self._thread is None:
                return
            try:
                self._call(self._close_links(links))
            finally:
                self._stop_thread()
            self._log("close")

    def __enter__(self) -> ProxyNetwork:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            # Let cancelled dials finish and pending connection_lost callbacks close sockets.
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

    def _stop_thread(self) -> None:
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(JOIN_TIMEOUT_S)
        if self._thread.is_alive():
            raise RuntimeError(f"proxy thread did not stop within {JOIN_TIMEOUT_S}s")

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the proxy thread and wait (bounded) for its result."""
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(CONTROL_TIMEOUT_S)
        except TimeoutError:
            future.cancel()
            raise

    async def _open(self, plan: dict[tuple[int, int], tuple[str, Fault]]
                    ) -> dict[tuple[int, int], LinkProxy]:
        opened: dict[tuple[int, int], LinkProxy] = {}
        try:
            for pair, (target, fault) in plan.items():
                link = LinkProxy(target, fault, rng=self._rng)
                await link.start()
                opened[pair] = link
        except BaseException:
            await self._close_links(list(opened.values()))
            raise
        return opened

    @staticmethod
    async def _close_links(links: list[LinkProxy]) -> None:
        for link in links:
            link.close()
        await asyncio.sleep(0)  # run the aborted transports' callbacks, which close the sockets

    @staticmethod
    async def _apply(changes: list[tuple[LinkProxy, Fault]]) -> None:
        for link, fault in changes:
            link.set_fault(fault)

    def _log(self, what: str) -> None:
        self._timeline.append((time.monotonic_ns(), what))

    # -- inspection --

    @property
    def nodes(self) -> list[int]:
        """The node ids, sorted."""
        with self._lock:
            return sorted(self._targets)

    @property
    def timeline(self) -> list[tuple[int, str]]:
        """Every change so far as (``time.monotonic_ns()``, description), oldest first."""
        with self._lock:
            return list(self._timeline)

    def route(self, node: int) -> dict[int, str]:
        """For ``node``: peer id -> the proxy address to dial instead of the peer's own."""
        with self._lock:
            if node not in self._targets:
                raise KeyError(f"unknown node {node}")
            if self._thread is None or self._closed:
                raise RuntimeError("the network is not running")
            return {j: link.addr for (i, j), link in self._links.items() if i == node}

    def faults(self) -> dict[tuple[int, int], Fault]:
        """The fault of every link (src, dst)."""
        with self._lock:
            return dict(self._faults)

    def blocked(self) -> set[tuple[int, int]]:
        """The links (src, dst) that currently drop or blackhole traffic."""
        with self._lock:
            return {pair for pair, fault in self._faults.items() if fault.blocked}

    # -- membership --

    def add_node(self, node: int, addr: str) -> None:
        """Add ``node`` (real peer address ``addr``) with links to and from every other node."""
        _split_addr(addr)
        with self._lock:
            if node in self._targets:
                raise ValueError(f"node {node} already exists")
            self._targets[node] = addr
            pairs = [p for p in _ordered_pairs(self._targets) if node in p]
            self._faults.update(dict.fromkeys(pairs, self._base))
            if self._running():
                plan = {p: (self._targets[p[1]], self._base) for p in pairs}
                self._links.update(self._call(self._open(plan)))
            self._log(f"add node {node} at {addr}")

    def remove_node(self, node: int) -> None:
        """Remove ``node`` and close its links (their connections are reset)."""
        with self._lock:
            if node not in self._targets:
                raise KeyError(f"unknown node {node}")
            del self._targets[node]
            pairs = [p for p in self._faults if node in p]
            for pair in pairs:
                del self._faults[pair]
            links = [self._links.pop(p) for p in pairs if p in self._links]
            if self._running():
                self._call(self._close_links(links))
            self._log(f"remove node {node}")

    # -- faults --

    def set_link(self, src: int, dst: int, mode: Mode | str, *, delay_ms: float = 0.0,
                 jitter_ms: float = 0.0) -> None:
        """Set the fault of the single link src→dst (the connections ``src`` opens to ``dst``)."""
        fault = Fault(Mode(mode), delay_ms, jitter_ms)
        with self._lock:
            self._set({self._pair(src, dst): fault}, f"link {src}->{dst} {fault}")

    def one_way(self, src: int, dst: int, mode: Mode | str = Mode.DROP) -> None:
        """Block only src→dst: ``src`` cannot reach ``dst``, while ``dst`` can still reach ``src``.

        "Reach" means over connections ``src`` opens; replies on connections ``dst`` opened to
        ``src`` still flow, as they would through a firewall that blocks new connections.
        """
        fault = self._blocking(mode)
        with self._lock:
            self._set({self._pair(src, dst): fault}, f"one-way {src}->{dst} {fault}")

    def partition(self, groups: Iterable[Iterable[int]], mode: Mode | str = Mode.DROP) -> None:
        """Block every link, both directions, between nodes that share no group.

        Groups may overlap (a node in two groups talks to both, see `bridge`); nodes in no group
        are isolated. Other links get the baseline.
        """
        fault = self._blocking(mode)
        sets = [set(g) for g in groups]
        with self._lock:
            self._check_nodes(set().union(*sets))
            self._partition(sets, fault, f"partition {self._fmt(sets)} {fault}")

    def bridge(self, left: Iterable[int], right: Iterable[int], via: int,
               mode: Mode | str = Mode.DROP) -> None:
        """Jepsen's bridge: ``left`` and ``right`` cannot talk, but both can talk to ``via``."""
        fault = self._blocking(mode)
        sets = [{*left, via}, {*right, via}]
        with self._lock:
            self._check_nodes(sets[0] | sets[1])
            self._partition(sets, fault, f"bridge {self._fmt(sets)} via {via} {fault}")

    def isolate(self, node: int, mode: Mode | str = Mode.DROP) -> None:
        """Cut ``node`` off from every other node, both directions; the rest talk freely."""
        fault = self._blocking(mode)
        with self._lock:
            self._check_nodes({node})
            rest = set(self._targets) - {node}
            self._partition([rest], fault, f"isolate {node} {fault}")

    def delay_all(self, delay_ms: float, jitter_ms: float = 0.0) -> None:
        """Make ``delay`` the baseline and apply it to every link that is not blocked."""
        fault = Fault(Mode.DELAY, delay_ms, jitter_ms)
        with self._lock:
            self._base = fault
            changes = {p: fault for p, f in self._faults.items() if not f.blocked}
            self._set(changes, f"delay all {fault}")

    def heal(self) -> None:
        """Every link back to ``pass`` (also ending `delay_all`)."""
        with self._lock:
            self._base = PASS
            self._set(dict.fromkeys(self._faults, PASS), "heal")

    # -- helpers (called with the lock held) --

    @staticmethod
    def _blocking(mode: Mode | str) -> Fault:
        fault = Fault(Mode(mode))
        if not fault.blocked:
            raise ValueError(f"mode must be 'drop' or 'blackhole', not {mode!r}")
        return fault

    @staticmethod
    def _fmt(groups: list[set[int]]) -> str:
        return " | ".join(",".join(map(str, sorted(g))) for g in groups)

    def _running(self) -> bool:
        return self._thread is not None and not self._closed

    def _pair(self, src: int, dst: int) -> tuple[int, int]:
        if src == dst:
            raise ValueError("a node has no link to itself")
        self._check_nodes({src, dst})
        return (src, dst)

    def _check_nodes(self, nodes: set[int]) -> None:
        unknown = nodes - self._targets.keys()
        if unknown:
            raise KeyError(f"unknown nodes {sorted(unknown)}")

    def _partition(self, groups: list[set[int]], fault: Fault, what: str) -> None:
        def apart(i: int, j: int) -> bool:
            return not any(i in g and j in g for g in groups)

        self._set({p: fault if apart(*p) else self._base for p in self._faults}, what)

    def _set(self, changes: dict[tuple[int, int], Fault], what: str) -> None:
        """Record ``changes`` in the plan and, while running, apply those that differ."""
        diff = {p: f for p, f in changes.items() if self._faults[p] != f}
        self._faults.update(diff)
        if self._running() and diff:
            self._call(self._apply([(self._links[p], f) for p, f in diff.items()]))
        self._log(what)
