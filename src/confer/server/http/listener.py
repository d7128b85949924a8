"""The HTTP listener itself: one aiohttp application on the member's own event loop. Each
module contributes its routes as a function of the member (``routes(member) ->
list[RouteDef]``, see :data:`ROUTES`), so that more pages (a dashboard, etcd's JSON gateway)
join the same listener the same way.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from confer.server.http.dashboard import dashboard_routes
from confer.server.http.gateway import gateway_routes
from confer.server.http.health import health_routes
from confer.server.http.member import Member
from confer.server.http.metrics import metrics_routes
from confer.server.tls import TlsFiles, server_ssl_context

SHUTDOWN_GRACE = 1.0
"""Seconds a stopping member waits for HTTP requests in flight."""

RouteSource = Callable[[Member], list[web.RouteDef]]

ROUTES: list[RouteSource] = [metrics_routes, health_routes, gateway_routes, dashboard_routes]
"""Every module's routes, in the order they are added."""


class HttpListener:
    """Serves the routes of :data:`ROUTES` for one member on one address: over TLS with
    ``tls`` (the client port's files, as etcd serves ``--listen-metrics-urls https://...``
    with the client certificate: the same client-certificate rule, the same rotation)."""

    def __init__(self, member: Member, addr: str, tls: TlsFiles | None = None) -> None:
        self.addr = addr
        self.tls = tls
        app = web.Application()
        for source in ROUTES:
            app.add_routes(source(member))
        # shutdown_timeout: stopping waits this long for requests in flight (a scrape, a
        # health check), as gRPC's grace; aiohttp's default is a minute.
        # handler_cancellation: a client that goes away ends its request, as a gRPC call's
        # (else a gateway watch on a quiet key would outlive its client).
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=SHUTDOWN_GRACE,
                                     handler_cancellation=True)
        self.port = 0
        """The port bound, once started (``addr`` may name port 0)."""

    async def start(self) -> None:
        """Bind and serve; OSError if the address cannot be bound."""
        host, _, port = self.addr.rpartition(":")
        await self._runner.setup()
        try:
            ssl_context = server_ssl_context(self.tls) if self.tls is not None else None
            site = web.TCPSite(self._runner, host.strip("[]"), int(port), reuse_port=False,
                               ssl_context=ssl_context)
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            raise
        self.port = self._runner.addresses[0][1]

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    async def stop(self) -> None:
        await self._runner.cleanup()


__all__ = ["ROUTES", "HttpListener"]
