"""Majority arithmetic for a single (non-joint) voter set."""

from __future__ import annotations

from collections.abc import Collection, Mapping


def majority(n: int) -> int:
    return n // 2 + 1


def committed_index(voters: Collection[int], match: Mapping[int, int]) -> int:
    """The highest index that a majority of ``voters`` have replicated."""
    if not voters:
        return 0
    matched = sorted((match.get(v, 0) for v in voters), reverse=True)
    return matched[majority(len(voters)) - 1]


def vote_result(voters: Collection[int], votes: Mapping[int, bool]) -> bool | None:
    """True if a majority granted, False if a majority can no longer grant, None if pending."""
    q = majority(len(voters))
    granted = sum(1 for v in voters if votes.get(v) is True)
    rejected = sum(1 for v in voters if votes.get(v) is False)
    if granted >= q:
        return True
    if len(voters) - rejected < q:
        return False
    return None
