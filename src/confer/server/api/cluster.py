"""Cluster requests: status, the member list, membership changes, leadership transfer,
initialisation, and the stream of membership and leader changes.

Membership changes and leadership transfer run on the leader (a follower sends them there,
:meth:`Core.at_leader`); they are checked there, against the leader's member table.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from confer import __version__
from confer.kv import InvalidArgument
from confer.raft.errors import NotLeader
from confer.raft.quorum import majority
from confer.raft.types import ConfChange, ConfChangeType, StateRole
from confer.server.addresses import address_problem, member_id_problem
from confer.server.api.context import Access, AccessKind, RequestContext
from confer.server.api.core import Core
from confer.server.api.errors import (
    AlreadyInitialized,
    LastVoter,
    LearnerNotReady,
    MemberExists,
    MemberNotFound,
    NotALearner,
    NotMemberOfInit,
    PeerAddressInUse,
    TransfereeIsLearner,
    UnknownMembers,
    UnsafeReconfiguration,
)
from confer.server.api.init_access import check_init_caller
from confer.server.members import Member

LEARNER_SYNC_ENTRIES = 1000
"""A learner may be promoted once its log is within this many entries of the leader's."""


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """One member's view of itself and of the cluster (the Status RPCs)."""

    member_id: int
    leader_id: int
    raft_term: int
    commit_index: int
    applied_index: int
    raft_index: int
    revision: int
    compact_revision: int
    storage_bytes: int
    is_learner: bool
    role: str
    """leader, follower, candidate, pre_candidate, or uninitialised."""
    version: str


@dataclass(frozen=True, slots=True)
class ClusterEvent:
    """A membership or leader change: ``kind`` is added, learner_added, promoted, removed
    or leader (``member`` is then the new leader, None if unknown)."""

    kind: str
    member: Member | None
    leader: int


def _pack(m: Member) -> list[Any]:
    return [m.id, m.name, m.peer_addr, m.client_addr, m.is_learner]


def _unpack(fields: list[Any]) -> Member:
    return Member(int(fields[0]), str(fields[1]), str(fields[2]), str(fields[3]),
                  bool(fields[4]))


def check_member_id(member_id: int) -> None:
    problem = member_id_problem(member_id)
    if problem:
        raise InvalidArgument(problem)


def check_member_addr(what: str, addr: str) -> None:
    """Refuse an address no member could have (before it is dialled or logged)."""
    problem = address_problem(addr)
    if problem:
        raise InvalidArgument(f"{what} {addr[:80]!r} is not a valid HOST:PORT: {problem}")


