"""The leader's lease clock: deadlines, renewals and expiry.

Leases themselves (ids, TTLs, attached keys) are replicated state in the KV store, granted and
revoked through the Raft log. Their deadlines are not: only the leader keeps them, on the
monotonic clock of its own process, and it expires a lease by proposing a ``LeaseRevoke``. The
state machine never reads a clock, so every replica applies the same revocations.

The rules (etcd's lessor, including its leadership check on renewal):

- **taking over**: when this node starts leading a term, every lease's deadline becomes
  now + TTL, so the time spent electing never counts against a lease. A lease granted while
  this node leads gets now + TTL when the grant is applied here;
- **renewal** (``KeepAlive``): a request received at time t extends the deadline to t + TTL.
  It is acknowledged only after a ReadIndex round has confirmed that this node still leads,
  in the same term, and has applied everything committed before (so a revocation committed
  by a previous leader is seen), and only if the lease still exists and no revocation of it
  is in flight. Renewals write nothing to the log;
- **expiry**: when a deadline passes, the leader proposes the revocation; while it is in
  flight, renewals of that lease answer "not found" (TTL 0). A revocation whose outcome is
  unknown (a timeout) is proposed again; one lost to a leader change is left to the next
  leader, which starts over.

The guarantee this gives (and why) is in docs/coordination.md, "Leases".
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from confer.kv import ErrorResult, KVStore, LeaseRevoke, LeaseRevokeResult, encode_command
from confer.raft.errors import NotLeader, ProposalDropped
from confer.raft.types import StateRole
from confer.server.consensus import Consensus
from confer.server.members import Member
from confer.server.node import NodeStopped, RaftNode

log = logging.getLogger("confer.leases")


@dataclass(slots=True)
class LessorStats:
    """Counters of this node's lease clock (since the process started)."""

    renewed: int = 0
    """Renewals acknowledged while leading."""
    expired: int = 0
    """Leases this node revoked because their deadline passed."""
    takeovers: int = 0
    """Terms this node started leading (each resets every deadline)."""


