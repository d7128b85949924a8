"""The chaos checkers accept clean runs and reject each kind of violation they look for."""

from __future__ import annotations

import itertools
from typing import Any

from chaos.checks import (
    MAX_PROBLEMS,
    check_events_agree,
    check_locks,
    check_no_lost_writes,
    check_watches,
)
from chaos.history import FAIL, INFO, OK, Operation, pair

_index = itertools.count()


def op(f: str, key: str | None, value: Any, status: str = OK, *, process: int = 0,
       call: int = 0, rev: int | None = None, result: Any = None) -> Operation:
    """An operation taking 1 ms (info: never returned)."""
    return Operation(index=next(_index), process=process, f=f, key=key, value=value,
                     status=status, result=result, call=call,
                     ret=None if status == INFO else call + 1_000_000, rev=rev)


def put(rev: int, key: str, value: str) -> dict[str, Any]:
    return {"rev": rev, "type": "put", "key": key, "value": value}


def delete(rev: int, key: str) -> dict[str, Any]:
    return {"rev": rev, "type": "delete", "key": key, "value": None}


# -- watches -----------------------------------------------------------------------------------
A2, X3, A4, B4, DA5, B6, C7 = (put(2, "/d/a", "a1"), put(3, "/x/z", "z1"), put(4, "/d/a", "a2"),
                               put(4, "/d/b", "b1"), delete(5, "/d/a"), put(6, "/d/b", "b2"),
                               put(7, "/d/c", "c1"))
WATCH_REF = [A2, X3, A4, B4, DA5, B6, C7]


def start(rev: int, prefix: str = "/d/", w: int = 1) -> dict[str, Any]:
    return {"watcher": w, "type": "start", "start_rev": rev, "prefix": prefix, "time": 0}


def batch(*events: dict[str, Any], w: int = 1) -> dict[str, Any]:
    return {"watcher": w, "type": "batch", "events": list(events), "time": 0}


def error(w: int = 1) -> dict[str, Any]:
    return {"watcher": w, "type": "error", "error": "UNAVAILABLE", "time": 0}


def end(last_rev: int, w: int = 1) -> dict[str, Any]:
    return {"watcher": w, "type": "end", "last_rev": last_rev, "time": 0}


def watch_violations(*records: dict[str, Any]) -> dict[str, int]:
    return check_watches(records, WATCH_REF).violations


def test_clean_watchers_with_reconnects_pass() -> None:
    records = [
        start(1), batch(A2), batch(), batch(A4, B4), error(), start(5), batch(DA5, B6),
        start(6, "/d/b", w=2), batch(B6, w=2), error(w=2), error(w=2), start(7, "/d/b", w=2),
        batch(C7), end(7), end(6, w=2),
        start(5, w=3), batch(DA5, B6, C7, w=3),  # no end: checked up to what it received
    ]
    result = check_watches(records, WATCH_REF)
    assert result.ok, result.problems
    assert result.counts == {"watchers": 3, "batches": 6, "events": 10, "reconnects": 2,
                             "errors": 3}


def test_a_gap_is_unreliable() -> None:
    assert watch_violations(start(1), batch(A2), batch(DA5, B6, C7), end(7)) == {"reliable": 2}


def test_stopping_short_of_the_end_revision_is_a_gap() -> None:
    result = check_watches([start(1), batch(A2), batch(A4, B4), batch(DA5, B6), end(7)],
                           WATCH_REF)
    assert result.violations == {"reliable": 1}
    assert "rev 7 put /d/c='c1'" in result.problems[0]


def test_a_duplicate_event_is_not_unique() -> None:
    assert watch_violations(start(1), batch(A2), batch(A2), batch(A4, B4),
                            batch(DA5, B6, C7), end(7)) == {"unique": 1}


def test_revisions_going_down_between_batches_are_out_of_order() -> None:
    assert watch_violations(start(1), batch(A2), batch(DA5), batch(A4, B4), batch(B6, C7),
                            end(7)) == {"ordered": 1}


def test_revisions_going_down_within_a_batch_are_out_of_order() -> None:
    assert watch_violations(start(1), batch(A2), batch(DA5, A4, B4), batch(B6, C7),
                            end(7)) == {"ordered": 1}


def test_a_revision_split_across_batches_is_not_atomic() -> None:
    assert watch_violations(start(1), batch(A2), batch(A4), batch(B4), batch(DA5, B6, C7),
                            end(7)) == {"atomic": 1}


