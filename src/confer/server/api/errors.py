"""The request layer's own errors: what can go wrong in a request, in Confer's terms.

The key-value store's errors (:mod:`confer.kv.errors`), Raft's refusals
(:mod:`confer.raft.errors`) and :class:`~confer.server.consensus.NoLeader` reach the
adapters too. Each adapter maps all of them to its API's statuses in one table.
"""

from __future__ import annotations

from confer.kv.errors import InvalidArgument


class RequestError(Exception):
    """Base class of the request layer's errors."""


class PermissionDenied(RequestError):
    """A guard refused the request (authorization, quota or rate limit: the message says
    which rule)."""


class NotAuthenticated(PermissionDenied):
    """Authentication is enabled and the request names no user (no token, no client
    certificate; etcd: "etcdserver: user name is empty")."""


class InvalidToken(PermissionDenied):
    """The request's token is unknown, expired, or names a user that is gone (etcd:
    "etcdserver: invalid auth token"): authenticate again."""


class AuthFailed(RequestError):
    """Authenticate with an unknown user or a wrong password (etcd: "etcdserver:
    authentication failed, invalid user ID or password")."""


class AuthNotEnabled(RequestError):
    """Authenticate while authentication is disabled (etcd: "etcdserver: authentication
    is not enabled")."""


class RequestTooLarge(InvalidArgument):
    """The write's log entry is larger than ``--max-request-bytes`` (etcd: "etcdserver:
    request is too large")."""


class TooManyRequests(RequestError):
    """Too many writes already wait for the log on this member (etcd: "etcdserver: too many
    requests"); the client should back off and retry."""


# -- cluster ----------------------------------------------------------------------------------
class MemberNotFound(RequestError):
    def __init__(self, member_id: int) -> None:
        super().__init__(f"member {member_id} not found")
        self.member_id = member_id


class MemberExists(RequestError):
    def __init__(self, member_id: int) -> None:
        super().__init__(f"member {member_id} already exists")
        self.member_id = member_id


class PeerAddressInUse(RequestError):
    def __init__(self, peer_addr: str, member_id: int) -> None:
        super().__init__(f"peer address {peer_addr} is already member {member_id}")
        self.peer_addr = peer_addr
        self.member_id = member_id


class NotALearner(RequestError):
    def __init__(self, member_id: int) -> None:
        super().__init__(f"member {member_id} is not a learner")
        self.member_id = member_id


class LearnerNotReady(RequestError):
    def __init__(self, member_id: int) -> None:
        super().__init__(f"learner {member_id} is not yet in sync with the leader")
        self.member_id = member_id


class UnsafeReconfiguration(RequestError):
    """A membership change that would leave fewer live voters than a quorum of the new
    configuration (etcd's strict reconfiguration check): the cluster could not commit again."""

    def __init__(self, change: str, live: int, voters: int, quorum: int) -> None:
        super().__init__(
            f"{change}: refused, only {live} of the {voters} voters after it would be live, a "
            f"quorum needs {quorum} (a voter counts as live once the leader heard from it "
            f"within the last election timeout; add a new member as a learner, start it, "
            f"then promote it)")
        self.change, self.live, self.voters, self.quorum = change, live, voters, quorum


class LastVoter(RequestError):
    """Removing (or demoting) the only voter: the cluster would have none."""

    def __init__(self, member_id: int) -> None:
        super().__init__(f"member {member_id} is the last voter; a cluster needs at least one")
        self.member_id = member_id


class TransfereeIsLearner(RequestError):
    def __init__(self, member_id: int) -> None:
        super().__init__(f"member {member_id} is a learner")
        self.member_id = member_id


class AlreadyInitialized(RequestError):
    """``Init`` on a member that already holds a log or follows a leader."""


class NotMemberOfInit(RequestError):
    """``Init`` names founders that do not include this member."""


class UnknownMembers(RequestError):
    def __init__(self, member_ids: list[int]) -> None:
        super().__init__(f"nodes {member_ids} are not members; add them as learners first")
        self.member_ids = member_ids


# -- locks and elections ----------------------------------------------------------------------
class WaiterLost(RequestError):
    """A lock waiter's or election candidate's key went away before its turn came."""

    def __init__(self, kind: str, name: str, key: str, lease: int, lease_gone: bool) -> None:
        outcome = "not elected" if kind == "election" else "the lock was not acquired"
        where = f"{kind} {name}"
        if lease_gone:
            message = (f"{where}: lease {lease} ({lease:#x}) expired or was revoked while "
                       f"waiting; {outcome}")
        else:
            message = (f"{where}: key {key} of lease {lease} ({lease:#x}) was deleted while "
                       f"waiting; {outcome}")
        super().__init__(message)
        self.kind, self.name, self.key, self.lease = kind, name, key, lease
        self.lease_gone = lease_gone


class CandidateVanished(RequestError):
    """The create-or-reuse txn of a lock waiter or candidate read no key back."""


class LockNotHeld(RequestError):
    def __init__(self, key: str) -> None:
        super().__init__(f"unlock {key}: the lock is not held (no such key)")
        self.key = key


class LockHeldByOther(RequestError):
    def __init__(self, key: str, holder: int, lease: int) -> None:
        super().__init__(f"unlock {key}: held by lease {holder:x}, not by lease {lease:x}")
        self.key, self.holder, self.lease = key, holder, lease


class NotElectionLeader(RequestError):
    """Proclaim or resign with a leader key that no longer leads."""

    def __init__(self, key: str, rev: int, lease: int) -> None:
        super().__init__(f"election: not leader ({key} created at revision {rev} with lease "
                         f"{lease} ({lease:#x}) no longer exists)")
        self.key, self.rev, self.lease = key, rev, lease


class NoElectionLeader(RequestError):
    def __init__(self, name: str) -> None:
        super().__init__(f"election {name}: no leader")
        self.name = name


class Unsupported(RequestError):
    """A request Confer understands but does not implement."""
