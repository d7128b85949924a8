"""gRPC health checking (``grpc.health.v1.Health``) on both ports."""

from __future__ import annotations

from typing import Any

from grpc_health.v1 import health, health_pb2

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthService(health.aio.HealthServicer):
    """grpcio's asyncio health servicer, with the ``List`` method its proto declares but it
    leaves unimplemented (grpcio answers that with an error and a logged traceback)."""

    def __init__(self) -> None:
        super().__init__()
        self._statuses: dict[str, Any] = {"": SERVING}
        """What ``List`` answers: the statuses set here (grpcio keeps its own privately)."""
        self._shutting_down = False

    async def set(self, service: str, status: Any) -> None:
        if not self._shutting_down:  # as grpcio: after shutdown, everything stays down
            self._statuses[service] = status
        await super().set(service, status)

    async def enter_graceful_shutdown(self) -> None:
        self._shutting_down = True
        self._statuses = dict.fromkeys(self._statuses, NOT_SERVING)
        await super().enter_graceful_shutdown()

    async def List(self, request: Any, context: Any) -> Any:
        """Every service's status, as ``Check`` answers for each."""
        response = health_pb2.HealthListResponse  # type: ignore[attr-defined]  # stubs predate List
        return response(statuses={name: health_pb2.HealthCheckResponse(status=status)
                                  for name, status in self._statuses.items()})
