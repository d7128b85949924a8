"""Sequential specifications for the linearizability checker.

A model says what a single-copy, one-at-a-time object would answer: ``step(state, op)``
decides whether ``op`` (with the result the client saw) is legal in ``state`` and what the
state becomes. States must be hashable: the checker memoises ``(linearized ops, state)``.

Statuses (see :mod:`chaos.history`) are normalised by :meth:`Model.prepare` before
checking:

* ``ok`` ops took effect exactly once, between call and return;
* ``fail`` ops certainly did not take effect and are dropped, except where the failure is
  itself an observation (a failed compare-and-set saw a state other than the expected one);
* ``info`` ops may or may not take effect, at any time after their call: those that cannot
  change the state are dropped (an info read constrains nothing), the rest keep
  ``ret=None`` and the checker treats them as optional.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from chaos.history import FAIL, INFO, OK, Operation

READ, WRITE, CAS, CAS_REV, TXN = "read", "write", "cas", "cas-rev", "txn"


@dataclass(frozen=True, slots=True)
class Problem:
    """An operation that is wrong on its face, before any ordering is considered."""

    op: Operation
    reason: str


@dataclass(frozen=True, slots=True)
class Prepared:
    """One partition's operations, normalised for the search."""

    ops: list[Operation]
    """The ops that constrain the search; ``info`` ones have ``ret=None`` (optional)."""
    problems: list[Problem]
    """Violations found without searching (e.g. a compare on a revision nobody wrote)."""
    interchangeable: frozenset[int] = frozenset()
    """Indices of blind ops whose resulting states no op of the partition can tell apart.

    Any two of them can be swapped in a linearization, so when several are optional the
    search tries only the first unused one.
    """


class Model(ABC):
    """A sequential specification: initial state, transition function, and status rules."""

    @abstractmethod
    def init(self) -> Hashable:
        """The state before any operation."""

    @abstractmethod
    def step(self, state: Any, op: Operation) -> tuple[bool, Any]:
        """Whether ``op`` with its observed outcome is legal in ``state``, and the next state.

        ``ok`` ops are checked against their result, ``fail`` ops that reach the search are
        observations that must hold, and ``info`` ops are applied as if they succeeded.
        """

    @abstractmethod
    def may_change(self, op: Operation) -> bool:
        """Whether ``op``, had it taken effect, could change the state."""

    def observes_on_failure(self, op: Operation) -> bool:
        """Whether a ``fail`` of ``op`` still tells us something about the state."""
        return False

    def blind(self, op: Operation) -> bool:
        """Whether ``op`` (not ``fail``) is legal in every state and leaves the same state.

        The search uses this to avoid applying an optional op only to overwrite it.
        """
        return False

    def guard(self, op: Operation) -> Collection[Hashable] | None:
        """The only states ``op`` (not ``fail``) can be legal in, or None if not so limited.

        The search looks optional ops up by the current state instead of trying them all.
        """
        return None

    def describe(self, state: Any) -> str:
        """A state as text, for violation reports."""
        return repr(state)

    def prepare(self, ops: Sequence[Operation]) -> Prepared:
        """Keep the ops that constrain a partition, applying the status rules above."""
        return Prepared([op for op in ops if self._constrains(op)], [])

    def pending(self, op: Operation) -> Operation | None:
        """``op`` as if it had not returned yet (None if it would then constrain nothing).

        Used to cut a history at an instant: an op still in flight may or may not have
        taken effect, and its result is not yet known.
        """
        if op.status == FAIL or not self.may_change(op):
            return None
        if op.status == INFO:
            return op
        return replace(op, status=INFO, result=None, ret=None)

    def _constrains(self, op: Operation) -> bool:
        if op.status == OK:
            return True
        if op.status == FAIL:
            return self.observes_on_failure(op)
        if op.status == INFO:
            return self.may_change(op)
        raise ValueError(f"op #{op.index}: unknown status {op.status!r}")


class Register(Model):
    """A single register per key: ``read``, ``write``, ``cas`` and ``cas-rev``.

    * ``read``: ``result`` is the value read (None if the key is absent);
    * ``write``: ``value`` is the new value;
    * ``cas``: ``value`` is ``[expected, new]``; ``ok`` means it swapped, ``fail`` means the
      server saw a value other than ``expected`` (checked as a read of ``state != expected``);
    * ``cas-rev``: ``value`` is ``[expected_mod_revision, new]``, compared on the key's
      mod_revision (0 = absent).

    Initially the key is absent. ``cas-rev`` is checked by translating revisions to values
    (values written in a run are unique per key, so a revision names exactly one value),
    using the revisions reported by ``ok`` reads (``rev`` = mod_revision of the value read)
    and ``ok`` writes, cas and cas-rev (``rev`` = the revision the write took).
    """

    def init(self) -> Hashable:
        return None

    def step(self, state: Any, op: Operation) -> tuple[bool, Any]:
        f = op.f
        if f == READ:
            return op.result == state, state
        if f == WRITE:
            return True, op.value
        expected, new = op.value
        # prepare() turned cas-rev's revision into the set of values the key could have had
        hit = state == expected if f == CAS else state in expected
        if op.status == FAIL:
            return not hit, state
        return (True, new) if hit else (False, state)

    def may_change(self, op: Operation) -> bool:
        if op.f == READ:
            return False
        if op.f in (WRITE, CAS, CAS_REV):
            return True
        raise ValueError(f"op #{op.index}: the register model has no operation {op.f!r}")

    def observes_on_failure(self, op: Operation) -> bool:
        return op.f in (CAS, CAS_REV)

    def blind(self, op: Operation) -> bool:
        return op.f == WRITE

    def guard(self, op: Operation) -> Collection[Hashable] | None:
        if op.f == CAS:
            return (op.value[0],)
        return op.value[0] if op.f == CAS_REV else None

    def prepare(self, ops: Sequence[Operation]) -> Prepared:
        for op in ops:
            self.may_change(op)  # rejects unknown operations up front
        translated, problems = _translate_cas_rev(ops)
        kept = [op for op in translated if self._constrains(op)]
        # a value no op compares the state with (by reading it or as a cas's expected value)
        # is unobserved: writes of such values are all alike
        observed = {op.result for op in kept if op.f == READ}
        observed.update(op.value[0] for op in kept if op.f == CAS)
        for op in kept:
            if op.f == CAS_REV:
                observed.update(op.value[0])
        unobserved = frozenset(
            op.index for op in kept if op.f == WRITE and op.value not in observed)
        return Prepared(kept, problems, unobserved)


