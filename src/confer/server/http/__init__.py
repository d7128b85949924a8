"""The member's HTTP listener (``--listen-metrics``): ``/metrics``, ``/health``, ``/livez``,
``/readyz`` (docs/operations.md, "Metrics and health over HTTP"), etcd's JSON gateway
(``/v3/...``, :mod:`.gateway`) and the web dashboard (``/ui/``, :mod:`.dashboard`). See
:mod:`.listener`.

aiohttp and prometheus-client are imported only when a listener starts: they cost a
node a few tenths of a second of start-up, which a node without one (``none``) is spared.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from confer.server.http.member import Member

if TYPE_CHECKING:
    from confer.server.http.listener import HttpListener
    from confer.server.tls import TlsFiles

log = logging.getLogger("confer.http")


async def start_http(member: Member, addr: str, required: bool,
                     tls: TlsFiles | None = None) -> HttpListener | None:
    """Serve the HTTP routes on ``addr`` (None, serving nothing, if ``addr`` is empty), over
    TLS with ``tls`` (HTTPS: the client port's files). If
    it cannot be bound: with ``required`` (the address was set), a SystemExit with one line;
    without (the default address), a warning, and the member runs without it."""
    if not addr:
        return None
    from confer.server.http.listener import HttpListener

    listener = HttpListener(member, addr, tls)
    try:
        await listener.start()
    except OSError as e:
        why = (f"cannot listen for metrics and health checks on {addr}: "
               f"{e.strerror or e}")
        if required:
            raise SystemExit(why) from None
        log.warning("%s; running without them (set --listen-metrics)", why)
        return None
    return listener


__all__ = ["Member", "start_http"]
