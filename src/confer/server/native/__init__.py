"""The native confer.v1 gRPC API: adapters over the request layer (:mod:`confer.server.api`).

Modules: ``common`` (the error table, headers, conversions), ``kv`` (KV, Watch), ``cluster``
(Cluster), ``legacy`` (the original ConferService), ``coordination`` (Lease, Lock,
Election).
"""

from __future__ import annotations

import grpc

from confer.server.api import RequestLayer
from confer.server.native.cluster import ClusterService
from confer.server.native.coordination import ElectionService, LeaseService, LockService
from confer.server.native.kv import KVService
from confer.server.native.legacy import LegacyService
from confer.server.rpc import Registration, register
from confer.v1 import confer_pb2_grpc, coord_pb2_grpc, kv_pb2_grpc

NATIVE_SERVICES: list[Registration] = [
    (kv_pb2_grpc.add_KVServicer_to_server, KVService),
    (confer_pb2_grpc.add_ConferServiceServicer_to_server, LegacyService),
    (kv_pb2_grpc.add_ClusterServicer_to_server, ClusterService),
    (coord_pb2_grpc.add_LeaseServicer_to_server, LeaseService),
    (coord_pb2_grpc.add_LockServicer_to_server, LockService),
    (coord_pb2_grpc.add_ElectionServicer_to_server, ElectionService),
]
"""KV, ConferService, Cluster, Lease, Lock and Election: registered on the client port, and
called by the dashboard on the HTTP listener (``server/http/dashboard.py``)."""


def add_native_services(layer: RequestLayer,
                        grpc_server: grpc.aio.Server) -> None:
    """Register the native services (:data:`NATIVE_SERVICES`)."""
    register(layer, grpc_server, NATIVE_SERVICES)


__all__ = ["NATIVE_SERVICES", "add_native_services"]
