"""Registering gRPC services on the server."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc


class GenericHandlersOnly:
    """Stands in for a ``grpc.aio.Server`` while the generated ``add_*_to_server``
    functions register services: it passes their generic handlers on and drops their
    "registered method" handlers.

    Why: for registered methods, grpcio's asyncio server (1.6x-1.85) keeps one pending task
    per method and ``asyncio.wait``s on all of them for every call it accepts; with the ~90
    methods served here that was several percent of a node's CPU under load. Generic
    handlers serve the same methods through one accept loop.
    """

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        """Dropped: the same handlers arrived through :meth:`add_generic_rpc_handlers`."""
