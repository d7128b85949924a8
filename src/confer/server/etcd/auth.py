"""etcd's ``Auth`` service: users, roles, permissions, AuthEnable/Disable and Authenticate,
over the request layer's :class:`~confer.server.api.auth.AuthRequests`."""

from __future__ import annotations

from typing import Any

from confer.etcdpb.authpb import auth_pb2
from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.kv import InvalidArgument, PermType
from confer.server.api import RequestContext
from confer.server.api.auth import AuthRequests
from confer.server.etcd.common import Code, etcd_error, etcd_rpc, header
from confer.server.rpc import Adapter

ERR_USER_NOT_FOUND = (Code.FAILED_PRECONDITION, "etcdserver: user name not found")
ERR_ROLE_NOT_FOUND = (Code.FAILED_PRECONDITION, "etcdserver: role name not found")
ERR_PERMISSION_TYPE = (Code.INVALID_ARGUMENT, "etcdserver: invalid permission type")
BCRYPT_HASH_BYTES = 60


def _hashed(value: str) -> bytes:
    """A bcrypt hash a client computed itself (``hashedPassword``): checked for its shape,
    since no password comes with it."""
    data = value.encode()
    if len(data) != BCRYPT_HASH_BYTES or not data.startswith((b"$2a$", b"$2b$", b"$2y$")):
        raise InvalidArgument("etcdserver: hashedPassword is not a bcrypt hash")
    return data


