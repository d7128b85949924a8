"""The node under fuzz: one real ``confer serve`` process and the checks made on it.

The process runs on 127.0.0.1 (ports below 32768), in a temporary data dir of its own, and is
killed by its PID at the end, even when the run fails. Before fuzzing, sentinel keys are
written outside the fuzzer's prefixes; the checks then compare the whole store outside them,
the membership, the Raft term, health and the log with what they were.

With ``auth_as`` (docs/fuzzing.md, "With TLS and auth on") the node serves mTLS on both ports
with auth enabled, and the fuzzer speaks as one identity: ``root`` (the harness's root user,
by its client certificate), ``anonymous`` (no TLS, TLS without a client certificate, or a
certificate whose common name is no user, in turn) or ``no-roles`` (the token of a user with
no roles). The harness's own checks always go as root.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from confer.cli.tls import init_dir, issue, load_ca, server_flags
from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.nodeproc import NodeProcess
from confer.v1 import kv_pb2, kv_pb2_grpc
from testing.fuzz.strategies import Scope
from testing.procs import free_port

CHANNEL_OPTIONS = [("grpc.max_send_message_length", 256 << 20),
                   ("grpc.max_receive_message_length", 256 << 20)]
CHECK_TIMEOUT = 10.0
"""Seconds a check's own call may take (a healthy one-node cluster answers in milliseconds)."""
LOG_PROBLEM = re.compile(r"Traceback|\b(ERROR|CRITICAL)\b")
MAX_LOG_PROBLEMS = 50
IDENTITIES = ("root", "anonymous", "no-roles")
"""Who the fuzzer speaks as on a TLS and auth node (``auth_as``)."""
DENIED_IDENTITIES = frozenset({"anonymous", "no-roles"})
"""Identities whose traffic must change nothing at all: not even under the fuzzer's prefix."""
NOBODY_CN = "fuzz-nobody"
"""The common name of the fuzzer's non-root client certificate: no user has that name."""
NO_ROLES_USER = "fuzz-no-roles"
PASSWORD = "fuzz-password"


class MemberRow(NamedTuple):
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool


@dataclass(frozen=True)
class Problem:
    """A check that failed: ``kind`` (canary, health, log, store, membership, term) and what
    was seen."""

    kind: str
    details: str


def sentinel_keys(own: bytes, canary: bytes) -> dict[bytes, bytes]:
    """Keys written before fuzzing, outside the owned prefixes: right beside them, at the
    edges of the key space, and one that is not UTF-8."""
    return {
        b"/sentinel/a": b"1", b"/sentinel/b/c": b"2", own + b"x": b"3", own + b"0": b"4",
        own[:-1]: b"5", b"/": b"6", b"\x00": b"7", b"\xff\xfe": b"8", b"/cfg/x\xff": b"9",
        b"a": b"10", canary + b"x": b"11", b"/sentinel/lock": b"12",
    }


