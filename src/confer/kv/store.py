"""The MVCC key-value store: Confer's replicated state machine, modelled on etcd's ``mvcc``.

Pure and deterministic: no asyncio, I/O, clock or randomness, and nothing that depends on hash
order, so every replica that applies the same entries holds the same state and snapshots to the
same bytes.

:class:`KVStore` is the facade: it decodes entries and dispatches commands, and takes its
reads, leases and snapshots from the modules that implement them, each a set of functions
over the :class:`~confer.kv.state.StoreState` it extends:

- :mod:`confer.kv.state`: the data structures (and their costs) and the event log;
- :mod:`confer.kv.writes`: put, delete and transactions;
- :mod:`confer.kv.leases`: the lease table;
- :mod:`confer.kv.compaction`: dropping old history;
- :mod:`confer.kv.alarms`: the alarm store and the size the space quota measures;
- :mod:`confer.kv.auth`: users, roles and permissions;
- :mod:`confer.kv.reads`: ranges, children and the watch history;
- :mod:`confer.kv.snapshot`: snapshots, whole or incremental, and restore.

The functions are bound as methods as they are (``range = reads.read_range``), not wrapped:
a read or a write costs no more calls than when they were methods written here.
"""

from __future__ import annotations

from collections.abc import Callable

from confer.kv import alarms as alarm_store  # (not ``alarms``: a method of the same name)
from confer.kv import auth, compaction, reads
from confer.kv import leases as lease_table  # (not ``leases``: a method of the same name)
from confer.kv import snapshot as snapshots  # (likewise)
from confer.kv.alarms import apply_alarm
from confer.kv.commands import (
    Alarm,
    AuthChange,
    Command,
    Compact,
    DeleteRange,
    LeaseGrant,
    LeaseRevoke,
    Put,
    Txn,
    check_put,
    command_from_raw,
    is_stamped,
    put_fields,
    take_stamp,
    unpack_command,
)
from confer.kv.compaction import apply_compact
from confer.kv.errors import ErrorCode, KVError
from confer.kv.leases import apply_grant, apply_revoke
from confer.kv.snapshot import SNAPSHOT_STEP_KEYS, SNAPSHOT_VERSION, SnapshotAborted
from confer.kv.state import EventListener, LeaseListener, StoreState
from confer.kv.types import ErrorResult, Result
from confer.kv.writes import apply_delete, apply_put, apply_txn
from confer.raft.types import Entry

__all__ = ["SNAPSHOT_STEP_KEYS", "SNAPSHOT_VERSION", "KVStore", "SnapshotAborted"]


