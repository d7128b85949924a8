"""Linearizability checking: Wing & Gong's search with Lowe's memoisation, as in porcupine.

A history is linearizable if every operation can be given an instant between its call and
its return such that, taken in that order, the results are those of the sequential model.
:func:`check` splits the history into independent partitions (one per key: P-compositionality
says the whole is linearizable iff each part is) and searches each.

The search keeps the calls and returns of the ops that must be linearized, sorted by time,
in a doubly linked list. It walks the list from the front: at a call it tries to linearize
that op now (``model.step``); if legal, and the pair (set of linearized ops as a bitset,
state) was not reached before, the op's call and return are lifted out of the list and the
walk restarts from the front. Reaching a return means that op can no longer be deferred:
undo the last choice (unlift) and try the next call after it. Ops whose outcome is unknown
(``ret=None``) are optional: they may be linearized at any point after their call, or never,
so they are tried only when the walk reaches a return, and the search succeeds once every
op with a known return is linearized.

Python is slow, so three reductions, each of which keeps "is there a linearization" exact,
prune the search:

* a *pure* op (one that never changes the state: a read, a failed cas) that is legal now can
  be linearized now, since moving it to the front of any linearization keeps it valid; so
  there is no need to try anything else in its place;
* a *blind* op (legal everywhere, leaving the same state: a write) is never tried straight
  after an optional op, which would only be overwritten: the blind op alone does as well
  and leaves the optional op unused;
* of *interchangeable* optional ops (writes of values no op ever compares the state with),
  only the earliest unused one is tried: the others would explore mirror images.

Optional ops are also looked up by the states they can be legal in (``model.guard``), so
the many timed-out ops of a long run are not all retried at every step. The work per
partition is bounded by a step budget (calls to ``model.step``) and a time budget;
exhausting either gives an "unknown" result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from chaos.history import FAIL, OK, Operation
from chaos.models import Model, Prepared

LINEARIZABLE, VIOLATION, UNKNOWN = "linearizable", "violation", "unknown"

DEFAULT_MAX_STEPS = 5_000_000
DEFAULT_TIMEOUT = 60.0
MAX_STATES_SHOWN = 16


@dataclass(frozen=True, slots=True)
class Possibility:
    """A state the object could be in just before the failing op's call."""

    state: str
    """The state, as the model describes it."""
    applied: tuple[Operation, ...]
    """The ops concurrent with the failing one already applied in this state."""


@dataclass(frozen=True)
class Window:
    """Where and why a partition is not linearizable.

    The *minimal failing prefix* is the history cut at the return of ``op``, where ``op``
    is the earliest-returning op (in return order) for which the cut is not linearizable:
    the cut keeps every op invoked by then, and ops that had not returned by then count as
    in flight (they may or may not have taken effect; their results are ignored). The cut
    just before ``op``'s return is linearizable, so ``op``'s result is the first that no
    linearization can explain. The *window* is ``op`` plus the ops of that prefix that
    overlap it (``concurrent``), started from ``states``: every (state, ops already applied)
    that the ops invoked before ``op``'s call can lead to (leaving out, as the search does,
    those where an in-flight op was overwritten unseen or where another interchangeable op
    would do). Every op outside the window completed before ``op`` was called, so the prefix
    fails exactly when the window fails from every one of these states: no order of the
    window's ops explains them.

    When a partition fails without any search (``prefix_size`` is 0), ``op`` is simply
    wrong on its face and ``reason`` says why.
    """

    key: Hashable
    reason: str
    op: Operation
    """The op that could not be linearized (as recorded)."""
    concurrent: tuple[Operation, ...] = ()
    """The prefix's ops overlapping ``op``, in call order (as recorded)."""
    in_flight: frozenset[int] = frozenset()
    """Indices of ``concurrent`` ops that returned after the cut (results not used)."""
    states: tuple[Possibility, ...] = ()
    """Where the window starts from: the states possible just before ``op``'s call."""
    states_complete: bool = True
    """False if ``states`` were capped or their search ran out of budget."""
    prefix_size: int = 0
    """How many ops (invoked by the cut) the failing prefix holds."""
    total: int = 0
    """How many ops the partition holds."""
    minimal: bool = True
    """False if the budget ran out while shrinking: a shorter failing prefix may exist."""

    def render(self) -> str:
        """The window as text, one line per op, times relative to the first call shown."""
        shown = [self.op, *self.concurrent]
        base = min(o.call for o in shown)
        fmt = _time_format(max(max(o.call, o.ret or 0) for o in shown) - base)

        def line(o: Operation) -> str:
            note = "  (in flight at the cut: result not used)" if o.index in self.in_flight else ""
            return "    " + _op_text(o, base, fmt) + note

        out = [f"Not linearizable: key {self.key!r}", f"  {self.reason}"]
        if self.prefix_size:
            out.append(f"  Minimal failing prefix: {self.prefix_size} of {self.total} ops, cut at "
                       "the failing op's return"
                       + ("" if self.minimal else " (budget ran out: may not be minimal)"))
        out.append("  Failing op:")
        out.append(line(self.op))
        if self.concurrent:
            out.append("  Concurrent with it:")
            out.extend(line(o) for o in self.concurrent)
        if self.prefix_size:
            out.append("  Possible states just before its call"
                       + ("" if self.states_complete else " (incomplete)") + ":")
            for p in self.states:
                applied = "; ".join(f"#{o.index} p{o.process} {o.f} {o.value!r}" for o in p.applied)
                out.append(f"    {p.state}" + (f"  (after {applied})" if applied else ""))
        return "\n".join(out)


