"""The fuzz phases against one node, and the checks between them.

Phases, in this order (the peer phase last: before the peer fixes it could wreck the node):

- ``structured``: Hypothesis requests for every client method of both APIs (and health);
- ``raw``: random and mutated bytes as the request of every client method;
- ``streams``: abandoned, concurrent, flooded and half-closed streams;
- ``peer``: Raft batches, proposals and internal leader calls from a non-member, to the peer
  port and to the client port.

Every ``check_every`` calls, and after each phase: the canary, health, the log, the store
outside the fuzzer's prefixes and the membership (and, in the peer phase, the term).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.v1 import kv_pb2, kv_pb2_grpc
from testing.fuzz import peer, streams
from testing.fuzz.calls import Outcome, Shape, call
from testing.fuzz.catalogue import CLIENT_METHODS, Method
from testing.fuzz.report import Failure, Report
from testing.fuzz.strategies import confine_raw, requests
from testing.fuzz.target import FuzzTarget, Problem

PHASES = ("structured", "raw", "streams", "peer")
MEMBERSHIP_PATHS = frozenset(
    m.path for m in CLIENT_METHODS
    if m.service.endswith(".Cluster") or m.name in ("AddLearner", "ChangeMembership", "Init",
                                                   "MoveLeader"))
"""Client methods that can change the membership or the leader: the state is checked right
after each one that succeeds."""
UNARY_TIMEOUT = 10.0
"""The deadline of a call that must answer: past it, the call hangs (a failure)."""
BLOCKING_TIMEOUT = 0.25
"""The deadline of a call that may rightly wait (watches, Lock, Campaign): the fuzzer only
needs it to start and to end when cancelled."""
SHARES = {"structured": 2, "raw": 1, "peer": 1}
"""How ``requests`` are split between the Hypothesis phases that run (streams are scenarios
of their own size)."""


@dataclass
class FuzzConfig:
    seed: int = 0
    requests: int = 2000
    phases: tuple[str, ...] = PHASES
    check_every: int = 200
    """Calls between two canary/state checks."""
    cleanup_every: int = 1000
    """Calls between two clean-ups of the owned prefix (delete it, compact history)."""
    stream_scale: int = 1
    """Multiplies the streams phase's stream counts and bytes written."""
    peer_kinds: tuple[str, ...] = ("leader-call", "leader-renew", "propose", "raft")
    """What the peer phase sends (see :func:`peer_phase`); one kind alone tells findings apart
    when an earlier one would stop the node."""
    exclude: str = ""
    """A regular expression: client methods whose path it matches are not fuzzed (to look
    past a finding that would otherwise stop the node early)."""
    auth_as: str = ""
    """``""``: a plaintext node without auth. Else the node serves mTLS with auth on, and the
    fuzzer speaks as ``root``, ``anonymous`` or ``no-roles`` (:mod:`testing.fuzz.target`)."""
    progress: Callable[[str], None] | None = None

    def client_methods(self) -> list[Method]:
        return [m for m in CLIENT_METHODS
                if not (self.exclude and re.search(self.exclude, m.path))]


class StopPhase(Exception):
    """The phase's calls are all made, or the node no longer serves."""


