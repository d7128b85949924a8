"""The DNS interface itself (:mod:`confer.server.dns` starts it): the resolver, and its UDP
and TCP listener.

It answers, from the healthy instances of the catalog (:mod:`confer.catalog`, the records
under ``/services/``; docs/coordination.md, "Service discovery")::

    NAME.service.confer          A / AAAA   the healthy instances' IP addresses; if none
                                            has one (they were registered with host
                                            names), a CNAME to one of their host names
    TAG.NAME.service.confer      A / AAAA   ... those carrying TAG
    _NAME._tcp.service.confer    SRV        priority 1, the instance's weight, its port, and
                                            a target HEX.addr.confer (its A / AAAA record in
                                            the additional section); SRV of
                                            [TAG.]NAME.service.confer too
    HEX.addr.confer              A / AAAA   the IP address HEX spells (8 or 32 hex digits)

The server resolves nothing itself (no outbound DNS): a host name is answered as a CNAME,
as Consul does for a node whose address is not an IP, and the client's resolver follows it.
A name may hold a single CNAME and nothing else (RFC 2181 10.1), so with several host-named
instances each query picks one at random, and once any healthy instance has an IP address
the name answers the addresses only (the host-named instances are still in its SRV records,
whose targets are their host names).

Healthy means passing or warning; records have TTL 0, so resolvers do not cache a health
that has changed. A service with no healthy instance is NXDOMAIN; a name of the zone that
means nothing too. Names outside ``confer.`` are REFUSED (this is no recursive resolver);
another opcode is NOTIMP, a message that cannot be parsed FORMERR (or nothing, when not even
its header can be read: there is no id to answer to), a UDP answer too big for the
client's buffer is truncated (TC) so that it retries over TCP.

**Reads.** Every member answers from its own applied state: a serializable read through the
request layer, so the request layer's guards see it like any read. With authentication
enabled, the DNS interface reads as the user ``--dns-user`` names (the operator configured it
on the member: no token, no password), so it answers what that user may read of
``/services/`` and REFUSED otherwise; without ``--dns-user`` it is an anonymous caller, and
every query is REFUSED. A member that
knows no leader answers SERVFAIL, so resolvers try another: a follower that hears from no
leader for its randomized election timeout (less than two ``--election-ticks``) drops it, and
a leader that hears from no quorum for an election timeout steps down, so an answer reflects
the catalog as it was at most about two election timeouts (plus the replication of the
entries in flight) ago.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import struct
from collections.abc import Awaitable, Callable
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from confer.catalog import PREFIX, Record, decode, ip_of, split_address
from confer.server.api import Identity, RequestContext
from confer.server.api.errors import PermissionDenied
from confer.server.http.member import Member

log = logging.getLogger("confer.dns")

ZONE = dns.name.from_text("confer.")
SERVICE_ZONE = dns.name.from_text("service.confer.")
ADDR_ZONE = dns.name.from_text("addr.confer.")
TTL = 0
"""Seconds resolvers may cache an answer: none, as Consul's default (health changes)."""
UDP_SIZE = 512
"""The largest UDP answer without EDNS (RFC 1035)."""
MAX_UDP_SIZE = 4096
"""The largest UDP answer with EDNS, whatever the client offers."""
READ_TIMEOUT = 2.0
"""Seconds a query's catalog read may take."""
TCP_IDLE = 10.0
"""Seconds a TCP connection may stay idle between queries."""
MAX_IN_FLIGHT = 1000
"""Queries answered at once; UDP queries beyond are dropped (the client retries)."""
MAX_TCP_CONNECTIONS = 100
"""TCP connections served at once; more are closed at once."""
HEADER = struct.Struct("!HHHHHH")
QR, RD = 0x8000, 0x0100
SOA = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SOA,
                          "ns.confer. hostmaster.confer. 1 3600 600 86400 0")
"""The zone's SOA, in the authority section of negative answers (minimum TTL 0: a name
that does not exist now may exist in a moment)."""


class Refused(Exception):
    """The query may not be answered: REFUSED."""


class ServerFailure(Exception):
    """The member cannot answer now (no leader known, the read failed): SERVFAIL."""