def test_a_revision_delivered_in_part_is_not_atomic() -> None:
    assert watch_violations(start(1), batch(A2), batch(A4), error(), start(5),
                            batch(DA5, B6, C7), end(7)) == {"atomic": 1, "reliable": 1}


def test_a_resume_that_skips_is_caught() -> None:
    result = check_watches([start(1), batch(A2), batch(A4, B4), error(), start(5),
                            batch(B6, C7), end(7)], WATCH_REF)
    assert result.violations == {"resumable": 1, "reliable": 1}
    assert any("skipping rev 5 delete /d/a" in p for p in result.problems)


def test_a_resume_that_repeats_is_caught() -> None:
    assert watch_violations(start(1), batch(A2), batch(A4, B4), error(), start(5),
                            batch(A4, B4, DA5), batch(B6, C7), end(7)
                            ) == {"resumable": 1, "unique": 2}


def test_a_first_start_is_resumable_too() -> None:
    assert watch_violations(start(5), batch(B6, C7), end(7)) == {"resumable": 1, "reliable": 1}


def test_events_must_agree_with_the_reference() -> None:
    wrong = put(6, "/d/b", "b-other")
    phantom = put(8, "/d/q", "q1")
    assert watch_violations(start(1), batch(A2), batch(A4, B4), batch(DA5, wrong),
                            batch(C7), batch(phantom), end(8)) == {"agree": 2}
    assert watch_violations(start(1), batch(A2), batch(A4, B4),
                            batch({**DA5, "type": "put", "value": ""}), batch(B6, C7),
                            end(7)) == {"agree": 1}


def test_events_outside_the_watch_are_extra() -> None:
    assert watch_violations(start(1, "/d/b"), batch(A4, B4), batch(B6), end(7)
                            ) == {"reliable": 1}
    assert watch_violations(start(5), batch(A4, B4, DA5), batch(B6, C7), end(7)
                            ) == {"reliable": 2, "resumable": 1}


def test_a_watcher_without_a_start_is_reported() -> None:
    assert watch_violations(batch(A2), end(2)) == {"records": 1}


# -- the store against the clients -------------------------------------------------------------
LOCK = {"token": 6, "lock_key": "/l/m/1a"}


def store_ops() -> list[Operation]:
    return [
        op("write", "/d/a", "a1", rev=2),
        op("write", "/d/a", "a2", INFO, process=1),  # took effect at rev 3
        op("write", "/d/b", "b0", INFO, process=2),  # never took effect
        op("read", "/d/a", None, result="a2", rev=3, process=3),
        op("cas", "/d/a", ["a2", "a3"], rev=4),
        op("cas-rev", "/d/a", [3, "a-never"], FAIL),
        op("txn", "g", [["r", "/d/a", None], ["w", "/d/b", "b1"], ["w", "/d/c", "c1"]],
           result=[["r", "/d/a", "a3"], ["w", "/d/b", "b1"], ["w", "/d/c", "c1"]], rev=5),
        op("lock", "/l/m", None, result=LOCK, rev=6, process=4),
        op("fenced-write", "/d/r", [6, "r1"], rev=7, process=4),
        op("unlock", "/l/m", 6, rev=8, process=4),
        op("delete", "/d/c", None, rev=9),
        op("delete", "/d/absent", None, rev=9),  # nothing to delete: no revision of its own
    ]


STORE_REF = [put(2, "/d/a", "a1"), put(3, "/d/a", "a2"), put(4, "/d/a", "a3"),
             put(5, "/d/b", "b1"), put(5, "/d/c", "c1"), put(6, "/l/m/1a", ""),
             put(7, "/d/r", "6:r1"), delete(8, "/l/m/1a"), delete(9, "/d/c")]
FINAL = {"/d/a": ("a3", 4), "/d/b": ("b1", 5), "/d/r": ("6:r1", 7), "/d/c": (None, 0)}


def test_a_clean_history_agrees_with_the_reference() -> None:
    result = check_events_agree(store_ops(), STORE_REF)
    assert result.ok, result.problems
    assert result.counts == {"puts": 6, "deletes": 1, "acked_writes": 5, "info_applied": 1,
                             "info_not_applied": 1}


def test_a_value_nobody_wrote_is_a_phantom() -> None:
    result = check_events_agree(store_ops(), [*STORE_REF, put(10, "/d/a", "ghost")])
    assert result.violations == {"unknown_value": 1}
    assert "ghost" in result.problems[0]


