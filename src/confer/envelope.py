"""The envelope of every log entry the server proposes: its first byte names its kind.

As etcd's ``InternalRaftRequest`` names the request it carries, so that one function
(:func:`kind_of`) tells every entry apart and refuses what it does not know::

    first byte   kind              the rest
    (no byte)    NOOP              nothing: the empty entry a new leader appends
    0x01         KV_COMMAND        a msgpack array, see confer.kv.commands
    0x02         APP_COMMAND       a command of a user's state machine, see confer.replicated
    0x03         KV_COMMAND_AS     the same array, then the user and the auth revision its
                                   permissions were checked at (re-checked at apply when the
                                   auth state moved since), see confer.kv.commands
    0xFE         FORWARDED         an 8-byte request id, then a whole payload of another kind
    0xFF         MEMBER_PUBLISH    msgpack [member id, name, client address]

The bytes are those the three formats used before they shared this envelope (the KV codec's
format version 1, the driver's forwarding tag, the member table's tag), so existing data
directories read the same. Each kind's owner encodes and decodes its own body; the kind byte
and the FORWARDED wrapper are decoded here. A new kind, or a new format of a kind's body,
takes a new byte: a node that meets a byte it does not know must not apply the entry (a
replica that skipped it would diverge from those that applied it), so :func:`kind_of` raises
:class:`UnknownEntryKind`.

Membership changes are not in this envelope: they are the Raft log's own CONF_CHANGE entries,
told apart by their entry type (the member's addresses travel in the change's context).
"""

from __future__ import annotations

from enum import IntEnum


class EntryKind(IntEnum):
    """What a NORMAL entry's payload holds, named by its first byte."""

    NOOP = 0
    """An empty payload (no byte at all; a payload starting with 0x00 is unknown)."""
    KV_COMMAND = 0x01
    APP_COMMAND = 0x02
    KV_COMMAND_AS = 0x03
    """A KV command stamped with who sent it and the auth revision it was checked at."""
    FORWARDED = 0xFE
    MEMBER_PUBLISH = 0xFF


class MalformedEntry(ValueError):
    """A log entry this version cannot read: applying it is impossible and skipping it
    would make this replica diverge, so the node must stop."""


class UnknownEntryKind(MalformedEntry):
    """A log entry whose first byte names no kind this version knows."""


REQUEST_ID_SIZE = 8
"""Bytes of the request id in a FORWARDED entry."""

_FORWARDED_PREFIX = bytes((EntryKind.FORWARDED,))
_BODY = 1 + REQUEST_ID_SIZE  # where a FORWARDED entry's inner payload starts
# Indexed by the first byte: the kind, or None for a byte no kind uses (the hot path of
# every apply: one tuple lookup, no enum construction).
_KINDS: tuple[EntryKind | None, ...] = tuple(
    EntryKind(b) if b in EntryKind._value2member_map_ and b != EntryKind.NOOP else None
    for b in range(256)
)

_KNOWN = ", ".join(f"{k.name} {k.value:#04x}" for k in EntryKind if k)


def kind_of(data: bytes) -> EntryKind:
    """The kind of an entry payload. Raises :class:`UnknownEntryKind` for a first byte that
    names no kind (written by a newer version of Confer, or not by Confer)."""
    if not data:
        return EntryKind.NOOP
    kind = _KINDS[data[0]]
    if kind is None:
        raise UnknownEntryKind(
            f"log entry of unknown kind {data[0]:#04x} ({len(data)} bytes): written by a newer "
            f"Confer, or not by Confer; refusing to apply it (known kinds: {_KNOWN})")
    return kind


def wrap_forwarded(request_id: int, payload: bytes) -> bytes:
    """A FORWARDED entry: ``payload`` (an entry of another kind) tagged with the proposing
    node's request id (an unsigned 64-bit number)."""
    return _FORWARDED_PREFIX + request_id.to_bytes(REQUEST_ID_SIZE, "big") + payload


def unwrap_forwarded(data: bytes) -> tuple[int, bytes]:
    """``(request id, inner payload)`` of a FORWARDED entry."""
    if data[:1] != _FORWARDED_PREFIX:
        raise MalformedEntry(f"not a forwarded entry: {data[:1]!r}...")
    if len(data) < _BODY:
        raise MalformedEntry(f"forwarded entry of {len(data)} bytes: shorter than its header")
    return int.from_bytes(data[1:_BODY], "big"), data[_BODY:]
