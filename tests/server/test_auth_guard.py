"""The auth guard (who may do what), tokens (simple and JWT), ``--auth-token`` parsing, and
the cancellation of watches whose permission is revoked: in process, on a real KV store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from confer.kv import AuthAction, AuthChange, AuthResult, KVStore, PermType, Put
from confer.kv.auth import Permission
from confer.kv.commands import decode_command_as
from confer.raft.types import Entry
from confer.server.api.auth import AuthGuard, JwtTokens, SimpleTokens, covers, merged
from confer.server.api.context import Access, AccessKind, Identity, RequestContext
from confer.server.api.core import Core
from confer.server.api.errors import InvalidToken, NotAuthenticated, PermissionDenied
from confer.server.api.kv import KVRequests
from confer.server.config import ConfigError, ServerConfig, auth_token_settings
from confer.server.fsm import ServerStateMachine
from confer.server.watch import WatchHub

READ, WRITE, ADMIN = AccessKind.READ, AccessKind.WRITE, AccessKind.ADMIN


def apply(kv: KVStore, action: AuthAction, name: str = "", **kw: object) -> None:
    assert isinstance(kv.execute(AuthChange(action, name, **kw)), AuthResult)  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def guard() -> AuthGuard:
    kv = KVStore()
    core = SimpleNamespace(kv=kv, host=SimpleNamespace(hub=WatchHub(kv)))
    g = AuthGuard(core, SimpleTokens(300))  # type: ignore[arg-type]  # what the guard uses
    apply(kv, AuthAction.USER_ADD, "root")
    apply(kv, AuthAction.USER_GRANT, "root", role="root")
    apply(kv, AuthAction.ROLE_ADD, "app")
    apply(kv, AuthAction.ROLE_GRANT, "app", perm=PermType.READ, key=b"/app/", range_end=b"/app0")
    apply(kv, AuthAction.ROLE_GRANT, "app", perm=PermType.READWRITE, key=b"/app/rw")
    apply(kv, AuthAction.USER_ADD, "alice")
    apply(kv, AuthAction.USER_GRANT, "alice", role="app")
    apply(kv, AuthAction.ENABLE)
    return g


def ctx(user: str = "", token: str = "") -> RequestContext:
    c = RequestContext.with_timeout("etcd", "Range", 5, token=token)
    c.identity = Identity(user)
    return c


def test_merged_permissions_cover_ranges_single_keys_and_open_ends() -> None:
    perms = [Permission(PermType.READ, b"a", b"c"), Permission(PermType.READWRITE, b"c", b"e"),
             Permission(PermType.WRITE, b"g"), Permission(PermType.READ, b"p", b"\0")]
    reads = merged(perms, write=False)
    assert covers(reads, b"a", b"e")  # two adjacent grants cover the range together
    assert covers(reads, b"b", b"")
    assert not covers(reads, b"a", b"f")
    assert covers(reads, b"q", b"\0") and covers(reads, b"zzz", b"")  # "\0": every key after
    assert not covers(reads, b"g", b"")  # write only
    writes = merged(perms, write=True)
    assert covers(writes, b"g", b"") and not covers(writes, b"g", b"h")
    assert covers(writes, b"c", b"e") and not covers(writes, b"a", b"")
    assert covers(writes, b"k", b"k")  # an empty range names no key


def test_the_guard_decides_by_user_roles_and_kind(guard: AuthGuard) -> None:
    guard(ctx("root"), Access(ADMIN))
    guard(ctx("alice"), Access(READ, b"/app/x"))
    guard(ctx("alice"), Access(READ, b"/app/", b"/app0"))
    guard(ctx("alice"), Access(WRITE, b"/app/rw"))
    guard(ctx("alice"), Access(WRITE))  # no key (a lease grant): any user
    for access in (Access(WRITE, b"/app/x"), Access(READ, b"/other"), Access(ADMIN),
                   Access(READ, b"/app/", b"\0")):
        with pytest.raises(PermissionDenied, match="etcdserver: permission denied"):
            guard(ctx("alice"), access)
    with pytest.raises(NotAuthenticated):
        guard(ctx(), Access(READ, b"/app/x"))
    with pytest.raises(PermissionDenied):  # a certificate's user that does not exist
        guard(ctx("mallory"), Access(READ, b"/app/x"))
    guard(RequestContext.with_timeout("internal", "x", 5), Access(ADMIN))  # members' calls
    apply(guard.kv, AuthAction.DISABLE)
    guard(ctx(), Access(ADMIN))


def test_a_token_names_its_user_until_the_user_changes(guard: AuthGuard) -> None:
    token, secret = guard.tokens.issue("alice", 1)
    with pytest.raises(InvalidToken, match="etcdserver: invalid auth token"):
        guard(ctx(token=token), Access(READ, b"/app/x"))  # not applied yet
    apply(guard.kv, AuthAction.TOKEN, "alice", secret=secret)
    c = ctx(token=token)
    guard(c, Access(READ, b"/app/x"))
    assert c.identity.user == "alice"
    apply(guard.kv, AuthAction.USER_PASSWORD, "alice", secret=b"$2b$04$new")
    with pytest.raises(InvalidToken):
        guard(ctx(token=token), Access(READ, b"/app/x"))


def test_simple_tokens_expire_unless_used_and_never_come_back() -> None:
    mono, wall = Clock(), Clock()
    tokens = SimpleTokens(10, clock=mono, wall_clock=wall)
    token, secret = tokens.issue("u", 1)
    assert token not in secret.decode(errors="replace")  # the log holds no token
    tokens.assign("u", secret)
    mono.now += 8
    assert tokens.user_of(token) == "u"  # used: ten more seconds
    mono.now += 8
    assert tokens.user_of(token) == "u"
    mono.now += 11
    assert tokens.user_of(token) is None
    # A member applying (or replaying) the entry after the TTL does not revive the token.
    late = SimpleTokens(10, clock=mono, wall_clock=wall)
    wall.now += 11
    late.assign("u", secret)
    assert late.user_of(token) is None


def jwt_keys(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    priv, pub = tmp_path / "jwt.key", tmp_path / "jwt.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def test_jwt_tokens_verify_with_the_public_key_only(tmp_path: Path) -> None:
    priv, pub = jwt_keys(tmp_path)
    st = auth_token_settings(f"jwt,pub-key={pub},priv-key={priv},sign-method=ES256,ttl=1m", 300)
    assert st.ttl == 60 and st.method == "ES256"
    issuer = JwtTokens(st.method, st.public_key, st.private_key, st.ttl)
    verifier = JwtTokens(st.method, st.public_key, None, st.ttl)  # another member
    token, secret = issuer.issue("alice", 3)
    assert secret == b""  # nothing to replicate
    assert verifier.user_of(token) == "alice"
    assert verifier.user_of(token[:-2] + "xx") is None
    forged = jwt.encode({"username": "root", "iat": 0, "exp": 2**40}, "s" * 32,
                        algorithm="HS256")
    assert verifier.user_of(forged) is None  # another algorithm: refused
    verifier.forget_user("alice")
    assert verifier.user_of(token) is None


@pytest.mark.parametrize("spec, message", [
    ("plain", "expected 'simple' or 'jwt"),
    ("jwt,sign-method=HS256,pub-key=/x", "sign-method must be one of"),
    ("jwt,sign-method=RS256", "jwt needs pub-key"),
    ("jwt,sign-method=RS256,pub-key=/nonexistent/key.pub", "cannot read key"),
    ("jwt,sign-method=RS256,pub-key=/x,colour=blue", "unknown jwt option"),
    ("jwt,sign-method=RS256,pub-key=/x,ttl=soon", "not a positive duration"),
])
def test_bad_auth_token_settings_are_refused_with_the_rule(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        auth_token_settings(spec, 300)


def test_a_watch_whose_permission_is_revoked_is_cancelled(guard: AuthGuard) -> None:
    hub: WatchHub = guard.core.host.hub
    access = Access(READ, b"/app/", b"/app0")
    c = ctx("alice")
    guard(c, access)
    watcher = hub.watcher(access.key, access.range_end, 0)
    guard.track_watch(c, [access], watcher)
    root_watch = hub.watcher(b"/app/", b"/app0", 0)
    guard.track_watch(ctx("root"), [access], root_watch)

    async def drain() -> None:
        async for _ in guard.events(watcher, hub.events(watcher)):
            pass

    apply(guard.kv, AuthAction.ROLE_GRANT, "app", perm=PermType.READ, key=b"/more")
    assert not watcher.cancelled  # still allowed
    apply(guard.kv, AuthAction.USER_REVOKE, "alice", role="app")
    assert watcher.cancelled and not root_watch.cancelled
    with pytest.raises(PermissionDenied, match="revoked"):
        asyncio.run(drain())


def test_a_write_the_store_refuses_when_applied_is_denied_and_audited(
        caplog: pytest.LogCaptureFixture) -> None:
    # The request layer checks alice (she may write /app/rw) and proposes her put stamped
    # with that check; the revocation committed just before it is applied first, so the
    # store refuses the put: PermissionDenied, logged, nothing written.
    fsm = ServerStateMachine()
    kv = fsm.kv
    for action, name, kw in ((AuthAction.USER_ADD, "root", {}),
                             (AuthAction.USER_GRANT, "root", {"role": "root"}),
                             (AuthAction.ROLE_ADD, "app", {}),
                             (AuthAction.ROLE_GRANT, "app", {"perm": PermType.READWRITE,
                                                             "key": b"/app/rw"}),
                             (AuthAction.USER_ADD, "alice", {}),
                             (AuthAction.USER_GRANT, "alice", {"role": "app"}),
                             (AuthAction.ENABLE, "", {})):
        apply(kv, action, name, **kw)
    entries: list[bytes] = []

    class RevokedMeanwhile:
        async def replicate(self, data: bytes, deadline: float) -> object:
            entries.append(data)
            kv.execute(AuthChange(AuthAction.USER_REVOKE, "alice", role="app"))
            return kv.apply(Entry(100, 1, data))

    core = Core(SimpleNamespace(cfg=ServerConfig(), fsm=fsm, consensus=RevokedMeanwhile(),  # type: ignore[arg-type]
                                hub=WatchHub(kv)))
    core.auth = AuthGuard(core, SimpleTokens(300))
    core.guards.append(core.auth)
    with (caplog.at_level("WARNING", "confer.audit"),
          pytest.raises(PermissionDenied, match="lost the permission before the write")):
        asyncio.run(KVRequests(core).put(ctx("alice"), Put(b"/app/rw", b"1")))
    assert kv.get(b"/app/rw") is None
    assert decode_command_as(entries[0])[1] == ("alice", kv.auth_revision() - 1)
    assert "denied user=alice api=etcd rpc=Range access=write key='/app/rw'" in caplog.text