Lookup = Callable[[str], Awaitable[list[Record]]]
"""Reads the records of one service's instances (raises :class:`Refused` or
:class:`ServerFailure`)."""


def catalog_lookup(member: Member, user: str = "") -> Lookup:
    """How the DNS interface reads a service's instances on ``member``: a serializable read
    of ``/services/<service>`` through the request layer as ``user`` (empty: anonymous),
    refused while the member knows no leader (see the module's docstring)."""
    identity = Identity(user)

    async def lookup(service: str) -> list[Record]:
        node = member.node
        if node is None or not node.leader:
            raise ServerFailure("this member knows no leader")
        prefix = f"{PREFIX}/{service}".encode()
        ctx = RequestContext.with_timeout("dns", "DNS", READ_TIMEOUT)
        ctx.identity = identity
        try:
            kvs, _, _, _ = await member.api.kv.tree(ctx, prefix, recursive=True,
                                                     serializable=True)
        except PermissionDenied as e:
            raise Refused(str(e)) from None
        except Exception as e:  # a read the layer refused or failed: the member's fault
            raise ServerFailure(f"{type(e).__name__}: {e}") from None
        # The instances are the keys one level below the prefix.
        return [decode(kv.value) for kv in kvs if kv.key.startswith(prefix + b"/")
                and b"/" not in kv.key[len(prefix) + 1:]]

    return lookup


