"""Hypothesis strategies for client requests, built field by field from the proto descriptors.

Every field draws boundary values as well as ordinary ones: empty and huge (bounded) strings
and bytes, non-UTF-8 bytes in string fields (spliced into the wire form, since protobuf
refuses to build them), the extreme integers of each width, NaN and infinite floats, enum
numbers the protocol does not define, repeated fields with many elements, and transactions
nested deeper than a parser allows.

Writes are *confined* (:func:`confine`): every key a request could write lies in the prefix
the fuzzer owns, so that any change outside it is a finding, not the fuzzer's own doing. The
same rule keeps membership requests from making a change that a correct server would accept.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from hypothesis import strategies as st

from testing.fuzz.catalogue import Method

I32 = (-(2**31), 2**31 - 1)
I64 = (-(2**63), 2**63 - 1)
U32 = (0, 2**32 - 1)
U64 = (0, 2**64 - 1)
_INT_RANGES: dict[int, tuple[int, int]] = {
    FieldDescriptor.TYPE_INT32: I32, FieldDescriptor.TYPE_SINT32: I32,
    FieldDescriptor.TYPE_SFIXED32: I32, FieldDescriptor.TYPE_INT64: I64,
    FieldDescriptor.TYPE_SINT64: I64, FieldDescriptor.TYPE_SFIXED64: I64,
    FieldDescriptor.TYPE_UINT32: U32, FieldDescriptor.TYPE_FIXED32: U32,
    FieldDescriptor.TYPE_UINT64: U64, FieldDescriptor.TYPE_FIXED64: U64,
}
HUGE_SIZES = (4097, 65_537, (1 << 20) + 1, (3 << 19) + 1)
"""Sizes of the rare huge strings and bytes: past 4 KiB (paths), 1 MiB (values) and etcd's
1.5 MiB request limit, and no further (a long run must not exhaust the machine)."""
HUGE_ONE_IN = 256
"""One string or bytes field in this many is huge."""
MANY = (64, 129, 1000)
"""Element counts of the rare long repeated fields (e.g. a txn with 1000 operations)."""
NEST_DEPTHS = (8, 32, 64, 99, 100, 101, 200)
"""Depths of the nested transactions: around protobuf's parse limit (100) too."""
BAD_ENUMS = (-1, 99, 2**31 - 1, -(2**31))
INVALID_PEER_ADDR = "a:b:c"
"""Prefixed to the address of a learner add so that a correct server must refuse it."""


@dataclass(frozen=True)
class Scope:
    """What the strategies need to know about the node under test."""

    own: str
    """The prefix the fuzzer owns (``/fz<seed>``): its writes go there and nowhere else."""
    member_ids: frozenset[int]

    @property
    def own_bytes(self) -> bytes:
        return self.own.encode()

    @property
    def own_end(self) -> bytes:
        """The etcd range end of the keys under ``own/`` (``/`` + 1 is ``0``)."""
        return self.own_bytes + b"0"

    def owns(self, key: bytes) -> bool:
        """Whether ``key`` is the fuzzer's: the prefix itself or anything under it."""
        own = self.own_bytes
        return key == own or key.startswith(own + b"/")

    def confine_key(self, key: bytes) -> bytes:
        """``key`` moved under the owned prefix (kept as it is if already there)."""
        if self.owns(key):
            return key
        return self.own_bytes + (key if key.startswith(b"/") else b"/" + key)

    def confine_range_end(self, range_end: bytes) -> bytes:
        # "\0" means "every key from key on" to etcd: the only end above the prefix's own.
        if not range_end or (range_end != b"\x00" and range_end <= self.own_end):
            return range_end
        return self.own_end


# -- values ------------------------------------------------------------------------------------
def rarely(rare: st.SearchStrategy[Any], common: st.SearchStrategy[Any],
           one_in: int) -> st.SearchStrategy[Any]:
    """``rare`` once in ``one_in`` draws, else ``common``."""
    # False first: Hypothesis starts from the simplest choice, which must be the common one.
    return st.sampled_from([False] * (one_in - 1) + [True]).flatmap(
        lambda pick: rare if pick else common)


