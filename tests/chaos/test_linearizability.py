"""The linearizability checker, on hand-written and simulated histories."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace
from typing import Any

import pytest

from chaos.history import FAIL, INFO, OK, Operation, pair
from chaos.linearizability import (
    DEFAULT_MAX_STEPS,
    LINEARIZABLE,
    UNKNOWN,
    VIOLATION,
    Verdict,
    Window,
    check,
)
from chaos.models import Model, MultiRegister, Register

Row = tuple[Any, ...]


def history(*rows: Row, key: str = "k") -> list[Operation]:
    """Ops from rows of (process, f, value, result, status, call, ret[, rev]) on one key."""
    ops = []
    for i, (process, f, value, result, status, call, ret, *rev) in enumerate(rows):
        ops.append(Operation(index=i, process=process, f=f, key=key, value=value,
                             status=status, result=result, call=call, ret=ret,
                             rev=rev[0] if rev else None))
    return ops


def register(ops: list[Operation], **budget: Any) -> Verdict:
    return check(ops, Register(), **budget)


def the_window(verdict: Verdict) -> Window:
    assert verdict.status == VIOLATION, verdict.render()
    [failed] = verdict.violations
    assert failed.window is not None
    return failed.window


# -- histories that must be rejected ------------------------------------------------------


def test_a_stale_read_is_rejected_and_the_window_names_it() -> None:
    ops = history(
        (1, "write", "a", None, OK, 0, 10),
        (2, "write", "b", None, OK, 20, 30),
        (3, "read", None, "a", OK, 40, 50),  # b was acknowledged before this began
    )
    window = the_window(register(ops))
    assert window.op == ops[2]
    assert window.concurrent == ()
    assert [p.state for p in window.states] == ["'b'"]
    assert window.states_complete and window.minimal
    assert (window.prefix_size, window.total) == (3, 3)
    text = window.render()
    assert "Not linearizable: key 'k'" in text
    assert "p3   read     None -> 'a'  ok   [+0ns, +10ns]  #2" in text


def test_a_lost_write_is_rejected_at_the_first_read_that_misses_it() -> None:
    ops = history(
        (1, "write", "a", None, OK, 0, 10),
        (2, "write", "b", None, OK, 20, 60),
        (3, "read", None, "a", OK, 30, 40),  # concurrent with b: may still see a
        (3, "read", None, "a", OK, 70, 80),  # b was acknowledged at 60: lost
        (4, "read", None, "a", OK, 90, 100),
        (3, "write", "c", None, OK, 110, 120),
        (4, "read", None, "c", OK, 130, 140),
    )
    window = the_window(register(ops))
    assert window.op == ops[3]
    # the cut at the failing read's return holds the ops invoked by then
    assert window.prefix_size == 4 and window.total == 7
    assert [p.state for p in window.states] == ["'b'"]


def test_a_read_of_a_value_never_written_is_rejected() -> None:
    ops = history(
        (1, "write", "a", None, OK, 0, 10),
        (2, "write", "b", None, INFO, 5, None),
        (3, "read", None, "z", OK, 20, 30),
    )
    window = the_window(register(ops))
    assert window.op == ops[2]
    assert window.concurrent == (ops[1],)  # the info write may still be in flight
    # b may not have happened yet, or happened after a (b before a is left out: a overwrote
    # it unseen, which the state without b already covers)
    assert sorted((p.state, [o.index for o in p.applied]) for p in window.states) == [
        ("'a'", []), ("'b'", [1])]


def test_the_verdict_renders_the_window_one_line_per_op() -> None:
    ops = history(
        (1, "write", "a", None, OK, 1000, 1010),
        (2, "write", "b", None, INFO, 1005, None),
        (4, "cas", ["a", "c"], None, OK, 1012, 1040),
        (5, "cas-rev", [3, "d"], None, FAIL, 1013, 1019),  # no write took revision 3: dropped
        (3, "read", None, "z", OK, 1020, 1030),
    )
    assert register(ops).render() == """\
violation: 1 partitions, 4 ops, 1 violations, 0 unknown
Not linearizable: key 'k'
  op #4 cannot be linearized: its result fits no order of it and the 2 op(s) concurrent \