def _written(op: Operation) -> Any:
    """The value a write, cas or cas-rev writes."""
    return op.value if op.f == WRITE else op.value[1]


def _translate_cas_rev(ops: Sequence[Operation]) -> tuple[list[Operation], list[Problem]]:
    """Replace each cas-rev's expected revision by the values the key could have had then.

    A revision seen in an ``ok`` read or write names one value; revision 0 means absent. A
    revision nobody reported could only belong to a write whose revision is unknown (an
    ``info`` write, or an ``ok`` one without ``rev``), so it stands for any of those values;
    if there are none, the compare cannot have matched: a ``fail`` says nothing and is
    dropped, an ``ok`` is a violation. Conflicting reports (two values at one revision, or
    one value at two revisions) are violations too.
    """
    problems: list[Problem] = []
    by_rev: dict[tuple[Any, int], tuple[Any, Operation]] = {}
    by_value: dict[tuple[Any, Any], tuple[int, Operation]] = {}

    def learn(op: Operation, rev: int, value: Any) -> None:
        seen_value, source = by_rev.setdefault((op.key, rev), (value, op))
        if seen_value != value:
            problems.append(Problem(op, (
                f"key {op.key!r} had {value!r} at revision {rev} according to op #{op.index}, "
                f"but {seen_value!r} according to op #{source.index}")))
        seen_rev, source = by_value.setdefault((op.key, value), (rev, op))
        if seen_rev != rev:
            problems.append(Problem(op, (
                f"key {op.key!r} took {value!r} at revision {rev} according to op #{op.index}, "
                f"but at revision {seen_rev} according to op #{source.index}")))

    for op in ops:
        if op.status != OK or not op.rev:
            continue
        if op.f != READ:
            learn(op, op.rev, _written(op))
        elif op.result is not None:
            learn(op, op.rev, op.result)

    unrevisioned: dict[Any, set[Any]] = {}
    for op in ops:
        if op.f != READ and op.status != FAIL and (op.key, _written(op)) not in by_value:
            unrevisioned.setdefault(op.key, set()).add(_written(op))

    out: list[Operation] = []
    for op in ops:
        if op.f != CAS_REV:
            out.append(op)
            continue
        rev, new = op.value
        if not rev:
            candidates = frozenset([None])
        elif (op.key, rev) in by_rev:
            candidates = frozenset([by_rev[op.key, rev][0]])
        else:
            # a compare can't have matched the revision its own write would create
            candidates = frozenset(unrevisioned.get(op.key, set()) - {new})
            if op.status == FAIL or not candidates:
                if op.status == OK:
                    problems.append(Problem(op, (
                        f"cas-rev on {op.key!r} succeeded comparing mod_revision {rev}, "
                        f"but no write to {op.key!r} took revision {rev}")))
                continue
        out.append(replace(op, value=(candidates, new)))
    return out, problems


class MultiRegister(Model):
    """Registers for a small group of keys, changed together by ``txn`` operations.

    ``value`` is a list of micro-ops ``["r", key, None]`` / ``["w", key, value]``, applied in
    order (a read after a write in the same txn sees it); an ``ok`` result is the same list
    with the reads filled in. The op's ``key`` names the group (the partition). The state is
    a sorted tuple of ``(key, value)`` pairs; keys never written are absent.
    """

    def init(self) -> Hashable:
        return ()

    def step(self, state: Any, op: Operation) -> tuple[bool, Any]:
        values = dict(state)
        observed = op.status == OK
        for kind, key, value in op.result if observed else op.value:
            if kind == "w":
                values[key] = value
            elif observed and values.get(key) != value:
                return False, state
        return True, tuple(sorted(values.items()))

    def may_change(self, op: Operation) -> bool:
        if op.f != TXN:
            raise ValueError(f"op #{op.index}: the multi-register model has no operation {op.f!r}")
        return any(kind == "w" for kind, _, _ in op.value)

    def prepare(self, ops: Sequence[Operation]) -> Prepared:
        for op in ops:
            self.may_change(op)  # rejects unknown operations up front
            if op.status == OK and not isinstance(op.result, list):
                raise ValueError(f"op #{op.index}: an ok txn must return its micro-ops")
        return super().prepare(ops)

    def describe(self, state: Any) -> str:
        return "{" + ", ".join(f"{key}={value!r}" for key, value in state) + "}"
