"""The DNS resolver of the catalog, in process: what each name and type answers, the errors
(REFUSED, NXDOMAIN, FORMERR, NOTIMP, SERVFAIL), truncation, and a listener that survives
malformed messages over UDP and TCP. The real-cluster tests are in test_cluster.py."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import dns.asyncquery
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest

from confer.catalog import HealthStatus, Record, Weights
from confer.server.app import ConferServer
from confer.server.config import ConfigError, ServerConfig, load_config
from confer.server.dns_server import (
    DnsListener,
    Refused,
    Resolver,
    ServerFailure,
    catalog_lookup,
)

CATALOG = {
    "api": [Record("10.0.0.1:8001", ("v2",), weights=Weights(5, 1)),
            Record("10.0.0.2:8002", status=HealthStatus.WARNING, weights=Weights(5, 1)),
            Record("10.0.0.3:8003", status=HealthStatus.CRITICAL),
            Record("[fd00::4]:8004", ("v2",)),
            Record("db.internal:5432")],
    "down": [Record("10.0.0.9:9", status=HealthStatus.CRITICAL)],
    "big": [Record(f"10.1.{i // 250}.{i % 250}:80") for i in range(200)],
    "db": [Record("db.internal:5432"), Record("10.0.0.5:5432", status=HealthStatus.CRITICAL)],
    "web": [Record("web1.example.com:80"), Record("web2.example.com.:80"),
            Record("not..a.name:80")],
}


async def lookup(service: str) -> list[Record]:
    if service == "secret":
        raise Refused("permission denied")
    if service == "broken":
        raise ServerFailure("no leader")
    return CATALOG.get(service, [])


def ask(name: str, rdtype: str = "A", *, tcp: bool = False, **kw: object
        ) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    wire = asyncio.run(Resolver(lookup).answer(query.to_wire(), tcp))
    assert wire is not None
    return dns.message.from_wire(wire)


def records(msg: dns.message.Message, section: str = "answer") -> set[str]:
    return {f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rd}"
            for rrset in getattr(msg, section) for rd in rrset}


def test_a_and_aaaa_answer_the_healthy_ip_instances_only() -> None:
    a = ask("api.service.confer")
    assert a.rcode() == dns.rcode.NOERROR and a.flags & dns.flags.AA
    assert records(a) == {"api.service.confer. A 10.0.0.1", "api.service.confer. A 10.0.0.2"}
    assert all(rrset.ttl == 0 for rrset in a.answer)
    assert records(ask("api.service.confer", "AAAA")) == {"api.service.confer. AAAA fd00::4"}
    assert records(ask("v2.api.service.confer")) == {"v2.api.service.confer. A 10.0.0.1"}
    assert records(ask("API.Service.Confer")) == {"API.Service.Confer. A 10.0.0.1",
                                                  "API.Service.Confer. A 10.0.0.2"}


def test_srv_answers_with_ports_weights_and_address_targets() -> None:
    srv = ask("_api._tcp.service.confer", "SRV")
    assert records(srv) == {
        "_api._tcp.service.confer. SRV 1 5 8001 0a000001.addr.confer.",
        "_api._tcp.service.confer. SRV 1 1 8002 0a000002.addr.confer.",  # warning weight
        "_api._tcp.service.confer. SRV 1 1 8004 fd000000000000000000000000000004.addr.confer.",
        "_api._tcp.service.confer. SRV 1 1 5432 db.internal."}
    assert records(srv, "additional") == {
        "0a000001.addr.confer. A 10.0.0.1", "0a000002.addr.confer. A 10.0.0.2",
        "fd000000000000000000000000000004.addr.confer. AAAA fd00::4"}
    assert records(ask("0a000001.addr.confer")) == {"0a000001.addr.confer. A 10.0.0.1"}


def test_instances_with_host_names_answer_a_cname() -> None:
    """Nothing is resolved on the server: A and AAAA of a service whose healthy instances
    have host names, not IP addresses, answer a CNAME to one of them (one: a name holds a
    single CNAME), and the client's resolver follows it."""
    for rdtype in ("A", "AAAA", "CNAME"):
        msg = ask("db.service.confer", rdtype)
        assert msg.rcode() == dns.rcode.NOERROR, rdtype
        assert records(msg) == {"db.service.confer. CNAME db.internal."}, rdtype
    seen = set()
    for _ in range(50):  # each query picks one at random: both come up
        answer = ask("web.service.confer")
        assert len(answer.answer) == 1 and len(answer.answer[0]) == 1
        seen |= records(answer)
    assert seen == {"web.service.confer. CNAME web1.example.com.",
                    "web.service.confer. CNAME web2.example.com."}
    # Once an instance has an IP address, the name answers addresses (no CNAME beside them).
    assert records(ask("api.service.confer", "CNAME")) == set()
    assert records(ask("_db._tcp.service.confer", "SRV")) == {
        "_db._tcp.service.confer. SRV 1 1 5432 db.internal."}