class Lessor:
    """Keeps lease deadlines while this node leads; renews and expires leases.

    Args:
        kv: the replicated store, which holds the leases.
        consensus: leadership confirmation (ReadIndex) and the proposals of revocations.
        node: the current Raft node (None before this member is initialised).
        election_timeout: seconds; the smallest TTL granted is 1.5 of them.
        max_check_interval: the longest sleep of the expiry loop. It also wakes at the
            earliest deadline, so a lease is revoked within a few milliseconds of its deadline
            on an idle leader.
        revoke_timeout: how long one revocation proposal may take before it is retried.
        max_inflight: revocations proposed at once; the rest wait for the next round.
    """

    def __init__(self, kv: KVStore, consensus: Consensus,
                 node: Callable[[], RaftNode | None], election_timeout: float, *,
                 max_check_interval: float = 0.5, revoke_timeout: float = 5.0,
                 max_inflight: int = 1000) -> None:
        self.kv = kv
        self.consensus = consensus
        self._node = node
        self.election_timeout = election_timeout
        self.min_ttl = max(1, math.ceil(1.5 * self.election_timeout))
        """The smallest TTL granted, in whole seconds (etcd's ``minLeaseTTL``): 1.5 election
        timeouts, so that a lease can outlive a leader change."""
        self.max_check_interval = max_check_interval
        self.revoke_timeout = revoke_timeout
        self.max_inflight = max_inflight
        self.stats = LessorStats()
        self._leading = False
        self._term = 0
        # lease -> deadline (time.monotonic()). Every lease here has an entry in _heap at or
        # before its deadline; a renewal only moves the deadline, and an entry that comes due
        # early is queued again at the current deadline. So there is about one entry per
        # lease, however often leases are renewed.
        self._deadlines: dict[int, float] = {}
        self._heap: list[tuple[float, int]] = []  # (when to look at the lease, lease)
        self._revoking: set[int] = set()  # revocation proposed: renewals are refused
        self._inflight: dict[int, asyncio.Task[None]] = {}  # this term's revoke proposals
        self._wake = asyncio.Event()
        self.kv.add_lease_listener(self._on_lease)
        self.kv.add_restore_listener(self._on_restore)

    # -- leadership -------------------------------------------------------------------------------
    def leading(self) -> bool:
        """Whether this node leads now. Starting a new term of leadership resets every
        deadline to now + TTL; losing leadership forgets them."""
        node = self._node()
        raft = node.basic_status() if node is not None else None
        if raft is None or raft.role != StateRole.LEADER:
            if self._leading:
                self._step_down()
            return False
        if not self._leading or raft.term != self._term:
            self._take_over(raft.term)
        return True

    def _leader_id(self) -> int:
        node = self._node()
        return node.leader if node is not None else 0

    def _take_over(self, term: int) -> None:
        now = time.monotonic()
        self._leading, self._term = True, term
        self._deadlines = {info.id: now + info.ttl for info in self.kv.leases()}
        self._heap = [(deadline, lease) for lease, deadline in self._deadlines.items()]
        heapq.heapify(self._heap)
        self._revoking.clear()
        self._inflight = {}  # an older term's proposals finish on their own, ignored
        self.stats.takeovers += 1
        log.info("leading term %d: the deadlines of %d leases restart at now + TTL", term,
                 len(self._deadlines))
        self._wake.set()

    def _step_down(self) -> None:
        self._leading = False
        self._deadlines.clear()
        self._heap.clear()
        self._revoking.clear()
        self._inflight = {}

    def on_cluster_event(self, kind: str, member: Member | None, leader: int) -> None:
        """A cluster listener: on a leader change, take over or step down at once."""
        if kind == "leader":
            self.leading()  # take over (or step down) at once, not at the next check

    # -- store events -----------------------------------------------------------------------------
    def _on_lease(self, lease: int, ttl: int) -> None:
        if not self._leading:
            return
        if ttl:  # granted (while leading): its clock starts now
            self._set_deadline(lease, time.monotonic() + ttl)
        else:  # revoked
            self._deadlines.pop(lease, None)
            self._revoking.discard(lease)

    def _on_restore(self, revision: int) -> None:
        if not self._leading:
            return
        present = {info.id: info.ttl for info in self.kv.leases()}
        for lease in [lease for lease in self._deadlines if lease not in present]:
            del self._deadlines[lease]
            self._revoking.discard(lease)
        now = time.monotonic()
        for lease, ttl in present.items():
            if lease not in self._deadlines:
                self._set_deadline(lease, now + ttl)

    def _set_deadline(self, lease: int, deadline: float) -> None:
        self._deadlines[lease] = deadline
        self._schedule(deadline, lease)

    def _schedule(self, when: float, lease: int) -> None:
        if not self._heap or when < self._heap[0][0]:
            self._wake.set()  # earlier than anything the loop is sleeping towards
        heapq.heappush(self._heap, (when, lease))

    # -- renewals and queries (leader only) -------------------------------------------------------
    async def renew(self, lease: int, timeout: float) -> int:
        """Renew ``lease`` from now; return its TTL, or 0 if it does not exist (revoked,
        expired, never granted) or its revocation is in flight.

        Raises:
            NotLeader: this node does not lead (or leadership changed meanwhile): retry on
                the leader.
            NoLeader: leadership could not be confirmed within ``timeout``.
        """
        if not self.leading():
            raise NotLeader(self._leader_id())
        term = self._term
        received = time.monotonic()
        self._extend(lease, received)  # at once: extending early only ever delays expiry
        await self.consensus.read_barrier(time.monotonic() + timeout)
        if not self.leading() or self._term != term:
            raise NotLeader(self._leader_id())
        ttl = self.kv.lease_ttl(lease)
        if ttl is None or lease in self._revoking:
            return 0
        self._extend(lease, received)
        self.stats.renewed += 1
        return ttl

    def _extend(self, lease: int, received: float) -> None:
        ttl = self.kv.lease_ttl(lease)
        if ttl is None or lease in self._revoking:
            return
        deadline = received + ttl
        current = self._deadlines.get(lease)
        if current is None:
            self._set_deadline(lease, deadline)
        elif deadline > current:
            self._deadlines[lease] = deadline  # its heap entry, now early, is queued again

    async def time_to_live(self, lease: int, timeout: float) -> tuple[float, int] | None:
        """``(remaining seconds, granted TTL)`` of ``lease`` on this leader's clock, or None
        if there is no such lease. Raises like :meth:`renew`."""
        if not self.leading():
            raise NotLeader(self._leader_id())
        term = self._term
        await self.consensus.read_barrier(time.monotonic() + timeout)
        if not self.leading() or self._term != term:
            raise NotLeader(self._leader_id())
        ttl = self.kv.lease_ttl(lease)
        if ttl is None:
            return None
        now = time.monotonic()
        if lease in self._revoking:
            return 0.0, ttl
        deadline = self._deadlines.get(lease)
        if deadline is None:  # not seen yet (cannot happen while leading): start its clock
            deadline = now + ttl
            self._set_deadline(lease, deadline)
        return max(0.0, deadline - now), ttl

    # -- expiry -----------------------------------------------------------------------------------
    async def run(self) -> None:
        """The expiry loop: while this node leads, revoke the leases whose deadline passed.
        Runs until cancelled."""
        while True:
            await self._sleep()
            try:
                if self.leading():
                    self._expire_due(time.monotonic())
            except Exception:  # never let one bad round stop expiry for good
                log.exception("lease expiry round failed")

    async def _sleep(self) -> None:
        self._wake.clear()
        delay = self.max_check_interval
        if self._leading and self._heap:
            delay = min(delay, max(0.0, self._heap[0][0] - time.monotonic()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)

    def _expire_due(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, lease = heapq.heappop(heap)
            deadline = self._deadlines.get(lease)
            if deadline is None or lease in self._inflight:
                continue  # revoked, or being revoked (a retry is scheduled if it fails)
            if deadline > now:  # renewed since this entry was queued
                heapq.heappush(heap, (deadline, lease))
                continue
            if len(self._inflight) >= self.max_inflight:
                self._schedule(now + 0.05, lease)
                return
            self._revoking.add(lease)
            self._inflight[lease] = asyncio.create_task(self._revoke(lease, self._term),
                                                        name=f"revoke-lease-{lease}")

    async def _revoke(self, lease: int, term: int) -> None:
        outcome: object
        try:
            outcome = await self.consensus.propose_here(encode_command(LeaseRevoke(lease)),
                                                        self.revoke_timeout)
        except Exception as e:  # sorted out below
            outcome = e
        finally:
            if self._inflight.get(lease) is asyncio.current_task():
                del self._inflight[lease]
        if not self._leading or term != self._term:
            return  # leadership changed meanwhile: the new term starts over
        if isinstance(outcome, LeaseRevokeResult):
            self.stats.expired += 1
            log.info("lease %d (%#x) expired: revoked at revision %d, %d keys deleted", lease,
                     lease, outcome.revision, len(outcome.deleted))
        elif isinstance(outcome, ErrorResult):  # already gone: revoked by a client first
            self._revoking.discard(lease)
            self._deadlines.pop(lease, None)
        elif isinstance(outcome, NotLeader | ProposalDropped | NodeStopped):
            # Not appended, or lost: nothing of it can be applied. This node is stepping down
            # (then the next leader starts over), else it tries again.
            self._revoking.discard(lease)
            self._schedule(time.monotonic() + self.revoke_timeout / 5, lease)
        else:
            # The revocation may still be applied: keep refusing renewals, and try again.
            log.warning("revoking expired lease %d (%#x) failed (%s: %s); retrying", lease,
                        lease, type(outcome).__name__, outcome)
            self._schedule(time.monotonic() + self.revoke_timeout / 5, lease)


__all__ = ["Lessor", "LessorStats"]
