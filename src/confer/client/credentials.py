"""A user's credentials on every call: exchanged for a token (etcd's ``Authenticate``), sent
as the ``token`` gRPC metadata, as etcd's clients send it, on both APIs.

One :class:`Credentials` per client, shared by its connections (a token works on every
member). A token the server calls invalid (expired, or forgotten by a restarted member) is
dropped when a call fails with it: a unary call is made once more with a new token at once;
a stream's failure is retryable (nothing was applied), and the client's retry authenticates
again. If authentication is not enabled on the cluster, calls go without a token, as etcd's
clients do, until one is refused for want of a user (it was enabled since).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import grpc

from confer.client.errors import error_from_status
from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc

TOKEN_KEY = "token"
INVALID_TOKEN = "invalid auth token"
"""What a server's UNAUTHENTICATED status says of a token to drop."""
_AUTHENTICATE = "/etcdserverpb.Auth/Authenticate"
_AUTHENTICATE_BYTES = _AUTHENTICATE.encode()
_NOT_ENABLED = "authentication is not enabled"
_USER_EMPTY = "user name is empty"
_MEMBER_FAILURES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
"""Authenticate's failures that say nothing of the credentials, only of the member asked."""


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class _SyncDetails(_Details, grpc.ClientCallDetails):
    """Call details with the token added (grpc's interceptors want this class)."""


class Credentials:
    """A user name and password, and the current token (None: none yet, or dropped)."""

    def __init__(self, user: str, password: str) -> None:
        self.user = user
        self.password = password
        self.token: str | None = None
        self.disabled = False
        """The cluster said authentication is not enabled: send no token."""
        self._lock = threading.Lock()
        self._alock: asyncio.Lock | None = None

    def _request(self) -> rpc_pb2.AuthenticateRequest:
        return rpc_pb2.AuthenticateRequest(name=self.user, password=self.password)

    def _failed(self, e: grpc.RpcError) -> None:
        """Authentication was refused: raise it as the client's error (or note that
        authentication is not enabled). A member that did not answer is re-raised as the
        gRPC error it is, so that the client's policy takes the next endpoint, as for any
        call to that member."""
        details = e.details() or ""
        if _NOT_ENABLED in details:
            self.disabled = True
            return
        code = e.code()
        if code in _MEMBER_FAILURES:
            raise e
        raise error_from_status(code.name if code is not None else "UNKNOWN", details,
                                f"authenticate as {self.user}") from None

    def stale(self, token: str | None, code: Any, details: str | None) -> bool:
        """A call made with ``token`` (None: none) ended with ``code``: whether it failed for
        want of a valid token, so that authenticating again may make it pass. Drops the
        token the server refused; after "user name is empty" on a call sent without one
        (authentication was enabled since this client asked), authenticates from now on."""
        text = details or ""
        with self._lock:
            if code == grpc.StatusCode.UNAUTHENTICATED and INVALID_TOKEN in text:
                if self.token == token:
                    self.token = None
                return True
            # etcd's API answers INVALID_ARGUMENT, the native API UNAUTHENTICATED.
            if (code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED)
                    and _USER_EMPTY in text and token is None and self.disabled):
                self.disabled = False
                return True
        return False

    # -- blocking -------------------------------------------------------------------------------
    def sync_token(self, auth: rpc_pb2_grpc.AuthStub, timeout: float | None) -> str | None:
        with self._lock:
            if self.token is None and not self.disabled:
                try:
                    self.token = auth.Authenticate(self._request(), timeout=timeout).token
                except grpc.RpcError as e:
                    self._failed(e)
            return self.token

    def intercept(self, channel: grpc.Channel) -> grpc.Channel:
        """``channel`` sending the token on every call."""
        return grpc.intercept_channel(channel, _SyncInterceptor(self, channel))

    # -- asyncio --------------------------------------------------------------------------------
    async def aio_token(self, channel: grpc.aio.Channel, timeout: float | None) -> str | None:
        if self._alock is None:
            self._alock = asyncio.Lock()
        async with self._alock:
            if self.token is None and not self.disabled:
                try:
                    self.token = (await rpc_pb2_grpc.AuthStub(channel).Authenticate(
                        self._request(), timeout=timeout)).token
                except grpc.RpcError as e:
                    self._failed(e)
            return self.token

    def aio_interceptors(self, channel_of: Callable[[], grpc.aio.Channel]
                         ) -> list[grpc.aio.ClientInterceptor]:
        """Interceptors for an asyncio channel (``channel_of()``: that channel, for the
        Authenticate call, which they let through)."""
        return [_AioUnaryUnary(self, channel_of), _AioUnaryStream(self, channel_of),
                _AioStreamUnary(self, channel_of), _AioStreamStream(self, channel_of)]