def test_negative_answers() -> None:
    for name in ("down.service.confer", "nothing.service.confer", "a.b.c.service.confer",
                 "_api._udp.service.confer", "zz.addr.confer", "other.confer"):
        msg = ask(name)
        assert msg.rcode() == dns.rcode.NXDOMAIN, name
        assert records(msg, "authority") == {
            "confer. SOA ns.confer. hostmaster.confer. 1 3600 600 86400 0"}
    nodata = ask("api.service.confer", "MX")  # the name exists, with no MX
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority
    assert ask("example.com").rcode() == dns.rcode.REFUSED  # not a recursive resolver
    assert ask("secret.service.confer").rcode() == dns.rcode.REFUSED
    assert ask("broken.service.confer").rcode() == dns.rcode.SERVFAIL
    assert ask("api.service.confer", rdclass="CH").rcode() == dns.rcode.REFUSED
    notify = dns.message.make_query("api.service.confer", "A")
    notify.set_opcode(dns.opcode.NOTIFY)
    wire = asyncio.run(Resolver(lookup).answer(notify.to_wire(), False))
    assert wire is not None and dns.message.from_wire(wire).rcode() == dns.rcode.NOTIMP


def test_malformed_messages_get_formerr_or_nothing() -> None:
    resolver = Resolver(lookup)
    query = dns.message.make_query("api.service.confer", "A").to_wire()
    cut = asyncio.run(resolver.answer(query[:-3], False))  # truncated question
    assert cut is not None
    ident, flags = struct.unpack_from("!HH", cut)
    assert ident == struct.unpack_from("!H", query)[0] and flags & 0x8000
    assert flags & 0xF == dns.rcode.FORMERR
    assert asyncio.run(resolver.answer(b"\x01\x02\x03", False)) is None  # no header
    response = dns.message.make_response(dns.message.make_query("x.confer", "A")).to_wire()
    assert asyncio.run(resolver.answer(response, False)) is None  # never answer a response


def test_a_udp_answer_too_big_is_truncated_and_complete_over_tcp() -> None:
    udp = ask("big.service.confer")
    assert udp.flags & dns.flags.TC and not udp.answer
    assert len(records(ask("big.service.confer", tcp=True))) == 200
    edns = ask("big.service.confer", use_edns=0, payload=4096)
    assert not edns.flags & dns.flags.TC and len(records(edns)) == 200


@pytest.fixture
def listener() -> Iterator[tuple[asyncio.AbstractEventLoop, DnsListener]]:
    loop = asyncio.new_event_loop()
    served = DnsListener(Resolver(lookup), "127.0.0.1:0")
    loop.run_until_complete(served.start())
    yield loop, served
    loop.run_until_complete(served.stop())
    loop.close()


