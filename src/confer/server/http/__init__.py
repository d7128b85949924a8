"""The member's HTTP listener (``--listen-metrics``): ``/metrics``, ``/health``, ``/livez``,
``/readyz`` (docs/operations.md, "Metrics and health").

One aiohttp application on the member's own event loop. Each module contributes its routes
as a function of the member (``routes(member) -> list[RouteDef]``, see :data:`ROUTES`), so
that more pages (a dashboard, etcd's JSON gateway) join the same listener the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from confer.server.http.health import health_routes
from confer.server.http.member import Member
from confer.server.http.metrics import metrics_routes

log = logging.getLogger("confer.http")

RouteSource = Callable[[Member], list[web.RouteDef]]

ROUTES: list[RouteSource] = [metrics_routes, health_routes]
"""Every module's routes, in the order they are added."""


class HttpListener:
    """Serves the routes of :data:`ROUTES` for one member on one address."""

    def __init__(self, member: Member, addr: str) -> None:
        self.addr = addr
        app = web.Application()
        for source in ROUTES:
            app.add_routes(source(member))
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self.port = 0

    async def start(self) -> None:
        """Bind and serve; OSError if the address cannot be bound."""
        host, _, port = self.addr.rpartition(":")
        await self._runner.setup()
        try:
            site = web.TCPSite(self._runner, host.strip("[]"), int(port), reuse_port=False)
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            raise
        server = site._server  # aiohttp names no public way to read back a port 0 binding
        sockets = getattr(server, "sockets", None) or ()
        self.port = sockets[0].getsockname()[1] if sockets else int(port)

    async def stop(self) -> None:
        await self._runner.cleanup()


async def start_http(member: Member, addr: str, required: bool) -> HttpListener | None:
    """Serve the HTTP routes on ``addr`` (None, serving nothing, if ``addr`` is empty). If
    it cannot be bound: with ``required`` (the address was set), a SystemExit with one line;
    without (the default address), a warning, and the member runs without it."""
    if not addr:
        return None
    listener = HttpListener(member, addr)
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


__all__ = ["ROUTES", "HttpListener", "Member", "start_http"]
