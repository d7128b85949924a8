"""The client's user, role and authentication methods: etcd's ``Auth`` service (Confer serves
it on its client port for both APIs' users), each described once as a
:class:`~confer.client.plans.Call` as :mod:`confer.client.calls` does.

Changes are retried only when nothing was applied (``Retry.ONCE``); the ``*_list`` and
``*_get`` reads and the status on any failure. Once authentication is enabled, everything
here but :func:`auth_status` needs the root role (a user may get its own user).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confer.client.plans import Call
from confer.client.policy import Retry
from confer.client.protocol import Rpc
from confer.etcdpb.authpb import auth_pb2
from confer.etcdpb.etcdserverpb import rpc_pb2

__all__ = ["AuthStatus", "Permission", "auth_disable", "auth_enable", "auth_status",
           "role_add", "role_delete", "role_get", "role_grant_permission", "role_list",
           "role_revoke_permission", "user_add", "user_change_password", "user_delete",
           "user_get", "user_grant_role", "user_list", "user_revoke_role"]

PERMISSIONS = ("read", "write", "readwrite")
"""A permission's types, as :func:`role_grant_permission` takes them."""


@dataclass(frozen=True, slots=True)
class AuthStatus:
    enabled: bool
    revision: int
    """The auth revision: bumped by every change of users, roles and permissions."""


@dataclass(frozen=True, slots=True)
class Permission:
    """``type`` (read, write or readwrite) on ``key``, or on ``[key, range_end)`` (etcd's
    rules: ``range_end`` ``"\\0"`` is every key from ``key`` on)."""

    type: str
    key: str
    range_end: str = ""


def _auth(method: str, request: Any, response: Any) -> Rpc:
    return Rpc(method, f"/etcdserverpb.Auth/{method}", request.SerializeToString,
               response.FromString)


def _change(what: str, method: str, request: Any, response: Any,
            timeout: float | None) -> Call[None]:
    return Call(what, _auth(method, type(request), response), request, Retry.ONCE,
                _nothing, timeout)


def _read(what: str, method: str, request: Any, response: Any,
          convert: Callable[[Any, str], Any], timeout: float | None) -> Call[Any]:
    return Call(what, _auth(method, type(request), response), request, Retry.READ, convert,
                timeout)


def _nothing(resp: Any, endpoint: str) -> None:
    return None


def auth_status(*, timeout: float | None = None) -> Call[AuthStatus]:
    """Whether authentication is enabled, and the auth revision."""
    return _read("AuthStatus", "AuthStatus", rpc_pb2.AuthStatusRequest(),
                 rpc_pb2.AuthStatusResponse,
                 lambda r, _: AuthStatus(r.enabled, r.authRevision), timeout)


def auth_enable(*, timeout: float | None = None) -> Call[None]:
    """Enable authentication (needs the ``root`` user, granted the ``root`` role)."""
    return _change("AuthEnable", "AuthEnable", rpc_pb2.AuthEnableRequest(),
                   rpc_pb2.AuthEnableResponse, timeout)


def auth_disable(*, timeout: float | None = None) -> Call[None]:
    """Disable authentication (root only)."""
    return _change("AuthDisable", "AuthDisable", rpc_pb2.AuthDisableRequest(),
                   rpc_pb2.AuthDisableResponse, timeout)


# -- users -----------------------------------------------------------------------------------
def user_add(name: str, password: str = "", no_password: bool = False, *,
             timeout: float | None = None) -> Call[None]:
    """Add a user (``no_password``: one that can only authenticate with a client
    certificate). The server hashes the password (bcrypt) and never stores it."""
    return _change(f"UserAdd {name}", "UserAdd", rpc_pb2.AuthUserAddRequest(
        name=name, password=password, options=auth_pb2.UserAddOptions(no_password=no_password)),
        rpc_pb2.AuthUserAddResponse, timeout)


def user_get(name: str, *, timeout: float | None = None) -> Call[tuple[str, ...]]:
    """The user's roles."""
    return _read(f"UserGet {name}", "UserGet", rpc_pb2.AuthUserGetRequest(name=name),
                 rpc_pb2.AuthUserGetResponse, lambda r, _: tuple(r.roles), timeout)


def user_list(*, timeout: float | None = None) -> Call[tuple[str, ...]]:
    """Every user's name, sorted."""
    return _read("UserList", "UserList", rpc_pb2.AuthUserListRequest(),
                 rpc_pb2.AuthUserListResponse, lambda r, _: tuple(r.users), timeout)


def user_delete(name: str, *, timeout: float | None = None) -> Call[None]:
    return _change(f"UserDelete {name}", "UserDelete", rpc_pb2.AuthUserDeleteRequest(name=name),
                   rpc_pb2.AuthUserDeleteResponse, timeout)