def _with_token(details: Any, token: str | None) -> Any:
    """``details`` (either kind of gRPC's call details) with the token in its metadata."""
    if token is None:
        return details
    metadata = [*(details.metadata or ()), (TOKEN_KEY, token)]
    if isinstance(details, grpc.aio.ClientCallDetails):
        return grpc.aio.ClientCallDetails(details.method, details.timeout,
                                          grpc.aio.Metadata(*metadata), details.credentials,
                                          details.wait_for_ready)
    return _SyncDetails(details.method, details.timeout, metadata, details.credentials,
                        details.wait_for_ready, getattr(details, "compression", None))


class _SyncInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                       grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self, creds: Credentials, channel: grpc.Channel) -> None:
        self.creds = creds
        self.auth = rpc_pb2_grpc.AuthStub(channel)  # the plain channel: no token for it

    def _call(self, continuation: Any, details: Any, request: Any, unary: bool) -> Any:
        if details.method == _AUTHENTICATE:
            return continuation(details, request)
        creds = self.creds
        token = creds.sync_token(self.auth, details.timeout)
        call = continuation(_with_token(details, token), request)
        if unary:  # it has ended: try once more if a new token may make it pass
            if creds.stale(token, call.code(), call.details()):
                token = creds.sync_token(self.auth, details.timeout)
                call = continuation(_with_token(details, token), request)
            return call
        # A stream: a refused token is dropped, and the client's retry gets a new one.
        call.add_callback(lambda: creds.stale(token, call.code(), call.details()))
        return call

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any,
                              request: Any) -> Any:
        return self._call(continuation, client_call_details, request, True)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any,
                               request: Any) -> Any:
        return self._call(continuation, client_call_details, request, False)

    def intercept_stream_unary(self, continuation: Any, client_call_details: Any,
                               request_iterator: Any) -> Any:
        return self._call(continuation, client_call_details, request_iterator, False)

    def intercept_stream_stream(self, continuation: Any, client_call_details: Any,
                                request_iterator: Any) -> Any:
        return self._call(continuation, client_call_details, request_iterator, False)


class _AioBase:
    def __init__(self, creds: Credentials, channel_of: Callable[[], grpc.aio.Channel]) -> None:
        self.creds = creds
        self.channel_of = channel_of

    async def _call(self, continuation: Any, details: Any, request: Any, unary: bool) -> Any:
        if details.method in (_AUTHENTICATE, _AUTHENTICATE_BYTES):  # bytes in grpc.aio
            return await continuation(details, request)
        creds = self.creds
        token = await creds.aio_token(self.channel_of(), details.timeout)
        call = await continuation(_with_token(details, token), request)
        if unary:  # try once more if a new token may make it pass
            if creds.stale(token, await call.code(), await call.details()):
                token = await creds.aio_token(self.channel_of(), details.timeout)
                call = await continuation(_with_token(details, token), request)
            return call

        async def ended() -> None:
            creds.stale(token, await call.code(), await call.details())

        call.add_done_callback(lambda _call: asyncio.ensure_future(ended()))
        return call


class _AioUnaryUnary(_AioBase, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any,
                                    request: Any) -> Any:
        return await self._call(continuation, client_call_details, request, True)


class _AioUnaryStream(_AioBase, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any,
                                     request: Any) -> Any:
        return await self._call(continuation, client_call_details, request, False)


class _AioStreamUnary(_AioBase, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any,
                                     request_iterator: Any) -> Any:
        return await self._call(continuation, client_call_details, request_iterator, False)


class _AioStreamStream(_AioBase, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any,
                                      request_iterator: Any) -> Any:
        return await self._call(continuation, client_call_details, request_iterator, False)
