"""Errors raised by the Raft core and its storage."""

from __future__ import annotations


class RaftError(Exception):
    """Base class for errors raised by the Raft core."""


class CompactedError(RaftError):
    """The requested index precedes the latest snapshot: its entries are gone."""


class UnavailableError(RaftError):
    """The requested index is past the last entry of the log."""


class ProposalDropped(RaftError):
    """A proposal could not be accepted. ``leader`` is the known leader (0 if none)."""

    def __init__(self, reason: str, leader: int) -> None:
        super().__init__(f"{reason} (known leader: {leader or 'none'})")
        self.reason = reason
        self.leader = leader


class NotLeader(ProposalDropped):
    """This node is not the leader; retry on ``leader`` if known."""

    def __init__(self, leader: int) -> None:
        super().__init__("not the leader", leader)


class ConfChangeInProgress(ProposalDropped):
    """Only one membership change may be pending at a time."""

    def __init__(self, leader: int) -> None:
        super().__init__("a membership change is already in progress", leader)


class LeadershipTransferInProgress(ProposalDropped):
    """The leader is handing over leadership and accepts no proposals meanwhile."""

    def __init__(self, leader: int) -> None:
        super().__init__("leadership transfer in progress", leader)
