"""Who is in the cluster, with their addresses: derived from applied membership entries.

The addresses travel in the ``context`` of each ConfChange, so every node learns them from
the log (and from snapshots), never from side channels.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

import msgpack

from confer.envelope import EntryKind
from confer.raft.types import ConfChange, ConfChangeType, ConfState


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    name: str
    peer_addr: str
    client_addr: str
    is_learner: bool = False

    def context(self, cluster_id: int) -> bytes:
        """The ConfChange context that announces this member."""
        return msgpack.packb([self.name, self.peer_addr, self.client_addr, cluster_id])


def cluster_id_for(token: str, founders: list[Member]) -> int:
    """A 64-bit cluster id, the same on every founding member (like etcd's)."""
    h = hashlib.sha256(token.encode())
    for m in sorted(founders, key=lambda m: m.id):
        h.update(f"{m.id}={m.peer_addr};".encode())
    return int.from_bytes(h.digest()[:8], "big") or 1


@dataclass(frozen=True, slots=True)
class MembershipEvent:
    kind: str  # "added", "learner_added", "removed", "promoted"
    member: Member


class Membership:
    """The member table, kept in step with the committed membership."""

    def __init__(self) -> None:
        self.members: dict[int, Member] = {}
        self.removed: set[int] = set()
        """Ids removed from the cluster: their messages are refused, which tells them."""
        self.cluster_id = 0

    def apply(self, cc: ConfChange, conf: ConfState) -> MembershipEvent | None:
        old = self.members.get(cc.node_id)
        if cc.type == ConfChangeType.REMOVE:
            if old is None:
                return None
            del self.members[cc.node_id]
            self.removed.add(cc.node_id)
            return MembershipEvent("removed", old)
        learner = cc.node_id in conf.learners
        if cc.context:
            name, peer, client, cluster_id = msgpack.unpackb(cc.context)
            if not self.cluster_id and cluster_id:
                self.cluster_id = cluster_id
            member = Member(cc.node_id, name, peer, client, learner)
        elif old is not None:
            member = replace(old, is_learner=learner)
        else:
            member = Member(cc.node_id, f"node-{cc.node_id}", "", "", learner)
        self.members[cc.node_id] = member
        if old is None:
            return MembershipEvent("learner_added" if learner else "added", member)
        if old.is_learner and not learner:
            return MembershipEvent("promoted", member)
        return None

    def publish(self, node_id: int, name: str, client_addr: str) -> None:
        """A member announced its name and client address (it knows them, the founders'
        initial-cluster list only names peer addresses)."""
        old = self.members.get(node_id)
        if old is not None:
            self.members[node_id] = replace(old, name=name, client_addr=client_addr)

    def snapshot(self) -> list[object]:
        return [self.cluster_id, [[m.id, m.name, m.peer_addr, m.client_addr, m.is_learner]
                                  for m in self.members.values()], sorted(self.removed)]

    def restore(self, raw: list[Any]) -> None:
        """Load what :meth:`snapshot` returned, after a msgpack round trip."""
        cluster_id, members, removed = raw
        self.cluster_id = int(cluster_id)
        self.members = {m[0]: Member(*m) for m in members}
        self.removed = set(removed)


_PUBLISH_PREFIX = bytes((EntryKind.MEMBER_PUBLISH,))


def encode_publish(member: Member) -> bytes:
    """A MEMBER_PUBLISH entry (see :mod:`confer.envelope`): ``member`` announces its name and
    client address."""
    return _PUBLISH_PREFIX + msgpack.packb([member.id, member.name, member.client_addr])


def decode_publish(data: bytes) -> tuple[int, str, str]:
    """``(member id, name, client address)`` of a MEMBER_PUBLISH entry."""
    node_id, name, client_addr = msgpack.unpackb(memoryview(data)[1:])
    return int(node_id), str(name), str(client_addr)