def test_a_failed_write_must_not_take_effect() -> None:
    result = check_events_agree(store_ops(), [*STORE_REF, put(10, "/d/a", "a-never")])
    assert result.violations == {"failed_write_applied": 1}


def test_a_value_applied_twice_or_to_another_key_is_caught() -> None:
    assert check_events_agree(store_ops(), [*STORE_REF, put(10, "/d/a", "a1")]
                              ).violations == {"applied_twice": 1}
    assert check_events_agree(store_ops(), [*STORE_REF, put(10, "/d/b", "a2")]
                              ).violations == {"wrong_key": 1}


def test_an_ack_at_another_revision_disagrees() -> None:
    ops = store_ops()
    ops[0] = op("write", "/d/a", "a1", rev=3)
    result = check_events_agree(ops, STORE_REF)
    assert result.violations == {"wrong_revision": 1}
    assert "rev 2" in result.problems[0]


def test_deletes_must_agree() -> None:
    assert check_events_agree(store_ops(), [*STORE_REF, delete(10, "/d/b")]
                              ).violations == {"unknown_delete": 1}
    without = [e for e in STORE_REF if e != delete(9, "/d/c")]
    assert check_events_agree(store_ops(), without).violations == {"missing": 1}


def test_a_clean_history_lost_nothing() -> None:
    result = check_no_lost_writes(store_ops(), STORE_REF, FINAL)
    assert result.ok, result.problems
    assert result.counts == {"acked_writes": 5, "keys": 4}


def test_a_lost_acknowledged_write_is_caught() -> None:
    ref = [e for e in STORE_REF if e["value"] != "b1"]
    final = {**FINAL, "/d/b": (None, 0)}
    result = check_no_lost_writes(store_ops(), ref, final)
    assert result.violations == {"lost": 1}
    assert "txn /d/b='b1'" in result.problems[0]


def test_the_final_state_must_be_the_reference_s_last() -> None:
    for final in ({**FINAL, "/d/a": ("a2", 3)},   # an older value
                  {**FINAL, "/d/c": ("c1", 5)},   # a deleted key back
                  {k: v for k, v in FINAL.items() if k != "/d/b"}):  # a key gone
        assert check_no_lost_writes(store_ops(), STORE_REF, final).violations == {"final": 1}


def test_pairing_feeds_the_checkers() -> None:
    events = [
        {"type": "invoke", "process": 0, "f": "write", "key": "/d/a", "value": "a1", "time": 1},
        {"type": "invoke", "process": 1, "f": "write", "key": "/d/a", "value": "a2", "time": 2},
        {"type": "ok", "process": 0, "f": "write", "key": "/d/a", "time": 3, "rev": 2},
    ]
    ops = pair(events)
    ref = [put(2, "/d/a", "a1"), put(3, "/d/a", "a2")]
    assert check_events_agree(ops, ref).counts["info_applied"] == 1
    assert check_no_lost_writes(ops, ref, {"/d/a": ("a2", 3)}).ok


def test_problems_are_capped_but_all_counted() -> None:
    ghosts = [put(10 + i, "/d/g", f"ghost{i}") for i in range(MAX_PROBLEMS + 10)]
    result = check_events_agree([], ghosts)
    assert len(result.problems) == MAX_PROBLEMS
    assert result.to_dict()["problems_total"] == MAX_PROBLEMS + 10
    assert not result.to_dict()["ok"]


# -- locks -------------------------------------------------------------------------------------
MS = 1_000_000


def lock(token: int, process: int, call: int, status: str = OK) -> Operation:
    result = {"token": token, "lock_key": f"/l/m/{process}"} if status == OK else None
    return op("lock", "/l/m", None, status, process=process, call=call, result=result)


def fenced(token: int, value: str, process: int, call: int, status: str = OK,
           rev: int | None = None, key: str = "/d/r") -> Operation:
    return op("fenced-write", key, [token, value], status, process=process, call=call, rev=rev)


def unlock(token: int, process: int, call: int) -> Operation:
    return op("unlock", "/l/m", token, process=process, call=call)


