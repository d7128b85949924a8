"""Confer's replicated key-value store: an etcd-style MVCC state machine (pure, no I/O).

- :class:`KVStore`: the state machine (``apply``/``snapshot``/``restore``) and its reads;
- commands (:class:`Put`, :class:`DeleteRange`, :class:`Txn`, :class:`Compact`) and their
  encoding (:func:`encode_command`, :func:`decode_command`) and validation;
- :class:`WatchIndex`: which watches an event concerns;
- :mod:`confer.kv.paths`: the native API's path rules and path-to-range helpers.

See docs/kv.md.
"""

from confer.kv.commands import (
    MAX_TXN_OPS,
    Command,
    Compact,
    Compare,
    DeleteRange,
    Op,
    Put,
    RangeOp,
    Txn,
    decode_command,
    encode_command,
    validate_command,
    validate_txn,
)
from confer.kv.errors import (
    BadCommand,
    CompactedError,
    DuplicateKey,
    ErrorCode,
    FutureRevisionError,
    InvalidArgument,
    KeyNotFound,
    KVError,
    TooManyOps,
)
from confer.kv.paths import prefix_end, subtree_range, validate_key, validate_path, validate_value
from confer.kv.store import KVStore
from confer.kv.types import (
    CompactResult,
    CompareResult,
    CompareTarget,
    DeleteResult,
    ErrorResult,
    Event,
    EventType,
    KeyValue,
    OpResult,
    PutResult,
    RangeResult,
    Result,
    SortOrder,
    SortTarget,
    TxnResult,
)
from confer.kv.watch import WatchIndex

__all__ = [
    "MAX_TXN_OPS",
    "BadCommand",
    "Command",
    "Compact",
    "CompactResult",
    "CompactedError",
    "Compare",
    "CompareResult",
    "CompareTarget",
    "DeleteRange",
    "DeleteResult",
    "DuplicateKey",
    "ErrorCode",
    "ErrorResult",
    "Event",
    "EventType",
    "FutureRevisionError",
    "InvalidArgument",
    "KVError",
    "KVStore",
    "KeyNotFound",
    "KeyValue",
    "Op",
    "OpResult",
    "Put",
    "PutResult",
    "RangeOp",
    "RangeResult",
    "Result",
    "SortOrder",
    "SortTarget",
    "TooManyOps",
    "Txn",
    "TxnResult",
    "WatchIndex",
    "decode_command",
    "encode_command",
    "prefix_end",
    "subtree_range",
    "validate_command",
    "validate_key",
    "validate_path",
    "validate_txn",
    "validate_value",
]