def _ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    bounds = sorted({lo, hi, 0, 1, 2, max(lo, -1), min(hi, 2**53 + 1), min(hi, 2**32)})
    return st.one_of(st.sampled_from(bounds), st.integers(0, 20), st.integers(lo, hi))


def text_values(scope: Scope) -> st.SearchStrategy[str]:
    """Paths and names: the owned prefix, the sentinels' neighbourhood, every rule of a path
    broken once, control characters, right-to-left marks, and rarely a huge one."""
    own = scope.own
    special = st.sampled_from([
        "", "/", own, f"{own}/a", f"{own}/a/b", f"{own}/", f"{own}//a", f"{own}/./a",
        f"{own}/../a", f"{own}/a\x00b", "/sentinel", "/sentinel/a", "/cfg", "a", "..", "//",
        "\x00", "\n\r\t", "\u202e/etc", "é/ü", "\ud7ff", "\U0010ffff", "%00", "/" * 64,
    ])
    common = st.one_of(special, st.text(max_size=24),
                       st.text(max_size=8).map(lambda s: f"{own}/{s}"))
    huge = st.sampled_from(HUGE_SIZES).map(lambda n: own + "/" + "x" * n)
    return rarely(huge, common, HUGE_ONE_IN)


def byte_values(scope: Scope) -> st.SearchStrategy[bytes]:
    """Keys and values as bytes: as :func:`text_values`, plus bytes that are not UTF-8."""
    own = scope.own_bytes
    special = st.sampled_from([
        b"", b"\x00", b"\xff", b"\xff\xfe\xfd", b"\xc0\x80", b"/cfg/x\xff", own,
        own + b"/a", own + b"/\xff", own + b"0", b"/sentinel/a", b"\x00" * 16,
    ])
    common = st.one_of(special, st.binary(max_size=32), text_values(scope).map(str.encode))
    huge = st.sampled_from(HUGE_SIZES).map(lambda n: own + b"/" + b"\xab" * n)
    return rarely(huge, common, HUGE_ONE_IN)


def float_values() -> st.SearchStrategy[float]:
    return st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.0, 1e-310,
                                      1.7976931348623157e308, -1.0]),
                     st.floats(allow_nan=True, allow_infinity=True))


def _scalar(field: FieldDescriptor, scope: Scope) -> st.SearchStrategy[Any]:
    t = field.type
    if t in _INT_RANGES:
        return _ints(*_INT_RANGES[t])
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return float_values()
    if t == FieldDescriptor.TYPE_STRING:
        return text_values(scope)
    if t == FieldDescriptor.TYPE_BYTES:
        return byte_values(scope)
    if t == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        defined = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(defined), st.sampled_from(BAD_ENUMS))
    raise AssertionError(f"unhandled field type {t} of {field.full_name}")


# -- messages ----------------------------------------------------------------------------------
def _is_map(field: FieldDescriptor) -> bool:
    return (field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None
            and field.message_type.GetOptions().map_entry)


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def messages(cls: type[Message], scope: Scope, depth: int = 4) -> st.SearchStrategy[Message]:
    """Messages of ``cls``: each field set or not, with the values above; nested messages down
    to ``depth`` levels (a transaction's operations may hold further transactions)."""
    desc: Any = cls.DESCRIPTOR  # the stubs type it as a union of the python and upb classes

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg = cls()
        for field in desc.fields:
            if _is_map(field) or not draw(st.booleans()):
                continue
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                if depth <= 0:
                    continue
                sub: st.SearchStrategy[Any] = messages(_class_of(field), scope, depth - 1)
            else:
                sub = _scalar(field, scope)
            if _is_repeated(field):
                _fill_repeated(draw, msg, field, sub)
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                getattr(msg, field.name).CopyFrom(draw(sub))
            else:
                setattr(msg, field.name, draw(sub))
        return msg

    return build()


def _class_of(field: FieldDescriptor) -> type[Message]:
    assert field.message_type is not None
    return message_factory.GetMessageClass(field.message_type)


