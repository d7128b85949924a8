"""Transactions: compare, then a list of operations on success or on failure; atomic, at one
revision. The same builder serves both clients::

    from confer import Client, Compare, Op

    result = (client.txn()
              .if_(Compare.value("/a") == b"x", Compare.version("/b") > 0,
                   Compare.exists("/c"))
              .then(Op.put("/a", b"y"), Op.delete("/b"), Op.get("/c"))
              .else_(Op.get("/a"))
              .commit())            # ``await ....commit()`` with confer.aio.Client

A transaction is never retried once its outcome is unknown: ``commit()`` then raises
:class:`~confer.client.errors.OutcomeUnknown`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from confer.client import protocol
from confer.client.errors import InvalidArgument
from confer.client.models import TxnResult
from confer.client.plans import Call
from confer.client.policy import Retry
from confer.v1 import kv_pb2

__all__ = ["Compare", "Condition", "Op", "Txn", "txn_call"]

R = TypeVar("R")

_EQUAL, _GREATER, _LESS, _NOT_EQUAL = (kv_pb2.Compare.EQUAL, kv_pb2.Compare.GREATER,
                                       kv_pb2.Compare.LESS, kv_pb2.Compare.NOT_EQUAL)
_FIELDS = {kv_pb2.Compare.VERSION: "version", kv_pb2.Compare.CREATE: "create_revision",
           kv_pb2.Compare.MOD: "mod_revision", kv_pb2.Compare.VALUE: "value",
           kv_pb2.Compare.LEASE: "lease", kv_pb2.Compare.EXISTS: "exists"}
_SYMBOLS = {_EQUAL: "==", _GREATER: ">", _LESS: "<", _NOT_EQUAL: "!="}


@dataclass(frozen=True, slots=True)
class Condition:
    """One comparison of a transaction, e.g. ``Compare.version("/a") > 0``."""

    path: str
    target: kv_pb2.Compare.Target
    result: kv_pb2.Compare.Result
    operand: int | bytes | bool

    def to_pb(self) -> kv_pb2.Compare:
        """The condition as a ``kv_pb2.Compare`` message."""
        pb = kv_pb2.Compare(path=self.path, target=self.target, result=self.result)
        setattr(pb, _FIELDS[self.target], self.operand)
        return pb

    def __repr__(self) -> str:
        name = kv_pb2.Compare.Target.Name(self.target).lower()
        return f"<{name}({self.path!r}) {_SYMBOLS[self.result]} {self.operand!r}>"


class Field:
    """A field of a key to compare with ``==``, ``!=``, ``>``, ``<``, ``>=`` or ``<=``
    (``>=``/``<=`` only for numbers). Made by :class:`Compare`."""

    __slots__ = ("path", "target")
    __hash__ = None  # type: ignore[assignment]  # == builds a Condition

    def __init__(self, path: str, target: kv_pb2.Compare.Target) -> None:
        self.path = protocol.check_path(path)
        self.target = target

    def _operand(self, other: object) -> int | bytes:
        if self.target == kv_pb2.Compare.VALUE:
            return protocol.as_bytes(other)
        return self._number(other)

    def _number(self, other: object) -> int:
        if isinstance(other, bool) or not isinstance(other, int):
            raise InvalidArgument(f"compare {self.path}: expected an integer, got {other!r}")
        return other

    def _cond(self, result: kv_pb2.Compare.Result, other: object) -> Condition:
        return Condition(self.path, self.target, result, self._operand(other))

    def __eq__(self, other: object) -> Condition:  # type: ignore[override]  # builds a Condition
        return self._cond(_EQUAL, other)

    def __ne__(self, other: object) -> Condition:  # type: ignore[override]  # as __eq__
        return self._cond(_NOT_EQUAL, other)

    def __gt__(self, other: object) -> Condition:
        return self._cond(_GREATER, other)

    def __lt__(self, other: object) -> Condition:
        return self._cond(_LESS, other)

    def __ge__(self, other: int) -> Condition:
        if self.target == kv_pb2.Compare.VALUE:
            raise InvalidArgument(f"compare {self.path}: values compare with ==, !=, > or <")
        return self._cond(_GREATER, self._number(other) - 1)

    def __le__(self, other: int) -> Condition:
        if self.target == kv_pb2.Compare.VALUE:
            raise InvalidArgument(f"compare {self.path}: values compare with ==, !=, > or <")
        return self._cond(_LESS, self._number(other) + 1)


class Compare:
    """Builds the conditions of a transaction.

    A key that does not exist has version, create and mod revision 0, an empty value and
    lease 0.
    """

    @staticmethod
    def value(path: str) -> Field:
        """The key's value (compare with bytes or str)."""
        return Field(path, kv_pb2.Compare.VALUE)

    @staticmethod
    def version(path: str) -> Field:
        """The key's version: 0 when absent, 1 after creation, +1 per write."""
        return Field(path, kv_pb2.Compare.VERSION)

    @staticmethod
    def create_revision(path: str) -> Field:
        """The revision that created the key."""
        return Field(path, kv_pb2.Compare.CREATE)

    @staticmethod
    def mod_revision(path: str) -> Field:
        """The revision of the key's last write."""
        return Field(path, kv_pb2.Compare.MOD)

    @staticmethod
    def lease(path: str) -> Field:
        """The lease attached to the key (0: none)."""
        return Field(path, kv_pb2.Compare.LEASE)

    @staticmethod
    def exists(path: str) -> Condition:
        """True when the key exists."""
        return Condition(protocol.check_path(path), kv_pb2.Compare.EXISTS, _EQUAL, True)

    @staticmethod
    def missing(path: str) -> Condition:
        """True when the key does not exist."""
        return Condition(protocol.check_path(path), kv_pb2.Compare.EXISTS, _EQUAL, False)


