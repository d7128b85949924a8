"""`confer auth|user|role`: authentication, users, roles and permissions (etcdctl's
commands, on the Python client). Passwords are prompted for without echo when not given."""

from __future__ import annotations

import click

from confer.cli.context import Ctx, client_options, print_listing, show
from confer.cli.output import handle_errors
from confer.client.auth_calls import PERMISSIONS, Permission


def _new_password(name: str, password: str | None) -> str:
    """``password``, or one prompted for twice, without echo."""
    if password is not None:
        return password
    return str(click.prompt(f"Password of {name}", hide_input=True,
                            confirmation_prompt=True, err=True))


def _perm_row(p: Permission) -> list[str]:
    return [p.type, p.key, p.range_end]


def register(cli: click.Group) -> None:
    """Attach the ``auth``, ``user`` and ``role`` groups to the top-level group."""

    @cli.group("auth")
    def auth() -> None:
        """Enable, disable or show authentication (docs/security.md)."""

    @auth.command("enable")
    @client_options
    @handle_errors
    def enable(ctx: Ctx) -> None:
        """Enable authentication: needs the user root, granted the role root."""
        with ctx.client() as c:
            c.auth_enable()
        show(ctx, {"enabled": True}, "Authentication enabled")

    @auth.command("disable")
    @client_options
    @handle_errors
    def disable(ctx: Ctx) -> None:
        """Disable authentication (root only)."""
        with ctx.client() as c:
            c.auth_disable()
        show(ctx, {"enabled": False}, "Authentication disabled")

    @auth.command("status")
    @client_options
    @handle_errors
    def status(ctx: Ctx) -> None:
        """Whether authentication is enabled, and the auth revision."""
        with ctx.client() as c:
            st = c.auth_status()
        show(ctx, st, f"enabled: {str(st.enabled).lower()}, auth revision: {st.revision}")

    # -- users ----------------------------------------------------------------------------------
    @cli.group("user")
    def user() -> None:
        """Add, list, inspect, delete users; set passwords; grant and revoke roles."""

    @user.command("add")
    @click.argument("name")
    @click.option("--password", default=None,
                  help="The new user's password (prompted for when missing; a flag is "
                       "visible to other users of this machine).")
    @click.option("--no-password", is_flag=True,
                  help="A user without a password: it authenticates by client certificate.")
    @client_options
    @handle_errors
    def user_add(ctx: Ctx, name: str, password: str | None, no_password: bool) -> None:
        """Add user NAME."""
        secret = "" if no_password else _new_password(name, password)
        with ctx.client() as c:
            c.user_add(name, secret, no_password)
        show(ctx, {"user": name}, f"User {name} created")

    @user.command("list")
    @client_options
    @handle_errors
    def user_list(ctx: Ctx) -> None:
        """Every user."""
        with ctx.client() as c:
            names = c.user_list()
        print_listing(ctx, names, ["USER"], lambda n: [n])

    @user.command("get")
    @click.argument("name")
    @client_options
    @handle_errors
    def user_get(ctx: Ctx, name: str) -> None:
        """User NAME's roles."""
        with ctx.client() as c:
            roles = c.user_get(name)
        show(ctx, {"user": name, "roles": list(roles)},
             f"User: {name}\nRoles: {' '.join(roles)}")

    @user.command("delete")
    @click.argument("name")
    @client_options
    @handle_errors
    def user_delete(ctx: Ctx, name: str) -> None:
        """Delete user NAME."""
        with ctx.client() as c:
            c.user_delete(name)
        show(ctx, {"user": name}, f"User {name} deleted")

    @user.command("passwd")
    @click.argument("name")
    @click.option("--password", default=None, help="The new password (prompted when missing).")
    @client_options
    @handle_errors
    def user_passwd(ctx: Ctx, name: str, password: str | None) -> None:
        """Change user NAME's password; its tokens stop working."""
        secret = _new_password(name, password)
        with ctx.client() as c:
            c.user_change_password(name, secret)
        show(ctx, {"user": name}, "Password updated")

    @user.command("grant-role")
    @click.argument("name")
    @click.argument("role")
    @client_options
    @handle_errors
    def grant_role(ctx: Ctx, name: str, role: str) -> None:
        """Grant ROLE to user NAME."""
        with ctx.client() as c:
            c.user_grant_role(name, role)
        show(ctx, {"user": name, "role": role}, f"Role {role} is granted to user {name}")

    @user.command("revoke-role")
    @click.argument("name")
    @click.argument("role")
    @client_options
    @handle_errors
    def revoke_role(ctx: Ctx, name: str, role: str) -> None:
        """Revoke ROLE from user NAME (its watches outside what remains are cancelled)."""
        with ctx.client() as c:
            c.user_revoke_role(name, role)
        show(ctx, {"user": name, "role": role}, f"Role {role} is revoked from user {name}")

    # -- roles ----------------------------------------------------------------------------------
    @cli.group("role")
    def role() -> None:
        """Add, list, inspect, delete roles; grant and revoke their permissions."""

    @role.command("add")
    @click.argument("name")
    @client_options
    @handle_errors
    def role_add(ctx: Ctx, name: str) -> None:
        """Add role NAME."""
        with ctx.client() as c:
            c.role_add(name)
        show(ctx, {"role": name}, f"Role {name} created")

    @role.command("list")
    @client_options
    @handle_errors
    def role_list(ctx: Ctx) -> None:
        """Every role."""
        with ctx.client() as c:
            names = c.role_list()
        print_listing(ctx, names, ["ROLE"], lambda n: [n])

    @role.command("get")
    @click.argument("name")
    @client_options
    @handle_errors
    def role_get(ctx: Ctx, name: str) -> None:
        """Role NAME's permissions."""
        with ctx.client() as c:
            perms = c.role_get(name)
        print_listing(ctx, perms, ["PERMISSION", "KEY", "RANGE_END"], _perm_row)

    @role.command("delete")
    @click.argument("name")
    @client_options
    @handle_errors
    def role_delete(ctx: Ctx, name: str) -> None:
        """Delete role NAME (every user loses it)."""
        with ctx.client() as c:
            c.role_delete(name)
        show(ctx, {"role": name}, f"Role {name} deleted")

    @role.command("grant-permission")
    @click.argument("name")
    @click.argument("permission", type=click.Choice(PERMISSIONS))
    @click.argument("key")
    @click.argument("range_end", required=False, default="")
    @click.option("--prefix", is_flag=True, help="Every key starting with KEY.")
    @client_options
    @handle_errors
    def grant_permission(ctx: Ctx, name: str, permission: str, key: str, range_end: str,
                         prefix: bool) -> None:
        """Let role NAME read, write or readwrite KEY (or [KEY, RANGE_END), or --prefix)."""
        if prefix and range_end:
            raise click.UsageError("give either RANGE_END or --prefix, not both")
        with ctx.client() as c:
            c.role_grant_permission(name, permission, key, range_end, prefix)
        show(ctx, {"role": name}, f"Role {name} updated")

    @role.command("revoke-permission")
    @click.argument("name")
    @click.argument("key")
    @click.argument("range_end", required=False, default="")
    @click.option("--prefix", is_flag=True, help="The permission on every key starting with KEY.")
    @client_options
    @handle_errors
    def revoke_permission(ctx: Ctx, name: str, key: str, range_end: str, prefix: bool) -> None:
        """Take back role NAME's permission on exactly KEY (or the range, or --prefix)."""
        if prefix and range_end:
            raise click.UsageError("give either RANGE_END or --prefix, not both")
        with ctx.client() as c:
            c.role_revoke_permission(name, key, range_end, prefix)
        show(ctx, {"role": name}, f"Permission of {key} is revoked from role {name}")