@dataclass(frozen=True)
class PartitionResult:
    """The outcome for one partition (one key, or one group of keys)."""

    key: Hashable
    status: str
    """``linearizable``, ``violation`` or ``unknown`` (budget exhausted)."""
    ops: int
    """Ops checked: those left after dropping ones that constrain nothing."""
    steps: int
    """Calls to ``model.step``, including those spent shrinking a violation."""
    elapsed: float
    """Seconds spent on this partition."""
    detail: str = ""
    """Why the status is ``unknown``."""
    window: Window | None = None
    """Set when the status is ``violation``."""


@dataclass(frozen=True)
class Verdict:
    """The outcome of :func:`check`: one result per partition, in first-seen order."""

    partitions: tuple[PartitionResult, ...] = ()

    @property
    def valid(self) -> bool:
        """True iff every partition was proved linearizable."""
        return all(p.status == LINEARIZABLE for p in self.partitions)

    @property
    def violations(self) -> list[PartitionResult]:
        """The partitions proved not linearizable."""
        return [p for p in self.partitions if p.status == VIOLATION]

    @property
    def unknown(self) -> list[PartitionResult]:
        """The partitions whose check ran out of budget."""
        return [p for p in self.partitions if p.status == UNKNOWN]

    @property
    def status(self) -> str:
        """``violation`` if any partition failed, else ``unknown`` if any ran out, else
        ``linearizable``."""
        if self.violations:
            return VIOLATION
        return UNKNOWN if self.unknown else LINEARIZABLE

    def render(self) -> str:
        """A summary line, then each violation's window and each unknown partition."""
        ops = sum(p.ops for p in self.partitions)
        out = [f"{self.status}: {len(self.partitions)} partitions, {ops} ops, "
               f"{len(self.violations)} violations, {len(self.unknown)} unknown"]
        out.extend(p.window.render() for p in self.violations if p.window)
        out.extend(f"Unknown: key {p.key!r}: {p.detail}" for p in self.unknown)
        return "\n".join(out)