def test_sequential_holders_pass() -> None:
    ops = [lock(6, 1, 0), fenced(6, "r1", 1, 2 * MS, rev=7), unlock(6, 1, 4 * MS),
           lock(9, 2, 4 * MS), fenced(9, "r2", 2, 6 * MS, rev=10),
           fenced(9, "r3", 2, 8 * MS, INFO),  # took effect at rev 11; process 2 is gone
           lock(12, 3, 10 * MS), fenced(12, "r4", 3, 12 * MS, INFO)]  # never took effect
    ref = [put(6, "/l/m/1", ""), put(7, "/d/r", "6:r1"), delete(8, "/l/m/1"),
           put(9, "/l/m/2", ""), put(10, "/d/r", "9:r2"), put(11, "/d/r", "9:r3"),
           put(12, "/l/m/3", "")]
    result = check_locks(ops, ref)
    assert result.ok, result.problems
    assert result.counts == {"critical_sections": 3, "overlaps": 0, "allowed_overlaps": 0,
                             "accepted_fenced_writes": 3, "rejected_fenced_writes": 0,
                             "violations": 0}


def lease_expiry(stale: Operation) -> list[Operation]:
    """Holder 1 pauses past its lease; holder 2 locks and writes; holder 1 wakes, writes."""
    return [lock(6, 1, 0), fenced(6, "r1", 1, 2 * MS, rev=7),
            lock(9, 2, 3 * MS), fenced(9, "r2", 2, 10 * MS, rev=10), unlock(9, 2, 12 * MS),
            stale, unlock(6, 1, 30 * MS)]


LEASE_REF = [put(6, "/l/m/1", ""), put(7, "/d/r", "6:r1"), delete(8, "/l/m/1"),
             put(9, "/l/m/2", ""), put(10, "/d/r", "9:r2"), delete(11, "/l/m/2")]


def test_an_overlap_the_fence_held_is_allowed() -> None:
    result = check_locks(lease_expiry(fenced(6, "late", 1, 20 * MS, FAIL)), LEASE_REF)
    assert result.ok, result.problems
    assert result.counts["overlaps"] == result.counts["allowed_overlaps"] == 1
    assert result.counts["rejected_fenced_writes"] == 1


def test_an_overlap_the_fence_did_not_hold_is_a_violation() -> None:
    stale = fenced(6, "late", 1, 20 * MS, rev=12, key="/d/s")
    result = check_locks(lease_expiry(stale), [*LEASE_REF, put(12, "/d/s", "6:late")])
    assert result.violations == {"overlap": 1}
    assert "older wrote at rev 12 after the newer at rev 10" in result.problems[0]


def test_decreasing_tokens_on_a_resource_are_a_violation() -> None:
    stale = fenced(6, "late", 1, 20 * MS, rev=12)
    result = check_locks(lease_expiry(stale), [*LEASE_REF, put(12, "/d/r", "6:late")])
    assert result.violations == {"token_order": 1, "overlap": 1}


def test_a_stale_info_write_landing_late_breaks_token_order() -> None:
    # Holder 1's write is in doubt (its process ends there), then lands after holder 2's.
    ops = [lock(6, 1, 0), fenced(6, "r1", 1, 2 * MS, INFO),
           lock(9, 2, 3 * MS), fenced(9, "r2", 2, 10 * MS, rev=10), unlock(9, 2, 12 * MS)]
    ref = [put(6, "/l/m/1", ""), delete(8, "/l/m/1"), put(9, "/l/m/2", ""),
           put(10, "/d/r", "9:r2"), put(12, "/d/r", "6:r1")]
    result = check_locks(ops, ref)
    assert result.violations == {"token_order": 1}
    assert result.counts["overlaps"] == 0


def test_tokens_must_come_from_a_lock() -> None:
    ops = [lock(6, 1, 0), fenced(99, "r1", 1, 2 * MS, rev=7)]
    result = check_locks(ops, [put(6, "/l/m/1", ""), put(7, "/d/r", "99:r1")])
    assert result.violations == {"unknown_token": 1}


def test_an_info_lock_could_have_returned_a_token() -> None:
    # The client never learned its token (the Lock call timed out) yet writes with one:
    # valid only if some lock key under the name was created at that revision.
    ops = [lock(0, 1, 0, INFO), fenced(6, "r1", 2, 2 * MS, rev=7),
           fenced(7, "r2", 2, 3 * MS, rev=8)]
    ref = [put(6, "/l/m/1", ""), put(7, "/d/r", "6:r1"), put(8, "/d/r", "7:r2")]
    assert check_locks(ops, ref).violations == {"unknown_token": 1}
    # A reference without the lock keys: any revision it has no event at may be a lock key's.
    data_only = [put(7, "/d/r", "6:r1"), put(8, "/d/r", "7:r2")]
    assert check_locks(ops, data_only).violations == {"unknown_token": 1}
    assert check_locks(ops[:2], data_only[:1]).ok