class Resolver:
    """Answers one DNS message (wire format in, wire format out) from a :data:`Lookup`."""

    def __init__(self, lookup: Lookup) -> None:
        self.lookup = lookup

    async def answer(self, wire: bytes, tcp: bool) -> bytes | None:
        """The answer to ``wire`` (None: no answer at all, e.g. to a message that is
        itself a response, or too short to have an id)."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # whatever the parser meets, the message is malformed
            return _format_error(wire)
        if query.flags & dns.flags.QR:
            return None  # a response: answering it could start a loop
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        try:
            await self._fill(query, response)
        except Refused:
            response.set_rcode(dns.rcode.REFUSED)
        except ServerFailure as e:
            log.debug("DNS query %s: SERVFAIL: %s", query.question, e)
            response.set_rcode(dns.rcode.SERVFAIL)
            response.flags &= ~dns.flags.AA
        return _to_wire(response, tcp, query)

    async def _fill(self, query: dns.message.Message, response: dns.message.Message) -> None:
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return
        question = query.question[0]
        name, rdtype = question.name, question.rdtype
        if not name.is_subdomain(ZONE):
            raise Refused(f"{name} is outside {ZONE}")
        if question.rdclass not in (dns.rdataclass.IN, dns.rdataclass.ANY):
            raise Refused("only class IN")
        if name in (ZONE, SERVICE_ZONE, ADDR_ZONE):
            found = True  # the zone and its two branches exist, with only the SOA
            if name == ZONE and rdtype in (dns.rdatatype.SOA, dns.rdatatype.ANY):
                response.answer.append(_rrset(ZONE, SOA))
        elif name.is_subdomain(SERVICE_ZONE):
            found = await self._service(name.relativize(SERVICE_ZONE), rdtype, response)
        elif name.is_subdomain(ADDR_ZONE):
            found = _addr(name, rdtype, response)
        else:
            found = False
        if not found:
            response.set_rcode(dns.rcode.NXDOMAIN)
        if not response.answer:
            response.authority.append(_rrset(ZONE, SOA))

    async def _service(self, relative: dns.name.Name, rdtype: dns.rdatatype.RdataType,
                       response: dns.message.Message) -> bool:
        """Answer for ``relative`` (the name below ``service.confer.``); whether it names
        a service with healthy instances."""
        labels = [label.decode("utf-8", "replace").lower() for label in relative.labels]
        srv_form = len(labels) == 2 and labels[0].startswith("_") and labels[1] == "_tcp"
        if srv_form:
            labels = [labels[0][1:]]
        if not 1 <= len(labels) <= 2 or not all(_segment(label) for label in labels):
            return False
        service, tag = labels[-1], labels[0] if len(labels) == 2 else None
        healthy = [r for r in await self.lookup(service)
                   if r.status.healthy and (tag is None or tag in r.tags)]
        if not healthy:
            return False
        owner = relative.derelativize(SERVICE_ZONE)
        wants = {dns.rdatatype.ANY} | ({dns.rdatatype.SRV} if srv_form else
                                       {dns.rdatatype.A, dns.rdatatype.AAAA,
                                        dns.rdatatype.CNAME, dns.rdatatype.SRV})
        if rdtype not in wants:
            return True  # the name exists, with no record of that type
        if rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.CNAME):
            alias = _alias(healthy)
            if alias is not None:
                _add(response.answer, owner, alias)
                return True
        if rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) or (
                rdtype == dns.rdatatype.ANY and not srv_form):
            for rdata in _addresses(healthy, rdtype):
                _add(response.answer, owner, rdata)
        if rdtype in (dns.rdatatype.SRV, dns.rdatatype.ANY):
            for record in healthy:
                _add_srv(response, owner, record)
        return True


def _segment(label: str) -> bool:
    """Whether a DNS label can be a service name or tag (one path segment)."""
    return bool(label) and "/" not in label and label not in (".", "..")


def _addresses(records: list[Record], rdtype: dns.rdatatype.RdataType
               ) -> list[dns.rdata.Rdata]:
    """The A (or AAAA; ANY: both) records of the instances whose host is an IP address."""
    out = []
    for record in records:
        ip = ip_of(split_address(record.address)[0])
        if ip is not None and _wanted(ip, rdtype):
            out.append(_address_rdata(ip))
    return out


def _alias(records: list[Record]) -> dns.rdata.Rdata | None:
    """The CNAME of a name whose instances have no IP address: to the host name of one of
    them, picked at random (a name holds one CNAME at most); None if any instance has an IP
    address, or no host is a valid DNS name."""
    if any(ip_of(split_address(r.address)[0]) is not None for r in records):
        return None
    names = [name for name in (_host_name(split_address(r.address)[0]) for r in records)
             if name is not None]
    if not names:
        return None
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.CNAME,
                               random.choice(names).to_text())


def _host_name(host: str) -> dns.name.Name | None:
    """``host`` (not an IP address) as an absolute DNS name; None if it is no valid one."""
    if not host.rstrip("."):
        return None  # the root is no host
    try:
        return dns.name.from_text(host.rstrip(".") + ".")
    except dns.exception.DNSException:
        return None


def _wanted(ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
            rdtype: dns.rdatatype.RdataType) -> bool:
    if rdtype == dns.rdatatype.ANY:
        return True
    return rdtype == (dns.rdatatype.A if ip.version == 4 else dns.rdatatype.AAAA)


def _address_rdata(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> dns.rdata.Rdata:
    rdtype = dns.rdatatype.A if ip.version == 4 else dns.rdatatype.AAAA
    return dns.rdata.from_text(dns.rdataclass.IN, rdtype, str(ip))


def _add_srv(response: dns.message.Message, owner: dns.name.Name, record: Record) -> None:
    """One SRV record for an instance with a port, and its target's address record."""
    host, port = split_address(record.address)
    if not port:
        return
    ip = ip_of(host)
    target = (dns.name.from_text(f"{ip.packed.hex()}.addr.confer.") if ip is not None
              else _host_name(host))
    if target is None:
        return  # a host that is no valid DNS name cannot be a target
    weight = record.weights.of(record.status)
    _add(response.answer, owner, dns.rdata.from_text(
        dns.rdataclass.IN, dns.rdatatype.SRV, f"1 {weight} {port} {target}"))
    if ip is not None:
        _add(response.additional, target, _address_rdata(ip))


def _addr(name: dns.name.Name, rdtype: dns.rdatatype.RdataType,
          response: dns.message.Message) -> bool:
    """Answer ``HEX.addr.confer.``: the address HEX spells; whether it is one."""
    labels = name.relativize(ADDR_ZONE).labels
    if len(labels) != 1:
        return False
    try:
        packed = bytes.fromhex(labels[0].decode("ascii"))
        ip = ipaddress.ip_address(packed) if len(packed) in (4, 16) else None
    except ValueError:
        ip = None
    if ip is None:
        return False
    if _wanted(ip, rdtype):
        _add(response.answer, name, _address_rdata(ip))
    return True


