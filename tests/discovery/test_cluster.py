"""Service discovery on real 3-node clusters of `confer serve` processes, each member with its
DNS interface on: registrants (`confer service register` processes, or clients in this
process) check their instances over HTTP, TCP and gRPC, and what the catalog, the healthy-set
watch and every member's DNS (asked with Debian's `dig`) say follows the checks, through a
leader kill and a registrant's kill -9.

Checks run every 0.2 s. The waits are generous (the machine may be loaded); the time each
change took to show in the watch, in one member's DNS and everywhere is printed (``-s``),
not asserted.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import queue
import random
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.name
import dns.query
import pytest

import confer
import confer.aio
from confer import Check, HealthStatus
from confer.catalog import Record, encode
from testing import ProcessCluster
from testing.procs import free_port
from tests.cli.test_cli_coordination import Background
from tests.discovery.helpers import (
    StatusServer,
    client_files,
    grpc_health_server,
    grpc_mutual_tls,
    server_tls,
)

INTERVAL = "0.2s"
TTL = 2
WAIT = 30.0
"""Seconds any change may take to show (generous: CI machines are shared)."""


def dns_cluster(base: Path) -> tuple[ProcessCluster, dict[int, int]]:
    """A 3-node cluster (not started) whose members serve DNS on ports of their own."""
    cluster = ProcessCluster(3, base, tick_ms=50)
    ports = {}
    for i, node in cluster.nodes.items():
        ports[i] = free_port()
        node.args += ["--listen-dns", f"127.0.0.1:{ports[i]}"]
    return cluster, ports


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[ProcessCluster, dict[int, int]]]:
    """A cluster for the tests that kill nothing (they use distinct service names)."""
    cluster, ports = dns_cluster(tmp_path_factory.mktemp("discovery"))
    with cluster:
        cluster.leader()
        yield cluster, ports


def dig(port: int, name: str, rdtype: str = "A", *, tcp: bool = False) -> list[str]:
    """`dig +short` of ``name`` at a member's DNS: the answer's records, sorted (empty for a
    negative answer or no answer)."""
    args = ["dig", "@127.0.0.1", "-p", str(port), "+short", "+tries=1", "+time=3",
            *(["+tcp"] if tcp else []), name, rdtype]
    out = subprocess.run(args, capture_output=True, text=True, timeout=20).stdout
    return sorted(line for line in out.splitlines() if line and not line.startswith(";"))


def wait_until(what: str, check: Callable[[], object], timeout: float = WAIT) -> float:
    """Poll ``check()`` until it returns something true; return the seconds it took."""
    start = time.monotonic()
    last: object = None
    while time.monotonic() - start < timeout:
        try:
            last = check()
        except (confer.ConferError, dns.exception.Timeout) as e:  # failing over: again
            last = e
        if last and not isinstance(last, Exception):
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def register(service: str, instance: str, address: str, check_url: str, endpoints: str
             ) -> Background:
    """A `confer service register` process checking ``check_url`` every 0.2 s."""
    proc = Background("service", "register", service, instance, address, "--check-http",
                      check_url, "--interval", INTERVAL, "--check-timeout", "1s", "--ttl",
                      str(TTL), endpoints=endpoints)
    proc.wait_line("registered", timeout=WAIT)
    return proc


class Everywhere:
    """What every view of one service says: the catalog (discover, healthy only), the latest
    set a healthy-set watch delivered, and the DNS of each live member (A and SRV)."""

    def __init__(self, client: confer.Client, cluster: ProcessCluster, dns_ports: dict[int, int],
                 service: str, addresses: dict[str, str]) -> None:
        self.client, self.cluster, self.dns_ports = client, cluster, dns_ports
        self.service, self.addresses = service, addresses
        self.sets: queue.Queue[tuple[float, set[str]]] = queue.Queue()
        self.latest: set[str] | None = None
        self.since = 0.0
        """When the watch delivered the latest set."""
        self.watch = client.watch_healthy(service, callback=lambda instances: self.sets.put(
            (time.monotonic(), {i.id for i in instances})))

    def watched(self) -> set[str] | None:
        while not self.sets.empty():
            self.since, self.latest = self.sets.get()
        return self.latest

    def views(self) -> dict[str, object]:
        views: dict[str, object] = {
            "discover": {i.id for i in self.client.discover(self.service, healthy_only=True)},
            "watch": self.watched()}
        for node_id, port in self.dns_ports.items():
            if self.cluster.nodes[node_id].alive():
                views[f"A@{node_id}"] = dig(port, f"{self.service}.service.confer")
                views[f"SRV@{node_id}"] = dig(port, f"_{self.service}._tcp.service.confer",
                                              "SRV")
        return views

    def expected(self, ids: set[str]) -> dict[str, object]:
        hosts = [self.addresses[i].rpartition(":") for i in sorted(ids)]
        out: dict[str, object] = {"discover": ids, "watch": ids}
        for node_id in self.dns_ports:
            if self.cluster.nodes[node_id].alive():
                out[f"A@{node_id}"] = sorted(host for host, _, _ in hosts)
                out[f"SRV@{node_id}"] = sorted(
                    f"1 1 {port} {bytes(map(int, host.split('.'))).hex()}.addr.confer."
                    for host, _, port in hosts)
        return out

    def converge(self, ids: set[str], why: str) -> None:
        start = time.monotonic()
        node_id, port = next((i, p) for i, p in self.dns_ports.items()
                             if self.cluster.nodes[i].alive())
        wanted = self.expected(ids)[f"A@{node_id}"]
        in_dns = wait_until(f"{why}: {wanted} from member {node_id}'s DNS",
                            lambda: _addresses(port, self.service) == wanted)
        took = wait_until(f"{why}: the healthy set {sorted(ids)} everywhere",
                          lambda: self.views() == self.expected(ids))
        print(f"{why}: healthy set {sorted(ids)} in the watch after "
              f"{max(0.0, self.since - start):.2f}s, in member {node_id}'s DNS after "
              f"{in_dns:.2f}s, everywhere (each member's DNS asked with dig) after "
              f"{took + in_dns:.2f}s")


def _addresses(port: int, service: str) -> list[str]:
    """The A records of ``service`` at a member's DNS, asked in process (quicker than dig,
    to time a change)."""
    query = dns.message.make_query(f"{service}.service.confer", "A")
    answer = dns.query.udp(query, "127.0.0.1", port=port, timeout=2)
    return sorted(str(rd) for rrset in answer.answer for rd in rrset)


def test_http_health_drives_the_catalog_the_watch_and_dns_through_a_leader_kill(
        tmp_path: Path, web: StatusServer) -> None:
    cluster, dns_ports = dns_cluster(tmp_path)
    addresses = {"a1": "127.0.0.11:8001", "a2": "127.0.0.12:8002"}
    with cluster:
        cluster.leader()
        endpoints = ",".join(cluster.endpoints)
        registrants = {i: register("api", i, address, web.url(f"/{i}"), endpoints)
                       for i, address in addresses.items()}
        try:
            with confer.Client(cluster.endpoints) as c:
                views = Everywhere(c, cluster, dns_ports, "api", addresses)
                views.converge({"a1", "a2"}, "registered")
                web.codes["/a2"] = 503
                views.converge({"a1"}, "a2's health endpoint fails")
                registrants["a2"].wait_line("critical: HTTP 503 Service Unavailable")
                a2 = next(i for i in c.discover("api") if i.id == "a2")
                assert (a2.status, a2.output) == (HealthStatus.CRITICAL,
                                                  "HTTP 503 Service Unavailable")
                web.codes["/a2"] = 200
                views.converge({"a1", "a2"}, "a2 recovers")

                leader = cluster.leader()
                cluster.nodes[leader].kill()
                cluster.leader(among=[i for i in cluster.nodes if i != leader])
                views.converge({"a1", "a2"}, f"leader {leader} killed")
                web.codes["/a1"] = 500
                views.converge({"a2"}, "a1 fails, after the leader kill")
                web.codes["/a1"] = 200
                views.converge({"a1", "a2"}, "a1 recovers, after the leader kill")

                os.kill(registrants["a2"].proc.pid, signal.SIGKILL)
                took = wait_until("a2 gone from the catalog after its registrant's kill -9",
                                  lambda: {i.id for i in c.discover("api")} == {"a1"})
                print(f"kill -9 of a2's registrant: its instance gone after {took:.2f}s "
                      f"(lease TTL {TTL}s)")
                views.converge({"a1"}, "a2's registrant killed")
                views.watch.cancel()
        finally:
            for proc in registrants.values():
                proc.kill()


def test_asyncio_registrations_with_tcp_and_grpc_checks_tags_and_the_healthy_watch(
        shared: tuple[ProcessCluster, dict[int, int]]) -> None:
    cluster, dns_ports = shared
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    tcp_target = f"127.0.0.1:{listening.getsockname()[1]}"
    grpc_server, grpc_port, health = grpc_health_server()
    health.set("svc", _SERVING)

    async def main() -> None:
        async with confer.aio.Client(cluster.endpoints) as c:
            sets: asyncio.Queue[list[confer.Instance]] = asyncio.Queue()
            watch = c.watch_healthy("aio-svc", tags=["blue"], callback=sets.put)
            assert await asyncio.wait_for(sets.get(), WAIT) == []  # the current set first
            tcp_check = Check.tcp(tcp_target, interval=0.2, timeout=1)
            grpc_check = Check.grpc(f"127.0.0.1:{grpc_port}", "svc", interval=0.2, timeout=1)
            async with c.register("aio-svc", "t1", "127.0.0.21:1", ttl=TTL, tags=["blue"],
                                  check=tcp_check) as tcp_reg, \
                    c.register("aio-svc", "g1", "127.0.0.22:2", ttl=TTL,
                               tags=["blue", "grpc"], check=grpc_check) as grpc_reg:
                assert tcp_reg.status is HealthStatus.PASSING
                assert grpc_reg.status is HealthStatus.PASSING
                await _next_set(sets, {"t1", "g1"})
                only = await c.discover("aio-svc", healthy_only=True, tags=["grpc"])
                assert [i.id for i in only] == ["g1"] and only[0].tags == ("blue", "grpc")
                heard: list[tuple[HealthStatus, str]] = []
                grpc_reg.on_status(lambda i: heard.append((i.status, i.output)))
                health.set("svc", _NOT_SERVING)
                await _next_set(sets, {"t1"})
                for _ in range(int(WAIT * 10)):  # the callback runs in the checks' task
                    if heard:
                        break
                    await asyncio.sleep(0.1)
                assert heard == [(HealthStatus.CRITICAL,
                                  f"gRPC health 127.0.0.1:{grpc_port}: NOT_SERVING")]
                assert grpc_reg.status is HealthStatus.CRITICAL
                port = dns_ports[1]
                assert await asyncio.to_thread(dig, port, "aio-svc.service.confer") == [
                    "127.0.0.21"]
                assert await asyncio.to_thread(dig, port, "grpc.aio-svc.service.confer") == []
                listening.close()  # the TCP check now fails
                await _next_set(sets, set())
                health.set("svc", _SERVING)
                await _next_set(sets, {"g1"})
                assert await asyncio.to_thread(dig, port, "grpc.aio-svc.service.confer",
                                               tcp=True) == ["127.0.0.22"]
            await _next_set(sets, set())  # both deregistered on exit
            watch.cancel()

    try:
        asyncio.run(main())
    finally:
        listening.close()
        grpc_server.stop(None)


async def _next_set(sets: asyncio.Queue[list[confer.Instance]], ids: set[str]) -> None:
    """Read healthy sets until one is ``ids``; each differs from the one before (the watch
    yields changes of the set, not every write)."""
    deadline = time.monotonic() + WAIT
    seen: list[set[str]] = []
    while not seen or seen[-1] != ids:
        got = await asyncio.wait_for(sets.get(), max(0.1, deadline - time.monotonic()))
        seen.append({i.id for i in got})
    assert all(a != b for a, b in itertools.pairwise(seen)), seen


_SERVING, _NOT_SERVING = 1, 2  # grpc.health.v1 ServingStatus


def test_fuzzed_dns_queries_leave_a_members_dns_answering(
        shared: tuple[ProcessCluster, dict[int, int]], web: StatusServer) -> None:
    cluster, dns_ports = shared
    endpoints = ",".join(cluster.endpoints)
    registrant = register("fuzz", "f1", "127.0.0.31:31", web.url("/f1"), endpoints)
    port = dns_ports[2]
    rng = random.Random(2017)
    try:
        wait_until("f1 in DNS", lambda: dig(port, "fuzz.service.confer") == ["127.0.0.31"])
        query = bytes.fromhex("abcd01000001000000000000") + b"".join(
            bytes([len(label)]) + label for label in (b"fuzz", b"service", b"confer")
        ) + b"\x00\x00\x01\x00\x01"
        huge = bytes.fromhex("abcd01000001000000000000") + (b"\x3f" + b"a" * 63) * 8 + \
            b"\x00\x00\x01\x00\x01"  # a name of 520 bytes: past DNS's 255
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for n in range(400):
                kind = n % 4
                if kind == 0:
                    wire = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 600)))
                elif kind == 1:
                    wire = query[:rng.randrange(0, len(query))]  # truncated
                elif kind == 2:
                    flipped = bytearray(query)
                    flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
                    wire = bytes(flipped)
                else:
                    wire = huge[:rng.randrange(12, len(huge) + 1)]
                udp.sendto(wire, ("127.0.0.1", port))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as tcp:
            tcp.sendall(struct.pack("!H", len(huge)) + huge + struct.pack("!H", 3) + b"xyz")
            tcp.settimeout(5)
            size = struct.unpack("!H", tcp.recv(2))[0]
            assert size >= 12  # an answer (FORMERR) to the huge name, then a close
        assert dig(port, "fuzz.service.confer") == ["127.0.0.31"]
        assert dig(port, "fuzz.service.confer", tcp=True) == ["127.0.0.31"]
        assert cluster.nodes[2].alive()
        # Keys deeper than an instance are not instances; a service named in UTF-8 answers.
        with confer.Client(cluster.endpoints) as c:
            c.put("/services/fuzz/f1/deeper", "127.0.0.32:32")
            c.put("/services/caf\u00e9/c1", "127.0.0.33:33")
        assert dig(port, "fuzz.service.confer") == ["127.0.0.31"]
        cafe = dns.message.make_query(dns.name.Name([b"caf\xc3\xa9", b"service", b"confer",
                                                     b""]), "A")
        answer = dns.query.udp(cafe, "127.0.0.1", port=port, timeout=5)
        assert [str(rd) for rrset in answer.answer for rd in rrset] == ["127.0.0.33"]
    finally:
        registrant.kill()


def test_the_cli_health_table_and_healthy_listing(shared: tuple[ProcessCluster, dict[int, int]],
                                                  web: StatusServer) -> None:
    cluster, _ = shared
    endpoints = ",".join(cluster.endpoints)
    web.codes["/h2"] = 503
    registrants = [register("cli-h", "h1", "127.0.0.41:41", web.url("/h1"), endpoints),
                   register("cli-h", "h2", "127.0.0.42:42", web.url("/h2"), endpoints)]
    env = {**os.environ, "CONFER_ENDPOINTS": endpoints}
    try:
        def cli(*args: str) -> str:
            r = subprocess.run([sys.executable, "-m", "confer", "service", *args],
                               capture_output=True, text=True, env=env, timeout=60)
            assert r.returncode == 0, r.stderr
            return r.stdout

        table = cli("health", "cli-h").splitlines()
        assert table[0].split() == ["INSTANCE", "ADDRESS", "STATUS", "WEIGHT", "CHECK",
                                    "OUTPUT"]
        rows = {line.split()[0]: line.split() for line in table[2:]}
        assert rows["h1"][1:5] == ["127.0.0.41:41", "passing", "1", "http"]
        assert rows["h2"][2] == "critical" and rows["h2"][-3:] == ["503", "Service",
                                                                   "Unavailable"]
        healthy = cli("list", "cli-h", "--healthy").splitlines()[2:]
        assert [line.split()[0] for line in healthy] == ["h1"]
        # Without INSTANCE, the address is the instance's id.
        registrants.append(Background("service", "register", "cli-h", "127.0.0.43:43",
                                      endpoints=endpoints))
        registrants[-1].wait_line("registered", timeout=WAIT)
        assert "127.0.0.43:43" in cli("list", "cli-h").split()
        watched = cli("watch", "cli-h", "--healthy", "--count", "1")
        assert watched.strip() == "healthy: 127.0.0.43:43=127.0.0.43:43 h1=127.0.0.41:41"
    finally:
        for proc in registrants:
            proc.kill()


def test_the_cli_checks_https_and_grpc_over_tls_with_its_own_ca_and_client_certificate(
        shared: tuple[ProcessCluster, dict[int, int]], certs: Path, stranger: Path) -> None:
    """`confer service register` with --check-cacert/--check-cert/--check-key checks an
    HTTPS server and (--check-tls) a gRPC server that both require a client certificate of
    the certs fixture's CA: passing; the stranger's client certificate: critical."""
    cluster, _ = shared
    endpoints = ",".join(cluster.endpoints)
    web = StatusServer(server_tls(certs, client_auth=True))
    grpc_server, grpc_port, health = grpc_health_server(grpc_mutual_tls(certs))
    health.set("", _SERVING)
    targets = [["--check-http", web.url("/health")],
               ["--check-grpc", f"127.0.0.1:{grpc_port}", "--check-tls"]]
    registrants: list[Background] = []
    try:
        for n, (target, files) in enumerate(itertools.product(targets, (certs, stranger))):
            tls = ["--check-cacert", str(certs / "ca.pem"), "--check-cert",
                   client_files(files)["cert"], "--check-key", client_files(files)["key"]]
            registrants.append(Background(
                "service", "register", "cli-tls", f"t{n}", f"127.0.0.5{n}:80", *target,
                *tls, "--interval", INTERVAL, "--check-timeout", "5s", endpoints=endpoints))
        statuses = [proc.wait_line("registered", timeout=WAIT).rpartition(", ")[2]
                    for proc in registrants]
        assert statuses == ["passing); Ctrl-C to deregister",
                            "critical); Ctrl-C to deregister"] * 2
        with confer.Client(cluster.endpoints) as c:
            assert {i.id for i in c.discover("cli-tls", healthy_only=True)} == {"t0", "t2"}
    finally:
        for proc in registrants:
            proc.kill()
        grpc_server.stop(None)
        web.close()


def test_flapping_is_damped_and_a_steady_service_costs_no_writes(
        shared: tuple[ProcessCluster, dict[int, int]], web: StatusServer) -> None:
    cluster, _ = shared
    with confer.Client(cluster.endpoints) as c:
        check = Check.http(web.url("/flap"), interval=0.1, timeout=1, threshold=2)
        with c.register("flappy", "f1", "127.0.0.51:51", ttl=TTL, check=check) as reg:
            steady = c.discover("flappy")
            assert [(i.status, i.revision) for i in steady] == [
                (HealthStatus.PASSING, reg.instance.revision)]
            web.flapping.add("/flap")  # 503, 200, 503...: never two failures in a row
            start = web.hits["/flap"]
            wait_until("20 probes of the flapping endpoint",
                       lambda: web.hits["/flap"] >= start + 20)
            # Neither the status nor the record changed: not one write.
            assert c.discover("flappy") == steady and reg.status is HealthStatus.PASSING
            web.flapping.discard("/flap")
            web.codes["/flap"] = 503  # two failures in a row now: critical
            wait_until("f1 critical", lambda: [i.status for i in c.discover("flappy")] == [
                HealthStatus.CRITICAL])
            assert reg.status is HealthStatus.CRITICAL
        assert c.discover("flappy") == []  # deregistered on exit


def test_bad_service_options_are_refused_with_one_line() -> None:
    for args, words in [(["--check-http", "ftp://x/"], "http:// or https://"),
                        (["--check-tcp", "no-port"], "HOST:PORT"),
                        (["--check-tcp", "h:1", "--check-http", "http://h/"], "one of"),
                        (["--interval", "0s", "--check-tcp", "h:1"], "not a duration"),
                        (["--weight", "70000"], "70000"),
                        (["--check-cacert", "ca.pem"], "go with"),
                        (["--check-grpc", "h:1", "--check-tls", "--check-cacert",
                          "/no/ca.pem"], "/no/ca.pem")]:
        r = subprocess.run([sys.executable, "-m", "confer", "service", "register", "api",
                            "10.0.0.1:80", *args, "--endpoints", "127.0.0.1:1"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, (args, r.stderr)
        assert words in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def dig_status(port: int, name: str, rdtype: str = "A") -> tuple[str, list[str]]:
    """`dig` of ``name`` at a member's DNS: the status it reports (NOERROR, REFUSED...) and
    the answer section's records (name, type and data; the TTL left out)."""
    args = ["dig", "@127.0.0.1", "-p", str(port), "+tries=1", "+time=3", "+noall",
            "+comments", "+answer", name, rdtype]
    out = subprocess.run(args, capture_output=True, text=True, timeout=20).stdout
    status = next((line.split("status: ")[1].split(",")[0] for line in out.splitlines()
                   if "status: " in line), "(none)")
    answer = sorted(" ".join(fields[:1] + fields[3:]) for fields in
                    (line.split() for line in out.splitlines()
                     if line and not line.startswith(";")))
    return status, answer


