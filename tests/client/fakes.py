"""A scripted stand-in for the I/O layers: drives plans against canned responses and a fake
clock, so the shared policy can be tested without a server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confer.client import sync as sync_io
from confer.client.plans import Open, Recv, Sleep, Unary
from confer.client.policy import Core, Failure, Options
from confer.v1 import kv_pb2


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeStream:
    def __init__(self, endpoint: str, request: Any, messages: list[Any]) -> None:
        self.endpoint = endpoint
        self.request = request
        self.messages = list(messages)
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def header(member_id: int = 0, leader_id: int = 0, revision: int = 0) -> kv_pb2.ResponseHeader:
    return kv_pb2.ResponseHeader(member_id=member_id, leader_id=leader_id, revision=revision)


class FakeIO(sync_io._IO):
    """The blocking client's own drivers (``run``, ``iterate``) over scripted actions:
    ``respond(unary) -> response or Failure``; ``streams(endpoint, request) -> messages``
    (what a stream opened there will deliver; once they run out, it fails with UNAVAILABLE).

    Sleep advances the fake clock; a Unary costs ``call_cost`` seconds, or its whole timeout
    when the answer is DEADLINE_EXCEEDED.
    """

    def __init__(self, respond: Callable[[Unary], Any] | None = None,
                 streams: Callable[[str, Any], list[Any]] | None = None,
                 endpoints: tuple[str, ...] = ("a:1", "b:2", "c:3"), **options: Any) -> None:
        super().__init__(())
        self.clock = FakeClock()
        options.setdefault("seed", 7)
        self.core = Core(Options(endpoints, **options), clock=self.clock)
        self.respond = respond
        self.streams = streams
        self.calls: list[Unary] = []
        self.sleeps: list[float] = []
        self.opened: list[FakeStream] = []
        self.call_cost = 0.001

    def _sleep(self, a: Sleep) -> None:
        self.sleeps.append(a.seconds)
        self.clock.now += a.seconds

    def _unary(self, a: Unary) -> Any:
        self.calls.append(a)
        assert self.respond is not None
        result = self.respond(a)
        if isinstance(result, Failure) and result.code == "DEADLINE_EXCEEDED":
            self.clock.now += a.timeout
        else:
            self.clock.now += self.call_cost
        return result

    def _open(self, a: Open) -> FakeStream:
        assert self.streams is not None
        stream = FakeStream(a.endpoint, a.request, self.streams(a.endpoint, a.request))
        self.opened.append(stream)
        return stream

    def _recv(self, a: Recv) -> Any:
        stream: FakeStream = a.stream  # type: ignore[assignment]
        if stream.cancelled:
            return Failure("CANCELLED", "cancelled by the client")
        if not stream.messages:
            return Failure("UNAVAILABLE", "Socket closed")
        return stream.messages.pop(0)

    def endpoints_called(self) -> list[str]:
        return [c.endpoint for c in self.calls]
