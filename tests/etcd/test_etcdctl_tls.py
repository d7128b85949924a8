"""A 3-node Confer cluster with mTLS on the client and the peer ports (the certificates of
`confer tls init`), driven by the real ``etcdctl --cacert --cert --key``, the `confer` CLI and
raw gRPC: trusted clients work, plaintext and untrusted clients are refused, a process with a
certificate of the cluster's CA but not a peer's common name cannot talk Raft, and a new
member joins over TLS."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import msgpack
import pytest

from confer.cli.dev import client_credentials
from confer.cli.tls import PEER_CN, client_flags, issue, load_ca, server_flags
from confer.raft.types import Message, MessageType
from confer.server.codec import encode_messages
from confer.v1 import peer_pb2
from testing import ProcessCluster

from .conftest import ETCDCTL, Etcdctl, kill, wait_until


@dataclass
class TlsEtcdctl(Etcdctl):
    """etcdctl with TLS flags before its arguments."""

    flags: list[str] = field(default_factory=list)

    def argv(self, *args: str, endpoints: list[str] | None = None) -> list[str]:
        return super().argv(*self.flags, *args, endpoints=endpoints)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, certs: Path) -> Iterator[ProcessCluster]:
    base = tmp_path_factory.mktemp("tls-cluster")
    with ProcessCluster(3, base, tick_ms=50, extra_args=server_flags(certs),
                        credentials=client_credentials(certs)) as c:
        c.leader()
        yield c


@pytest.fixture(scope="module")
def etcdctl(cluster: ProcessCluster, certs: Path) -> TlsEtcdctl:
    assert ETCDCTL, "etcdctl is not installed (apt-get install etcd-client): required"
    ctl = TlsEtcdctl(["https://" + e for e in cluster.endpoints], flags=client_flags(certs))
    wait_until(lambda: "https://" + cluster.endpoints[-1] in ctl.run("member", "list"), 20,
               "client URLs in the member list")
    return ctl


def follower(cluster: ProcessCluster) -> str:
    leader = cluster.leader()
    return next(n.client_addr for i, n in cluster.nodes.items() if i != leader)


def test_etcdctl_over_mtls(etcdctl: TlsEtcdctl, cluster: ProcessCluster,
                           tmp_path: Path) -> None:
    assert etcdctl.run("put", "/tls/a", "1").strip() == "OK"
    assert etcdctl.run("get", "/tls/a").split() == ["/tls/a", "1"]
    out = etcdctl.run("txn", "-i", stdin='value("/tls/a") = "1"\n\nput /tls/a 2\n\n\n')
    assert "SUCCESS" in out
    lease = re.match(r"lease ([0-9a-f]+) granted", etcdctl.run("lease", "grant", "30"))
    assert lease, "no lease granted"
    etcdctl.run("put", "/tls/l", "v", f"--lease={lease.group(1)}")
    # Through a follower: TimeToLive is the leader's, forwarded over the peer port's TLS.
    ttl = etcdctl.run("lease", "timetolive", "--keys", lease.group(1),
                      endpoints=["https://" + follower(cluster)])
    assert "attached keys([/tls/l])" in ttl
    members = etcdctl.run("member", "list", "-w", "json")
    urls = [u for m in json.loads(members)["members"] for u in m["peerURLs"] + m["clientURLs"]]
    assert len(urls) == 6 and all(u.startswith("https://127.0.0.1:") for u in urls)
    assert etcdctl.run("lock", "tls-lock", "--", sys.executable, "-c",
                       "print('locked')").strip() == "locked"
    out_file = tmp_path / "watch.txt"
    watch = etcdctl.start("watch", "/tls/w", out=out_file)
    try:
        def one_event() -> bool:
            etcdctl.run("put", "/tls/w", "x")
            return "PUT" in out_file.read_text()
        wait_until(one_event, 15, "a watch event over TLS")
        assert out_file.read_text().split()[:3] == ["PUT", "/tls/w", "x"]
    finally:
        kill(watch)


def test_plaintext_and_untrusted_clients_are_refused(etcdctl: TlsEtcdctl,
                                                     cluster: ProcessCluster,
                                                     stranger: Path, certs: Path) -> None:
    etcdctl.run("put", "/tls/guarded", "before")
    plain = Etcdctl(cluster.endpoints)
    assert "context deadline exceeded" in plain.run("put", "/tls/guarded", "plain",
                                                    "--command-timeout=2s", check=False)
    untrusted = TlsEtcdctl(etcdctl.endpoints, flags=[
        "--cacert", str(certs / "ca.pem"), "--cert", str(stranger / "client.pem"),
        "--key", str(stranger / "client-key.pem")])
    out = untrusted.run("put", "/tls/guarded", "untrusted", "--command-timeout=2s",
                        check=False)
    assert "OK" not in out
    assert etcdctl.run("get", "/tls/guarded", "--print-value-only").strip() == "before"


def confer_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFER_")}
    return subprocess.run([sys.executable, "-m", "confer", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def test_confer_cli_over_mtls_and_its_one_line_refusals(cluster: ProcessCluster,
                                                        certs: Path, stranger: Path) -> None:
    eps = ",".join(cluster.endpoints)
    ok = confer_cli("put", "/tls/cli", "1", "--endpoints", eps, *client_flags(certs))
    assert ok.returncode == 0, ok.stderr
    plain = confer_cli("put", "/tls/cli", "2", "--endpoints", eps, "--timeout", "1")
    assert plain.returncode == 3
    assert plain.stderr.splitlines() == [
        f"Error: {cluster.endpoints[0]} serves TLS: use https:// endpoints, with --cacert "
        "(and --cert, --key if it requires client certificates)"]
    untrusted = confer_cli("put", "/tls/cli", "3", "--endpoints", eps, "--timeout", "1",
                           "--cacert", str(certs / "ca.pem"), "--cert",
                           str(stranger / "client.pem"), "--key",
                           str(stranger / "client-key.pem"))
    assert untrusted.returncode == 3
    assert untrusted.stderr.splitlines() == [
        f"Error: TLS: {cluster.endpoints[0]} refused the connection: the client certificate "
        f"{stranger / 'client.pem'} is not signed by a CA it trusts"]
    got = confer_cli("get", "/tls/cli", "--endpoints",
                     ",".join("https://" + e for e in cluster.endpoints), *client_flags(certs))
    assert got.returncode == 0 and got.stdout.strip() == "1", got.stderr


def _status(cluster: ProcessCluster, node: int) -> tuple[int, int]:
    st = cluster.nodes[node].status(timeout=5)
    assert st is not None
    return st.leader_id, st.raft_term


async def _peer_call(addr: str, creds: grpc.ChannelCredentials, cluster_id: int,
                     leader: int, to: int) -> tuple[grpc.StatusCode, str]:
    """Pose as the leader on ``to``'s peer port: a Raft batch claiming a far higher term,
    then an internal Leader call; the first refusal's code and details."""
    batch = peer_pb2.RaftBatch(cluster_id=cluster_id, to=to, messages=encode_messages(
        [Message(MessageType.HEARTBEAT, to=to, frm=leader, term=1_000)]), **{"from": leader})
    async with grpc.aio.secure_channel(addr, creds) as ch:
        codes = []
        try:
            await ch.stream_unary("/confer.v1.Peer/Raft")(
                iter([batch.SerializeToString()]), timeout=10)
        except grpc.aio.AioRpcError as e:
            codes.append((e.code(), e.details() or ""))
        try:
            await ch.unary_unary("/confer.internal.Leader/Call")(
                msgpack.packb(["lease_ttl", [1, False]]), timeout=10,
                metadata=(("confer-member-id", str(leader)),
                          ("confer-cluster-id", str(cluster_id))))
        except grpc.aio.AioRpcError as e:
            codes.append((e.code(), e.details() or ""))
    assert len(codes) == 2, f"a call went through: {codes}"
    assert codes[0] == codes[1], codes
    return codes[0]


