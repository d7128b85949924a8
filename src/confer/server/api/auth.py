"""Authentication and authorization of every request of both APIs: tokens, the auth guard,
and etcd's Auth requests (users, roles, permissions, AuthEnable/Disable, Authenticate).

The users, roles and permissions are replicated state (:mod:`confer.kv.auth`); this module
decides each request against the state this member applied, in one guard registered in
:attr:`Core.guards`, so no RPC of either API skips it. Who the caller is comes from
:attr:`RequestContext.identity` when the transport already knows it (a client
certificate's common name: the TLS layer sets it), else from the ``token`` the call carries
in its gRPC metadata, as etcd's clients send it.

**Tokens.** As etcd's ``--auth-token``:

- ``simple`` (the default): a random token, valid ``--auth-token-ttl`` seconds from its last
  use. A token issued by one member must work on every member, so issuing it is a log entry
  (etcd does the same), but the entry carries only the token's SHA-256 digest, never the
  token: every member learns the digest and the user when it applies the entry, and keeps
  them in memory only. The entry also carries the issue time, so a member that applies it
  late (catching up, or replaying its log after a restart) gives the token only what is
  left of its TTL.
- ``jwt,pub-key=PATH,priv-key=PATH,sign-method=RS256[,ttl=5m]``: a signed JSON Web Token
  (PyJWT) naming the user; every member verifies it with the public key, so nothing is
  replicated. Every member must be given the same keys.

A user deleted, or whose password changed, loses its tokens on every member.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
import weakref
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import bcrypt
import jwt

from confer.kv import (
    AuthAction,
    AuthChange,
    AuthResult,
    Command,
    DeleteRange,
    ErrorCode,
    ErrorResult,
    KVStore,
    PermType,
    Put,
)
from confer.kv.auth import ROOT, Permission, Spans, User, covers, merged
from confer.server.api.context import Access, AccessKind, Identity, RequestContext
from confer.server.api.errors import (
    AuthFailed,
    AuthNotEnabled,
    InvalidToken,
    NotAuthenticated,
    PermissionDenied,
    Unsupported,
)
from confer.server.config import ServerConfig, auth_token_settings
from confer.server.log_limit import LogLimiter, held_back

if TYPE_CHECKING:
    from confer.kv import Event
    from confer.server.api.core import Core
    from confer.server.watch import Watcher

audit = logging.getLogger("confer.audit")

DEFAULT_BCRYPT_COST = 10
"""bcrypt's cost factor (etcd's ``--bcrypt-cost``): 2^10 rounds, tens of milliseconds."""
MAX_TOKENS = 100_000
"""Simple tokens one member keeps; beyond that the oldest are forgotten (bounded memory
whatever clients do)."""


# -- tokens ----------------------------------------------------------------------------------
class Tokens(Protocol):
    """How this member issues and recognises tokens."""

    replicated: bool
    """Whether issuing a token is a log entry (simple tokens) or local (JWT)."""

    def issue(self, user: str, auth_revision: int) -> tuple[str, bytes]:
        """A new token for ``user`` and what the log carries of it (never the token)."""
        ...

    def assign(self, user: str, secret: bytes) -> None:
        """A token was issued (by any member; ``secret``: what its log entry carries):
        recognise it from now on."""
        ...

    def user_of(self, token: str) -> str | None:
        """The user the token was issued to; None if it is unknown or expired."""
        ...

    def forget_user(self, user: str) -> None:
        """Drop every token of ``user`` (deleted, or its password changed)."""
        ...


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class SimpleTokens:
    """etcd's simple tokens: random, member-local, each valid ``ttl`` seconds from its last
    use; issued through the log as their digests (see the module's docstring).

    The log entry carries the digest and the issuing member's wall-clock time (8 bytes of
    milliseconds after the digest), so a member that applies it later (catching up, or
    replaying its log after a restart) does not bring an old token back to life: a token
    counts as used last when it was issued."""

    replicated = True

    def __init__(self, ttl: float = 300.0, clock: Any = time.monotonic,
                 wall_clock: Any = time.time) -> None:
        self.ttl = ttl
        self.clock = clock
        self.wall_clock = wall_clock
        self._tokens: dict[bytes, tuple[str, float]] = {}  # digest -> (user, expiry)

    def issue(self, user: str, auth_revision: int) -> tuple[str, bytes]:
        token = secrets.token_urlsafe(24)
        issued_ms = int(self.wall_clock() * 1000)
        return token, digest(token) + issued_ms.to_bytes(8, "big")

    def assign(self, user: str, secret: bytes) -> None:
        if len(secret) != 40:
            return  # not a token this version issued: nothing to recognise
        age = self.wall_clock() - int.from_bytes(secret[32:], "big") / 1000
        remaining = self.ttl - max(age, 0.0)
        if remaining <= 0:
            return
        if len(self._tokens) >= MAX_TOKENS:
            now = self.clock()
            self._tokens = {d: e for d, e in self._tokens.items() if e[1] > now}
            while len(self._tokens) >= MAX_TOKENS:  # dicts keep insertion order: oldest first
                del self._tokens[next(iter(self._tokens))]
        self._tokens[secret[:32]] = (user, self.clock() + remaining)

    def user_of(self, token: str) -> str | None:
        d = digest(token)
        entry = self._tokens.get(d)
        if entry is None:
            return None
        now = self.clock()
        if entry[1] <= now:
            del self._tokens[d]
            return None
        self._tokens[d] = (entry[0], now + self.ttl)  # etcd renews a token at each use
        return entry[0]

    def forget_user(self, user: str) -> None:
        self._tokens = {d: e for d, e in self._tokens.items() if e[0] != user}


class JwtTokens:
    """Signed JSON Web Tokens (``--auth-token jwt,...``): verified with the public key on
    every member; nothing is replicated. A token names its user and expires after ``ttl``
    seconds; one issued before its user was deleted or changed password is refused (this
    member's clock when it applied the change against the token's issue time: members'
    clocks should agree within seconds, as JWT expiry needs anyway)."""

    replicated = False

    def __init__(self, method: str, public_key: bytes, private_key: bytes | None,
                 ttl: float) -> None:
        self.method = method
        self.public_key = public_key
        self.private_key = private_key
        self.ttl = ttl
        self._revoked_before: dict[str, float] = {}
        """user -> time (seconds since the epoch): tokens issued earlier are refused."""

    def issue(self, user: str, auth_revision: int) -> tuple[str, bytes]:
        if self.private_key is None:
            raise Unsupported("--auth-token jwt: this member has no priv-key: it verifies "
                              "tokens but does not issue them; authenticate with another")
        now = time.time()
        token = jwt.encode({"username": user, "revision": auth_revision, "iat": now,
                            "exp": now + self.ttl}, self.private_key, algorithm=self.method)
        return token, b""

    def assign(self, user: str, secret: bytes) -> None:
        pass  # nothing to remember: the signature proves the token

    def user_of(self, token: str) -> str | None:
        try:
            claims = jwt.decode(token, self.public_key, algorithms=[self.method],
                                options={"require": ["exp", "iat", "username"]})
        except jwt.PyJWTError:
            return None
        user = claims.get("username")
        if type(user) is not str:
            return None
        if claims["iat"] < self._revoked_before.get(user, 0.0):
            return None
        return user

    def forget_user(self, user: str) -> None:
        self._revoked_before[user] = time.time()


def make_tokens(cfg: ServerConfig) -> Tokens:
    """The token provider ``--auth-token`` names (:func:`auth_token_settings`)."""
    st = auth_token_settings(cfg.auth_token, cfg.auth_token_ttl)
    if st.kind == "simple":
        return SimpleTokens(st.ttl)
    return JwtTokens(st.method, st.public_key, st.private_key, st.ttl)


# -- permissions -----------------------------------------------------------------------------
@dataclass(slots=True)
class _UserPerms:
    read: Spans
    write: Spans
    root: bool


# -- the guard -------------------------------------------------------------------------------
class AuthGuard:
    """The guard of every access while authentication is enabled (registered first in
    :attr:`Core.guards`): PUBLIC accesses (the member list, status) need nothing; any
    other needs a user; ADMIN accesses (membership, maintenance, compaction, snapshots,
    auth management) need the root role; an access to keys needs permissions of the
    caller's roles that cover them; an access to no key (a lease grant, an empty
    transaction) needs only a user. A write is checked again when it is applied if the
    auth state moved meanwhile (:meth:`Core.write` stamps it). A refusal is logged to the
    ``confer.audit`` logger, rate-limited (docs/security.md)."""

    def __init__(self, core: Core, tokens: Tokens) -> None:
        self.core = core
        self.kv: KVStore = core.kv
        self.tokens = tokens
        self._perms: dict[str, _UserPerms] = {}
        self._perms_revision = 0
        self._audit = LogLimiter()
        self._watches: weakref.WeakKeyDictionary[Watcher, tuple[RequestContext, list[Access]]] = (
            weakref.WeakKeyDictionary())
        self._revoked: weakref.WeakSet[Watcher] = weakref.WeakSet()
        self.kv.add_auth_listener(self._on_change)
        self.kv.add_restore_listener(lambda _revision: self._recheck_watches())

    # -- who ------------------------------------------------------------------------------------
    def identify(self, ctx: RequestContext) -> str:
        """The caller's user name (from its identity, else its token, else its client
        certificate's common name, as etcd); raises NotAuthenticated or InvalidToken."""
        name = ctx.identity.user
        if not name:
            if not ctx.token:
                name = ctx.certificate_user() if ctx.certificate_user is not None else ""
                if name:
                    ctx.identity = Identity(name)
                    return name
                raise NotAuthenticated("etcdserver: user name is empty (authentication is "
                                       "enabled: authenticate, or pass a token)")
            found = self.tokens.user_of(ctx.token)
            if found is None:
                raise InvalidToken("etcdserver: invalid auth token")
            name = found
            ctx.identity = Identity(found)
        return name

    def _user_perms(self, name: str) -> _UserPerms | None:
        revision = self.kv.auth_revision()
        if revision != self._perms_revision:
            self._perms.clear()
            self._perms_revision = revision
        got = self._perms.get(name)
        if got is None:
            if self.kv.user(name) is None:
                return None
            perms = self.kv.user_permissions(name)
            got = _UserPerms(merged(perms, False), merged(perms, True), self.kv.is_root(name))
            self._perms[name] = got
        return got

    # -- the check ------------------------------------------------------------------------------
    def __call__(self, ctx: RequestContext, access: Access) -> None:
        if (not self.kv.auth_enabled() or ctx.api == "internal"
                or access.kind is AccessKind.PUBLIC):
            return  # internal: a member forwarding a request it checked itself
        try:
            self.check(ctx, access)
        except PermissionDenied as e:
            self._log_denied(ctx, access, str(e))
            raise

    def check(self, ctx: RequestContext, access: Access) -> None:
        name = self.identify(ctx)
        perms = self._user_perms(name)
        if perms is None:
            if ctx.token:
                raise InvalidToken("etcdserver: invalid auth token")
            raise PermissionDenied("etcdserver: permission denied")
        if perms.root:
            return
        if access.kind is AccessKind.ADMIN:
            raise PermissionDenied("etcdserver: permission denied")
        if not access.key:
            return
        union = perms.write if access.kind is AccessKind.WRITE else perms.read
        if not covers(union, access.key, access.range_end):
            raise PermissionDenied("etcdserver: permission denied")

    def refused_at_apply(self, ctx: RequestContext, command: Command, result: ErrorResult
                         ) -> PermissionDenied:
        """The error for a write the store refused when it applied it, because the auth
        state changed after this member checked it (:func:`confer.kv.auth.stale_refusal`);
        logged like any refusal."""
        denied = (NotAuthenticated if result.code == ErrorCode.USER_EMPTY
                  else PermissionDenied)(result.message)
        key, range_end = ((command.key, getattr(command, "range_end", b""))
                          if type(command) is Put or type(command) is DeleteRange
                          else (b"", b""))
        self._log_denied(ctx, Access(AccessKind.WRITE, key, range_end), str(denied))
        return denied

    def require_root(self, ctx: RequestContext) -> None:
        """Refuse unless auth is disabled or the caller has the root role."""
        self(ctx, Access(AccessKind.ADMIN))

    def _log_denied(self, ctx: RequestContext, access: Access, why: str) -> None:
        user = ctx.identity.user or "(anonymous)"
        count = self._audit.admit((user, ctx.method))
        if count is not None:
            audit.warning("denied user=%s api=%s rpc=%s access=%s key=%s range_end=%s "
                          "peer=%s reason=%r%s", user, ctx.api, ctx.method,
                          access.kind.value, _show(access.key), _show(access.range_end),
                          ctx.peer, why, held_back(count))

    # -- watches --------------------------------------------------------------------------------
    def track_watch(self, ctx: RequestContext, accesses: list[Access], watcher: Watcher
                    ) -> None:
        """Re-check this watch's accesses whenever permissions change; cancel it once one
        is refused."""
        self._watches[watcher] = (ctx, accesses)

    def revoked(self, watcher: Watcher) -> bool:
        """Was ``watcher`` cancelled because one of its accesses was refused?"""
        return watcher in self._revoked

    def events(self, watcher: Watcher, batches: AsyncGenerator[list[Event], None]
               ) -> AsyncGenerator[list[Event], None]:
        """``batches``, ending with PermissionDenied if the watch was revoked."""
        if watcher not in self._watches:
            return batches
        return self._revocable(watcher, batches)

    async def _revocable(self, watcher: Watcher, batches: AsyncGenerator[list[Event], None]
                         ) -> AsyncGenerator[list[Event], None]:
        try:
            async for batch in batches:
                yield batch
        finally:
            await batches.aclose()
        if self.revoked(watcher):
            raise PermissionDenied("etcdserver: permission denied (the watch's permission "
                                   "was revoked)")

    def _on_change(self, change: AuthChange) -> None:
        act = change.action
        if act == AuthAction.TOKEN:
            self.tokens.assign(change.name, change.secret)
            return
        if act in (AuthAction.USER_DELETE, AuthAction.USER_PASSWORD):
            self.tokens.forget_user(change.name)
        self._recheck_watches()

    def _recheck_watches(self) -> None:
        hub = self.core.host.hub
        for watcher, (ctx, accesses) in list(self._watches.items()):
            if watcher.cancelled:
                continue
            try:
                for access in accesses:
                    self(ctx, access)
            except PermissionDenied:
                self._revoked.add(watcher)
                hub.cancel(watcher)