@dataclass
class Run:
    """One fuzz run's state: the node, the report, the calls since the last check."""

    cfg: FuzzConfig
    target: FuzzTarget
    report: Report
    phase: str = ""
    since_check: int = 0
    since_cleanup: int = 0
    channels: dict[str, list[grpc.Channel]] = field(default_factory=dict)
    budget: int = 0
    """Calls the current phase may still make."""
    broken: str = ""
    """Why the node can no longer serve (set by a failed check): the run stops there, since
    every later call would only wait out its deadline."""

    def channel(self, addr: str) -> grpc.Channel:
        """A channel to ``addr`` as the fuzzer's identity: when it has several ways in
        (anonymous: plaintext, TLS without and with a certificate), each in turn."""
        if addr not in self.channels:
            self.channels[addr] = self.target.fuzz_channels(addr)
        options = self.channels[addr]
        return options[self.report.total % len(options)]

    def send(self, shape: Shape, payloads: list[bytes], *, may_block: bool,
             addr: str | None = None, half_close: bool = True) -> None:
        if self.broken or self.budget <= 0:
            raise StopPhase  # ends the Hypothesis loop at once (raised again on its replay)
        self.budget -= 1
        timeout = BLOCKING_TIMEOUT if may_block else UNARY_TIMEOUT
        outcome = call(self.channel(addr or self.target.client_addr), shape, payloads, timeout,
                       half_close=half_close)
        self.report.record_call(self.phase, shape.path, payloads, outcome, may_block=may_block)
        if self.target.denied and not refused(shape, payloads, outcome, self.cfg.auth_as):
            self.report.add(Failure("not-refused", shape.path, outcome.code, outcome.details,
                                    self.report.repro(self.phase, shape.path, payloads)))
        if self.phase == "peer" or (outcome.code == "OK" and shape.path in MEMBERSHIP_PATHS):
            self.attribute(shape.path, payloads)
        if outcome.code == "DEADLINE_EXCEEDED" and not may_block:
            self.check()  # a hang: is the node still serving at all?
            return
        self.since_check += 1
        self.since_cleanup += 1
        # Refused traffic writes nothing, and a clean-up would move the revision it checks.
        if self.since_cleanup >= self.cfg.cleanup_every and not self.target.denied:
            self.since_cleanup = 0
            self.cleanup()
        if self.since_check >= self.cfg.check_every:
            self.check()

    def check(self) -> None:
        self.since_check = 0
        problems = self.target.check(peer_phase=self.phase == "peer")
        self.add_problems(problems)
        fatal = [p for p in problems if p.kind in ("health", "canary", "state")]
        if fatal and not self.broken:
            self.broken = f"after {self.report.total} calls ({self.phase}): {fatal[0].details}"
            self.report.notes.append(f"node no longer serving {self.broken}; run stopped")
        if self.cfg.progress:
            r = self.report
            self.cfg.progress(f"[{self.phase}] {r.total} calls, {r.failures} failures, "
                              f"node rss {(self.target.rss_bytes() or 0) >> 20} MiB")

    def attribute(self, path: str, payloads: list[bytes]) -> None:
        """Check the state right after a call that could change it, so that a change is
        reported with the request that made it."""
        problems = self.target.state(peer_phase=self.phase == "peer")
        if any(p.kind == "state" for p in problems):
            self.check()  # unreadable: is the node serving at all?
            return
        for p in problems:
            self.report.add(Failure(p.kind, path, "", p.details,
                                    self.report.repro(self.phase, path, payloads)))
        if problems:
            self.target.rebaseline()

    def add_problems(self, problems: list[Problem]) -> None:
        for p in problems:
            self.report.add(Failure(p.kind, f"{self.phase} check", "", p.details))

    def cleanup(self) -> None:
        """Delete the owned prefix and compact history: valid writes that keep a long run's
        memory bounded."""
        own = self.target.own
        ch = self.channel(self.target.client_addr)
        with contextlib.suppress(grpc.RpcError):
            kv_pb2_grpc.KVStub(ch).Delete(kv_pb2.DeleteRequest(path=own, recursive=True),
                                          timeout=UNARY_TIMEOUT)
            etcd = rpc_pb2_grpc.KVStub(ch)
            resp = etcd.DeleteRange(rpc_pb2.DeleteRangeRequest(
                key=own.encode() + b"/", range_end=own.encode() + b"0"), timeout=UNARY_TIMEOUT)
            etcd.Compact(rpc_pb2.CompactionRequest(revision=resp.header.revision),
                         timeout=UNARY_TIMEOUT)

    def close(self) -> None:
        for options in self.channels.values():
            for ch in options:
                ch.close()
        self.channels.clear()


def hypothesis_loop(run: Run, n: int, seed: int, body: Callable[[st.DataObject], None]) -> None:
    """Run ``body`` for ``n`` calls: Hypothesis examples, generated only (no shrinking: the
    node is stateful), from ``seed`` on; deterministic for a seed. An example Hypothesis
    abandons (too much data) makes no call, so the loop goes on with the next seed, a bounded
    number of times."""
    run.budget = n
    for attempt in range(10):
        left = run.budget
        if left <= 0 or run.broken:
            return

        @hypothesis_seed(seed + attempt)
        @settings(max_examples=left, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet,
                  derandomize=False)
        @given(st.data())
        def loop(data: st.DataObject) -> None:
            body(data)

        try:
            loop()
        except StopPhase:
            return


