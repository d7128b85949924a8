"""The alarm store (etcd's ``alarmStore``): which member raised which alarm, replicated like
every other command, so that every member refuses the same writes while NOSPACE is active."""

from __future__ import annotations

from confer.kv.commands import Alarm, check_alarm
from confer.kv.errors import KVError
from confer.kv.state import StoreState
from confer.kv.types import AlarmAction, AlarmResult, AlarmType, ErrorResult


def alarms(st: StoreState) -> list[tuple[int, int]]:
    """The active alarms as ``(member id, alarm type)``, sorted."""
    return sorted(st._alarms)


def size_bytes(st: StoreState) -> int:
    """The store's approximate size (see :mod:`confer.kv.state`): what the quota measures."""
    return st._size


def apply_alarm(st: StoreState, cmd: Alarm) -> AlarmResult | ErrorResult:
    """Raise or clear an alarm; the result lists what changed. Takes no revision."""
    try:
        check_alarm(cmd)
    except KVError as e:
        return ErrorResult.of(e, st._rev)
    entry = (cmd.member_id, int(cmd.alarm))
    changed: list[tuple[int, int]] = []
    if cmd.action == AlarmAction.ACTIVATE:
        if entry not in st._alarms:
            st._alarms.add(entry)
            changed.append(entry)
    elif entry in st._alarms:
        st._alarms.discard(entry)
        changed.append(entry)
    update_nospace(st)
    return AlarmResult(st._rev, changed)


def update_nospace(st: StoreState) -> None:
    st._nospace = any(kind == AlarmType.NOSPACE for _, kind in st._alarms)
