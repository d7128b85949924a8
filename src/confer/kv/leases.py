"""Leases in the store: granting, revoking (which deletes the attached keys in one revision),
and the lease table's queries. Only TTLs are state; the leader keeps the deadlines."""

from __future__ import annotations

from confer.kv.commands import LeaseGrant, LeaseRevoke, check_lease_grant, check_lease_revoke
from confer.kv.errors import KVError, LeaseExists, lease_not_found
from confer.kv.state import Change, StoreState, commit, log
from confer.kv.types import ErrorResult, LeaseGrantResult, LeaseInfo, LeaseRevokeResult
from confer.kv.writes import delete, no_space


def lease_keys(st: StoreState, lease: int) -> list[bytes]:
    """The live keys attached to ``lease``, sorted."""
    return sorted(st._lease_keys.get(lease, ()))


def lease_ttl(st: StoreState, lease: int) -> int | None:
    """The TTL in seconds of a granted lease, or None if there is no such lease."""
    return st._leases.get(lease)


def leases(st: StoreState) -> list[LeaseInfo]:
    """Every granted lease, by id."""
    return [LeaseInfo(i, st._leases[i]) for i in sorted(st._leases)]


def _notify_lease(st: StoreState, lease: int, ttl: int) -> None:
    for callback in st._lease_listeners:
        try:
            callback(lease, ttl)
        except Exception:
            log.exception("lease listener %r failed for lease %d", callback, lease)


def apply_grant(st: StoreState, cmd: LeaseGrant) -> LeaseGrantResult | ErrorResult:
    """Grant a lease (id 0: the store picks the next free id). Takes no revision."""
    try:
        check_lease_grant(cmd)
    except KVError as e:
        return ErrorResult.of(e, st._rev)
    if st._nospace:
        return ErrorResult.of(no_space(), st._rev)
    lease = cmd.id
    if lease == 0:
        lease = st._last_lease_id + 1
        while lease in st._leases:
            lease += 1
        st._last_lease_id = lease
    elif lease in st._leases:
        return ErrorResult.of(LeaseExists(f"etcdserver: lease already exists: lease {lease} "
                                          f"({lease:#x})"), st._rev)
    st._leases[lease] = cmd.ttl
    _notify_lease(st, lease, cmd.ttl)
    return LeaseGrantResult(st._rev, lease, cmd.ttl)


def apply_revoke(st: StoreState, cmd: LeaseRevoke) -> LeaseRevokeResult | ErrorResult:
    """Revoke a lease; its keys are deleted in one revision, in key order."""
    try:
        check_lease_revoke(cmd)
    except KVError as e:
        return ErrorResult.of(e, st._rev)
    lease = cmd.id
    if lease not in st._leases:
        return ErrorResult.of(lease_not_found(lease, "revoke"), st._rev)
    keys = sorted(st._lease_keys.get(lease, ()))
    rev = st._rev
    if keys:  # every attached key goes in one revision, in key order
        rev += 1
        changes: list[Change] = []
        for k in keys:
            delete(st, k, rev, changes)
        commit(st, rev, changes)
    del st._leases[lease]
    st._lease_keys.pop(lease, None)
    _notify_lease(st, lease, 0)
    return LeaseRevokeResult(rev, keys)
