"""Wire encoding of Raft messages between peers (msgpack, positional, compact).

A message is a list of its fields in a fixed order; entries are ``[index, term, type, data]``.
The first element of a batch is the format version, so the encoding can evolve.

Decoding trusts nothing: whatever reaches the peer port is checked here, before the Raft core
sees it (the core assumes well-typed messages, and a bad one used to stop its loop). A batch
with any malformed message raises :class:`MalformedBatch` as a whole.
"""

from __future__ import annotations

from typing import Any

import msgpack

from confer.raft.types import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    SnapshotMeta,
)

FORMAT_VERSION = 1

MAX_U63 = (1 << 63) - 1
"""Bound of every term, index, commit and offset on the wire. The WAL stores them as u64;
refusing anything above int64 leaves the core room to count terms up (each election adds one)
without ever overflowing the hard-state encoding (a term of 2^64-1 once broke a node for good)."""

_MT = {int(t): t for t in MessageType}
# Local inputs a peer never sends (PROP is the one "local" type that travels: forwarding).
_LOCAL = frozenset({int(MessageType.HUP), int(MessageType.BEAT),
                    int(MessageType.CHECK_QUORUM)})
_WIRE_TYPES = {t: mt for t, mt in _MT.items() if t not in _LOCAL}
_ENTRY_TYPES = {int(t): t for t in EntryType}
_FIELDS = 15
_NUMBERS = ("from", "term", "log term", "index", "commit", "reject hint", "snapshot offset")


class MalformedBatch(ValueError):
    """A peer batch that does not decode as well-formed Raft messages for this node."""


def _meta(meta: SnapshotMeta | None) -> list[object] | None:
    if meta is None:
        return None
    cs = meta.conf_state
    return [meta.index, meta.term, sorted(cs.voters), sorted(cs.learners)]


def encode_messages(messages: list[Message]) -> bytes:
    out: list[object] = [FORMAT_VERSION]
    for m in messages:
        out.append([
            int(m.type), m.to, m.frm, m.term, m.log_term, m.index,
            [[e.index, e.term, int(e.type), e.data] for e in m.entries],
            m.commit, m.reject, m.reject_hint, _meta(m.snapshot), m.snap_offset, m.snap_data,
            m.snap_done, m.context,
        ])
    return msgpack.packb(out, use_bin_type=True)


def _uint(value: object, what: str) -> int:
    # type() is: bool is an int subclass, and a bool here is as wrong as a string.
    if type(value) is not int or not 0 <= value <= MAX_U63:
        raise MalformedBatch(f"{what} must be an integer in 0..2^63-1, got {value!r:.40}")
    return value


def _bytes(value: object, what: str) -> bytes:
    if type(value) is not bytes:
        raise MalformedBatch(f"{what} must be bytes, got {type(value).__name__}")
    return value


def _bool(value: object, what: str) -> bool:
    if type(value) is not bool:
        raise MalformedBatch(f"{what} must be a boolean, got {type(value).__name__}")
    return value


def _ids(value: object, what: str) -> frozenset[int]:
    if type(value) is not list:
        raise MalformedBatch(f"{what} must be a list of member ids")
    ids = frozenset(_uint(i, what) for i in value)
    if 0 in ids:
        raise MalformedBatch(f"{what}: 0 is not a member id")
    return ids


def _unmeta(raw: object) -> SnapshotMeta | None:
    if raw is None:
        return None
    if type(raw) is not list or len(raw) != 4:
        raise MalformedBatch("snapshot metadata must be [index, term, voters, learners]")
    index, term, voters, learners = raw
    conf = ConfState(_ids(voters, "snapshot voters"), _ids(learners, "snapshot learners"))
    if conf.voters & conf.learners or not conf.voters:
        raise MalformedBatch("snapshot membership: no voter, or a voter that is also a learner")
    return SnapshotMeta(_uint(index, "snapshot index"), _uint(term, "snapshot term"), conf)


def _entries(raw: object) -> list[Entry]:
    # The hot path (an append carries many entries): the checks are inlined, and an entry
    # that fails them is explained only then.
    if type(raw) is not list:
        raise MalformedBatch("entries must be a list")
    types = _ENTRY_TYPES
    out = []
    for e in raw:
        if type(e) is not list or len(e) != 4:
            raise MalformedBatch("an entry must be [index, term, type, data]")
        index, term, etype, data = e
        if (type(index) is not int or type(term) is not int or type(etype) is not int
                or type(data) is not bytes or etype not in types
                or not (0 <= index <= MAX_U63 and 0 <= term <= MAX_U63)):
            _uint(index, "entry index")
            _uint(term, "entry term")
            _bytes(data, "entry data")
            raise MalformedBatch(f"unknown entry type {etype!r:.20}")
        out.append(Entry(index, term, data, types[etype]))
    return out


def _message(raw: object, to: int) -> Message:
    if type(raw) is not list or len(raw) != _FIELDS:
        raise MalformedBatch(f"a message must be an array of {_FIELDS} fields")
    (t, dest, frm, term, log_term, index, ents, commit, reject, reject_hint, meta,
     snap_offset, snap_data, snap_done, context) = raw
    mtype = _WIRE_TYPES.get(t) if type(t) is int else None
    if mtype is None:
        raise MalformedBatch(f"unknown message type {t!r:.20}")
    if dest != to or type(dest) is not int:
        raise MalformedBatch(f"message for node {dest!r:.20} in a batch for node {to}")
    snapshot = _unmeta(meta)
    if mtype == MessageType.SNAP and snapshot is None:
        raise MalformedBatch("a snapshot message without snapshot metadata")
    numbers = (frm, term, log_term, index, commit, reject_hint, snap_offset)
    # One pass for the common case; the field at fault is named only on failure.
    if not all(type(n) is int and 0 <= n <= MAX_U63 for n in numbers):
        for n, what in zip(numbers, _NUMBERS, strict=True):
            _uint(n, what)
    if (type(reject) is not bool or type(snap_done) is not bool or type(snap_data) is not bytes
            or type(context) is not bytes):
        _bool(reject, "reject")
        _bool(snap_done, "snap_done")
        _bytes(snap_data, "snapshot data")
        _bytes(context, "context")
    return Message(mtype, to, frm, term, log_term, index, _entries(ents), commit, reject,
                   reject_hint, snapshot, snap_offset, snap_data, snap_done, context)


def decode_messages(data: bytes, to: int) -> list[Message]:
    """The messages of a batch addressed to node ``to``.

    Raises :class:`MalformedBatch` for anything that is not exactly what
    :func:`encode_messages` writes: undecodable bytes, wrong types or arity, unknown message or
    entry types, numbers out of 0..2^63-1, a message for another node, snapshot metadata that
    does not parse, or a local-only message type (HUP, BEAT, CHECK_QUORUM).
    """
    try:
        raw: Any = msgpack.unpackb(data, raw=False, use_list=True)
    except Exception as e:  # any malformed msgpack is just a malformed batch
        raise MalformedBatch(f"undecodable batch: {type(e).__name__}: {e}") from None
    if type(raw) is not list or not raw or raw[0] != FORMAT_VERSION:
        head = raw[0] if type(raw) is list and raw else raw
        raise MalformedBatch(f"unsupported raft message format {head!r:.40}")
    return [_message(m, to) for m in raw[1:]]
