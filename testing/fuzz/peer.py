"""Peer traffic from a non-member: Raft batches, proposals and internal leader calls.

Sent to both the peer port and the client port. The batches' sender id is never a member's:
a non-member must change nothing and stop nothing, whatever it sends. (Forging a member's id
is what transport security is for, not admission.) Messages are the Raft codec's msgpack, with
well-typed boundary values, ill-typed fields, and the attacks found by hand: a proposal of a
write to a sentinel key, a fake leader's append with a membership change, a heartbeat at term
2^64-1, a garbage snapshot marked done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack
from hypothesis import strategies as st

from confer.kv import Put, encode_command
from confer.raft.types import ConfChange, ConfChangeType, EntryType, MessageType
from confer.server.members import Member, encode_publish
from confer.v1 import peer_pb2
from testing.fuzz.calls import Shape
from testing.fuzz.catalogue import INTERNAL_LEADER, PEER_METHODS
from testing.fuzz.strategies import rarely

_PEER = {m.name: Shape(m.path, m.client_streaming, m.server_streaming) for m in PEER_METHODS}
RAFT = _PEER["Raft"]
PROPOSE = Shape("/confer.v1.Peer/Propose")
"""Removed from the protocol (it appended any command unchecked); still sent, as an older
client would, and must change nothing."""
LEADER_CALL = Shape(f"/{INTERNAL_LEADER}/Call")
LEADER_RENEW = Shape(f"/{INTERNAL_LEADER}/Renew", client_streaming=True, server_streaming=True)
LEADER_OPS = ("member_add", "member_remove", "member_promote", "member_demote",
              "member_update", "transfer_leadership", "lease_ttl")
"""The operations ``confer.internal.Leader/Call`` runs (server/api/forwarding.py)."""
BIG = (2**63 - 1, 2**64 - 1, -1, -(2**63))
FORGED_ADDR = "10.66.6.6:2380"
"""The address a forged member claims: nothing may ever advertise it."""


@dataclass(frozen=True)
class PeerScope:
    """What the peer strategies know of the node: its id, cluster id, term, log index."""

    node_id: int
    cluster_id: int
    term: int
    last_index: int
    sentinel: bytes
    """A key outside the fuzzer's prefixes: a proposal that writes it is a stray write."""


def _ids(scope: PeerScope) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from([0, 1, 2, 3, 77, *BIG[:2]]), st.integers(0, 2**64 - 1))


def _non_member(scope: PeerScope) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from([0, 2, 77, 2**63, 2**64 - 1]),
                     st.integers(0, 2**64 - 1)).filter(lambda i: i != scope.node_id)


def _ints(scope: PeerScope) -> st.SearchStrategy[Any]:
    near = [scope.term, scope.term + 1, scope.term + 1000, scope.last_index,
            scope.last_index + 1, scope.last_index + 2]
    return st.one_of(st.sampled_from([0, 1, *near, *BIG]), st.integers(0, 2**64 - 1))


def _junk() -> st.SearchStrategy[Any]:
    """A value of the wrong type where the codec expects another."""
    return st.sampled_from(["x", None, 1.5, [], {}, b"\xff", True, [1, 2]])