with it, from any state the ops before it can leave
  Minimal failing prefix: 4 of 4 ops, cut at the failing op's return
  Failing op:
    p3   read     None -> 'z'  ok   [+15ns, +25ns]  #4
  Concurrent with it:
    p2   write    'b'  info [+0ns, ?]  #1
    p4   cas      ['a', 'c']  ok   [+7ns, +35ns]  #2  (in flight at the cut: result not used)
  Possible states just before its call:
    'a'
    'b'  (after #1 p2 write 'b')
    'c'  (after #2 p4 cas ['a', 'c'])"""


def test_a_cas_that_cannot_have_matched_is_rejected() -> None:
    ops = history(
        (1, "write", "a", None, OK, 0, 10),
        (2, "cas", ["a", "b"], None, OK, 20, 30),
        (3, "cas", ["a", "c"], None, OK, 40, 50),  # a was already replaced by b
    )
    assert the_window(register(ops)).op == ops[2]


def test_a_failed_cas_that_must_have_matched_is_rejected() -> None:
    ops = history(
        (1, "write", "a", None, OK, 0, 10),
        (2, "cas", ["a", "b"], None, FAIL, 20, 30),  # the server saw a, so it had to swap
    )
    assert the_window(register(ops)).op == ops[1]


def test_a_cas_rev_on_a_superseded_revision_is_rejected() -> None:
    ops = history(
        (1, "write", "a", None, OK, 0, 10, 5),
        (2, "write", "b", None, OK, 20, 30, 7),
        (3, "cas-rev", [5, "c"], None, OK, 40, 50, 8),  # revision 5 held a, now b
    )
    window = the_window(register(ops))
    assert window.op == ops[2]  # reported as recorded, with its revision
    assert [p.state for p in window.states] == ["'b'"]


def test_a_cas_rev_on_a_revision_nobody_wrote_is_reported_clearly() -> None:
    ops = history(
        (1, "write", "a", None, OK, 0, 10, 5),
        (2, "cas-rev", [6, "b"], None, OK, 20, 30, 9),
    )
    window = the_window(register(ops))
    assert window.op == ops[1]
    assert window.reason == (
        "cas-rev on 'k' succeeded comparing mod_revision 6, but no write to 'k' took revision 6")


def test_a_cas_rev_creating_a_key_that_exists_is_rejected() -> None:
    ops = history(
        (1, "write", "a", None, OK, 0, 10, 5),
        (2, "cas-rev", [0, "b"], None, OK, 20, 30, 6),  # mod_revision 0: absent
    )
    assert the_window(register(ops)).op == ops[1]


def test_conflicting_revision_reports_are_rejected() -> None:
    ops = history(
        (1, "write", "a", None, OK, 0, 10, 5),
        (2, "read", None, "a", OK, 20, 30, 6),
    )
    window = the_window(register(ops))
    assert window.op == ops[1]
    assert "at revision 6" in window.reason and "at revision 5" in window.reason


def test_a_torn_multi_key_read_is_rejected() -> None:
    ops = history(
        (1, "txn", [["w", "x", "1"], ["w", "y", "1"]], [["w", "x", "1"], ["w", "y", "1"]],
         OK, 0, 10),
        (1, "txn", [["w", "x", "2"], ["w", "y", "2"]], [["w", "x", "2"], ["w", "y", "2"]],
         OK, 20, 60),
        # concurrent with the second write, but sees half of it
        (2, "txn", [["r", "x", None], ["r", "y", None]], [["r", "x", "2"], ["r", "y", "1"]],
         OK, 30, 40),
        key="xy",
    )
    window = the_window(check(ops, MultiRegister()))
    assert window.op == ops[2]
    assert window.concurrent == (ops[1],)
    assert sorted(p.state for p in window.states) == ["{x='1', y='1'}", "{x='2', y='2'}"]


def test_only_the_violating_key_is_reported() -> None:
    ops = [*history((1, "write", "a", None, OK, 0, 10), key="x"),
           *history((2, "read", None, "a", OK, 20, 30), key="y")]
    ops = [replace(op, index=i) for i, op in enumerate(ops)]
    verdict = register(ops)
    assert [p.key for p in verdict.violations] == ["y"]
    assert [p.status for p in verdict.partitions] == [LINEARIZABLE, VIOLATION]
    assert not verdict.valid


# -- histories that must be accepted ------------------------------------------------------


@pytest.mark.parametrize("seen", [("a", "b"), ("b", "a")])
def test_concurrent_writes_may_be_seen_in_either_order(seen: tuple[str, str]) -> None:
    first, second = seen
    ops = history(
        (1, "write", "a", None, OK, 0, 100),
        (2, "write", "b", None, OK, 0, 100),
        (3, "read", None, None, OK, 1, 2),
        (3, "read", None, first, OK, 10, 20),
        (4, "read", None, first, OK, 15, 25),
        (3, "read", None, second, OK, 30, 40),
        (4, "read", None, second, OK, 110, 120),
    )
    assert register(ops).valid


def test_an_info_write_may_take_effect_long_after_its_call() -> None:
    ops = history(
        (1, "write", "a", None, OK, 0, 10),
        (2, "write", "b", None, INFO, 20, None),
        (3, "read", None, "a", OK, 30, 40),
        (3, "read", None, "a", OK, 500, 510),
        (3, "read", None, "b", OK, 10_000, 10_010),
    )
    assert register(ops).valid


def test_an_info_write_may_never_take_effect() -> None:
    ops = history(
        (1, "write", "a", None, OK, 0, 10),
        (2, "write", "b", None, INFO, 20, None),
        (2, "cas", ["b", "c"], None, INFO, 25, None),  # could only apply after b: never
        (3, "read", None, "a", OK, 30, 40),
        (3, "read", None, "a", OK, 10_000, 10_010),
    )
    assert register(ops).valid


def test_an_info_cas_may_take_effect_and_a_read_is_unconstrained() -> None:
    ops = history(
        (1, "write", "a", None, OK, 0, 10),
        (2, "cas", ["a", "b"], None, INFO, 20, None),
        (3, "read", None, "zzz", INFO, 21, None),  # an info read constrains nothing
        (3, "read", None, "b", OK, 30, 40),
    )
    assert register(ops).valid


def test_failed_ops_are_dropped_and_a_failed_cas_is_a_read() -> None:
    ops = history(
        (1, "write", "a", None, OK, 0, 10),
        (2, "write", "zzz", None, FAIL, 12, 14),  # certainly did not happen
        (3, "write", "b", None, OK, 15, 50),
        # the compare failed, so b took effect first: the only order that works
        (2, "cas", ["a", "c"], None, FAIL, 20, 30),
        (2, "read", None, "b", OK, 60, 70),
    )
    assert register(ops).valid


def test_overlapping_ops_with_a_single_valid_order() -> None:
    ops = history(
        (1, "write", "b", None, OK, 0, 100),
        (2, "write", "c", None, OK, 0, 100),
        (3, "cas", ["c", "d"], None, OK, 0, 100),
        (4, "read", None, "b", OK, 10, 20),
        (5, "read", None, "d", OK, 30, 40),
        (4, "read", None, "d", OK, 50, 60),
    )  # b, then c, then the cas: the search must back out of its first choices
    assert register(ops).valid


def test_cas_rev_follows_the_revisions_reads_and_writes_reported() -> None:
    ops = history(
        (1, "cas-rev", [0, "a"], None, OK, 0, 10, 3),  # create if absent
        (2, "read", None, "a", OK, 20, 30, 3),
        (2, "cas-rev", [3, "b"], None, OK, 40, 50, 4),
        (1, "cas-rev", [3, "c"], None, FAIL, 60, 70),  # revision 3 is gone
        (1, "cas-rev", [99, "c"], None, FAIL, 80, 90),  # a revision the key never had
        (1, "cas-rev", [4, "d"], None, INFO, 100, None),
        (2, "read", None, "d", OK, 110, 120, 8),
    )
    assert register(ops).valid


def test_cas_rev_on_the_unknown_revision_of_an_info_write_is_accepted() -> None:
    ops = history(
        (1, "write", "a", None, INFO, 0, None),
        (2, "cas-rev", [9, "b"], None, OK, 20, 30, 10),  # 9 may be the revision a took
        (2, "read", None, "b", OK, 40, 50, 10),
    )
    assert register(ops).valid


def test_multi_key_txns_are_atomic_and_info_txns_optional() -> None:
    w1 = [["w", "x", "1"], ["w", "y", "1"]]
    w2 = [["w", "x", "2"], ["r", "x", None], ["w", "y", "2"]]
    ops = history(
        (1, "txn", w1, w1, OK, 0, 10),
        (1, "txn", w2, [["w", "x", "2"], ["r", "x", "2"], ["w", "y", "2"]], OK, 20, 60),
        (2, "txn", [["r", "x", None], ["r", "y", None]], [["r", "x", "1"], ["r", "y", "1"]],
         OK, 30, 40),
        (3, "txn", [["w", "y", "3"]], None, INFO, 30, None),
        (2, "txn", [["r", "x", None], ["r", "y", None]], [["r", "x", "2"], ["r", "y", "3"]],
         OK, 70, 80),
        key="xy",
    )
    assert check(ops, MultiRegister()).valid


def test_paired_events_check_end_to_end() -> None:
    events = [
        {"type": "invoke", "process": 1, "f": "write", "key": "k", "value": "a", "time": 0},
        {"type": "invoke", "process": 2, "f": "read", "key": "k", "value": None, "time": 1},
        {"type": "ok", "process": 1, "f": "write", "key": "k", "value": None, "time": 5},
        {"type": "ok", "process": 2, "f": "read", "key": "k", "value": "a", "time": 6},
        {"type": "invoke", "process": 1, "f": "write", "key": "k", "value": "b", "time": 7},
    ]  # the last write never completed: info
    assert register(pair(events)).valid


def test_an_unknown_operation_is_refused() -> None:
    with pytest.raises(ValueError, match="no operation 'delete'"):
        register(history((1, "delete", None, None, OK, 0, 1)))


# -- budgets --------------------------------------------------------------------------------


def _concurrent_writes_then_an_impossible_read(n: int) -> list[Operation]:
    """Proving this wrong means trying every order of every subset of the writes."""
    rows: list[Row] = [(p, "write", f"v{p}", None, OK, p, 1000 + p) for p in range(n)]
    rows.append((n, "read", None, "never", OK, 2000, 2010))
    return history(*rows)


def test_an_exhausted_step_budget_is_unknown_not_a_hang() -> None:
    verdict = register(_concurrent_writes_then_an_impossible_read(16), max_steps=5_000)
    assert verdict.status == UNKNOWN and not verdict.valid
    assert verdict.unknown[0].detail == "step budget of 5000 exhausted"
    assert verdict.unknown[0].steps == 5_001


def test_an_exhausted_time_budget_is_unknown_not_a_hang() -> None:
    verdict = register(_concurrent_writes_then_an_impossible_read(16), timeout=0.0)
    assert verdict.status == UNKNOWN
    assert verdict.unknown[0].detail == "time budget exhausted"


def test_a_small_enough_hard_history_is_rejected_within_the_budget() -> None:
    window = the_window(register(_concurrent_writes_then_an_impossible_read(6)))
    assert window.op.result == "never"
    assert len(window.concurrent) == 0  # all the writes returned before the read began
    assert sorted(p.state for p in window.states) == [f"'v{p}'" for p in range(6)]


# -- against brute force --------------------------------------------------------------------


def _brute_force(ops: list[Operation], model: Model) -> bool:
    """Linearizable? By trying every order of every subset of the optional ops."""
    prepared = model.prepare(ops)
    if prepared.problems:
        return False
    by_index = {op.index: op for op in prepared.ops}

    def extend(state: Any, left: frozenset[int]) -> bool:
        if all(by_index[i].ret is None for i in left):
            return True
        for i in left:
            op = by_index[i]
            # op can come next unless another op left returned before op was called
            if any((ret := by_index[j].ret) is not None and ret < op.call for j in left):
                continue
            legal, after = model.step(state, op)
            if legal and extend(after, left - {i}):
                return True
        return False

    return extend(model.init(), frozenset(by_index))


def _arbitrary_register_history(rng: random.Random, n: int) -> list[Operation]:
    """Random ops on few values, repeated writes included: linearizable or not."""
    values = ["a", "b", "c"]
    rows: list[Row] = []
    for p in range(n):
        call = rng.randrange(20)
        status = rng.choices([OK, FAIL, INFO], [6, 1, 2])[0]
        ret = None if status == INFO else call + rng.randrange(1, 10)
        f = rng.choice(["read", "write", "cas"])
        if f == "read":
            value, result = None, rng.choice([*values, None]) if status == OK else None
        else:
            new = rng.choice(values)
            value, result = new if f == "write" else [rng.choice([*values, None]), new], None
        rows.append((p, f, value, result, status, call, ret))
    return history(*rows)


def _arbitrary_txn_history(rng: random.Random, n: int) -> list[Operation]:
    rows: list[Row] = []
    for p in range(n):
        call = rng.randrange(20)
        status = rng.choices([OK, FAIL, INFO], [6, 1, 2])[0]
        ret = None if status == INFO else call + rng.randrange(1, 10)
        micro = [[rng.choice("rw"), rng.choice("xy"), rng.choice("12")]
                 for _ in range(rng.randrange(1, 3))]
        value = [[kind, k, v if kind == "w" else None] for kind, k, v in micro]
        result = [[kind, k, v] for kind, k, v in micro] if status == OK else None
        rows.append((p, "txn", value, result, status, call, ret))
    return history(*rows, key="xy")


@pytest.mark.parametrize("model", [Register(), MultiRegister()], ids=["register", "txn"])
def test_verdicts_match_brute_force_on_small_arbitrary_histories(model: Model) -> None:
    arbitrary = (_arbitrary_register_history if isinstance(model, Register)
                 else _arbitrary_txn_history)
    rng = random.Random(7)
    outcomes = []
    for _ in range(600):
        ops = arbitrary(rng, rng.randrange(2, 8))
        expected = _brute_force(ops, model)
        verdict = check(ops, model)
        assert verdict.valid == expected, "\n".join(map(str, ops)) + "\n" + verdict.render()
        outcomes.append(expected)
    assert 100 < sum(outcomes) < 500  # both kinds were well represented


# -- simulated histories ------------------------------------------------------------------


@dataclass
class _Slot:
    """An op's interval and the instant it takes effect (None: never)."""

    process: int
    call: int
    ret: int | None
    effect: int | None
    f: str
    fails: bool = False
    """A read or write the server refused: it reports fail and has no effect."""


def _slots(
    rng: random.Random, n: int, procs: int, fs: list[str], timeouts: float,
) -> list[_Slot]:
    """``n`` op intervals from ``procs`` clients; each takes effect between call and return.

    A ``timeouts`` fraction of ops time out (info): they take effect at any later time, or
    never, and the client carries on as a new process, as the harness does.
    """
    slots: list[_Slot] = []
    clock = dict.fromkeys(range(procs), 0)
    ids = dict(zip(range(procs), range(procs), strict=True))
    next_id = procs
    while len(slots) < n:
        client = rng.randrange(procs)
        call = clock[client] + rng.randrange(1, 50)
        ret = call + rng.choice([rng.randrange(1, 30), rng.randrange(1, 300)])
        clock[client] = ret
        f = rng.choice(fs)
        effect = rng.randint(call, ret)
        if rng.random() < timeouts:
            effect = None if rng.random() < 0.5 else call + rng.randrange(1, 3000)
            slots.append(_Slot(ids[client], call, None, effect, f))
            ids[client], next_id = next_id, next_id + 1
        else:
            # only a refused read or write may fail: a failed cas means its compare failed
            refused = f in ("read", "write") and rng.random() < 0.03
            slots.append(_Slot(ids[client], call, ret, effect, f, fails=refused))
    return slots


def _register_history(
    seed: int, n: int = 150, procs: int = 5, timeouts: float = 0.05,
) -> list[Operation]:
    """A linearizable register history, by running the ops on a real register.

    A cas expects the current value or an older one; a cas-rev expects the mod_revision its
    client last read, as a real client would.
    """
    rng = random.Random(seed)
    slots = _slots(rng, n, procs, ["read", "read", "write", "cas", "cas-rev"], timeouts)
    value: str | None = None
    mod_rev, revision = 0, 0
    written: list[str | None] = [None]
    last_read: dict[int, int] = {}
    ops: dict[int, Operation] = {}
    forever = max(s.call for s in slots) + 10_000
    order = sorted(range(len(slots)), key=lambda i: (slots[i].effect or forever, i))
    for i in order:
        s = slots[i]
        arg: Any = None
        result: Any = None
        status = OK if s.ret is not None else INFO
        rev: int | None = None
        happens = s.effect is not None and not s.fails
        new = f"v{i}"
        if s.f == "read":
            result, rev = value, mod_rev
            if s.ret is not None and not s.fails:
                last_read[s.process] = mod_rev
        elif s.f == "write":
            arg = new
        elif s.f == "cas":
            old = rng.choice(written) if rng.random() < 0.4 else value
            arg, matched = [old, new], old == value
        else:
            old_rev = last_read.get(s.process, 0)
            arg, matched = [old_rev, new], old_rev == mod_rev
        if s.f in ("cas", "cas-rev"):
            happens = happens and matched
            if s.ret is not None and not matched:
                status = FAIL
        if s.f != "read" and happens:
            revision += rng.randrange(1, 4)  # other keys take revisions too
            value, mod_rev = new, revision
            written.append(value)
            rev = revision
        if s.fails:
            status, result, rev = FAIL, None, None
        if status != OK:
            result, rev = None, None
        ops[i] = Operation(index=i, process=s.process, f=s.f, key="k", value=arg,
                           status=status, result=result, call=s.call, ret=s.ret, rev=rev)
    return [ops[i] for i in range(len(slots))]


def _stale_read_mutation(ops: list[Operation], rng: random.Random) -> tuple[int, str] | None:
    """A read and a value it provably cannot return, or None if the history has none.

    A value written by W1 is gone for good once a write W2 that began after W1 returned has
    itself returned ok (values are unique, so nothing writes it again); a read invoked
    after that cannot see it.
    """
    writers = [op for op in ops if op.f != "read" and op.status == OK]
    reads = [op for op in ops if op.f == "read" and op.status == OK]
    for read in rng.sample(reads, len(reads)):
        done = [w for w in writers if w.ret is not None and w.ret < read.call]
        if not done:
            continue
        w2 = max(done, key=lambda w: w.call)
        for w1 in done:
            if w1.ret is not None and w1.ret < w2.call:
                old = w1.value if w1.f == "write" else w1.value[1]
                if old != read.result:
                    return read.index, old
    return None


@pytest.mark.parametrize("seed", range(40))
def test_simulated_register_histories_are_accepted(seed: int) -> None:
    ops = _register_history(seed, procs=3 + seed % 8, timeouts=seed % 4 * 0.05)
    verdict = register(ops)
    assert verdict.valid, verdict.render()


@pytest.mark.parametrize("seed", range(40))
def test_a_read_of_a_value_never_written_breaks_a_simulated_history(seed: int) -> None:
    ops = _register_history(seed)
    reads = [op for op in ops if op.f == "read" and op.status == OK]
    target = random.Random(seed).choice(reads)
    ops[target.index] = replace(target, result="never-written", rev=None)
    assert the_window(register(ops)).op == ops[target.index]


def test_a_stale_read_breaks_simulated_histories() -> None:
    mutated = 0
    for seed in range(40):
        ops = _register_history(seed)
        found = _stale_read_mutation(ops, random.Random(seed))
        if found is None:
            continue
        index, stale = found
        ops[index] = replace(ops[index], result=stale, rev=None)
        # everything before that read's return is as simulated, so it is what fails
        assert the_window(register(ops)).op == ops[index], f"seed {seed}"
        mutated += 1
    assert mutated >= 30  # the simulation almost always leaves a provably stale value


def test_a_2000_op_history_on_one_key_is_checked_within_the_step_budget() -> None:
    ops = _register_history(seed=2000, n=2000, procs=8, timeouts=0.1)
    assert len({op.process for op in ops}) >= 8
    start = time.perf_counter()
    verdict = register(ops)
    elapsed = time.perf_counter() - start
    [result] = verdict.partitions
    assert verdict.valid, verdict.render()
    assert result.steps < DEFAULT_MAX_STEPS
    print(f"\n2000-op, 8-process history: {elapsed:.3f}s, {result.steps} steps, "
          f"{len(ops) / elapsed:.0f} ops/s")
