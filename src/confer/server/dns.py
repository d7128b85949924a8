"""The member's DNS interface to the service catalog (``--listen-dns``), over UDP and TCP:
``NAME.service.confer`` (A, AAAA) and ``_NAME._tcp.service.confer`` (SRV) answer with the
healthy instances (:mod:`.dns_server` says what is answered, and how stale it may be).

dnspython is imported only when a listener starts: it costs a node about a tenth of a
second of start-up, which a node without one (``none``) is spared.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from confer.server.http.member import Member

if TYPE_CHECKING:
    from confer.server.dns_server import DnsListener

log = logging.getLogger("confer.dns")


async def start_dns(member: Member, addr: str, required: bool) -> DnsListener | None:
    """Serve the catalog over DNS on ``addr`` (None, serving nothing, if ``addr`` is
    empty). If it cannot be bound: with ``required`` (the address was set), a SystemExit
    with one line; without (the default address), a warning, and the member runs without
    it."""
    if not addr:
        return None
    from confer.server.dns_server import DnsListener, Resolver, catalog_lookup

    listener = DnsListener(Resolver(catalog_lookup(member, member.cfg.dns_user)), addr)
    try:
        await listener.start()
    except OSError as e:
        why = f"cannot listen for DNS queries on {addr}: {e.strerror or e}"
        if required:
            raise SystemExit(why) from None
        log.warning("%s; running without it (set --listen-dns)", why)
        return None
    return listener


__all__ = ["start_dns"]