def test_dns_with_authentication_reads_as_the_dns_user(tmp_path: Path) -> None:
    """With authentication on, a member's DNS reads the catalog with the permissions of its
    --dns-user: member 1's user may read /services/ and answers (addresses, and a CNAME for
    an instance registered with a host name); member 2's user has no permission and member 3
    names none (anonymous): both REFUSED."""
    cluster, dns_ports = dns_cluster(tmp_path)
    for node_id, user in ((1, "dns"), (2, "nobody")):
        cluster.nodes[node_id].args += ["--dns-user", user]
    for node in cluster.nodes.values():
        node.args += ["--bcrypt-cost", "4"]
    with cluster:
        cluster.leader()
        with confer.Client(cluster.endpoints, user="root", password="rootpw") as root:
            root.user_add("root", "rootpw")
            root.user_grant_role("root", "root")
            root.role_add("dns-reader")
            root.role_grant_permission("dns-reader", "read", "/services/", prefix=True)
            root.user_add("dns", no_password=True)
            root.user_grant_role("dns", "dns-reader")
            root.user_add("nobody", no_password=True)
            root.put("/services/api/a1", encode(Record("10.0.0.7:80")))
            root.put("/services/db/d1", encode(Record("db.internal:5432")))
            root.auth_enable()
        port1, port2, port3 = (dns_ports[i] for i in (1, 2, 3))
        wait_until("member 1's DNS to answer as its --dns-user",
                   lambda: dig_status(port1, "api.service.confer") ==
                   ("NOERROR", ["api.service.confer. A 10.0.0.7"]))
        assert dig_status(port1, "db.service.confer") == (
            "NOERROR", ["db.service.confer. CNAME db.internal."])
        assert dig_status(port1, "_db._tcp.service.confer", "SRV") == (
            "NOERROR", ["_db._tcp.service.confer. SRV 1 1 5432 db.internal."])
        for port in (port2, port3):
            wait_until(f"the DNS on port {port} to refuse",
                       lambda port=port: dig_status(port, "api.service.confer")[0] ==
                       "REFUSED")
