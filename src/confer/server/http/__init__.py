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

SHUTDOWN_GRACE = 1.0
"""Seconds a stopping member waits for HTTP requests in flight."""

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
        # shutdown_timeout: stopping waits this long for requests in flight (a scrape, a
        # health check), as gRPC's grace; aiohttp's default is a minute.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=SHUTDOWN_GRACE)
        self.port = 0
        """The port bound, once started (``addr`` may name port 0)."""

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
        self.port = self._runner.addresses[0][1]

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