class EtcdAuth(Adapter, rpc_pb2_grpc.AuthServicer):
    """``etcdserverpb.Auth``."""

    @property
    def auth(self) -> AuthRequests:
        return self.layer.auth

    def _header(self, revision: int = 0) -> rpc_pb2.ResponseHeader:
        return header(self.layer, revision)

    @etcd_rpc
    async def AuthStatus(self, req: Any, ctx: RequestContext) -> rpc_pb2.AuthStatusResponse:
        st = await self.auth.status(ctx)
        return rpc_pb2.AuthStatusResponse(header=self._header(), enabled=st.enabled,
                                          authRevision=st.revision)

    @etcd_rpc
    async def AuthEnable(self, req: Any, ctx: RequestContext) -> rpc_pb2.AuthEnableResponse:
        await self.auth.enable(ctx)
        return rpc_pb2.AuthEnableResponse(header=self._header())

    @etcd_rpc
    async def AuthDisable(self, req: Any, ctx: RequestContext) -> rpc_pb2.AuthDisableResponse:
        await self.auth.disable(ctx)
        return rpc_pb2.AuthDisableResponse(header=self._header())

    @etcd_rpc
    async def Authenticate(self, req: rpc_pb2.AuthenticateRequest, ctx: RequestContext
                           ) -> rpc_pb2.AuthenticateResponse:
        token = await self.auth.authenticate(ctx, req.name, req.password)
        return rpc_pb2.AuthenticateResponse(header=self._header(), token=token)

    # -- users ----------------------------------------------------------------------------------
    @etcd_rpc
    async def UserAdd(self, req: rpc_pb2.AuthUserAddRequest, ctx: RequestContext
                      ) -> rpc_pb2.AuthUserAddResponse:
        no_password = req.options.no_password
        await self.auth.user_add(
            ctx, req.name, req.password, no_password=no_password,
            password_hash=_hashed(req.hashedPassword) if req.hashedPassword and not no_password
            else b"")
        return rpc_pb2.AuthUserAddResponse(header=self._header())

    @etcd_rpc
    async def UserGet(self, req: rpc_pb2.AuthUserGetRequest, ctx: RequestContext
                      ) -> rpc_pb2.AuthUserGetResponse:
        user = await self.auth.user_get(ctx, req.name)
        if user is None:
            raise etcd_error(ERR_USER_NOT_FOUND)
        return rpc_pb2.AuthUserGetResponse(header=self._header(), roles=user.roles)

    @etcd_rpc
    async def UserList(self, req: Any, ctx: RequestContext) -> rpc_pb2.AuthUserListResponse:
        return rpc_pb2.AuthUserListResponse(header=self._header(),
                                            users=await self.auth.user_list(ctx))

    @etcd_rpc
    async def UserDelete(self, req: rpc_pb2.AuthUserDeleteRequest, ctx: RequestContext
                         ) -> rpc_pb2.AuthUserDeleteResponse:
        await self.auth.user_delete(ctx, req.name)
        return rpc_pb2.AuthUserDeleteResponse(header=self._header())

    @etcd_rpc
    async def UserChangePassword(self, req: rpc_pb2.AuthUserChangePasswordRequest,
                                 ctx: RequestContext) -> rpc_pb2.AuthUserChangePasswordResponse:
        await self.auth.user_password(
            ctx, req.name, req.password,
            password_hash=_hashed(req.hashedPassword) if req.hashedPassword else b"")
        return rpc_pb2.AuthUserChangePasswordResponse(header=self._header())

    @etcd_rpc
    async def UserGrantRole(self, req: rpc_pb2.AuthUserGrantRoleRequest, ctx: RequestContext
                            ) -> rpc_pb2.AuthUserGrantRoleResponse:
        await self.auth.user_grant(ctx, req.user, req.role)
        return rpc_pb2.AuthUserGrantRoleResponse(header=self._header())

    @etcd_rpc
    async def UserRevokeRole(self, req: rpc_pb2.AuthUserRevokeRoleRequest, ctx: RequestContext
                             ) -> rpc_pb2.AuthUserRevokeRoleResponse:
        await self.auth.user_revoke(ctx, req.name, req.role)
        return rpc_pb2.AuthUserRevokeRoleResponse(header=self._header())

    # -- roles ----------------------------------------------------------------------------------
    @etcd_rpc
    async def RoleAdd(self, req: rpc_pb2.AuthRoleAddRequest, ctx: RequestContext
                      ) -> rpc_pb2.AuthRoleAddResponse:
        await self.auth.role_add(ctx, req.name)
        return rpc_pb2.AuthRoleAddResponse(header=self._header())

    @etcd_rpc
    async def RoleGet(self, req: rpc_pb2.AuthRoleGetRequest, ctx: RequestContext
                      ) -> rpc_pb2.AuthRoleGetResponse:
        perms = await self.auth.role_get(ctx, req.role)
        if perms is None:
            raise etcd_error(ERR_ROLE_NOT_FOUND)
        return rpc_pb2.AuthRoleGetResponse(header=self._header(), perm=[
            auth_pb2.Permission(permType=p.perm.name, key=p.key, range_end=p.range_end)
            for p in perms])

    @etcd_rpc
    async def RoleList(self, req: Any, ctx: RequestContext) -> rpc_pb2.AuthRoleListResponse:
        return rpc_pb2.AuthRoleListResponse(header=self._header(),
                                            roles=await self.auth.role_list(ctx))

    @etcd_rpc
    async def RoleDelete(self, req: rpc_pb2.AuthRoleDeleteRequest, ctx: RequestContext
                         ) -> rpc_pb2.AuthRoleDeleteResponse:
        await self.auth.role_delete(ctx, req.role)
        return rpc_pb2.AuthRoleDeleteResponse(header=self._header())

    @etcd_rpc
    async def RoleGrantPermission(self, req: rpc_pb2.AuthRoleGrantPermissionRequest,
                                  ctx: RequestContext
                                  ) -> rpc_pb2.AuthRoleGrantPermissionResponse:
        if int(req.perm.permType) not in PermType._value2member_map_:
            raise etcd_error(ERR_PERMISSION_TYPE)
        await self.auth.role_grant(ctx, req.name, PermType(req.perm.permType), req.perm.key,
                                   req.perm.range_end)
        return rpc_pb2.AuthRoleGrantPermissionResponse(header=self._header())

    @etcd_rpc
    async def RoleRevokePermission(self, req: rpc_pb2.AuthRoleRevokePermissionRequest,
                                   ctx: RequestContext
                                   ) -> rpc_pb2.AuthRoleRevokePermissionResponse:
        await self.auth.role_revoke(ctx, req.role, req.key, req.range_end)
        return rpc_pb2.AuthRoleRevokePermissionResponse(header=self._header())
