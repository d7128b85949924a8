"""The etcd v3 gRPC API on Confer's client port: ``etcdctl`` and etcd's client libraries work
against a Confer cluster. One store underneath: etcd and native requests see the same keys
(docs/etcd-compatibility.md).

Modules: ``common`` (headers, etcd's errors), ``kv`` (KV, Watch), ``lease``, ``cluster``,
``maintenance``, ``coord`` (v3lock, v3election), ``auth``.
"""

from __future__ import annotations

import grpc

from confer.etcdpb.etcdserverpb import rpc_pb2_grpc
from confer.etcdpb.v3electionpb import v3election_pb2_grpc
from confer.etcdpb.v3lockpb import v3lock_pb2_grpc
from confer.server.api import RequestLayer
from confer.server.etcd.auth import EtcdAuth
from confer.server.etcd.cluster import EtcdCluster
from confer.server.etcd.coord import EtcdElection, EtcdLock
from confer.server.etcd.kv import EtcdKV, EtcdWatch
from confer.server.etcd.lease import EtcdLease
from confer.server.etcd.maintenance import EtcdMaintenance
from confer.server.rpc import Registration, register

ETCD_SERVICES: list[Registration] = [
    (rpc_pb2_grpc.add_KVServicer_to_server, EtcdKV),
    (rpc_pb2_grpc.add_WatchServicer_to_server, EtcdWatch),
    (rpc_pb2_grpc.add_LeaseServicer_to_server, EtcdLease),
    (rpc_pb2_grpc.add_ClusterServicer_to_server, EtcdCluster),
    (rpc_pb2_grpc.add_MaintenanceServicer_to_server, EtcdMaintenance),
    (rpc_pb2_grpc.add_AuthServicer_to_server, EtcdAuth),
    (v3lock_pb2_grpc.add_LockServicer_to_server, EtcdLock),
    (v3election_pb2_grpc.add_ElectionServicer_to_server, EtcdElection),
]
"""etcd's KV, Watch, Lease, Cluster, Maintenance, Auth, Lock and Election: registered on the
client port, and called by the JSON gateway on the HTTP listener (``server/http/gateway.py``)."""


def add_etcd_services(layer: RequestLayer,
                      grpc_server: grpc.aio.Server) -> None:
    """Register etcd's services (:data:`ETCD_SERVICES`)."""
    register(layer, grpc_server, ETCD_SERVICES)


__all__ = ["ETCD_SERVICES", "add_etcd_services"]