def check(
    ops: Sequence[Operation],
    model: Model,
    partition: Callable[[Operation], Hashable] = lambda op: op.key,
    *,
    max_steps: int = DEFAULT_MAX_STEPS,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> Verdict:
    """Check that ``ops`` (from :func:`chaos.history.pair`) are linearizable.

    ``partition`` maps an op to its independent object (by default its key). Each partition
    is checked alone: deciding takes at most ``max_steps`` model steps (else the partition is
    ``unknown``), explaining a violation at most ``max_steps`` more, and both together at
    most ``timeout`` seconds (None: no limit). A violation's result carries a
    :class:`Window`. Raises ValueError for an operation the model does not know.
    """
    groups: dict[Hashable, list[Operation]] = {}
    for op in ops:
        groups.setdefault(partition(op), []).append(op)
    return Verdict(tuple(
        _check_partition(key, group, model, max_steps, timeout) for key, group in groups.items()))


def _check_partition(
    key: Hashable, group: list[Operation], model: Model, max_steps: int, timeout: float | None,
) -> PartitionResult:
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    prepared = model.prepare(group)
    ops = prepared.ops
    if prepared.problems:
        problem, *more = prepared.problems
        reason = problem.reason + (f" (and {len(more)} more such problems)" if more else "")
        window = Window(key, reason, problem.op, total=len(ops))
        return PartitionResult(key, VIOLATION, len(ops), 0, time.monotonic() - start,
                               window=window)
    found = _search(ops, model, prepared.interchangeable, max_steps, deadline)
    if found.outcome != VIOLATION:
        return PartitionResult(key, found.outcome, len(ops), found.steps,
                               time.monotonic() - start, found.detail)
    original = {op.index: op for op in group}
    window, steps = _shrink(key, prepared, found.blocked, original, model, max_steps,
                           deadline)
    return PartitionResult(key, VIOLATION, len(ops), found.steps + steps,
                           time.monotonic() - start, window=window)


def _shrink(
    key: Hashable, prepared: Prepared, blocked: Operation | None,
    original: dict[int, Operation], model: Model, max_steps: int, deadline: float | None,
) -> tuple[Window, int]:
    """Find the minimal failing prefix of a failing partition and describe its window.

    All the searches this takes share one budget of ``max_steps``.
    """
    ops, twins = prepared.ops, prepared.interchangeable
    finite = sorted((op for op in ops if op.ret is not None),
                    key=lambda op: (op.ret, op.call, op.index))
    # linearizability is prefix-closed, so "the cut after k returns fails" is monotone in k:
    # binary search, knowing that the whole history (k = len(finite)) fails. The full search
    # never got past `blocked`'s return, so the cuts either side of it are tried first.
    lo, hi, steps, minimal = 0, len(finite), 0, True
    rank = [op.index for op in finite].index(blocked.index) if blocked else -1
    guesses = [rank + 1, rank] if blocked else []
    while hi - lo > 1:
        if steps >= max_steps or (deadline is not None and time.monotonic() > deadline):
            minimal = False
            break
        while guesses and not lo < guesses[0] < hi:
            guesses.pop(0)
        mid = guesses.pop(0) if guesses else (lo + hi) // 2
        found = _search(_cut_after_returns(ops, finite, mid, model), model, twins,
                        max_steps - steps, deadline)
        steps += found.steps
        if found.outcome == VIOLATION:
            hi = mid
        else:
            lo = mid
            minimal = minimal and found.outcome == LINEARIZABLE

    failing = finite[hi - 1]
    prefix = _cut_after_returns(ops, finite, hi, model)
    # every op the prefix holds that had not returned before `failing` was called overlaps it
    concurrent = sorted((op for op in prefix if op is not failing
                         and (op.ret is None or op.ret >= failing.call)),
                        key=lambda op: (op.call, op.index))
    before = [op if op.ret is not None and op.ret < failing.call else model.pending(op)
              for op in prefix if op.call < failing.call]
    found = _search([op for op in before if op is not None], model, twins,
                    max(max_steps - steps, 0), deadline, collect=True)
    steps += found.steps
    described = sorted({(model.describe(state), tuple(
        op.index for i, op in enumerate(found.optional) if used >> i & 1))
        for state, used in found.configs})
    states = tuple(Possibility(text, tuple(original[i] for i in applied))
                   for text, applied in described[:MAX_STATES_SHOWN])
    window = Window(
        key=key,
        reason=(f"op #{failing.index} cannot be linearized: its result fits no order of it "
                f"and the {len(concurrent)} op(s) concurrent with it, from any state the ops "
                "before it can leave"),
        op=original[failing.index],
        concurrent=tuple(original[op.index] for op in concurrent),
        in_flight=frozenset(op.index for op in concurrent
                            if op.ret is None and original[op.index].ret is not None),
        states=states,
        states_complete=found.outcome != UNKNOWN and len(described) <= MAX_STATES_SHOWN,
        prefix_size=len(prefix),
        total=len(ops),
        minimal=minimal,
    )
    return window, steps


def _cut_after_returns(
    ops: list[Operation], finite: list[Operation], k: int, model: Model,
) -> list[Operation]:
    """The history as of the ``k``-th return (k >= 1): later returns become in flight."""
    done = {op.index for op in finite[:k]}
    cut = finite[k - 1].ret
    assert cut is not None
    out = []
    for op in ops:
        if op.call > cut:
            continue
        kept = op if op.index in done else model.pending(op)
        if kept is not None:
            out.append(kept)
    return out


@dataclass
class _Found:
    outcome: str
    steps: int
    optional: list[Operation]
    """The optional ops searched (bit i of a set of them is ``optional[i]``)."""
    detail: str = ""
    """Why the outcome is unknown."""
    blocked: Operation | None = None
    """The op with the latest return the search was ever stuck at."""
    configs: set[tuple[Any, int]] = field(default_factory=set)
    """With ``collect``: every (state, optional ops used) in which the search can finish."""


class _Entry:
    """A call or return event; those of ops that must be linearized form a linked list."""

    __slots__ = ("bit", "blind", "fid", "match", "next", "op", "pos", "prev", "pure", "twin",
                 "used")

    def __init__(self, op: Operation | None = None, *, pure: bool = False,
                 blind: bool = False) -> None:
        self.op = op
        self.pure = pure
        self.blind = blind
        self.fid = 0
        """An op that must be linearized: its rank in return order."""
        self.bit = 0
        """An optional op: its bit in the set of those used."""
        self.pos = -1
        """Rank in time order (calls before returns at the same instant)."""
        self.match: _Entry | None = None
        """A call's return; None for returns and for optional calls."""
        self.twin = False
        """Whether this is an optional call interchangeable with others."""
        self.used = False
        """Whether this optional call is linearized in the current state."""
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


_NOWHERE: list[_Entry] = []


def _search(
    ops: list[Operation], model: Model, interchangeable: frozenset[int], max_steps: int,
    deadline: float | None, *, collect: bool = False,
) -> _Found:
    """Is there a linearization of ``ops``? With ``collect``, find every way to finish."""
    finite = sorted((op for op in ops if op.ret is not None),
                    key=lambda op: (op.ret, op.call, op.index))
    optional_ops = sorted((op for op in ops if op.ret is None), key=lambda op: (op.call, op.index))
    events: list[tuple[int, int, int, _Entry]] = []
    optional: list[_Entry] = []
    op: Operation | None
    for i, op in enumerate(finite + optional_ops):
        # fail ops that reach the search are observations: they never change the state
        pure = op.status == FAIL or not model.may_change(op)
        call = _Entry(op, pure=pure, blind=not pure and model.blind(op))
        events.append((op.call, 0, i, call))
        if op.ret is None:
            call.bit = 1 << len(optional)
            optional.append(call)
        else:
            call.fid, call.match = i, _Entry(op)
            # calls sort before returns at the same instant: such ops count as concurrent
            events.append((op.ret, 1, i, call.match))
    events.sort(key=lambda e: e[:3])
    head = tail = _Entry()
    entry: _Entry | None  # also the walk's cursor below, None past the end
    for pos, (_, _, i, entry) in enumerate(events):
        entry.pos = pos
        if i < len(finite):
            tail.next, entry.prev, tail = entry, tail, entry
    # optional calls, in time order: interchangeable ones (used in that order), other blind
    # ones, others that can be legal anywhere, and the rest by the states they can be legal in
    twins: list[_Entry] = []
    blind: list[_Entry] = []
    anywhere: list[_Entry] = []
    guarded: dict[Any, list[_Entry]] = {}
    for entry in optional:
        op = entry.op
        assert op is not None
        entry.twin = op.index in interchangeable
        legal_in = None if entry.blind else model.guard(op)
        if entry.twin:
            twins.append(entry)
        elif entry.blind:
            blind.append(entry)
        elif legal_in is None:
            anywhere.append(entry)
        else:
            for legal_state in legal_in:
                guarded.setdefault(legal_state, []).append(entry)
    twins_used = 0

    step = model.step
    state = model.init()
    # the ops linearized: those that must be are the first `done` in return order and those
    # in the bitset `ahead` (bit i: the op ranked done + i), which stays small however long
    # the history; the optional ones are in the bitset `used`
    done = ahead = used = 0
    seen: set[tuple[int, int, int, Any]] = set()
    # per choice: the entry, the search's state before it, and where the walk was
    undo: list[tuple[_Entry, Any, int, int, int, tuple[list[_Entry], ...] | None, int, int,
                     float]] = []
    configs: set[tuple[Any, int]] = set()
    steps = 0
    blocked = -1
    # the main walk goes along the list of ops that must be linearized, from its head
    entry = head.next
    # then the optional walk goes along `lists`, up to the first pending return (`bound`)
    lists: tuple[list[_Entry], ...] | None = None
    which = at = 0
    bound = 0.0
    # whether the last op linearized was optional: then a blind op must not follow it, as
    # the pair leaves the state the blind op alone would, with one optional op fewer to use
    after_optional = False
    while True:
        candidate: _Entry | None = None
        if lists is None:
            if entry is not None and entry.match is not None:
                if entry.blind and after_optional:
                    entry = entry.next
                    continue
                candidate = entry
            elif entry is None and not collect:
                # every op that must be linearized is
                return _Found(LINEARIZABLE, steps, optional_ops)
            else:
                if entry is None:
                    configs.add((state, used))
                    bound = float("inf")
                else:
                    # a return we cannot pass: optional ops invoked before it may still help
                    bound = entry.pos
                    blocked = max(blocked, entry.pos)
                # using a later interchangeable op while an earlier one is unused would
                # only explore a mirror image of the earlier one's states
                lists = ((_NOWHERE, _NOWHERE) if after_optional
                         else (twins[twins_used:twins_used + 1], blind))
                lists += (anywhere, guarded.get(state, _NOWHERE))
                which = at = 0
                continue
        else:
            while which < 4:
                seq = lists[which]
                if at < len(seq) and seq[at].pos < bound:
                    c = seq[at]
                    if not c.used:
                        candidate = c
                        break
                    at += 1
                else:
                    which, at = which + 1, 0
        if candidate is not None:
            steps += 1
            if steps > max_steps:
                return _Found(UNKNOWN, steps, optional_ops,
                              f"step budget of {max_steps} exhausted", configs=configs)
            if not steps & 1023 and deadline is not None and time.monotonic() > deadline:
                return _Found(UNKNOWN, steps, optional_ops, "time budget exhausted",
                              configs=configs)
            legal, after = step(state, cast(Operation, candidate.op))  # a call: has its op
            if legal:
                if candidate.match is None:
                    key = (done, ahead, used | candidate.bit, after)
                elif candidate.fid > done:
                    key = (done, ahead | 1 << (candidate.fid - done), used, after)
                else:
                    # the first op pending is done: so are any run of ops ahead of it
                    run = ahead | 1
                    skip = (~run & (run + 1)).bit_length() - 1
                    key = (done + skip, run >> skip, used, after)
                if key not in seen:
                    seen.add(key)
                    undo.append((candidate, state, done, ahead, used, lists, which, at, bound))
                    done, ahead, used, state = key
                    after_optional = candidate.match is None
                    twins_used += candidate.twin
                    _lift(candidate)
                    entry, lists = head.next, None
                    continue
            # a pure op legal here leads to a state explored already, and so does this one
            if not (legal and candidate.pure):
                if lists is None:
                    entry = candidate.next
                else:
                    at += 1
                continue
        # every choice from this state was tried: undo the last one
        while undo:
            candidate, state, done, ahead, used, lists, which, at, bound = undo.pop()
            twins_used -= candidate.twin
            _unlift(candidate)
            # a pure op (one that leaves the state as it is) can always be linearized as soon
            # as it is legal, so a state where it was legal fails exactly when the next does
            if not candidate.pure:
                break
        else:
            return _Found(LINEARIZABLE if configs else VIOLATION, steps, optional_ops,
                          blocked=events[blocked][3].op if blocked >= 0 else None,
                          configs=configs)
        after_optional = bool(undo) and undo[-1][0].match is None
        if lists is None:
            entry = candidate.next
        else:
            at += 1


def _lift(entry: _Entry) -> None:
    """Linearize a call: take it and its return out of the list (optional: mark it used)."""
    match = entry.match
    if match is None:
        entry.used = True
        return
    entry.prev.next = entry.next  # type: ignore[union-attr]  # linked: has neighbours
    entry.next.prev = entry.prev  # type: ignore[union-attr]  # linked: has neighbours
    match.prev.next = match.next  # type: ignore[union-attr]  # linked: has neighbours
    if match.next is not None:
        match.next.prev = match.prev


def _unlift(entry: _Entry) -> None:
    """Undo :func:`_lift` (the links were left pointing at the neighbours)."""
    match = entry.match
    if match is None:
        entry.used = False
        return
    match.prev.next = match  # type: ignore[union-attr]  # linked: has neighbours
    if match.next is not None:
        match.next.prev = match
    entry.prev.next = entry  # type: ignore[union-attr]  # linked: has neighbours
    entry.next.prev = entry  # type: ignore[union-attr]  # linked: has neighbours


def _op_text(op: Operation, base: int, fmt: Callable[[int], str]) -> str:
    """One op on one line: process, f, argument, result, status, call and return times."""
    # ops without an argument are reads: their result matters even when it is None
    shown = op.status == OK and (op.result is not None or op.value is None)
    result = f" -> {op.result!r}" if shown else ""
    rev = f" rev={op.rev}" if op.rev else ""
    ret = "?" if op.ret is None else fmt(op.ret - base)
    return (f"p{op.process:<3} {op.f:<8} {op.value!r}{result}{rev}  {op.status:<4} "
            f"[{fmt(op.call - base)}, {ret}]  #{op.index}")


def _time_format(span: int) -> Callable[[int], str]:
    """Format relative nanoseconds in the one unit that suits ``span``."""
    scale, unit = next(((s, u) for limit, s, u in (
        (10_000, 1, "ns"), (10_000_000, 1_000, "us"), (10_000_000_000, 1_000_000, "ms"))
        if span < limit), (1_000_000_000, "s"))

    def fmt(ns: int) -> str:
        return f"+{ns / scale:g}{unit}"

    return fmt