def _show(key: bytes) -> str:
    """A key for the audit log: printable, and cut at 64 bytes."""
    text = key[:64].decode(errors="backslashreplace")
    return repr(text + ("..." if len(key) > 64 else ""))


# -- the Auth requests -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AuthStatus:
    enabled: bool
    revision: int


class AuthRequests:
    """etcd's Auth service in Confer's terms. Management needs the root role once
    authentication is enabled; a user may read its own user."""

    def __init__(self, core: Core, guard: AuthGuard, bcrypt_cost: int = DEFAULT_BCRYPT_COST
                 ) -> None:
        self.core = core
        self.kv = core.kv
        self.guard = guard
        self.bcrypt_cost = bcrypt_cost

    async def _hash(self, password: str) -> bytes:
        """bcrypt's hash, computed off the event loop (tens of milliseconds)."""
        cost = self.bcrypt_cost
        return await asyncio.to_thread(
            lambda: bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)))

    async def _change(self, ctx: RequestContext, change: AuthChange, *, admin: bool = True
                      ) -> AuthResult:
        if admin:
            self.guard.require_root(ctx)
        result: AuthResult = await self.core.write(ctx, change)
        return result

    async def _read(self, ctx: RequestContext) -> None:
        await self.core.read(ctx, Access(AccessKind.ADMIN))

    # -- the switch -----------------------------------------------------------------------------
    async def status(self, ctx: RequestContext) -> AuthStatus:
        """Whether authentication is enabled, and the auth revision (anyone may ask)."""
        await self.core.consensus.read_barrier(ctx.deadline)
        return AuthStatus(self.kv.auth_enabled(), self.kv.auth_revision())

    async def enable(self, ctx: RequestContext) -> AuthResult:
        return await self._change(ctx, AuthChange(AuthAction.ENABLE))

    async def disable(self, ctx: RequestContext) -> AuthResult:
        return await self._change(ctx, AuthChange(AuthAction.DISABLE))

    async def authenticate(self, ctx: RequestContext, name: str, password: str) -> str:
        """A token for ``name`` if ``password`` is its password."""
        await self.core.consensus.read_barrier(ctx.deadline)
        if not self.kv.auth_enabled():
            raise AuthNotEnabled("etcdserver: authentication is not enabled")
        found = self.kv.user(name)
        if found is None or not found.password_hash or not await _password_ok(found, password):
            raise AuthFailed("etcdserver: authentication failed, invalid user ID or password")
        token, token_digest = self.guard.tokens.issue(name, self.kv.auth_revision())
        if self.guard.tokens.replicated:
            await self._change(ctx, AuthChange(AuthAction.TOKEN, name, secret=token_digest),
                               admin=False)
        return token

    # -- users ----------------------------------------------------------------------------------
    async def user_add(self, ctx: RequestContext, name: str, password: str = "", *,
                       no_password: bool = False, password_hash: bytes = b"") -> AuthResult:
        """Add a user. The password is hashed here, so the log never holds it (or the
        caller hashed it: ``password_hash``); ``no_password``: it can only authenticate with
        a client certificate."""
        self.guard.require_root(ctx)
        if not (no_password or password_hash):
            password_hash = await self._hash(password)
        return await self._change(ctx, AuthChange(AuthAction.USER_ADD, name,
                                                  secret=password_hash))

    async def user_delete(self, ctx: RequestContext, name: str) -> AuthResult:
        return await self._change(ctx, AuthChange(AuthAction.USER_DELETE, name))

    async def user_password(self, ctx: RequestContext, name: str, password: str = "", *,
                            password_hash: bytes = b"") -> AuthResult:
        """Change a user's password (hashed here, or by the caller: ``password_hash``); its
        tokens stop working."""
        self.guard.require_root(ctx)
        if not password_hash:
            password_hash = await self._hash(password)
        return await self._change(ctx, AuthChange(AuthAction.USER_PASSWORD, name,
                                                  secret=password_hash))

    async def user_grant(self, ctx: RequestContext, name: str, role: str) -> AuthResult:
        return await self._change(ctx, AuthChange(AuthAction.USER_GRANT, name, role))

    async def user_revoke(self, ctx: RequestContext, name: str, role: str) -> AuthResult:
        return await self._change(ctx, AuthChange(AuthAction.USER_REVOKE, name, role))

    async def user_get(self, ctx: RequestContext, name: str) -> User | None:
        """The user (None: no such user); a user may read its own (etcd)."""
        if not (self.kv.auth_enabled() and ctx.api != "internal"
                and self.guard.identify(ctx) == name):
            self.guard.require_root(ctx)
        await self.core.consensus.read_barrier(ctx.deadline)
        return self.kv.user(name)

    async def user_list(self, ctx: RequestContext) -> list[str]:
        await self._read(ctx)
        return self.kv.user_names()

    # -- roles ----------------------------------------------------------------------------------
    async def role_add(self, ctx: RequestContext, name: str) -> AuthResult:
        return await self._change(ctx, AuthChange(AuthAction.ROLE_ADD, name))

    async def role_delete(self, ctx: RequestContext, name: str) -> AuthResult:
        return await self._change(ctx, AuthChange(AuthAction.ROLE_DELETE, name))

    async def role_grant(self, ctx: RequestContext, name: str, perm: PermType, key: bytes,
                         range_end: bytes) -> AuthResult:
        return await self._change(ctx, AuthChange(AuthAction.ROLE_GRANT, name, perm=perm,
                                                  key=key, range_end=range_end))

    async def role_revoke(self, ctx: RequestContext, name: str, key: bytes, range_end: bytes
                          ) -> AuthResult:
        return await self._change(ctx, AuthChange(AuthAction.ROLE_REVOKE, name, key=key,
                                                  range_end=range_end))

    async def role_get(self, ctx: RequestContext, name: str) -> list[Permission] | None:
        await self._read(ctx)
        return self.kv.role(name)

    async def role_list(self, ctx: RequestContext) -> list[str]:
        await self._read(ctx)
        return self.kv.role_names()


async def _password_ok(user: User, password: str) -> bool:
    return await asyncio.to_thread(bcrypt.checkpw, password.encode(), user.password_hash)


__all__ = ["ROOT", "AuthGuard",
           "AuthRequests", "AuthStatus", "JwtTokens", "SimpleTokens", "Tokens", "make_tokens"]