class KVStore(StoreState):
    """An etcd-style MVCC store and Confer's :class:`~confer.raft.fsm.StateMachine`.

    Writes come only through :meth:`apply` (a Raft entry) or :meth:`execute` (a decoded
    command); both return a result and never raise for bad input. Reads (:meth:`range`,
    :meth:`get`, :meth:`children`, :meth:`events_since`) raise :class:`KVError` subclasses.
    """

    # -- state ------------------------------------------------------------------------------------
    @property
    def revision(self) -> int:
        """The current revision: that of the last change (1 for an empty store)."""
        return self._rev

    @property
    def compact_revision(self) -> int:
        """The revision of the last compaction (0 if none). Range reads at this revision or
        later are served; events are kept only for the revisions after it."""
        return self._compact

    @property
    def oldest_revision(self) -> int:
        """The oldest revision whose events are retained: ``compact_revision + 1``."""
        return self._compact + 1

    def __len__(self) -> int:
        """The number of live keys."""
        return len(self._live)

    retention_target = compaction.retention_target
    lease_keys = lease_table.lease_keys
    lease_ttl = lease_table.lease_ttl
    leases = lease_table.leases
    alarms = alarm_store.alarms
    size_bytes = alarm_store.size_bytes

    @property
    def nospace(self) -> bool:
        """Whether a NOSPACE alarm is active: writes that need space are refused."""
        return self._nospace

    # -- the StateMachine seam --------------------------------------------------------------------
    def apply(self, entry: Entry) -> Result:
        """Decode and execute one committed entry. Never raises for bad input: an
        undecodable or invalid command yields an :class:`ErrorResult` and changes nothing."""
        self.applied_index = entry.index
        try:
            data = entry.data
            raw = unpack_command(data)
            if is_stamped(data):
                user, checked_at = take_stamp(raw)
                a = self._auth
                if a.enabled and checked_at != a.revision:  # rare: the auth state moved
                    return self._apply_rechecked(user, raw)
            fields = put_fields(raw)
            if fields is not None:  # the hot path: no Put object
                key, value, lease, flags = fields
                return apply_put(self, key, value, lease, flags)
            cmd = command_from_raw(raw)
        except Exception as e:  # whatever the payload, the replica must go on applying
            return ErrorResult(ErrorCode.BAD_COMMAND, str(e), self._rev)
        return self.execute(cmd)

    def _apply_rechecked(self, user: str, raw: list[object]) -> Result:
        """Apply a command checked at an older auth revision only if ``user`` may still
        make it (:func:`confer.kv.auth.stale_refusal`); else refuse it, changing nothing."""
        fields = put_fields(raw)
        if fields is not None:
            key, value, lease, flags = fields
            cmd: Command = Put(key, value, lease, bool(flags & 1), bool(flags & 2),
                               bool(flags & 4))
        else:
            cmd = command_from_raw(raw)
        refusal = auth.stale_refusal(self, user, cmd)
        if refusal is not None:
            return ErrorResult.of(refusal, self._rev)
        return self.execute(cmd)

    def execute(self, cmd: Command) -> Result:
        """Execute a decoded command (what :meth:`apply` does after decoding)."""
        if type(cmd) is Put:
            try:
                check_put(cmd)
            except KVError as e:
                return ErrorResult.of(e, self._rev)
            flags = cmd.prev_kv | (cmd.ignore_value << 1) | (cmd.ignore_lease << 2)
            return apply_put(self, cmd.key, cmd.value, cmd.lease, flags)
        if type(cmd) is DeleteRange:
            return apply_delete(self, cmd)
        if type(cmd) is Txn:
            return apply_txn(self, cmd)
        if type(cmd) is Compact:
            return apply_compact(self, cmd)
        if type(cmd) is LeaseGrant:
            return apply_grant(self, cmd)
        if type(cmd) is LeaseRevoke:
            return apply_revoke(self, cmd)
        if type(cmd) is Alarm:
            return apply_alarm(self, cmd)
        if type(cmd) is AuthChange:
            return auth.apply_auth(self, cmd)
        return ErrorResult(ErrorCode.BAD_COMMAND, f"not a command: {type(cmd).__name__}", self._rev)

    # -- auth -------------------------------------------------------------------------------------
    auth_enabled = auth.auth_enabled
    auth_revision = auth.auth_revision
    user = auth.user
    user_names = auth.user_names
    role = auth.role
    role_names = auth.role_names
    is_root = auth.is_root
    user_permissions = auth.user_permissions

    snapshot = snapshots.snapshot
    snapshot_steps = snapshots.snapshot_steps
    restore = snapshots.restore

    # -- reads ------------------------------------------------------------------------------------
    get = reads.get
    range = reads.read_range
    children = reads.children
    events_since = reads.events_since
    events_at = reads.events_at

    # -- listeners --------------------------------------------------------------------------------
    def add_listener(self, callback: EventListener) -> None:
        """Call ``callback(events)`` after each new revision with that revision's events, in
        order. It runs inside :meth:`apply`: it must be quick and must not write to the store.
        An exception it raises is logged, not propagated (the state is already updated)."""
        self._listeners.append(callback)

    def remove_listener(self, callback: EventListener) -> None:
        self._listeners.remove(callback)

    def add_restore_listener(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(revision)`` after :meth:`restore` replaced the state: pushed events
        stopped at the old state, so watchers should catch up with :meth:`events_since`."""
        self._restore_listeners.append(callback)

    def add_auth_listener(self, callback: auth.AuthListener) -> None:
        """Call ``callback(change)`` after each auth change was applied (a token issued
        included). Same rules as :meth:`add_listener`. After :meth:`restore` only the restore
        listeners are called."""
        self._auth_listeners.append(callback)

    def add_lease_listener(self, callback: LeaseListener) -> None:
        """Call ``callback(lease, ttl)`` after a lease is granted, and ``callback(lease, 0)``
        after it is revoked (its keys' DELETE events have been pushed by then). Same rules as
        :meth:`add_listener`: quick, no writes, exceptions are logged. After :meth:`restore`
        only the restore listeners are called: compare :meth:`leases` with what you knew."""
        self._lease_listeners.append(callback)
