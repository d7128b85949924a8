"""etcd's ``Auth`` service while Confer has no authentication: answers as an etcd server with
auth disabled and no users or roles does. (Users, roles and tokens are a later issue.)"""

from __future__ import annotations

from typing import Any

from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.server.etcd.common import ERR_AUTH_NOT_ENABLED, Code, etcd_error, etcd_rpc, header
from confer.server.rpc import Adapter

ERR_ROOT_USER_NOT_EXIST = (Code.FAILED_PRECONDITION, "etcdserver: root user does not exist")
ERR_USER_NOT_FOUND = (Code.FAILED_PRECONDITION, "etcdserver: user name not found")
ERR_ROLE_NOT_FOUND = (Code.FAILED_PRECONDITION, "etcdserver: role name not found")
ERR_NOT_SUPPORTED = (Code.UNIMPLEMENTED, "etcdserver: users and roles are not supported by "
                     "Confer yet")


class EtcdAuth(Adapter, rpc_pb2_grpc.AuthServicer):
    """``etcdserverpb.Auth`` with authentication disabled."""

    def _header(self) -> rpc_pb2.ResponseHeader:
        return header(self.layer)

    @etcd_rpc
    async def AuthStatus(self, req: Any, context: Any) -> rpc_pb2.AuthStatusResponse:
        return rpc_pb2.AuthStatusResponse(header=self._header(), enabled=False)

    @etcd_rpc
    async def AuthDisable(self, req: Any, context: Any) -> rpc_pb2.AuthDisableResponse:
        return rpc_pb2.AuthDisableResponse(header=self._header())  # already disabled

    @etcd_rpc
    async def AuthEnable(self, req: Any, context: Any) -> Any:
        raise etcd_error(ERR_ROOT_USER_NOT_EXIST)  # there are no users, so no root

    @etcd_rpc
    async def Authenticate(self, req: Any, context: Any) -> Any:
        raise etcd_error(ERR_AUTH_NOT_ENABLED)

    @etcd_rpc
    async def UserList(self, req: Any, context: Any) -> rpc_pb2.AuthUserListResponse:
        return rpc_pb2.AuthUserListResponse(header=self._header())

    @etcd_rpc
    async def RoleList(self, req: Any, context: Any) -> rpc_pb2.AuthRoleListResponse:
        return rpc_pb2.AuthRoleListResponse(header=self._header())

    async def _no_user(self, req: Any, context: Any) -> Any:
        raise etcd_error(ERR_USER_NOT_FOUND)

    async def _no_role(self, req: Any, context: Any) -> Any:
        raise etcd_error(ERR_ROLE_NOT_FOUND)

    async def _unsupported(self, req: Any, context: Any) -> Any:
        raise etcd_error(ERR_NOT_SUPPORTED)

    UserGet = UserDelete = UserChangePassword = UserGrantRole = UserRevokeRole = etcd_rpc(
        _no_user)
    RoleGet = RoleDelete = RoleGrantPermission = RoleRevokePermission = etcd_rpc(_no_role)
    UserAdd = RoleAdd = etcd_rpc(_unsupported)