class Op:
    """Builds the operations of a transaction (as ``kv_pb2.RequestOp`` messages)."""

    @staticmethod
    def get(path: str, revision: int = 0) -> kv_pb2.RequestOp:
        """Read one key; its response is a KeyValue or None."""
        return kv_pb2.RequestOp(range=kv_pb2.RangeRequest(path=protocol.check_path(path),
                                                          revision=revision))

    @staticmethod
    def put(path: str, value: bytes | str, lease: int = 0, prev_kv: bool = False
            ) -> kv_pb2.RequestOp:
        """Write one key; its response is a PutResult."""
        return kv_pb2.RequestOp(put=kv_pb2.PutRequest(
            path=protocol.check_path(path), value=protocol.as_bytes(value), lease=lease,
            prev_kv=prev_kv))

    @staticmethod
    def delete(path: str, recursive: bool = False, prev_kv: bool = False
               ) -> kv_pb2.RequestOp:
        """Delete one key (``recursive``: and its subtree); its response is a DeleteResult."""
        return kv_pb2.RequestOp(delete=kv_pb2.DeleteRequest(
            path=protocol.check_path(path), recursive=recursive, prev_kv=prev_kv))


def txn_call(compare: list[Condition], success: list[kv_pb2.RequestOp],
             failure: list[kv_pb2.RequestOp], timeout: float | None = None) -> Call[TxnResult]:
    """The call for a transaction (never retried on an unknown outcome)."""
    for c in compare:
        if not isinstance(c, Condition):
            raise InvalidArgument(f"txn: {c!r} is not a condition; build one with Compare, "
                                  "e.g. Compare.version('/a') > 0")
    for op in (*success, *failure):
        if not isinstance(op, kv_pb2.RequestOp):
            raise InvalidArgument(f"txn: {op!r} is not an operation; build one with Op")
    request = kv_pb2.TxnRequest(compare=[c.to_pb() for c in compare], success=success,
                                failure=failure)
    paths = sorted({c.path for c in compare})
    what = "Txn " + (", ".join(paths[:3]) + (" ..." if len(paths) > 3 else ""))
    return Call(what.strip(), protocol.TXN, request, Retry.ONCE,
                lambda resp, _: protocol.txn_result(resp), timeout)


class Txn(Generic[R]):
    """A transaction being built; :meth:`commit` sends it.

    ``R`` is what ``commit()`` returns: a :class:`~confer.client.models.TxnResult` with
    ``confer.Client``, an awaitable of one with ``confer.aio.Client``. ``if_``, ``then`` and
    ``else_`` may each be called several times; they append.
    """

    __slots__ = ("_commit", "_compare", "_failure", "_success", "timeout")

    def __init__(self, commit: Callable[[Call[TxnResult]], R], timeout: float | None = None
                 ) -> None:
        self._commit = commit
        self.timeout = timeout
        self._compare: list[Condition] = []
        self._success: list[kv_pb2.RequestOp] = []
        self._failure: list[kv_pb2.RequestOp] = []

    def if_(self, *conditions: Condition) -> Txn[R]:
        """Conditions that must all hold for ``then`` to run (none: always)."""
        self._compare.extend(conditions)
        return self

    def then(self, *ops: kv_pb2.RequestOp) -> Txn[R]:
        """Operations to run when every condition holds."""
        self._success.extend(ops)
        return self

    def else_(self, *ops: kv_pb2.RequestOp) -> Txn[R]:
        """Operations to run otherwise."""
        self._failure.extend(ops)
        return self

    def call(self) -> Call[TxnResult]:
        """The request this transaction sends."""
        return txn_call(self._compare, self._success, self._failure, self.timeout)

    def commit(self) -> R:
        """Send the transaction.

        Raises:
            OutcomeUnknown: it may or may not have been applied (it is not retried).
            InvalidArgument: the server refused it (e.g. a key written twice).
        """
        return self._commit(self.call())