def _rrset(name: dns.name.Name, rdata: dns.rdata.Rdata) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(name, rdata.rdclass, rdata.rdtype)
    rrset.add(rdata, TTL)
    return rrset


def _add(section: list[dns.rrset.RRset], name: dns.name.Name, rdata: dns.rdata.Rdata) -> None:
    """Add ``rdata`` to the section's RRset of (name, type), made if missing."""
    for rrset in section:
        if rrset.name == name and rrset.rdtype == rdata.rdtype:
            rrset.add(rdata, TTL)
            return
    section.append(_rrset(name, rdata))


def _format_error(wire: bytes) -> bytes | None:
    """FORMERR for a message that could not be parsed, built from its header alone (None if
    there is no header, or it is a response)."""
    if len(wire) < HEADER.size:
        return None
    ident, flags = struct.unpack_from("!HH", wire)
    if flags & QR:
        return None
    opcode_bits = flags & 0x7800
    return HEADER.pack(ident, QR | opcode_bits | (flags & RD) | dns.rcode.FORMERR, 0, 0, 0, 0)


def _to_wire(response: dns.message.Message, tcp: bool, query: dns.message.Message) -> bytes:
    """The response in wire format; over UDP, truncated (TC, no records) when larger than
    the client accepts."""
    limit = 65535 if tcp else (min(max(query.payload, UDP_SIZE), MAX_UDP_SIZE)
                               if query.edns >= 0 else UDP_SIZE)
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        response.flags |= dns.flags.TC
        response.answer.clear()
        response.authority.clear()
        response.additional.clear()
        return response.to_wire(max_size=limit)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, listener: DnsListener) -> None:
        self.listener = listener
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A datagram endpoint's transport (uvloop's is no DatagramTransport subclass).
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.listener.spawn(self._answer(data, addr))

    async def _answer(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        reply = await self.listener.resolver.answer(data, tcp=False)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("DNS over UDP: %s", exc)


class DnsListener:
    """Serves :class:`Resolver`'s answers on one address, over UDP and TCP (the same port).

    Every query is answered in its own task, at most :data:`MAX_IN_FLIGHT` at once; a query
    whose answer fails unexpectedly is logged and left unanswered, and the listener goes on.
    """

    def __init__(self, resolver: Resolver, addr: str) -> None:
        self.resolver = resolver
        self.addr = addr
        self.port = 0
        """The port bound, once started (``addr`` may name port 0)."""
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections = 0

    async def start(self) -> None:
        """Bind UDP, then TCP on the same port; OSError if either cannot be bound."""
        host, _, port = self.addr.rpartition(":")
        host = host.strip("[]")
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(self),
                                                           local_addr=(host, int(port)))
        self._udp = transport
        self.port = transport.get_extra_info("sockname")[1]
        try:
            self._tcp = await asyncio.start_server(self._serve_tcp, host, self.port)
        except BaseException:
            transport.close()
            raise

    def spawn(self, answer: Awaitable[None]) -> None:
        """Answer in a task of its own (dropped when too many are in flight)."""
        if len(self._tasks) >= MAX_IN_FLIGHT:
            if asyncio.iscoroutine(answer):
                answer.close()
            return
        task = asyncio.ensure_future(self._guarded(answer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guarded(answer: Awaitable[None]) -> None:
        try:
            await answer
        except Exception:  # never let one query stop the listener
            log.exception("DNS: answering a query failed")

    async def _serve_tcp(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        if self._connections >= MAX_TCP_CONNECTIONS:
            writer.close()
            return
        self._connections += 1
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE):
                    size = struct.unpack("!H", await reader.readexactly(2))[0]
                    wire = await reader.readexactly(size)
                reply = await self.resolver.answer(wire, tcp=True)
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away, or idled: the connection ends
        except Exception:
            log.exception("DNS over TCP: answering a query failed")
        finally:
            self._connections -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tcp is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 1.0)


__all__ = ["DnsListener", "Resolver", "catalog_lookup"]