def test_a_peer_with_a_valid_certificate_but_not_a_peer_name_is_refused(
        etcdctl: TlsEtcdctl, cluster: ProcessCluster, certs: Path, stranger: Path,
        tmp_path: Path) -> None:
    header = json.loads(etcdctl.run("get", "/tls/a", "-w", "json"))["header"]
    leader = cluster.leader()
    victim = next(i for i in cluster.nodes if i != leader)
    before = _status(cluster, victim)
    intruder = issue(load_ca(certs), "intruder")
    creds = grpc.ssl_channel_credentials((certs / "ca.pem").read_bytes(), intruder.key_pem,
                                         intruder.cert_pem)
    code, details = asyncio.run(_peer_call(cluster.nodes[victim].peer_addr, creds,
                                           header["cluster_id"], leader, victim))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert details == ("the peer certificate's common name 'intruder' is not an allowed peer "
                       f"name ({PEER_CN})")
    # The right name, but a certificate that is not valid for the victim's leader's peer
    # address (--peer-cert-match-address): a member cannot pose as another.
    impostor = issue(load_ca(certs), PEER_CN, names=["elsewhere.example"])
    creds = grpc.ssl_channel_credentials((certs / "ca.pem").read_bytes(), impostor.key_pem,
                                         impostor.cert_pem)
    code, details = asyncio.run(_peer_call(cluster.nodes[victim].peer_addr, creds,
                                           header["cluster_id"], leader, victim))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert details == (f"the peer certificate is not valid for member {leader}'s peer address "
                       f"{cluster.nodes[leader].peer_addr} (its names: elsewhere.example)")
    # The right name from another CA does not even complete the handshake.
    creds = grpc.ssl_channel_credentials(
        (certs / "ca.pem").read_bytes(), (stranger / "peer-key.pem").read_bytes(),
        (stranger / "peer.pem").read_bytes())
    code, _ = asyncio.run(_peer_call(cluster.nodes[victim].peer_addr, creds,
                                     header["cluster_id"], leader, victim))
    assert code == grpc.StatusCode.UNAVAILABLE
    time.sleep(0.5)  # had the heartbeat of term 1000 been taken, the term would show it
    assert _status(cluster, victim) == before
    assert len(etcdctl.run("member", "list").splitlines()) == 3


def test_a_new_member_joins_over_tls(etcdctl: TlsEtcdctl, cluster: ProcessCluster) -> None:
    """--join dials the client port over TLS; the new member's promotion goes to the
    leader's peer port over TLS (last in this module: the cluster grows to 4)."""
    node = cluster.add_node(4)
    node.wait_ready(30)

    def voter() -> bool:
        members = json.loads(etcdctl.run("member", "list", "-w", "json"))["members"]
        return len(members) == 4 and not any(m.get("isLearner") for m in members)
    wait_until(voter, 40, "the joined member promoted")
    assert etcdctl.run("get", "/tls/a", "--print-value-only",
                       endpoints=["https://" + node.client_addr]).strip() == "2"