def user_change_password(name: str, password: str, *, timeout: float | None = None
                         ) -> Call[None]:
    """Set a user's password; its tokens stop working."""
    return _change(f"UserChangePassword {name}", "UserChangePassword",
                   rpc_pb2.AuthUserChangePasswordRequest(name=name, password=password),
                   rpc_pb2.AuthUserChangePasswordResponse, timeout)


def user_grant_role(name: str, role: str, *, timeout: float | None = None) -> Call[None]:
    return _change(f"UserGrantRole {name} {role}", "UserGrantRole",
                   rpc_pb2.AuthUserGrantRoleRequest(user=name, role=role),
                   rpc_pb2.AuthUserGrantRoleResponse, timeout)


def user_revoke_role(name: str, role: str, *, timeout: float | None = None) -> Call[None]:
    return _change(f"UserRevokeRole {name} {role}", "UserRevokeRole",
                   rpc_pb2.AuthUserRevokeRoleRequest(name=name, role=role),
                   rpc_pb2.AuthUserRevokeRoleResponse, timeout)


# -- roles -----------------------------------------------------------------------------------
def role_add(name: str, *, timeout: float | None = None) -> Call[None]:
    return _change(f"RoleAdd {name}", "RoleAdd", rpc_pb2.AuthRoleAddRequest(name=name),
                   rpc_pb2.AuthRoleAddResponse, timeout)


def _permissions(resp: Any, endpoint: str) -> tuple[Permission, ...]:
    return tuple(Permission(PERMISSIONS[p.permType], p.key.decode(errors="replace"),
                            p.range_end.decode(errors="replace")) for p in resp.perm)


def role_get(name: str, *, timeout: float | None = None) -> Call[tuple[Permission, ...]]:
    """The role's permissions."""
    return _read(f"RoleGet {name}", "RoleGet", rpc_pb2.AuthRoleGetRequest(role=name),
                 rpc_pb2.AuthRoleGetResponse, _permissions, timeout)


def role_list(*, timeout: float | None = None) -> Call[tuple[str, ...]]:
    return _read("RoleList", "RoleList", rpc_pb2.AuthRoleListRequest(),
                 rpc_pb2.AuthRoleListResponse, lambda r, _: tuple(r.roles), timeout)


def role_delete(name: str, *, timeout: float | None = None) -> Call[None]:
    """Delete a role; every user loses it."""
    return _change(f"RoleDelete {name}", "RoleDelete", rpc_pb2.AuthRoleDeleteRequest(role=name),
                   rpc_pb2.AuthRoleDeleteResponse, timeout)


def _range(key: str, range_end: str, prefix: bool) -> tuple[bytes, bytes]:
    if prefix:
        if range_end:
            raise ValueError("give either range_end or prefix, not both")
        return key.encode(), _prefix_end(key.encode())
    return key.encode(), range_end.encode()


def _prefix_end(key: bytes) -> bytes:
    """The end of the range of keys starting with ``key`` (etcd's ``GetPrefixRangeEnd``)."""
    for i in range(len(key) - 1, -1, -1):
        if key[i] < 0xFF:
            return key[:i] + bytes((key[i] + 1,))
    return b"\0"


def role_grant_permission(name: str, permission: str, key: str, range_end: str = "",
                          prefix: bool = False, *, timeout: float | None = None) -> Call[None]:
    """Let role ``name`` read, write or readwrite (``permission``) ``key``, the range to
    ``range_end``, or (``prefix``) every key starting with ``key``."""
    if permission not in PERMISSIONS:
        raise ValueError(f"permission must be one of {', '.join(PERMISSIONS)}, "
                         f"not {permission!r}")
    start, end = _range(key, range_end, prefix)
    perm = auth_pb2.Permission(permType=permission.upper(), key=start,
                               range_end=end)
    return _change(f"RoleGrantPermission {name} {key}", "RoleGrantPermission",
                   rpc_pb2.AuthRoleGrantPermissionRequest(name=name, perm=perm),
                   rpc_pb2.AuthRoleGrantPermissionResponse, timeout)


def role_revoke_permission(name: str, key: str, range_end: str = "", prefix: bool = False, *,
                           timeout: float | None = None) -> Call[None]:
    """Take back role ``name``'s permission on exactly that key or range."""
    start, end = _range(key, range_end, prefix)
    return _change(f"RoleRevokePermission {name} {key}", "RoleRevokePermission",
                   rpc_pb2.AuthRoleRevokePermissionRequest(role=name, key=start, range_end=end),
                   rpc_pb2.AuthRoleRevokePermissionResponse, timeout)