def _maybe_junk(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(good, good, good, _junk())


def entry_data(scope: PeerScope) -> st.SearchStrategy[bytes]:
    """Entry payloads: stray writes, a forged member publish, conf changes, garbage."""
    stray = encode_command(Put(scope.sentinel, b"written by a non-member"))
    publish = encode_publish(Member(scope.node_id, "forged", FORGED_ADDR, FORGED_ADDR))
    add77 = ConfChange(ConfChangeType.ADD_VOTER, 77,
                       Member(77, "evil", FORGED_ADDR, FORGED_ADDR).context(scope.cluster_id))
    remove_me = ConfChange(ConfChangeType.REMOVE, scope.node_id, b"")
    return st.one_of(st.sampled_from([stray, publish, add77.encode(), remove_me.encode(), b"",
                                      b"\x01", b"\xfe" + b"\x00" * 8 + stray,
                                      encode_command(Put(b"", b"x"))]),
                     st.binary(max_size=48))


def raft_messages(scope: PeerScope) -> st.SearchStrategy[list[Any]]:
    """One Raft message in the codec's positional form (15 fields), sometimes misshapen."""
    types = st.one_of(st.sampled_from([int(t) for t in MessageType]),
                      st.sampled_from([4, 99, -1, 2**64 - 1]), _junk())
    ints = _maybe_junk(_ints(scope))
    entry = st.tuples(ints, ints, _maybe_junk(st.sampled_from(
        [int(EntryType.NORMAL), int(EntryType.CONF_CHANGE), 2, -1])),
        _maybe_junk(entry_data(scope))).map(list)
    meta = st.one_of(st.none(), st.tuples(ints, ints, st.lists(_ids(scope), max_size=3),
                                          st.lists(_ids(scope), max_size=2)).map(list), _junk())
    message = st.tuples(
        types, _maybe_junk(st.just(scope.node_id)), _maybe_junk(_ids(scope)), ints, ints, ints,
        _maybe_junk(st.lists(entry, max_size=3)), ints, _maybe_junk(st.booleans()), ints, meta,
        ints, _maybe_junk(st.binary(max_size=64)), _maybe_junk(st.booleans()),
        _maybe_junk(st.binary(max_size=16)),
    ).map(list)
    misshapen = st.one_of(message.map(lambda m: m[:7]), message.map(lambda m: [*m, 0]), _junk())
    return st.one_of(message, message, message, misshapen)


def attacks(scope: PeerScope) -> list[list[Any]]:
    """The peer attacks of issue 12, as messages (each must change nothing)."""
    n, t, last = scope.node_id, scope.term, scope.last_index
    stray = encode_command(Put(scope.sentinel, b"written by a non-member"))
    add77 = ConfChange(ConfChangeType.ADD_VOTER, 77,
                       Member(77, "evil", FORGED_ADDR, FORGED_ADDR).context(scope.cluster_id))

    def msg(mt: MessageType, frm: int, term: int, **kw: Any) -> list[Any]:
        return [int(mt), n, frm, term, kw.get("log_term", 0), kw.get("index", 0),
                kw.get("entries", []), kw.get("commit", 0), False, 0, kw.get("meta"),
                0, kw.get("snap_data", b""), kw.get("snap_done", False), b""]

    return [
        msg(MessageType.PROP, 77, 0, entries=[[0, 0, int(EntryType.NORMAL), stray]]),
        msg(MessageType.APP, 77, t + 1, log_term=t, index=last,
            entries=[[last + 1, t + 1, int(EntryType.NORMAL), stray],
                     [last + 2, t + 1, int(EntryType.CONF_CHANGE), add77.encode()]],
            commit=last + 2),
        msg(MessageType.HEARTBEAT, 77, 2**64 - 1, commit=last),
        msg(MessageType.SNAP, 77, t + 1, meta=[last + 10, t + 1, [77], []],
            snap_data=b"\x93garbage", snap_done=True),
        msg(MessageType.VOTE, 77, t + 5, log_term=2**63, index=2**63),
        msg(MessageType.TIMEOUT_NOW, 77, t),
        msg(MessageType.APP, 77, "x", index="y"),  # type: ignore[arg-type]
    ]


def encoded_messages(scope: PeerScope) -> st.SearchStrategy[bytes]:
    """The ``messages`` field of a batch: the codec's form, a bad version, or garbage."""
    version = st.one_of(st.just(1), st.sampled_from([0, 2, -1, "1", None]))
    structured = st.tuples(version, st.lists(raft_messages(scope), max_size=3)).map(
        lambda vm: msgpack.packb([vm[0], *vm[1]], use_bin_type=True))
    attack = st.sampled_from(attacks(scope)).map(
        lambda m: msgpack.packb([1, m], use_bin_type=True))
    return st.one_of(structured, structured, attack, st.binary(max_size=128),
                     st.just(b""), st.just(msgpack.packb([1])))


def raft_batches(scope: PeerScope) -> st.SearchStrategy[bytes]:
    """A serialized ``RaftBatch`` from a non-member, with the right cluster id or not."""
    cluster_ids = st.one_of(st.sampled_from([0, scope.cluster_id, scope.cluster_id ^ 1,
                                             2**64 - 1]), st.integers(0, 2**64 - 1))
    batch = st.builds(
        lambda cid, frm, to, messages, addr: peer_pb2.RaftBatch(
            cluster_id=cid, to=to, messages=messages, from_addr=addr,
            **{"from": frm}).SerializeToString(),
        cluster_ids, _non_member(scope),
        st.one_of(st.just(scope.node_id), _ids(scope)), encoded_messages(scope),
        st.one_of(st.sampled_from(["", "127.0.0.1:1", FORGED_ADDR, "a:b:c", "\x00"]),
                  st.text(max_size=16)))
    return st.one_of(batch, batch, batch, st.binary(max_size=64))


def proposals(scope: PeerScope) -> st.SearchStrategy[bytes]:
    """A serialized ``ProposeRequest``: stray writes, forged publishes, huge or garbage."""
    huge = st.just(encode_command(Put(scope.sentinel + b"/big", b"v" * ((8 << 20) + 1))))
    command = rarely(huge, entry_data(scope), 64)
    return st.one_of(
        command.map(_propose_request),
        st.binary(max_size=64))


def _propose_request(command: bytes) -> bytes:
    """The removed ``ProposeRequest``'s wire form: field 1 (bytes) holds the command."""
    return b"\x0a" + _varint(len(command)) + command


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def leader_calls(scope: PeerScope) -> st.SearchStrategy[bytes]:
    """``confer.internal.Leader/Call`` bodies: msgpack ``[op, args]``, well-formed or not."""
    arg = st.one_of(_ids(scope), st.sampled_from(["", FORGED_ADDR, "evil", True, None]),
                    _junk())
    member_add = st.just(["member_add", [77, "evil", FORGED_ADDR, FORGED_ADDR, False]])
    demote = st.just(["member_demote", [scope.node_id]])
    remove = st.just(["member_remove", [scope.node_id]])
    generic = st.tuples(st.one_of(st.sampled_from(LEADER_OPS), st.text(max_size=8), _junk()),
                        st.one_of(st.lists(arg, max_size=6), _junk())).map(list)
    packed = st.one_of(member_add, demote, remove, generic, generic, generic).map(
        lambda v: msgpack.packb(v, use_bin_type=True))
    return st.one_of(packed, packed, st.binary(max_size=48))


def leader_renewals(scope: PeerScope) -> st.SearchStrategy[bytes]:
    """``confer.internal.Leader/Renew`` requests: msgpack lease ids, or not."""
    return st.one_of(_ints(scope).map(msgpack.packb), _junk().map(msgpack.packb),
                     st.binary(max_size=16))