def test_the_listener_survives_garbage_over_udp_and_tcp(
        listener: tuple[asyncio.AbstractEventLoop, DnsListener]) -> None:
    loop, served = listener
    rng = random.Random(17)
    good = dns.message.make_query("api.service.confer", "A")

    async def fuzz_then_ask() -> dns.message.Message:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for n in range(300):
            size = rng.choice([0, 1, 11, 12, 13, 40, 300, 512, 1500])
            wire = bytes(rng.getrandbits(8) for _ in range(size))
            if n % 3 == 0:  # a real query, cut or corrupted
                wire = bytearray(good.to_wire())
                wire[rng.randrange(len(wire))] = rng.getrandbits(8)
                wire = bytes(wire[:rng.randrange(1, len(wire) + 1)])
            udp.sendto(wire, ("127.0.0.1", served.port))
        udp.close()
        _, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(struct.pack("!H", 20) + b"\xff" * 20)  # garbage, framed
        writer.write(struct.pack("!H", 500) + b"\x00" * 10)  # a frame that never ends
        writer.close()
        await asyncio.sleep(0.2)
        return await dns.asyncquery.udp(good, "127.0.0.1", port=served.port, timeout=5)

    answer = loop.run_until_complete(fuzz_then_ask())
    assert records(answer) == {"api.service.confer. A 10.0.0.1",
                               "api.service.confer. A 10.0.0.2"}
    tcp = loop.run_until_complete(dns.asyncquery.tcp(good, "127.0.0.1", port=served.port,
                                                     timeout=5))
    assert records(tcp) == records(answer)


def test_the_dns_address_setting(tmp_path: Path) -> None:
    assert ServerConfig().dns_addr == "127.0.0.1:8600"  # Consul's DNS port, by default
    # Loopback whatever the client host: a DNS server open to the network answers anyone.
    assert ServerConfig(listen_client="0.0.0.0:2379").dns_addr == "127.0.0.1:3600"
    assert ServerConfig(listen_client="127.0.0.1:0").dns_addr == "127.0.0.1:0"
    assert ServerConfig(listen_client="127.0.0.1:65000").dns_addr == "127.0.0.1:0"
    for off in ("none", "NONE", ""):
        assert ServerConfig(listen_dns=off).dns_addr == ""
    with pytest.raises(ConfigError, match="listen-dns"):
        ServerConfig(listen_dns="no-port").validate()
    env = load_config(None, {}, environ={"CONFER_LISTEN_DNS": "127.0.0.1:5353"})
    assert env.dns_addr == "127.0.0.1:5353"
    toml = tmp_path / "confer.toml"
    toml.write_text('listen-dns = "[::1]:5354"\ndns-user = "dns"\n')
    from_file = load_config(toml, {}, environ={})
    assert (from_file.dns_addr, from_file.dns_user) == ("[::1]:5354", "dns")
    assert load_config(None, {}, environ={"CONFER_DNS_USER": "reader"}).dns_user == "reader"


def test_a_member_whose_dns_address_is_taken_exits_with_one_line(tmp_path: Path) -> None:
    async def start() -> str:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind(("127.0.0.1", 0))
            addr = f"127.0.0.1:{taken.getsockname()[1]}"
            server = ConferServer(ServerConfig(data_dir=tmp_path / "n",
                                               listen_client="127.0.0.1:0",
                                               listen_peer="127.0.0.1:0",
                                               listen_metrics="none", listen_dns=addr))
            try:
                with pytest.raises(SystemExit) as refused:
                    await server.start()
            finally:
                await server.stop()
            return str(refused.value)

    message = asyncio.run(start())
    assert message.startswith("cannot listen for DNS queries on 127.0.0.1:")
    assert "in use" in message and "\n" not in message


def test_a_member_that_knows_no_leader_answers_servfail() -> None:
    class Node:
        leader = 0

    class Member:
        node: Node | None = Node()

    lookup_on = catalog_lookup(Member())  # type: ignore[arg-type]  # only .node is read
    with pytest.raises(ServerFailure, match="no leader"):
        asyncio.run(lookup_on("api"))
    Member.node = None  # not initialised yet (waiting for Init or to join)
    with pytest.raises(ServerFailure):
        asyncio.run(lookup_on("api"))
