"""Wire encoding of Raft messages between peers (msgpack, positional, compact).

A message is a list of its fields in a fixed order; entries are ``[index, term, type, data]``.
The first element of a batch is the format version, so the encoding can evolve.
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

_MT = {int(t): t for t in MessageType}
_ENTRY_TYPES = {int(t): t for t in EntryType}


def _meta(meta: SnapshotMeta | None) -> list[object] | None:
    if meta is None:
        return None
    cs = meta.conf_state
    return [meta.index, meta.term, sorted(cs.voters), sorted(cs.learners)]


def _unmeta(raw: list[Any] | None) -> SnapshotMeta | None:
    if raw is None:
        return None
    index, term, voters, learners = raw
    return SnapshotMeta(index, term, ConfState(frozenset(voters), frozenset(learners)))


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


def decode_messages(data: bytes) -> list[Message]:
    raw = msgpack.unpackb(data, raw=False, use_list=True)
    if not raw or raw[0] != FORMAT_VERSION:
        raise ValueError(f"unsupported raft message format {raw[0] if raw else None!r}")
    out = []
    for (t, to, frm, term, log_term, index, ents, commit, reject, reject_hint, meta,
         snap_offset, snap_data, snap_done, context) in raw[1:]:
        out.append(Message(
            _MT[t], to, frm, term, log_term, index,
            [Entry(i, tm, d, _ENTRY_TYPES[et]) for i, tm, et, d in ents],
            commit, reject, reject_hint, _unmeta(meta), snap_offset, snap_data, snap_done,
            context,
        ))
    return out
