"""A tiny synchronous network for unit tests of the core: no delays, explicit delivery."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from confer.raft import (
    Config,
    Entry,
    EntryType,
    MemoryStorage,
    Message,
    MessageType,
    RawNode,
    ReadState,
    StateRole,
    bootstrap,
)


@dataclass
class Peer:
    node: RawNode
    storage: MemoryStorage
    applied: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)


class Net:
    """Nodes 1..n bootstrapped together. ``drop(a, b)`` cuts the link a->b."""

    def __init__(self, n: int = 3, *, voters: list[int] | None = None, seed: int = 1,
                 **cfg: object) -> None:
        self.peers: dict[int, Peer] = {}
        self.cut: set[tuple[int, int]] = set()
        self.sent: list[Message] = []
        self.cfg = cfg
        voters = voters or list(range(1, n + 1))
        for i in range(1, n + 1):
            storage = MemoryStorage()
            bootstrap(storage, voters)
            self.add(i, storage, seed)

    def add(self, i: int, storage: MemoryStorage, seed: int = 1) -> Peer:
        node = RawNode(Config(id=i, **self.cfg), storage, random.Random(seed * 1000 + i))  # type: ignore[arg-type]
        self.peers[i] = Peer(node, storage)
        return self.peers[i]

    def node(self, i: int) -> RawNode:
        return self.peers[i].node

    def drop(self, a: int, b: int) -> None:
        self.cut.add((a, b))

    def isolate(self, i: int) -> None:
        for j in self.peers:
            if j != i:
                self.cut |= {(i, j), (j, i)}

    def heal(self) -> None:
        self.cut.clear()

    def process(self, i: int) -> list[Message]:
        """Run one Ready cycle of node i (persist, apply, advance); return its messages."""
        p = self.peers[i]
        if not p.node.has_ready():
            return []
        rd = p.node.ready()
        if rd.snapshot is not None:
            p.storage.apply_snapshot(rd.snapshot)
        p.storage.append(rd.entries)
        if rd.hard_state is not None:
            p.storage.set_hard_state(rd.hard_state)
        p.applied.extend(e for e in rd.committed_entries
                         if e.type == EntryType.NORMAL and e.data)
        p.read_states.extend(rd.read_states)
        p.node.advance(rd)
        return rd.messages

    def stabilize(self, max_rounds: int = 1000) -> None:
        """Deliver messages until the network is quiet."""
        for _ in range(max_rounds):
            msgs: list[Message] = []
            for i in list(self.peers):
                msgs += self.process(i)
            if not msgs:
                return
            self.deliver(msgs)
        raise AssertionError("network did not quiesce")

    def deliver(self, msgs: list[Message]) -> None:
        for m in msgs:
            self.sent.append(m)
            if (m.frm, m.to) not in self.cut and m.to in self.peers:
                self.peers[m.to].node.step(m)

    def tick(self, i: int, n: int = 1) -> None:
        for _ in range(n):
            self.node(i).tick()

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for p in self.peers.values():
                p.node.tick()
            self.stabilize()

    def elect(self, i: int) -> None:
        self.node(i).campaign()
        self.stabilize()
        assert self.role(i) == StateRole.LEADER, f"node {i} failed to become leader"

    def role(self, i: int) -> StateRole:
        return self.node(i).raft.role

    def leaders(self) -> list[int]:
        return [i for i in self.peers if self.role(i) == StateRole.LEADER]

    def count_sent(self, t: MessageType) -> int:
        return sum(1 for m in self.sent if m.type == t)