class _Token(grpc.AuthMetadataPlugin):
    """Sends a token as etcd's clients do: the ``token`` metadata of every call."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, context: grpc.AuthMetadataContext,
                 callback: grpc.AuthMetadataPluginCallback) -> None:
        callback((("token", self.token),), None)


class FuzzTarget:
    """Start with ``with FuzzTarget(seed) as t``; the node is up, seeded and checked once."""

    def __init__(self, seed: int, *, keep_dir: bool = False, tick_ms: int = 50,
                 auth_as: str = "") -> None:
        if auth_as and auth_as not in IDENTITIES:
            raise ValueError(f"auth_as {auth_as!r}: choose from {', '.join(IDENTITIES)}")
        self.seed = seed
        self.keep_dir = keep_dir
        self.auth_as = auth_as
        self.base = Path(tempfile.mkdtemp(prefix=f"confer-fuzz-{seed}-"))
        self.certs = self.base / "tls"
        self.root_credentials: grpc.ChannelCredentials | None = None
        args = ["--tick-ms", str(tick_ms), "--listen-metrics", "none", "--listen-dns", "none"]
        if auth_as:
            # The client certificate's common name is root: the harness is root without a
            # token, on its own channel and on the stream scenarios' channels alike.
            init_dir(self.certs, client_cn="root")
            issue(load_ca(self.certs), NOBODY_CN).write(self.certs / "nobody.pem",
                                                        self.certs / "nobody-key.pem")
            self.root_credentials = self._tls("client")
            args += server_flags(self.certs)
        # Ports from an unseeded generator: runs with the same seed (CI's phases, in parallel
        # workers) must not pick the same ports.
        self.node = NodeProcess(1, self.base / "node1", free_port(), free_port(), args=args,
                                credentials=self.root_credentials)
        self.no_roles_token = ""
        self.baseline_revision = 0
        self.own = f"/fz{seed}"
        self.canary_prefix = f"/canary{seed}"
        self.channel: grpc.Channel | None = None
        self._log_offset = 0
        self._canary_count = 0
        self.baseline_store: dict[bytes, tuple[bytes, int, int, int, int]] = {}
        self.baseline_members: tuple[MemberRow, ...] = ()
        self.cluster_id = 0
        self.member_id = 0
        self.term = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> FuzzTarget:
        try:
            self.node.start()
            self.node.wait_ready(60)
            self.channel = self.open_channel()
            self._wait_writable()
            self._seed_sentinels()
            if self.auth_as:
                self._enable_auth()
            self.baseline_store = self.store_outside()
            self.baseline_revision = self.revision()
            self.baseline_members = self._wait_members_published()
            status = self.status()
            self.term = status.raft_term
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Kill the node by its PID, reap it, and remove its data unless asked to keep it."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        self.node.kill()
        if not self.keep_dir:
            shutil.rmtree(self.base, ignore_errors=True)

    @property
    def client_addr(self) -> str:
        return self.node.client_addr

    @property
    def peer_addr(self) -> str:
        return self.node.peer_addr

    @property
    def denied(self) -> bool:
        """Whether the fuzzer's traffic must be refused whole (and change nothing)."""
        return self.auth_as in DENIED_IDENTITIES

    def _tls(self, stem: str | None) -> grpc.ChannelCredentials:
        """TLS credentials trusting the node's CA, with the client certificate ``stem``."""
        ca = (self.certs / "ca.pem").read_bytes()
        if stem is None:
            return grpc.ssl_channel_credentials(ca)
        return grpc.ssl_channel_credentials(ca, (self.certs / f"{stem}-key.pem").read_bytes(),
                                            (self.certs / f"{stem}.pem").read_bytes())

    def open_channel(self, addr: str | None = None) -> grpc.Channel:
        """A new channel to ``addr`` (the client port) as the harness: root when auth is on."""
        addr = addr or self.node.client_addr
        if self.root_credentials is None:
            return grpc.insecure_channel(addr, options=CHANNEL_OPTIONS)
        return grpc.secure_channel(addr, self.root_credentials, options=CHANNEL_OPTIONS)

    def fuzz_channels(self, addr: str) -> list[grpc.Channel]:
        """New channels to ``addr`` as the fuzzer's identity; the fuzzer takes them in turn."""
        if self.auth_as in ("", "root"):
            return [self.open_channel(addr)]
        if self.auth_as == "anonymous":
            return [grpc.insecure_channel(addr, options=CHANNEL_OPTIONS),
                    grpc.secure_channel(addr, self._tls(None), options=CHANNEL_OPTIONS),
                    grpc.secure_channel(addr, self._tls("nobody"), options=CHANNEL_OPTIONS)]
        creds = grpc.composite_channel_credentials(
            self._tls("nobody"), grpc.metadata_call_credentials(_Token(self.no_roles_token)))
        return [grpc.secure_channel(addr, creds, options=CHANNEL_OPTIONS)]

    def _enable_auth(self) -> None:
        """etcd's bootstrap: root with the root role, a user with no roles, auth on; then
        the no-roles user's token (simple tokens live 300 s from their last use)."""
        auth = rpc_pb2_grpc.AuthStub(self._ch())
        for user in ("root", NO_ROLES_USER):
            auth.UserAdd(rpc_pb2.AuthUserAddRequest(name=user, password=PASSWORD),
                         timeout=CHECK_TIMEOUT)
        auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"),
                           timeout=CHECK_TIMEOUT)
        auth.AuthEnable(rpc_pb2.AuthEnableRequest(), timeout=CHECK_TIMEOUT)
        self.no_roles_token = auth.Authenticate(rpc_pb2.AuthenticateRequest(
            name=NO_ROLES_USER, password=PASSWORD), timeout=CHECK_TIMEOUT).token

    def scope(self) -> Scope:
        return Scope(self.own, frozenset(m.id for m in self.baseline_members))

    def _ch(self) -> grpc.Channel:
        assert self.channel is not None, "not started"
        return self.channel

    def _etcd_kv(self) -> rpc_pb2_grpc.KVStub:
        return rpc_pb2_grpc.KVStub(self._ch())

    def _wait_writable(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._etcd_kv().Put(rpc_pb2.PutRequest(key=b"/sentinel/ready", value=b"1"),
                                    timeout=5)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _seed_sentinels(self) -> None:
        kv = self._etcd_kv()
        for key, value in sentinel_keys(self.own.encode(), self.canary_prefix.encode()).items():
            resp = kv.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=CHECK_TIMEOUT)
            self.cluster_id = resp.header.cluster_id
            self.member_id = resp.header.member_id

    def _wait_members_published(self, timeout: float = 30.0) -> tuple[MemberRow, ...]:
        # The node publishes its client address through Raft shortly after it starts: take the
        # baseline once it has, so that publishing is not mistaken for a change.
        deadline = time.monotonic() + timeout
        while True:
            members = self.members()
            if all(m.client_urls for m in members) or time.monotonic() > deadline:
                return members
            time.sleep(0.1)

    # -- observations ----------------------------------------------------------------------------
    def owns(self, key: bytes) -> bool:
        """Keys the fuzzer may change: under its own prefix or its canary prefix (none when
        its identity must be refused everything)."""
        return not self.denied and any(key == p or key.startswith(p + b"/")
                   for p in (self.own.encode(), self.canary_prefix.encode()))

    def store_outside(self) -> dict[bytes, tuple[bytes, int, int, int, int]]:
        """Every key outside the fuzzer's prefixes: value, create/mod revision, version, lease."""
        # Serializable: a local read, answered even by a node that lost its quorum, so that the
        # check says what changed rather than that it cannot tell.
        resp = self._etcd_kv().Range(
            rpc_pb2.RangeRequest(key=b"\x00", range_end=b"\x00", serializable=True),
            timeout=CHECK_TIMEOUT)
        return {kv.key: (kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
                for kv in resp.kvs if not self.owns(kv.key)}

    def revision(self) -> int:
        """The store's revision (a local read, like :meth:`store_outside`)."""
        resp = self._etcd_kv().Range(rpc_pb2.RangeRequest(key=b"/", serializable=True,
                                                          count_only=True),
                                     timeout=CHECK_TIMEOUT)
        return int(resp.header.revision)

    def members(self) -> tuple[MemberRow, ...]:
        resp = rpc_pb2_grpc.ClusterStub(self._ch()).MemberList(rpc_pb2.MemberListRequest(),
                                                               timeout=CHECK_TIMEOUT)
        return tuple(sorted(MemberRow(m.ID, m.name, tuple(m.peerURLs), tuple(m.clientURLs),
                                      m.isLearner) for m in resp.members))

    def status(self) -> kv_pb2.StatusResponse:
        resp: kv_pb2.StatusResponse = kv_pb2_grpc.ClusterStub(self._ch()).Status(
            kv_pb2.StatusRequest(), timeout=CHECK_TIMEOUT)
        return resp

    def rss_bytes(self) -> int | None:
        """The node's resident memory (Linux), for the report."""
        try:
            for line in Path(f"/proc/{self.node.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError):
            pass
        return None

    # -- checks ----------------------------------------------------------------------------------
    def canary(self) -> list[Problem]:
        """A valid write and read through each API: both must be answered, and read back.
        When the fuzzer's traffic must change nothing, reads only (of sentinel keys), so that
        the revision stays where it was."""
        if self.denied:
            return self._read_canary()
        self._canary_count += 1
        n = str(self._canary_count).encode()
        etcd_key = f"{self.canary_prefix}/etcd".encode()
        native_path = f"{self.canary_prefix}/native"
        try:
            kv = self._etcd_kv()
            kv.Put(rpc_pb2.PutRequest(key=etcd_key, value=n), timeout=CHECK_TIMEOUT)
            got = kv.Range(rpc_pb2.RangeRequest(key=etcd_key), timeout=CHECK_TIMEOUT)
            native = kv_pb2_grpc.KVStub(self._ch())
            native.Put(kv_pb2.PutRequest(path=native_path, value=n), timeout=CHECK_TIMEOUT)
            got_n = native.Range(kv_pb2.RangeRequest(path=native_path), timeout=CHECK_TIMEOUT)
        except grpc.RpcError as e:
            return [Problem("canary", f"{e.code().name}: {e.details()}")]
        seen = ([x.value for x in got.kvs], [x.value for x in got_n.kvs])
        if seen != ([n], [n]):
            return [Problem("canary", f"wrote {n!r} through both APIs, read back {seen!r}")]
        return []

    def _read_canary(self) -> list[Problem]:
        try:
            got = self._etcd_kv().Range(rpc_pb2.RangeRequest(key=b"/sentinel/a"),
                                        timeout=CHECK_TIMEOUT)
            got_n = kv_pb2_grpc.KVStub(self._ch()).Range(
                kv_pb2.RangeRequest(path="/sentinel/b/c"), timeout=CHECK_TIMEOUT)
        except grpc.RpcError as e:
            return [Problem("canary", f"{e.code().name}: {e.details()}")]
        seen = ([x.value for x in got.kvs], [x.value for x in got_n.kvs])
        if seen != ([b"1"], [b"2"]):
            return [Problem("canary", f"read the sentinels /sentinel/a and /sentinel/b/c "
                                      f"through both APIs: {seen!r}, not ([b'1'], [b'2'])")]
        return []

    def health(self) -> list[Problem]:
        """The process is alive and gRPC health says SERVING."""
        if not self.node.alive():
            code = self.node.proc.returncode if self.node.proc else None
            return [Problem("health", f"node process exited with {code}")]
        try:
            stub: Any = health_pb2_grpc.HealthStub(self._ch())  # untyped stubs
            resp = stub.Check(health_pb2.HealthCheckRequest(), timeout=CHECK_TIMEOUT)
        except grpc.RpcError as e:
            return [Problem("health", f"health check failed: {e.code().name}: {e.details()}")]
        if resp.status != health_pb2.HealthCheckResponse.SERVING:
            return [Problem("health", f"health says {resp.status}")]
        return []

    def log_problems(self) -> list[Problem]:
        """Tracebacks and ERROR lines the node logged since the last call (bounded)."""
        path = self.node.log_path
        if path is None or not path.exists():
            return []
        with open(path, "rb") as f:
            f.seek(self._log_offset)
            text = f.read().decode(errors="replace")
            self._log_offset = f.tell()
        lines = [line for line in text.splitlines() if LOG_PROBLEM.search(line)]
        return [Problem("log", line[:300]) for line in lines[:MAX_LOG_PROBLEMS]]

    def state(self, *, peer_phase: bool = False) -> list[Problem]:
        """The store outside the fuzzer's prefixes and the membership are as they were; after
        peer traffic from a non-member, so is the Raft term and this node still leads."""
        try:
            status = self.status()  # all three are local reads
            members = self.members()
            store = self.store_outside()
            revision = self.revision() if self.denied else self.baseline_revision
        except grpc.RpcError as e:
            return [Problem("state", f"cannot read the state: {e.code().name}: {e.details()}")]
        problems = []
        if store != self.baseline_store:
            problems.append(Problem("store", _store_diff(self.baseline_store, store)))
        if revision != self.baseline_revision:
            problems.append(Problem("store", f"the revision moved from "
                                             f"{self.baseline_revision} to {revision}"))
        if members != self.baseline_members:
            gone = sorted(set(self.baseline_members) - set(members))
            new = sorted(set(members) - set(self.baseline_members))
            problems.append(Problem("membership", f"removed or changed {gone!r}, now {new!r}"))
        if peer_phase and (status.raft_term != self.term or status.leader_id != self.member_id):
            problems.append(Problem(
                "term", f"term {self.term} -> {status.raft_term}, leader {self.member_id} -> "
                        f"{status.leader_id}, role {status.role}"))
        return problems

    def rebaseline(self) -> None:
        """Take the current state as the one to compare with: after a change was reported, so
        that the next report names the next change (and the call that made it)."""
        with contextlib.suppress(grpc.RpcError):
            self.term = self.status().raft_term
            self.baseline_store = self.store_outside()
            self.baseline_revision = self.revision()
            self.baseline_members = self.members()

    def check(self, *, peer_phase: bool = False) -> list[Problem]:
        """Everything: health, canary, state, log."""
        problems = self.health()
        if not problems:
            problems += self.canary()
            problems += self.state(peer_phase=peer_phase)
        return problems + self.log_problems()


def _store_diff(before: dict[bytes, tuple[bytes, int, int, int, int]],
                after: dict[bytes, tuple[bytes, int, int, int, int]], limit: int = 5) -> str:
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    parts = [f"{k[:80]!r}: {_short(before.get(k))} -> {_short(after.get(k))}"
             for k in changed[:limit]]
    more = f" (+{len(changed) - limit} more)" if len(changed) > limit else ""
    return f"{len(changed)} keys outside the fuzzer's prefixes changed: " + "; ".join(parts) + more


def _short(entry: tuple[bytes, int, int, int, int] | None) -> str:
    if entry is None:
        return "absent"
    value, _create, mod, version, lease = entry
    return f"{value[:40]!r}@mod{mod}/v{version}" + (f"/lease{lease}" if lease else "")