class ClusterRequests:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.host = core.host

    # -- reads ----------------------------------------------------------------------------------
    def member_list(self) -> list[Member]:
        """This member's member table, by id (no wait, no check)."""
        return sorted(self.host.fsm.membership.members.values(), key=lambda m: m.id)

    async def members(self, ctx: RequestContext, serializable: bool = False) -> list[Member]:
        await self.core.read(ctx, Access(AccessKind.PUBLIC), serializable)
        return self.member_list()

    def member(self, member_id: int) -> Member:
        member = self.host.fsm.membership.members.get(member_id)
        if member is None:
            raise MemberNotFound(member_id)
        return member

    def voters(self) -> set[int]:
        return set(self.core.consensus.require_node().status().conf_state.voters)

    def status(self, ctx: RequestContext) -> MemberStatus:
        self.core.check(ctx, Access(AccessKind.PUBLIC))
        host, kv = self.host, self.core.kv
        node = host.node
        st = node.status() if node else None
        return MemberStatus(
            member_id=host.node_id, leader_id=node.leader if node else 0,
            raft_term=st.term if st else 0, commit_index=st.commit if st else 0,
            applied_index=node.applied_index if node else 0,
            raft_index=st.last_index if st else 0, revision=kv.revision,
            compact_revision=kv.compact_revision, storage_bytes=host.storage_bytes(),
            is_learner=bool(st and host.node_id in st.conf_state.learners),
            role=st.role.name.lower() if st else "uninitialised", version=__version__)

    async def events(self, ctx: RequestContext) -> AsyncIterator[ClusterEvent]:
        """Every member as it is now (as "added" or "learner_added"), the leader if known,
        then each change as it is applied here, until the member shuts down."""
        self.core.check(ctx, Access(AccessKind.READ))
        node = self.core.consensus.require_node()
        queue: asyncio.Queue[ClusterEvent] = asyncio.Queue()

        def listener(kind: str, member: Member | None, leader: int) -> None:
            queue.put_nowait(ClusterEvent(kind, member, leader))

        self.host.cluster_listeners.append(listener)
        try:
            for m in self.member_list():
                yield ClusterEvent("learner_added" if m.is_learner else "added", m, 0)
            if node.leader:
                yield ClusterEvent("leader", self.host.fsm.membership.members.get(node.leader),
                                   node.leader)
            while not self.host.stopped.is_set():
                yield await queue.get()
        finally:
            self.host.cluster_listeners.remove(listener)

    # -- changes (at the leader) ----------------------------------------------------------------
    def _check_live_quorum(self, change: str, add: int = 0, remove: int = 0) -> None:
        """Leader: refuse a change of the voters (``add`` one, or ``remove`` one) after which
        fewer voters would be live than a quorum of the new voter set: the cluster could
        never commit again (etcd's strict reconfiguration check). A new voter counts as not
        live until it has answered the leader (as a learner); a learner never counts."""
        st = self.core.consensus.require_node().status()
        if st.role != StateRole.LEADER:
            return  # no longer leads: the change itself is refused with NotLeader
        voters = set(st.conf_state.voters)
        if add:
            voters.add(add)
        if remove:
            voters.discard(remove)
            if not voters:
                raise LastVoter(remove)
        live = len(voters & st.live)
        if live < majority(len(voters)):
            raise UnsafeReconfiguration(change, live, len(voters), majority(len(voters)))

    async def _change(self, kind: ConfChangeType, member: Member, ctx: RequestContext) -> None:
        """A membership change on this member, which must lead (NotLeader otherwise)."""
        cc = ConfChange(kind, member.id, member.context(self.host.fsm.membership.cluster_id))
        node = self.core.consensus.require_node()
        async with asyncio.timeout(ctx.remaining()):
            await node.change_membership(cc)

    async def _members_after(self, ctx: RequestContext, op: str, args: list[Any],
                             local: Any) -> list[Member]:
        await self.core.admin(ctx)

        async def run_local() -> list[list[Any]]:
            await local()
            return [_pack(m) for m in self.member_list()]

        return [_unpack(m) for m in await self.core.at_leader(ctx, op, args, run_local)]

    async def add_member(self, ctx: RequestContext, member_id: int, name: str, peer_addr: str,
                         client_addr: str, is_learner: bool) -> tuple[Member, list[Member]]:
        """Add a member (``member_id`` 0: the next free id); the member as added, and the
        member list after the change (as the leader has it)."""
        if member_id:
            check_member_id(member_id)
        check_member_addr("peer address", peer_addr)
        if client_addr:
            check_member_addr("client address", client_addr)
        await self.core.admin(ctx)

        async def local() -> list[Any]:
            members = self.host.fsm.membership.members
            for m in members.values():
                if m.peer_addr == peer_addr:
                    raise PeerAddressInUse(peer_addr, m.id)
            if member_id and member_id in members:
                raise MemberExists(member_id)
            new_id = member_id or max(members, default=0) + 1
            # No client address until the member publishes its own (if none was given):
            # its peer address serves no client API.
            member = Member(new_id, name or f"node-{new_id}", peer_addr, client_addr,
                            is_learner)
            if not is_learner:
                self._check_live_quorum(f"adding voter {new_id}", add=new_id)
            kind = ConfChangeType.ADD_LEARNER if is_learner else ConfChangeType.ADD_VOTER
            await self._change(kind, member, ctx)
            return [_pack(member), [_pack(m) for m in self.member_list()]]

        added, members = await self.core.at_leader(
            ctx, "member_add", [member_id, name, peer_addr, client_addr, is_learner], local)
        return _unpack(added), [_unpack(m) for m in members]

    async def remove_member(self, ctx: RequestContext, member_id: int) -> list[Member]:
        async def local() -> None:
            member = self.member(member_id)
            if not member.is_learner:
                self._check_live_quorum(f"removing voter {member_id}", remove=member_id)
            await self._change(ConfChangeType.REMOVE, member, ctx)

        return await self._members_after(ctx, "member_remove", [member_id], local)

    async def promote_member(self, ctx: RequestContext, member_id: int) -> list[Member]:
        """Make a learner a voter, once it has caught up with the leader's log."""
        async def local() -> None:
            member = self.member(member_id)
            if not member.is_learner:
                raise NotALearner(member_id)
            if not self.learner_caught_up(member_id):
                raise LearnerNotReady(member_id)
            self._check_live_quorum(f"promoting learner {member_id}", add=member_id)
            await self._change(ConfChangeType.ADD_VOTER, member, ctx)

        return await self._members_after(ctx, "member_promote", [member_id], local)

    async def demote_member(self, ctx: RequestContext, member_id: int) -> list[Member]:
        """Make a voter a learner (it keeps its log and keeps receiving entries)."""
        async def local() -> None:
            member = self.member(member_id)
            if not member.is_learner:
                self._check_live_quorum(f"demoting voter {member_id}", remove=member_id)
            await self._change(ConfChangeType.ADD_LEARNER, member, ctx)

        return await self._members_after(ctx, "member_demote", [member_id], local)

    async def update_member(self, ctx: RequestContext, member_id: int, peer_addr: str
                            ) -> list[Member]:
        """Announce a member again with a new peer address (same id, same role)."""
        check_member_addr("peer address", peer_addr)
        async def local() -> None:
            old = self.member(member_id)
            for m in self.host.fsm.membership.members.values():
                if m.peer_addr == peer_addr and m.id != member_id:
                    raise PeerAddressInUse(peer_addr, m.id)
            if peer_addr != old.peer_addr:
                new = Member(old.id, old.name, peer_addr, old.client_addr, old.is_learner)
                kind = (ConfChangeType.ADD_LEARNER if old.is_learner
                        else ConfChangeType.ADD_VOTER)
                await self._change(kind, new, ctx)

        return await self._members_after(ctx, "member_update", [member_id, peer_addr], local)

    async def set_voters(self, ctx: RequestContext, voters: set[int], retain: bool) -> None:
        """Move the voter set to ``voters``, one single-server step at a time: promote the
        new ones, then remove (or, ``retain``, demote to learners) the others."""
        await self.core.admin(ctx)  # even when nothing changes
        members = self.host.fsm.membership.members
        unknown = sorted(voters - set(members))
        if unknown:
            raise UnknownMembers(unknown)
        current = {m.id for m in members.values() if not m.is_learner}
        for member_id in sorted(voters - current):
            await self.promote_member(ctx, member_id)
        for member_id in sorted(current - voters):
            if retain:
                await self.demote_member(ctx, member_id)
            else:
                await self.remove_member(ctx, member_id)

    def learner_caught_up(self, member_id: int) -> bool:
        """Leader: is the learner close enough to the log's end to vote safely?"""
        st = self.core.consensus.require_node().status()
        match = st.progress.get(member_id, 0)
        return match >= st.commit - LEARNER_SYNC_ENTRIES and match > 0

    async def transfer_leadership(self, ctx: RequestContext, target: int) -> None:
        """Hand leadership to ``target`` (a voter); returns once this member sees it lead."""
        await self.core.admin(ctx)
        consensus = self.core.consensus

        async def local() -> None:
            member = self.member(target)
            if member.is_learner:
                raise TransfereeIsLearner(target)
            node = consensus.require_node()
            if target == self.host.node_id:
                return
            node.transfer_leadership(target)
            while node.leader != target:
                if time.monotonic() >= ctx.deadline:
                    raise TimeoutError("leadership transfer did not complete in time")
                await asyncio.sleep(consensus.retry_interval)
                st = node.basic_status()
                if st.role != StateRole.LEADER:
                    if node.leader == target:
                        break
                    # Another member took over meanwhile (an election while the target
                    # was slow): the request follows the leadership to it.
                    raise NotLeader(node.leader)
                if not st.lead_transferee:
                    # Raft gave the transfer up (the target did not win within an election
                    # timeout: slow, or busy); try again while the request has time.
                    node.transfer_leadership(target)

        await self.core.at_leader(ctx, "transfer_leadership", [target], local)
        node = consensus.require_node()
        while node.leader != target and time.monotonic() < ctx.deadline:
            await asyncio.sleep(consensus.retry_interval)

    async def initialize(self, ctx: RequestContext, founders: list[Member],
                         token: str = "") -> None:
        """Bootstrap a member that was started empty (``--wait-init``), for a caller that
        :func:`~confer.server.api.init_access.check_init_caller` admits."""
        await self.core.admin(ctx)
        check_init_caller(ctx, token, self.host.cfg.init_token)
        for m in founders:
            check_member_id(m.id)
            check_member_addr("peer address", m.peer_addr)
        try:
            await self.host.initialize(founders)
        except FileExistsError as e:
            raise AlreadyInitialized(str(e)) from None
        except ValueError as e:
            raise NotMemberOfInit(str(e)) from None
