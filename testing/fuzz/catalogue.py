"""Every gRPC method a Confer node serves, read from the protobuf descriptors.

The fuzzer walks this list instead of a hand-written one, so a method added to a ``.proto``
is fuzzed without anyone remembering to add it here.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2

from confer.etcdpb.etcdserverpb import rpc_pb2
from confer.etcdpb.v3electionpb import v3election_pb2
from confer.etcdpb.v3lockpb import v3lock_pb2
from confer.v1 import confer_pb2, coord_pb2, kv_pb2, peer_pb2

CLIENT_MODULES: tuple[ModuleType, ...] = (
    kv_pb2, confer_pb2, coord_pb2, rpc_pb2, v3lock_pb2, v3election_pb2, health_pb2)
"""The client-facing services: confer.v1 (native), etcd v3 (with v3lock and v3election), and
gRPC health."""

PEER_MODULES: tuple[ModuleType, ...] = (peer_pb2,)
"""Node-to-node services described by a ``.proto`` (``confer.v1.Peer``)."""

INTERNAL_LEADER = "confer.internal.Leader"
"""The follower-to-leader service (``server/api/forwarding.py``): msgpack over raw bytes, no
``.proto``, so no descriptor; fuzzed by :mod:`testing.fuzz.peer`."""


@dataclass(frozen=True)
class Method:
    """One RPC: where to call it, its message types and its shape."""

    service: str
    """Full service name, e.g. ``etcdserverpb.KV``."""
    name: str
    request: type[Message]
    response: type[Message]
    client_streaming: bool
    server_streaming: bool

    @property
    def path(self) -> str:
        """The gRPC method path, ``/service/Method``."""
        return f"/{self.service}/{self.name}"

    @property
    def api(self) -> str:
        """``native``, ``etcd``, ``health`` or ``peer``: for the per-API counts."""
        if self.service.startswith("confer.v1.Peer"):
            return "peer"
        if self.service.startswith("confer."):
            return "native"
        if self.service.startswith("grpc.health"):
            return "health"
        return "etcd"

    @property
    def may_block(self) -> bool:
        """Whether a correct server may keep the call open until the client gives up: watches
        and other streams, and the calls that wait for a lock or a leadership."""
        return (self.client_streaming or self.server_streaming
                or self.name in ("Lock", "Campaign"))


def _method(desc: MethodDescriptor) -> Method:
    return Method(desc.containing_service.full_name, desc.name,
                  message_factory.GetMessageClass(desc.input_type),
                  message_factory.GetMessageClass(desc.output_type),
                  desc.client_streaming, desc.server_streaming)


def methods_of(modules: tuple[ModuleType, ...]) -> list[Method]:
    """Every method of every service the generated ``*_pb2`` modules describe."""
    return [_method(m) for mod in modules
            for service in mod.DESCRIPTOR.services_by_name.values() for m in service.methods]


CLIENT_METHODS = methods_of(CLIENT_MODULES)
PEER_METHODS = methods_of(PEER_MODULES)