def _fill_repeated(draw: st.DrawFn, msg: Message, field: FieldDescriptor,
                   sub: st.SearchStrategy[Any]) -> None:
    container = getattr(msg, field.name)
    if draw(st.sampled_from([False] * 31 + [True])):
        # Many elements, all alike: cheap to draw, still a huge message for the server.
        one = draw(sub)
        items = [one] * draw(st.sampled_from(MANY))
    else:
        items = draw(st.lists(sub, max_size=3))
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        for item in items:
            container.add().CopyFrom(item)
    else:
        container.extend(items)


def nested_txn(op_field: int, depth: int) -> bytes:
    """A transaction whose only success operation is a transaction, ``depth`` times, on the
    wire (protobuf refuses to build one deeper than it parses). It writes nothing."""
    txn = b""
    for _ in range(depth):
        txn = field_bytes(TXN_SUCCESS, field_bytes(op_field, txn))
    return txn


TXN_SUCCESS = 2
"""``TxnRequest.success`` in both APIs."""
_NESTING = {"etcdserverpb.TxnRequest": "request_txn", "confer.v1.TxnRequest": "txn"}
"""Per transaction type, the field of its ``RequestOp`` that holds a transaction."""


def requests(method: Method, scope: Scope) -> st.SearchStrategy[bytes]:
    """Serialized, confined requests for ``method``, sometimes with a non-UTF-8 string field
    or an unknown field spliced in; transactions are sometimes nested very deep."""
    plain = messages(method.request, scope)

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        msg = draw(plain)
        confine(method, msg, scope)
        wire = msg.SerializeToString()
        strings = [f for f in method.request.DESCRIPTOR.fields
                   if f.type == FieldDescriptor.TYPE_STRING]
        splice = draw(st.sampled_from(["none"] * 6 + ["non-utf8", "unknown"]))
        if splice == "non-utf8" and strings:
            field = draw(st.sampled_from(strings))
            junk = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80abc"]))
            wire += field_bytes(field.number, scope.own_bytes + b"/" + junk)
        elif splice == "unknown":
            wire += field_bytes(draw(st.sampled_from([15, 999, 536_870_911])),
                                draw(st.binary(max_size=16)))
        return wire

    full = method.request.DESCRIPTOR.full_name
    if full not in _NESTING:
        return build()
    request_op: Any = method.request.DESCRIPTOR.fields_by_name["success"].message_type
    op_field = request_op.fields_by_name[_NESTING[full]].number
    deep = st.sampled_from(NEST_DEPTHS).map(lambda d: nested_txn(op_field, d))
    return rarely(deep, build(), 16)


