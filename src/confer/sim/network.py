"""The simulated network: delays, drops, duplicates, reordering and partitions.

Messages are scheduled for delivery on the cluster's :class:`EventQueue` with a random delay.
Like a Raft transport's stream per peer, a link is FIFO, except that a message may take a
slow detour (chance ``slow``, e.g. a retransmission on a fresh connection): it arrives late,
overtaken by later ones. A response may also be *held* (chance ``hold``): kept back for one to
three election timeouts and then delivered, so that it arrives after its sender's next
election or read round (a vote grant counted in a later term, a heartbeat ack counted for a
later read round). A held message got through before any partition that is in place when it
arrives, so no partition stops it then. Drops and duplicates are decided when a message is
sent; partitions are checked when it would arrive, so a partition also swallows messages
already in flight. Every decision draws from one seeded ``random.Random``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from confer.raft import Message, MessageType
from confer.sim.events import EventKind, EventQueue


@dataclass(slots=True)
class LinkConditions:
    """How every link behaves right now. Delays are in time units (see ``TICK_UNITS``)."""

    drop: float = 0.0
    duplicate: float = 0.0
    min_delay: int = 1
    max_delay: int = 4
    slow: float = 0.0
    """Chance that a message takes a detour (up to ``slow_delay``), letting later messages
    on its link overtake it. Other messages on a link arrive in order."""
    slow_delay: int = 30
    hold: float = 0.0
    """Chance that a response in :data:`HELD_TYPES` is held for ``hold_delay`` to three times
    ``hold_delay`` (set to an election timeout: longer than the next election takes)."""
    hold_delay: int = 100


HELD_TYPES = frozenset({MessageType.VOTE_RESP, MessageType.PRE_VOTE_RESP,
                        MessageType.HEARTBEAT_RESP})
"""The responses that a ``hold`` may keep back: the ones a node counts towards a quorum of
one election or one read round, where a late one must not count in a later one."""


@dataclass(slots=True)
class NetworkStats:
    sent: int = 0
    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0
    blocked: int = 0


class Network:
    """Links between node ids. A *block rule* is a set of directed links ``(frm, to)`` cut
    together (one partition); rules stack, and healing one leaves the others in place."""

    def __init__(self, rng: random.Random, queue: EventQueue,
                 conditions: LinkConditions | None = None) -> None:
        self.rng = rng
        self.queue = queue
        self.conditions = conditions or LinkConditions()
        self.stats = NetworkStats()
        self._rules: dict[int, frozenset[tuple[int, int]]] = {}
        self._link_due: dict[tuple[int, int], int] = {}  # latest in-order arrival per link
        self._next_rule = 1
        self.blocked: frozenset[tuple[int, int]] = frozenset()

    # -- sending ---------------------------------------------------------------------------------
    def send(self, now: int, sender: int, msgs: list[Message]) -> None:
        """Put ``msgs`` from ``sender`` on the wire.

        ``sender`` is the node whose Ready produced them; it may differ from ``m.frm`` (a
        forwarded TRANSFER_LEADER names the transfer target as its ``frm``).
        """
        c = self.conditions
        rand = self.rng.random
        stats = self.stats
        push = self.queue.push
        base, span = now + c.min_delay, c.max_delay - c.min_delay + 1
        due = self._link_due
        for m in msgs:
            stats.sent += 1
            if c.drop and rand() < c.drop:
                stats.dropped += 1
                continue
            copies = 1
            if c.duplicate and rand() < c.duplicate:
                copies = 2
                stats.duplicated += 1
            for _ in range(copies):
                if (c.hold and m.type in HELD_TYPES and rand() < c.hold
                        and self.can_deliver(sender, m.to)):
                    at = now + c.hold_delay + int(rand() * 2 * c.hold_delay)
                    push(at, EventKind.DELIVER_HELD, sender, m)
                    continue
                if c.slow and rand() < c.slow:
                    at = now + c.max_delay + int(rand() * (c.slow_delay - c.max_delay + 1))
                else:
                    link = (sender, m.to)
                    at = max(base + int(rand() * span), due.get(link, 0))
                    due[link] = at  # same time: the queue keeps sending order
                push(at, EventKind.DELIVER, sender, m)

    def can_deliver(self, sender: int, to: int) -> bool:
        return (sender, to) not in self.blocked

    # -- partitions ------------------------------------------------------------------------------
    def block(self, links: set[tuple[int, int]] | frozenset[tuple[int, int]]) -> int:
        """Cut the directed ``links``; returns a rule id for :meth:`unblock`."""
        rule = self._next_rule
        self._next_rule += 1
        self._rules[rule] = frozenset(links)
        self._recompute()
        return rule

    def partition(self, *groups: list[int] | set[int] | tuple[int, ...]) -> int:
        """Symmetric partition: nodes in different groups cannot talk (either way)."""
        links: set[tuple[int, int]] = set()
        for gi, a in enumerate(groups):
            for gj, b in enumerate(groups):
                if gi != gj:
                    links.update((x, y) for x in a for y in b)
        return self.block(links)

    def one_way(self, frm: list[int] | set[int], to: list[int] | set[int]) -> int:
        """Asymmetric partition: messages from ``frm`` to ``to`` are lost; replies still flow."""
        return self.block({(x, y) for x in frm for y in to if x != y})

    def unblock(self, rule: int) -> None:
        if self._rules.pop(rule, None) is not None:
            self._recompute()

    def heal(self) -> None:
        """Remove every partition."""
        self._rules.clear()
        self._recompute()

    def _recompute(self) -> None:
        blocked: set[tuple[int, int]] = set()
        for links in self._rules.values():
            blocked |= links
        self.blocked = frozenset(blocked)
