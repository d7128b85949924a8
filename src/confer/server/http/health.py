"""``/health`` (etcd's), ``/livez`` and ``/readyz`` (Kubernetes' probes, as etcd 3.6 serves
them).

- ``/health``: this member knows a leader, has no alarm raised, and can serve a linearizable
  read (a ReadIndex round confirmed by a quorum) within the health timeout: 200 with
  ``{"health":"true","reason":""}``, else 503 with ``"false"`` and the reason. As etcd:
  ``?serializable=true`` skips the quorum round (the member's own state answers), and
  ``?exclude=NOSPACE`` ignores that alarm.
- ``/livez``: the process serves and its Raft loop runs (no quorum needed: a member of a
  cluster that lost quorum is alive, and restarting it would not help; so is a member
  waiting for Init).
- ``/readyz``: what ``/health`` checks, as named checks: the member may take traffic.

The probes answer ``ok``, or list the checks that failed, with 503 (``?verbose`` lists them
all).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from confer.server.http.member import Member

HEALTH_TIMEOUT_ELECTIONS = 2
"""A linearizable read for a health check may take this many election timeouts (at least a
second): enough for a ReadIndex round, short enough for a probe."""

Check = Callable[[], Awaitable[str]]
"""A named probe's check: the empty string when it passes, else why not."""


def health_routes(member: Member) -> list[web.RouteDef]:
    checks = HealthChecks(member)

    async def health(request: web.Request) -> web.Response:
        exclude = set(request.query.getall("exclude", []))
        reason = await checks.leader()
        if not reason:
            reason = checks.alarms(exclude)
        if not reason:
            reason = await (checks.serializable_read() if _flag(request, "serializable")
                            else checks.linearizable_read())
        body = json.dumps({"health": "false" if reason else "true", "reason": reason})
        return web.Response(status=503 if reason else 200, text=body,
                            content_type="application/json")

    live = {"running": checks.running}
    ready = {"leader": checks.leader, "serializable_read": checks.serializable_read,
             "linearizable_read": checks.linearizable_read}
    return [web.get("/health", health),
            web.get("/livez", _probe("livez", live)),
            web.get("/readyz", _probe("readyz", ready))]


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "false").lower() in ("true", "1", "")


def _probe(name: str, checks: Mapping[str, Check]
           ) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A Kubernetes-style probe: ``ok``, or the checks that failed (``[-]name failed:
    reason``) and 503; ``?verbose`` lists the passing ones too."""

    async def handle(request: web.Request) -> web.Response:
        verbose = "verbose" in request.query
        lines = []
        failed = False
        for check, run in checks.items():
            reason = await run()
            failed = failed or bool(reason)
            if reason:
                lines.append(f"[-]{check} failed: {reason}")
            elif verbose:
                lines.append(f"[+]{check} ok")
        if not failed and not verbose:
            return web.Response(text="ok")
        lines.append(f"{name} check {'failed' if failed else 'passed'}")
        return web.Response(status=503 if failed else 200, text="\n".join(lines) + "\n")

    return handle


class HealthChecks:
    """The checks behind the endpoints; each answers "" (passes) or the reason it fails."""

    def __init__(self, member: Member) -> None:
        self.member = member
        cfg = member.cfg
        self.timeout = max(1.0, HEALTH_TIMEOUT_ELECTIONS * cfg.election_ticks * cfg.tick_ms
                           / 1000)

    async def running(self) -> str:
        """The member has not stopped or failed, nor has its Raft loop (a member waiting
        for Init, or to join, runs)."""
        m = self.member
        if m.fatal is not None:
            return f"MEMBER FAILED: {m.fatal}"
        if m.stopped.is_set():
            return "MEMBER STOPPED"
        node = m.node
        if node is not None and node.failure is not None:
            return "RAFT LOOP FAILED"
        return ""

    async def _serving(self) -> str:
        """:meth:`running`, with a Raft node (not waiting for Init or to join)."""
        reason = await self.running()
        if not reason and self.member.node is None:
            reason = "NOT INITIALISED"
        return reason

    async def leader(self) -> str:
        reason = await self._serving()
        if reason:
            return reason
        node = self.member.node
        return "" if node is not None and node.leader else "RAFT NO LEADER"

    def alarms(self, exclude: set[str]) -> str:
        if self.member.fsm.kv.nospace and "NOSPACE" not in exclude:
            return "ALARM NOSPACE"
        return ""

    async def serializable_read(self) -> str:
        """The member serves reads of its own state: it runs, with a Raft node."""
        return await self._serving()

    async def linearizable_read(self) -> str:
        """A ReadIndex round, confirmed by a quorum, completes within the timeout."""
        reason = await self._serving()
        if reason:
            return reason
        try:
            await self.member.consensus.read_barrier(time.monotonic() + self.timeout)
        except Exception as e:  # NoLeader, NodeStopped: the reason says which
            return f"LINEARIZABLE READ FAILED: {e}"
        return ""