def field_bytes(number: int, payload: bytes) -> bytes:
    """One length-delimited field on the wire (appended to a message, the last one wins)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


# -- confinement -------------------------------------------------------------------------------
KEY_FIELDS: dict[str, tuple[str, ...]] = {
    # etcd
    "etcdserverpb.PutRequest": ("key",),
    "etcdserverpb.DeleteRangeRequest": ("key",),
    "v3lockpb.LockRequest": ("name",),
    "v3lockpb.UnlockRequest": ("key",),
    "v3electionpb.CampaignRequest": ("name",),
    "v3electionpb.LeaderKey": ("name", "key"),
    # native
    "confer.v1.PutRequest": ("path",),
    "confer.v1.DeleteRequest": ("path",),
    "confer.v1.LockRequest": ("name",),
    "confer.v1.UnlockRequest": ("key",),
    "confer.v1.CampaignRequest": ("name",),
    "confer.v1.LeaderKey": ("name", "key"),
    "confer.v1.SetConfigRequest": (),  # its ConfigPath: see _confine_message
}
"""The fields, per message type, that name a key the request writes (reads are free)."""
RANGE_END_FIELDS: dict[str, str] = {"etcdserverpb.DeleteRangeRequest": "range_end"}
WRITTEN_CONFIG_PATH = ("/confer.v1.ConferService/Remove",)
"""Methods whose top-level ``ConfigPath`` is written (Get, List and the watches only read)."""


def confine(method: Method, msg: Message, scope: Scope) -> bool:
    """Rewrite ``msg`` in place so that whatever it writes stays under the owned prefix, and so
    that a membership request is one a correct server must refuse. Returns whether anything
    changed. (Alarm ACTIVATE becomes DEACTIVATE: a raised NOSPACE alarm would stop every
    write, by design, and the canary with it.)"""
    changed = _confine_message(msg, scope)
    if method.path in WRITTEN_CONFIG_PATH:
        changed |= _confine_field(msg, "path", scope)
    rule = MEMBERSHIP_RULES.get(method.path)
    if rule is not None:
        changed |= rule(msg, scope)
    return changed


def _confine_field(msg: Message, name: str, scope: Scope) -> bool:
    value = getattr(msg, name)
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogatepass")
        new = scope.confine_key(raw)
        if new != raw:
            setattr(msg, name, new.decode("utf-8", "surrogatepass"))
            return True
        return False
    new_b = scope.confine_key(value)
    if new_b != value:
        setattr(msg, name, new_b)
        return True
    return False


def _confine_message(msg: Any, scope: Scope) -> bool:
    full = msg.DESCRIPTOR.full_name
    changed = False
    for name in KEY_FIELDS.get(full, ()):
        changed |= _confine_field(msg, name, scope)
    if full in RANGE_END_FIELDS:
        name = RANGE_END_FIELDS[full]
        end = getattr(msg, name)
        new = scope.confine_range_end(end)
        if new != end:
            setattr(msg, name, new)
            changed = True
    if full == "confer.v1.SetConfigRequest":
        changed |= _confine_field(msg.path, "path", scope)
    if full == "etcdserverpb.AlarmRequest" and msg.action == 1:  # ACTIVATE
        msg.action = 2  # DEACTIVATE
        changed = True
    for field, value in msg.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE or _is_map(field):
            continue
        for sub in (value if _is_repeated(field) else [value]):
            changed |= _confine_message(sub, scope)
    return changed


def _learner_addr_invalid(msg: Any, scope: Scope) -> bool:
    # confer.v1.MemberAddRequest: a voter add must be refused (quorum); a learner add is only
    # refused for its address, so make that invalid.
    if msg.is_learner and not msg.peer_addr.startswith(INVALID_PEER_ADDR):
        msg.peer_addr = INVALID_PEER_ADDR + msg.peer_addr
        return True
    return False


def _etcd_learner_urls_invalid(msg: Any, scope: Scope) -> bool:
    if msg.isLearner and INVALID_PEER_ADDR not in msg.peerURLs:
        msg.peerURLs.append(INVALID_PEER_ADDR)
        return True
    return False


def _etcd_update_invalid(msg: Any, scope: Scope) -> bool:
    # Updating a member's peer URLs is a valid change; keep it for the ids that are members
    # only with an address a correct server must refuse.
    if msg.ID in scope.member_ids and INVALID_PEER_ADDR not in msg.peerURLs:
        msg.peerURLs.append(INVALID_PEER_ADDR)
        return True
    return False


def _add_learner_invalid(msg: Any, scope: Scope) -> bool:
    if not msg.node.addr.startswith(INVALID_PEER_ADDR):
        msg.node.addr = INVALID_PEER_ADDR + msg.node.addr
        return True
    return False


MEMBERSHIP_RULES: dict[str, Callable[[Any, Scope], bool]] = {
    "/confer.v1.Cluster/MemberAdd": _learner_addr_invalid,
    "/etcdserverpb.Cluster/MemberAdd": _etcd_learner_urls_invalid,
    "/etcdserverpb.Cluster/MemberUpdate": _etcd_update_invalid,
    "/confer.v1.ConferService/AddLearner": _add_learner_invalid,
}
"""Voter adds, removals, promotions, ChangeMembership and transfers stay as drawn: on a
one-node cluster a correct server refuses every one that would change the membership."""


def confine_raw(method: Method, payload: bytes, scope: Scope) -> bytes:
    """Random bytes made safe to send: if they parse as ``method``'s request (the server parses
    them the same way), confine that request; bytes that do not parse are sent as they are."""
    try:
        msg = method.request.FromString(payload)
    except (DecodeError, RuntimeError, ValueError):
        return payload
    return msg.SerializeToString() if confine(method, msg, scope) else payload
