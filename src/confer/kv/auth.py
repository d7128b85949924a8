"""The replicated auth state (etcd's ``auth.AuthStore``): users, roles, permissions and the
enabled flag, changed only by :class:`~confer.kv.commands.AuthChange` commands through the
log, so every member decides every request alike.

Users hold a bcrypt hash of their password (hashed by the member that received the
request, before proposing: the log and snapshots never hold a password) and a set of
roles; roles hold permissions (READ, WRITE or READWRITE on a key or a key range). The
``root`` user with the ``root`` role may do anything; the ``root`` role need not be added
to be granted (etcd). Every change bumps the auth revision. Checking a request against
this state is the server's (``confer.server.api.auth``), before it proposes the request;
here are the state, its rules, what a permission covers, and the check again at apply time
of a command whose auth revision is stale (:func:`stale_refusal`, etcd's
``ErrAuthOldRevision`` made exact: re-checked against the current state instead of sent back
for a retry).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confer.kv import keyrange
from confer.kv.commands import (
    AuthChange,
    Command,
    DeleteRange,
    LeaseGrant,
    LeaseRevoke,
    Put,
    RangeOp,
    Txn,
    check_auth_change,
)
from confer.kv.errors import AuthDenied, AuthError, AuthUserEmpty, KVError
from confer.kv.types import AuthAction, AuthResult, ErrorResult, PermType

if TYPE_CHECKING:
    from confer.kv.state import StoreState

ROOT = "root"
"""The user and the role that may do anything."""

ERR_USER_EXISTS = "etcdserver: user name already exists"
ERR_USER_NOT_FOUND = "etcdserver: user name not found"
ERR_ROLE_EXISTS = "etcdserver: role name already exists"
ERR_ROLE_NOT_FOUND = "etcdserver: role name not found"
ERR_ROLE_NOT_GRANTED = "etcdserver: role is not granted to the user"
ERR_PERMISSION_NOT_GRANTED = "etcdserver: permission is not granted to the role"
ERR_ROOT_USER_NOT_EXIST = "etcdserver: root user does not exist"
ERR_ROOT_ROLE_NOT_EXIST = "etcdserver: root user does not have root role"
ERR_INVALID_AUTH_MGMT = "etcdserver: invalid auth management"
ERR_AUTH_NOT_ENABLED = "etcdserver: authentication is not enabled"
ERR_AUTH_FAILED = "etcdserver: authentication failed, invalid user ID or password"
ERR_PERMISSION_DENIED = "etcdserver: permission denied"
ERR_USER_EMPTY = "etcdserver: user name is empty"

AuthListener = Callable[[AuthChange], None]
"""Called with each auth change after it was applied (a token issued included)."""


@dataclass(frozen=True, slots=True)
class Permission:
    """READ, WRITE or READWRITE on ``(key, range_end)`` (etcd's key range rules)."""

    perm: PermType
    key: bytes
    range_end: bytes = b""

    def allows(self, write: bool) -> bool:
        return self.perm == PermType.READWRITE or self.perm == (PermType.WRITE if write
                                                                 else PermType.READ)


@dataclass(slots=True)
class User:
    name: str
    password_hash: bytes
    """bcrypt's hash; empty: no password (authenticates by client certificate only)."""
    roles: list[str] = field(default_factory=list)
    """Sorted."""


@dataclass(slots=True)
class AuthState:
    enabled: bool = False
    revision: int = 1
    users: dict[str, User] = field(default_factory=dict)
    roles: dict[str, list[Permission]] = field(default_factory=dict)
    """Each role's permissions, sorted by (key, range_end)."""


# -- reads -----------------------------------------------------------------------------------
def auth_enabled(st: StoreState) -> bool:
    return st._auth.enabled


def auth_revision(st: StoreState) -> int:
    return st._auth.revision


def user(st: StoreState, name: str) -> User | None:
    """The user ``name`` (a copy), or None."""
    u = st._auth.users.get(name)
    return None if u is None else User(u.name, u.password_hash, list(u.roles))


def user_names(st: StoreState) -> list[str]:
    return sorted(st._auth.users)


def role(st: StoreState, name: str) -> list[Permission] | None:
    """The role's permissions; None if there is no such role. ``root`` (added or not)
    holds READWRITE on every key, as etcd answers."""
    perms = st._auth.roles.get(name)
    if perms is None:
        return [Permission(PermType.READWRITE, b"\0", keyrange.FROM_KEY)] if name == ROOT \
            else None
    return list(perms)


def role_names(st: StoreState) -> list[str]:
    return sorted(st._auth.roles)


def is_root(st: StoreState, name: str) -> bool:
    """Whether user ``name`` exists and holds the root role."""
    u = st._auth.users.get(name)
    return u is not None and ROOT in u.roles


def user_permissions(st: StoreState, name: str) -> list[Permission]:
    """Every permission of every role user ``name`` holds (empty for no such user)."""
    u = st._auth.users.get(name)
    if u is None:
        return []
    auth_roles = st._auth.roles
    return [p for r in u.roles for p in auth_roles.get(r, ())]


# -- what permissions cover ------------------------------------------------------------------
Spans = tuple[list[bytes], list[bytes | None]]
"""Disjoint sorted intervals ``[lo, hi)`` (``hi`` None: unbounded): (their starts, their
ends)."""


def merged(perms: list[Permission], write: bool) -> Spans:
    """The union of the permissions that allow reading (or writing) as disjoint sorted
    intervals."""
    spans = sorted((keyrange.bounds(p.key, p.range_end) for p in perms if p.allows(write)),
                   key=lambda s: s[0])
    los: list[bytes] = []
    his: list[bytes | None] = []
    for lo, hi in spans:
        if los and (his[-1] is None or lo <= his[-1]):
            if his[-1] is not None and (hi is None or hi > his[-1]):
                his[-1] = hi
            continue
        los.append(lo)
        his.append(hi)
    return los, his


def covers(union: Spans, key: bytes, range_end: bytes) -> bool:
    """Whether the intervals hold every key ``(key, range_end)`` names (an empty range:
    trivially)."""
    lo, hi = keyrange.bounds(key, range_end)
    if hi is not None and hi <= lo:
        return True
    los, his = union
    i = bisect_right(los, lo) - 1
    if i < 0:
        return False
    end = his[i]
    return end is None or (hi is not None and hi <= end)


KeyAccess = tuple[bool, bytes, bytes]
"""``(write, key, range_end)``: one key range a command reads or writes."""


def txn_key_accesses(txn: Txn) -> list[KeyAccess]:
    """Every key range a transaction may touch, whichever branch runs: its compares and
    ranges read, its puts and deletes write (nested transactions included)."""
    out: list[KeyAccess] = [(False, c.key, c.range_end) for c in txn.compare]
    for op in (*txn.success, *txn.failure):
        if type(op) is RangeOp:
            out.append((False, op.key, op.range_end))
        elif type(op) is Put:
            out.append((True, op.key, b""))
        elif type(op) is DeleteRange:
            out.append((True, op.key, op.range_end))
        elif type(op) is Txn:
            out.extend(txn_key_accesses(op))
    return out


def stale_refusal(st: StoreState, user: str, cmd: Command) -> KVError | None:
    """Why ``user`` may not make ``cmd`` under the current auth state (None: it may), for a
    command checked at an older auth revision than the store's (etcd re-checks at apply
    time too). The same rules as the request layer's guard, over the store's own state, so
    every member decides alike: a simple token's record needs nothing; anything else needs
    a user; the root role may do anything; compaction, alarms and auth management need it;
    a lease grant needs only a user; a lease revocation needs WRITE on every key attached
    to the lease now; puts, deletes and transactions need permissions covering their keys
    (a transaction's compares and ranges READ, its puts and deletes WRITE, both branches)."""
    if type(cmd) is AuthChange and cmd.action == AuthAction.TOKEN:
        return None  # Authenticate proposes it for an anonymous caller; apply checks the user
    if not user:
        return AuthUserEmpty(f"{ERR_USER_EMPTY} (authentication was enabled before the "
                             "write was applied)")
    a = st._auth
    u = a.users.get(user)
    if u is not None and ROOT in u.roles:
        return None
    if u is not None and type(cmd) is LeaseGrant:
        return None
    accesses: list[KeyAccess] | None = None
    if u is not None:
        if type(cmd) is Put:
            accesses = [(True, cmd.key, b"")]
        elif type(cmd) is DeleteRange:
            accesses = [(True, cmd.key, cmd.range_end)]
        elif type(cmd) is Txn:
            accesses = txn_key_accesses(cmd)
        elif type(cmd) is LeaseRevoke:
            accesses = [(True, k, b"") for k in sorted(st._lease_keys.get(cmd.id, ()))]
    if accesses is not None:
        perms = user_permissions(st, user)
        reads, writes = merged(perms, False), merged(perms, True)
        if all(covers(writes if w else reads, k, e) for w, k, e in accesses):
            return None
    return AuthDenied(f"{ERR_PERMISSION_DENIED} (user {user!r} lost the permission before "
                      f"the write was applied: auth revision {a.revision})")


# -- the command -----------------------------------------------------------------------------
def apply_auth(st: StoreState, cmd: AuthChange) -> AuthResult | ErrorResult:
    """Apply one auth change; an :class:`ErrorResult` (with etcd's message) changes
    nothing. A change that changes nothing (a role granted twice, enabling twice) succeeds
    without bumping the revision, as in etcd."""
    try:
        check_auth_change(cmd)
        changed = _change(st._auth, cmd)
    except KVError as e:
        return ErrorResult.of(e, st._rev)
    if changed:
        st._auth.revision += 1
    for callback in st._auth_listeners:
        callback(cmd)
    return AuthResult(st._rev, st._auth.revision)


def _change(a: AuthState, cmd: AuthChange) -> bool:
    """Change ``a`` as ``cmd`` says; whether anything changed. Raises before changing."""
    act = cmd.action
    if act == AuthAction.ENABLE:
        root = a.users.get(ROOT)
        if root is None:
            raise AuthError(ERR_ROOT_USER_NOT_EXIST)
        if ROOT not in root.roles:
            raise AuthError(ERR_ROOT_ROLE_NOT_EXIST)
        changed = not a.enabled
        a.enabled = True
        return changed
    if act == AuthAction.DISABLE:
        changed = a.enabled
        a.enabled = False
        return changed
    if act == AuthAction.TOKEN:
        if not a.enabled:
            raise AuthError(ERR_AUTH_NOT_ENABLED)
        if cmd.name not in a.users:
            raise AuthError(ERR_AUTH_FAILED)
        return False
    if act == AuthAction.USER_ADD:
        if cmd.name in a.users:
            raise AuthError(ERR_USER_EXISTS)
        a.users[cmd.name] = User(cmd.name, cmd.secret)
        return True
    if act in (AuthAction.ROLE_ADD, AuthAction.ROLE_DELETE, AuthAction.ROLE_GRANT,
               AuthAction.ROLE_REVOKE):
        return _change_role(a, cmd)
    u = a.users.get(cmd.name)
    if u is None:
        raise AuthError(ERR_USER_NOT_FOUND)
    if act == AuthAction.USER_DELETE:
        if a.enabled and cmd.name == ROOT:
            raise AuthError(ERR_INVALID_AUTH_MGMT)
        del a.users[cmd.name]
    elif act == AuthAction.USER_PASSWORD:
        u.password_hash = cmd.secret
    elif act == AuthAction.USER_GRANT:
        if cmd.role != ROOT and cmd.role not in a.roles:
            raise AuthError(ERR_ROLE_NOT_FOUND)
        if cmd.role in u.roles:
            return False
        u.roles = sorted([*u.roles, cmd.role])
    else:  # USER_REVOKE
        if a.enabled and cmd.name == ROOT and cmd.role == ROOT:
            raise AuthError(ERR_INVALID_AUTH_MGMT)
        if cmd.role not in u.roles:
            raise AuthError(ERR_ROLE_NOT_GRANTED)
        u.roles = [r for r in u.roles if r != cmd.role]
    return True


def _change_role(a: AuthState, cmd: AuthChange) -> bool:
    act = cmd.action
    if act == AuthAction.ROLE_ADD:
        if cmd.name in a.roles:
            raise AuthError(ERR_ROLE_EXISTS)
        a.roles[cmd.name] = []
        return True
    perms = a.roles.get(cmd.name)
    if perms is None:
        raise AuthError(ERR_ROLE_NOT_FOUND)
    if act == AuthAction.ROLE_DELETE:
        if a.enabled and cmd.name == ROOT:
            raise AuthError(ERR_INVALID_AUTH_MGMT)
        del a.roles[cmd.name]
        for u in a.users.values():  # etcd revokes a deleted role from every user
            if cmd.name in u.roles:
                u.roles = [r for r in u.roles if r != cmd.name]
        return True
    rest = [p for p in perms if (p.key, p.range_end) != (cmd.key, cmd.range_end)]
    if act == AuthAction.ROLE_GRANT:  # a grant on the same range replaces its type (etcd)
        new = Permission(cmd.perm, cmd.key, cmd.range_end)
        if new in perms:
            return False
        a.roles[cmd.name] = sorted([*rest, new], key=lambda p: (p.key, p.range_end))
        return True
    if len(rest) == len(perms):  # ROLE_REVOKE of a range the role has no permission on
        raise AuthError(ERR_PERMISSION_NOT_GRANTED)
    a.roles[cmd.name] = rest
    return True


# -- snapshots -------------------------------------------------------------------------------
def dump(a: AuthState) -> list[Any]:
    """The auth state as a msgpack-able list, in a canonical order (equal states, equal
    bytes): ``[enabled, revision, [name, hash, [roles]] * users, [name, [perm, key,
    range_end] * perms] * roles]``, users and roles by name."""
    users = [[u.name, u.password_hash, list(u.roles)]
             for u in sorted(a.users.values(), key=lambda u: u.name)]
    roles = [[name, [x for p in a.roles[name] for x in (int(p.perm), p.key, p.range_end)]]
             for name in sorted(a.roles)]
    return [a.enabled, a.revision, users, roles]


def load(body: list[Any]) -> AuthState:
    """The inverse of :func:`dump`."""
    enabled, revision, users, roles = body
    a = AuthState(bool(enabled), int(revision))
    for name, password_hash, user_roles in users:
        a.users[name] = User(name, password_hash, list(user_roles))
    for name, flat in roles:
        a.roles[name] = [Permission(PermType(flat[i]), flat[i + 1], flat[i + 2])
                         for i in range(0, len(flat), 3)]
    return a
