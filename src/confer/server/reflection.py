"""gRPC server reflection on the client port: ``grpcurl`` and other tools list and call the
services (both APIs, health) without the proto files."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer

from confer.server.metrics import CallStats
from confer.server.rpc import register_refusing
from confer.server.tls import RevocationList


def enable_reflection(server: grpc.aio.Server, services: list[str],
                      calls: CallStats | None = None, crl: RevocationList | None = None
                      ) -> None:
    """Serve reflection on ``server`` for ``services`` (full names, as registered), health
    and reflection itself; their descriptors come from the generated modules' pool. With
    ``calls``, its calls are counted and timed there; with ``crl``, refused to revoked
    client certificates."""
    names = list(dict.fromkeys([*services, health.SERVICE_NAME, reflection.SERVICE_NAME]))
    register_refusing("reflection",
                      reflection_pb2_grpc.add_ServerReflectionServicer_to_server,
                      ReflectionServicer(names), server, calls, crl)
