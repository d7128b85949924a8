"""RequestContext.with_timeout: the deadline and the caller's own deadline from a timeout
(it is built on every request, so it is written for speed; these pin what it returns)."""

from __future__ import annotations

import math
import time

import pytest

from confer.server.api.context import (
    ANONYMOUS,
    DEFAULT_TIMEOUT,
    MAX_TIMEOUT,
    Access,
    AccessKind,
    RequestContext,
)


@pytest.mark.parametrize(("timeout", "budget", "wait"), [
    (None, DEFAULT_TIMEOUT, None),
    (5.0, 5.0, 5.0),
    (MAX_TIMEOUT + 100, MAX_TIMEOUT, MAX_TIMEOUT + 100),
    (math.inf, MAX_TIMEOUT, math.inf),
    (0.0, 0.0, 0.0),
    (-3.0, 0.0, 0.0),
    (math.nan, 0.0, 0.0),
])
def test_with_timeout(timeout: float | None, budget: float, wait: float | None) -> None:
    before = time.monotonic()
    ctx = RequestContext.with_timeout("etcd", "Range", timeout, peer="ipv4:127.0.0.1:1",
                                      token="t", certificate_user=str)
    after = time.monotonic()
    assert before + budget <= ctx.deadline <= after + budget
    if wait is None:
        assert ctx.wait_until is None
    else:
        assert ctx.wait_until is not None
        assert before + wait <= ctx.wait_until <= after + wait
    assert (ctx.api, ctx.method, ctx.forwarded, ctx.peer, ctx.token) == (
        "etcd", "Range", False, "ipv4:127.0.0.1:1", "t")
    assert ctx.identity is ANONYMOUS and ctx.certificate_user is str


def test_with_timeout_forwarded() -> None:
    assert RequestContext.with_timeout("internal", "Put", 1.0, forwarded=True).forwarded


def test_access_fields_and_defaults() -> None:
    access = Access(AccessKind.READ, b"/a")
    assert (access.kind, access.key, access.range_end) == (AccessKind.READ, b"/a", b"")
    assert Access(AccessKind.ADMIN) == Access(AccessKind.ADMIN, b"", b"")
    with pytest.raises(AttributeError):
        access.key = b"/b"  # type: ignore[misc]  # immutable, as the frozen dataclass was
