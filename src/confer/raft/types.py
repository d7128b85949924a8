"""Plain data types shared by the Raft core, its storage and its drivers.

Everything here is an immutable-ish value object with ``__slots__``: messages and entries are
created on the hot path, so they stay cheap to build and to copy.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

NONE = 0
"""Node id meaning "nobody" (no vote, no known leader). Real node ids are positive."""


class EntryType(enum.IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


@dataclass(slots=True)
class Entry:
    """One log entry. ``data`` is opaque to the core except for CONF_CHANGE entries."""

    index: int
    term: int
    data: bytes = b""
    type: EntryType = EntryType.NORMAL

    def size(self) -> int:
        return len(self.data) + 24


class ConfChangeType(enum.IntEnum):
    ADD_VOTER = 0
    """Add a voter, or promote an existing learner to voter."""
    ADD_LEARNER = 1
    REMOVE = 2


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A single-server membership change, carried in a CONF_CHANGE entry.

    ``context`` is opaque to the core; the server uses it for the member's address.
    """

    type: ConfChangeType
    node_id: int
    context: bytes = b""

    def encode(self) -> bytes:
        return bytes((int(self.type),)) + self.node_id.to_bytes(8, "big") + self.context

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        if len(data) < 9:
            raise ValueError(f"conf change entry too short: {len(data)} bytes")
        return cls(ConfChangeType(data[0]), int.from_bytes(data[1:9], "big"), bytes(data[9:]))


@dataclass(frozen=True, slots=True)
class ConfState:
    """The membership: who votes and who only replicates."""

    voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()

    def apply(self, cc: ConfChange) -> ConfState:
        voters, learners = set(self.voters), set(self.learners)
        if cc.type == ConfChangeType.ADD_VOTER:
            learners.discard(cc.node_id)
            voters.add(cc.node_id)
        elif cc.type == ConfChangeType.ADD_LEARNER:
            if cc.node_id in voters:
                # Demotion is a valid single-server change: one voter fewer.
                voters.discard(cc.node_id)
            learners.add(cc.node_id)
        else:
            voters.discard(cc.node_id)
            learners.discard(cc.node_id)
        return ConfState(frozenset(voters), frozenset(learners))

    def members(self) -> frozenset[int]:
        return self.voters | self.learners


@dataclass(frozen=True, slots=True)
class HardState:
    """State that must be durable before any message that depends on it is sent."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An application snapshot covering every entry up to and including ``meta.index``."""

    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""

    def is_empty(self) -> bool:
        return self.meta.index == 0


class MessageType(enum.IntEnum):
    # Local inputs (never sent over the network), but PROP.
    HUP = 0  # start an election
    BEAT = 1  # leader: send heartbeats
    PROP = 2  # proposals a follower forwards to the leader (no term: like a local proposal)
    CHECK_QUORUM = 3
    # Peer messages.
    APP = 10
    APP_RESP = 11
    VOTE = 12
    VOTE_RESP = 13
    PRE_VOTE = 14
    PRE_VOTE_RESP = 15
    HEARTBEAT = 16
    HEARTBEAT_RESP = 17
    SNAP = 18
    SNAP_RESP = 19
    TRANSFER_LEADER = 20
    TIMEOUT_NOW = 21
    READ_INDEX = 22
    READ_INDEX_RESP = 23


@dataclass(slots=True)
class Message:
    """One Raft message. Unused fields keep their zero values.

    - APP: ``log_term``/``index`` name the entry preceding ``entries``.
    - APP_RESP: ``index`` is the follower's last matching index on success; on reject,
      ``reject_hint`` is the index to retry from and ``log_term`` the term at that index
      (the conflict hint for fast backtracking).
    - SNAP: ``snapshot`` carries the metadata; ``snap_offset``/``snap_data``/``snap_done``
      carry one chunk of the snapshot bytes.
    - HEARTBEAT/HEARTBEAT_RESP/READ_INDEX/READ_INDEX_RESP: ``context`` identifies a read round
      or a read request.
    - PROP: ``entries`` are proposals (index and term 0) a follower forwards to the leader.
    """

    type: MessageType
    to: int = NONE
    frm: int = NONE
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: list[Entry] = field(default_factory=list)
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: SnapshotMeta | None = None
    snap_offset: int = 0
    snap_data: bytes = b""
    snap_done: bool = False
    context: bytes = b""


class StateRole(enum.IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state the driver may want to observe (not persisted)."""

    leader: int
    role: StateRole
    term: int


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once the state machine has applied ``index``."""

    index: int
    context: bytes


@dataclass(slots=True)
class Ready:
    """One batch of work the core asks the driver to do, in this order:

    1. persist ``snapshot`` (if any), append ``entries`` and save ``hard_state`` (if any),
       then make them durable with one sync;
    2. only then send ``messages``;
    3. apply ``committed_entries`` to the state machine (and restore ``snapshot`` into it);
    4. call ``RawNode.advance(ready)``.

    ``read_states`` may be answered once the state machine has applied their index.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    must_sync: bool = False
