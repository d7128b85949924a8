"""Confer's Raft consensus core: a pure, deterministic state machine (no I/O, clock or threads).

Drive it through :class:`RawNode`; see :mod:`confer.raft.rawnode` for the driver loop.
"""

from confer.raft.core import Config
from confer.raft.errors import (
    CompactedError,
    ConfChangeInProgress,
    LeadershipTransferInProgress,
    NotLeader,
    ProposalDropped,
    UnavailableError,
)
from confer.raft.rawnode import BasicStatus, RawNode, Status, bootstrap
from confer.raft.storage import LogStorage, MemoryStorage, WritableLogStorage
from confer.raft.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Ready,
    Snapshot,
    SnapshotMeta,
    SoftState,
    StateRole,
)

__all__ = [
    "NONE",
    "BasicStatus",
    "CompactedError",
    "ConfChange",
    "ConfChangeInProgress",
    "ConfChangeType",
    "ConfState",
    "Config",
    "Entry",
    "EntryType",
    "HardState",
    "LeadershipTransferInProgress",
    "LogStorage",
    "MemoryStorage",
    "Message",
    "MessageType",
    "NotLeader",
    "ProposalDropped",
    "RawNode",
    "ReadState",
    "Ready",
    "Snapshot",
    "SnapshotMeta",
    "SoftState",
    "StateRole",
    "Status",
    "UnavailableError",
    "WritableLogStorage",
    "bootstrap",
]