# -- phases --------------------------------------------------------------------------------------
def structured(run: Run, n: int) -> None:
    scope = run.target.scope()
    methods = run.cfg.client_methods()
    cache: dict[str, st.SearchStrategy[bytes]] = {}

    def body(data: st.DataObject) -> None:
        method: Method = data.draw(st.sampled_from(methods), label="method")
        strategy = cache.get(method.path)
        if strategy is None:
            strategy = cache[method.path] = requests(method, scope)
        count = data.draw(st.integers(1, 3)) if method.client_streaming else 1
        payloads = [data.draw(strategy, label="request") for _ in range(count)]
        half_close = data.draw(st.booleans()) if method.client_streaming else True
        run.send(_shape(method), payloads, may_block=method.may_block, half_close=half_close)

    hypothesis_loop(run, n, run.cfg.seed, body)


def raw(run: Run, n: int) -> None:
    scope = run.target.scope()
    methods = run.cfg.client_methods()

    def mutate(data: st.DataObject, method: Method) -> bytes:
        base = bytearray(data.draw(requests(method, scope)))
        op = data.draw(st.sampled_from(["flip", "truncate", "insert", "duplicate"]))
        at = data.draw(st.integers(0, len(base)))
        if op == "flip" and base:
            base[min(at, len(base) - 1)] ^= data.draw(st.integers(1, 255))
        elif op == "truncate":
            del base[at:]
        elif op == "insert":
            base[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            base.extend(bytes(base))
        return bytes(base)

    def body(data: st.DataObject) -> None:
        method: Method = data.draw(st.sampled_from(methods), label="method")
        count = data.draw(st.integers(1, 3)) if method.client_streaming else 1
        payloads = []
        for _ in range(count):
            kind = data.draw(st.sampled_from(["short", "long", "mutated", "mutated"]))
            if kind == "short":
                payload = data.draw(st.binary(max_size=64))
            elif kind == "long":
                payload = data.draw(st.binary(min_size=65, max_size=2048))
            else:
                payload = mutate(data, method)
            payloads.append(confine_raw(method, payload, scope))
        run.send(_shape(method), payloads, may_block=method.may_block)

    hypothesis_loop(run, n, run.cfg.seed + 1_000_003, body)


def peer_phase(run: Run, n: int) -> None:
    t = run.target
    status = t.status()
    t.term = status.raft_term  # the peer phase must leave it as it finds it
    scope = peer.PeerScope(t.member_id, t.cluster_id, status.raft_term, status.raft_index,
                           b"/sentinel/a")
    kinds = {
        "raft": (peer.RAFT, peer.raft_batches(scope)),
        "propose": (peer.PROPOSE, peer.proposals(scope)),
        "leader-call": (peer.LEADER_CALL, peer.leader_calls(scope)),
        "leader-renew": (peer.LEADER_RENEW, peer.leader_renewals(scope)),
    }
    names = [k for k in sorted(kinds) if k in run.cfg.peer_kinds]

    def body(data: st.DataObject) -> None:
        shape, strategy = kinds[data.draw(st.sampled_from(names), label="kind")]
        addr = data.draw(st.sampled_from([t.peer_addr, t.client_addr]), label="port")
        count = data.draw(st.integers(1, 3)) if shape.client_streaming else 1
        payloads = [data.draw(strategy) for _ in range(count)]
        # A half-closed peer stream must be answered: Raft's reply comes once the batches end.
        run.send(shape, payloads, may_block=shape.server_streaming, addr=addr)

    hypothesis_loop(run, n, run.cfg.seed + 2_000_003, body)


REFUSALS = frozenset({"PERMISSION_DENIED", "UNAUTHENTICATED", "UNAVAILABLE"})
"""How a TLS and auth node refuses an identity: no permission, no user or an invalid token,
or no TLS handshake (UNAVAILABLE: no client certificate, or none at all)."""
BAD_INPUT = frozenset({"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "UNIMPLEMENTED"})
"""A request refused for what it is before anyone is asked who sent it (it does not decode,
is too large, breaks a rule of its own, or names a method this port does not serve), as in
etcd: it changes nothing either."""
USER_BAD_INPUT = BAD_INPUT | {"NOT_FOUND", "FAILED_PRECONDITION"}
"""Also, for a user: what any user may do, refused for the state it meets (revoking a lease
that does not exist, granting one whose id is taken)."""
OPEN_TO_ANYONE = frozenset({
    "/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/List",
    "/grpc.health.v1.Health/Watch", "/etcdserverpb.Auth/AuthStatus",
    "/etcdserverpb.Auth/Authenticate"})
"""Methods that answer without a user (docs/security.md, "Who may do what")."""
OPEN_TO_USERS = OPEN_TO_ANYONE | {
    "/confer.v1.Lease/Grant", "/confer.v1.Lease/KeepAlive", "/confer.v1.Lease/Leases",
    "/confer.v1.Lease/TimeToLive", "/confer.v1.Lease/Revoke", "/etcdserverpb.Lease/LeaseGrant",
    "/etcdserverpb.Lease/LeaseKeepAlive", "/etcdserverpb.Lease/LeaseLeases",
    "/etcdserverpb.Lease/LeaseTimeToLive", "/etcdserverpb.Lease/LeaseRevoke",
    "/confer.v1.Cluster/MemberList", "/confer.v1.Cluster/Status",
    "/etcdserverpb.Cluster/MemberList", "/confer.v1.ConferService/WatchCluster"}
"""Also answered for any user, whatever its roles: leases (a lease the user made has no keys
of others attached), the membership and status."""
_REQUEST = {m.path: m.request for m in CLIENT_METHODS}


def refused(shape: Shape, payloads: list[bytes], outcome: Outcome, identity: str) -> bool:
    """Whether a call of an identity that may do nothing (``anonymous``, ``no-roles``) was
    answered as it must be: refused, or a method open to it."""
    user = identity != "anonymous"
    if outcome.code in REFUSALS or outcome.code in (USER_BAD_INPUT if user else BAD_INPUT):
        return True
    if shape.path in (OPEN_TO_USERS if user else OPEN_TO_ANYONE):
        return True
    if shape.client_streaming or shape.server_streaming:
        # A stream stays open until the fuzzer ends it; a refused watch is answered inside it.
        return outcome.code in ("OK", "CLIENT_CANCELLED", "DEADLINE_EXCEEDED")
    return outcome.code == "OK" and _touches_no_key(shape.path, payloads)


def _touches_no_key(path: str, payloads: list[bytes]) -> bool:
    """Whether a request names no key at all: an empty transaction, or one of only empty
    transactions, a range whose end is before its key. Such a request needs no permission
    (docs/security.md: an empty range is covered trivially) and reads and writes nothing."""
    request = _REQUEST.get(path)
    if request is None:
        return False
    try:
        return _no_key(request.FromString(payloads[0]))
    except DecodeError:
        return False


def _no_key(msg: Any) -> bool:
    """No key, path or value anywhere inside ``msg`` (but empty ranges)."""
    if msg.DESCRIPTOR.full_name in ("etcdserverpb.RangeRequest",
                                    "etcdserverpb.DeleteRangeRequest", "etcdserverpb.Compare"):
        return msg.range_end not in (b"", b"\x00") and msg.range_end <= msg.key
    for desc, value in msg.ListFields():
        if desc.message_type is None:
            return False  # a key, a path, a value... or any other field: not nothing
        if not all(_no_key(sub) for sub in (value if desc.is_repeated else [value])):
            return False
    return True


def _shape(method: Method) -> Shape:
    return Shape(method.path, method.client_streaming, method.server_streaming)


def fuzz(cfg: FuzzConfig, *, keep_dir: bool = False) -> Report:
    """Start a node, run the phases, check it after each, stop it; the report says it all."""
    report = Report(cfg.seed)
    started = time.monotonic()
    total_share = sum(SHARES.get(p, 0) for p in cfg.phases) or 1
    with FuzzTarget(cfg.seed, keep_dir=keep_dir, auth_as=cfg.auth_as) as target:
        run = Run(cfg, target, report)
        try:
            for phase in cfg.phases:
                if run.broken:
                    report.notes.append(f"phase {phase} skipped: the node no longer serves")
                    continue
                if phase == "streams" and target.denied:
                    # Its scenarios need writes and watches that deliver: root's traffic.
                    report.notes.append(f"phase streams skipped: it runs as root only, not "
                                        f"{cfg.auth_as}")
                    continue
                run.phase = phase
                before = report.total
                if phase == "streams":
                    streams.run_all(run.target, run.report, cfg.stream_scale)
                else:
                    {"structured": structured, "raw": raw, "peer": peer_phase}[phase](
                        run, round(cfg.requests * SHARES[phase] / total_share))
                if not run.broken:
                    run.check()
                report.notes.append(
                    f"phase {phase}: {report.total - before} calls; node rss "
                    f"{(target.rss_bytes() or 0) >> 20} MiB")
        finally:
            run.close()
        if keep_dir:
            report.notes.append(f"node data and log kept in {target.base}")
    report.notes.append(f"{time.monotonic() - started:.0f} s")
    return report
