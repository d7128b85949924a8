"""Checkers for what a run can decide without a linearizability search.

Each checker is a pure function of the recorded operations (see :mod:`chaos.history`),
the watch records, and the *reference*: every event of the run (``{"rev", "type", "key",
"value"}``, ``type`` being ``put`` or ``delete``), read at the end from one fresh watch from
revision 1. Each returns a :class:`CheckResult`.

- :func:`check_watches`: every watcher's events were ordered, unique, atomic, reliable and
  resumable, and agree with the reference (the guarantees etcd's robustness tests check).
- :func:`check_events_agree`: the reference holds exactly what clients wrote, at the
  revisions they were told.
- :func:`check_no_lost_writes`: every acknowledged write is in the reference, and the final
  state is the one the reference ends with.
- :func:`check_locks`: fencing tokens kept the lock-protected resources safe.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from chaos.history import FAIL, INFO, OK, Operation

MAX_PROBLEMS = 20
"""How many violations a result describes; all of them are counted."""

Event = Mapping[str, Any]
"""A watch event: ``{"rev": int, "type": "put"|"delete", "key": str, "value": str|None}``."""

@dataclass(slots=True)
class CheckResult:
    """What one checker decided."""

    name: str
    ok: bool
    problems: list[str]
    """Descriptions of the first :data:`MAX_PROBLEMS` violations, each prefixed by its kind."""
    violations: dict[str, int]
    """How many violations of each kind were found (all of them, described or not)."""
    counts: dict[str, int]
    """What was checked (watchers, events, writes, critical sections, ...)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, for verdicts.json."""
        return {"name": self.name, "ok": self.ok, "problems": self.problems,
                "problems_total": sum(self.violations.values()),
                "violations": self.violations, "counts": self.counts}


@dataclass(slots=True)
class _Findings:
    name: str
    problems: list[str] = field(default_factory=list)
    violations: Counter[str] = field(default_factory=Counter)

    def violation(self, kind: str, message: str, n: int = 1) -> None:
        self.violations[kind] += n
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f"{kind}: {message}")

    def result(self, counts: Mapping[str, int]) -> CheckResult:
        return CheckResult(self.name, not self.violations, self.problems,
                           dict(self.violations), dict(counts))


class _Reference:
    """The reference events, indexed."""

    def __init__(self, events: Iterable[Event]) -> None:
        self.events = sorted(events, key=lambda e: e["rev"])  # stable: keeps txn order
        self.at: dict[tuple[int, str], Event] = {}
        self.by_key: dict[str, list[Event]] = defaultdict(list)
        self.puts_by_value: dict[str, list[Event]] = defaultdict(list)
        for e in self.events:
            self.at[e["rev"], e["key"]] = e
            self.by_key[e["key"]].append(e)
            if e["type"] == "put":
                self.puts_by_value[e["value"]].append(e)

    def before(self, key: str, rev: int) -> Event | None:
        """The last event on ``key`` below ``rev``."""
        events = self.by_key.get(key, [])
        i = bisect.bisect_left(events, rev, key=lambda e: e["rev"])
        return events[i - 1] if i else None


@dataclass(frozen=True, slots=True)
class _Write:
    """One key a client operation asked to write."""

    op: Operation
    key: str
    value: str
    forms: tuple[str, ...]
    """What the store may hold for it: the lock workload stores ``token:value`` so that a
    reader of the resource can see which holder wrote it."""

    def describe(self) -> str:
        rev = f" at rev {self.op.rev}" if self.op.rev is not None else ""
        return (f"{self.op.f} {self.key}={self.value!r} (process {self.op.process}, "
                f"{self.op.status}{rev})")


def _writes(ops: Iterable[Operation]) -> Iterator[_Write]:
    for op in ops:
        if op.f == "write":
            yield _Write(op, op.key or "", op.value, (op.value,))
        elif op.f in ("cas", "cas-rev"):
            yield _Write(op, op.key or "", op.value[1], (op.value[1],))
        elif op.f == "fenced-write":
            token, value = op.value
            yield _Write(op, op.key or "", value, (value, f"{token}:{value}"))
        elif op.f == "txn":
            for kind, key, value in op.value:
                if kind == "w":
                    yield _Write(op, key, value, (value,))


def _placements(w: _Write, ref: _Reference) -> list[Event]:
    """The reference puts that are this write."""
    return [e for form in w.forms for e in ref.puts_by_value.get(form, ()) if e["key"] == w.key]


def _ack_problem(w: _Write, ref: _Reference) -> tuple[str, str] | None:
    """(kind, message) if an acknowledged write is missing or at another revision."""
    placed = _placements(w, ref)
    if not placed:
        return "missing", f"{w.describe()} is not in the reference"
    if w.op.rev is not None and all(e["rev"] != w.op.rev for e in placed):
        return "wrong_revision", f"{w.describe()} is in the reference at rev {placed[0]['rev']}"
    return None


def _lock_keys(ops: Sequence[Operation], keys: Iterable[str]) -> set[str]:
    """The keys among ``keys`` that lock services created, not clients.

    A lock's keys live under its name (``name/<lease>``) and no client writes them; the
    second condition keeps a resource that happens to sit under a lock name checked.
    """
    names = {op.key for op in ops if op.f == "lock" and op.key}
    written = {w.key for w in _writes(ops)} | {op.key for op in ops if op.f == "delete"}
    return {k for k in keys if k not in written and any(k.startswith(n) for n in names)}


def _t(ns: int | None) -> str:
    return "end" if ns is None else f"{ns / 1e9:.3f}s"


def _describe_event(e: Event) -> str:
    if e["type"] == "put":
        return f"rev {e['rev']} put {e['key']}={e.get('value')!r}"
    return f"rev {e['rev']} delete {e['key']}"


# -- watches -----------------------------------------------------------------------------------
def check_watches(records: Iterable[Mapping[str, Any]], reference: Iterable[Event]
                  ) -> CheckResult:
    """Check each watcher's records against the reference.

    Per watcher (its prefix is its first ``start``'s):

    - ordered: revisions never go down, within a batch or from one batch to the next;
    - unique: no (rev, key) event arrives twice;
    - atomic: all the events of a revision arrive in one batch, and all of them;
    - reliable: from its first ``start_rev`` to its ``end`` ``last_rev`` (or the last revision
      it received, if it has no ``end``) it received every reference event under its prefix,
      and nothing before its start or outside its prefix;
    - resumable: after each ``start`` at R, the first event received is at rev >= R and is at
      the first reference revision at or after R;
    - agree: every event received is the reference's event at that (rev, key).

    Empty batches (progress notifications) are ignored.
    """
    ref = _Reference(reference)
    by_watcher: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        by_watcher[r["watcher"]].append(r)
    findings = _Findings("watches")
    counts: Counter[str] = Counter(watchers=len(by_watcher), batches=0, events=0,
                                   reconnects=0, errors=0)
    for w, recs in sorted(by_watcher.items()):
        _check_watcher(findings, counts, w, recs, ref)
    return findings.result(counts)


def _check_watcher(findings: _Findings, counts: Counter[str], w: int,
                   recs: list[Mapping[str, Any]], ref: _Reference) -> None:
    starts = [r for r in recs if r["type"] == "start"]
    if not starts:
        findings.violation("records", f"watcher {w} has records but no start")
        return
    counts["reconnects"] += len(starts) - 1
    prefix, first = starts[0]["prefix"], starts[0]["start_rev"]
    expected = [e for e in ref.events if e["key"].startswith(prefix)]
    expected_revs = [e["rev"] for e in expected]
    expected_at = Counter(expected_revs)
    seen: set[tuple[int, str]] = set()
    batches_of: dict[int, set[int]] = defaultdict(set)
    received_at: Counter[int] = Counter()
    top = 0  # highest revision received so far
    resume_at: int | None = None
    end_rev: int | None = None
    batch_no = 0
    for r in recs:
        kind = r["type"]
        if kind == "start":
            resume_at = r["start_rev"]
        elif kind == "end":
            end_rev = r["last_rev"]
        elif kind == "error":
            counts["errors"] += 1
        elif kind == "batch" and r["events"]:
            events = r["events"]
            batch_no += 1
            counts["batches"] += 1
            counts["events"] += len(events)
            where = f"watcher {w} batch at {_t(r['time'])}"
            if resume_at is not None:
                _check_resume(findings, where, resume_at, events[0], expected, expected_revs)
                resume_at = None
            for i, e in enumerate(events):
                rev, key = e["rev"], e["key"]
                # An equal revision in a later batch is a split revision or a repeat:
                # reported below as atomic or unique, not as disorder.
                if i == 0 and rev < top:
                    findings.violation("ordered", f"{where}: rev {rev} after rev {top} in an "
                                                  "earlier batch")
                elif i > 0 and rev < events[i - 1]["rev"]:
                    findings.violation("ordered", f"{where}: rev {rev} after rev "
                                                  f"{events[i - 1]['rev']} in the same batch")
                top = max(top, rev)
                if (rev, key) in seen:
                    findings.violation("unique", f"{where}: {_describe_event(e)} again")
                    continue
                seen.add((rev, key))
                batches_of[rev].add(batch_no)
                inside = rev >= first and key.startswith(prefix)
                if not inside:
                    findings.violation("reliable", f"{where}: {_describe_event(e)} is outside "
                                                   f"its watch ({prefix!r} from rev {first})")
                truth = ref.at.get((rev, key))
                if truth is None:
                    findings.violation("agree", f"{where}: {_describe_event(e)} is not in the "
                                                "reference")
                    continue
                received_at[rev] += inside
                if truth["type"] != e["type"] or (
                        e["type"] == "put" and truth.get("value") != e.get("value")):
                    findings.violation("agree", f"{where}: {_describe_event(e)} but the "
                                                f"reference has {_describe_event(truth)}")
    for rev, batches in sorted(batches_of.items()):
        want = expected_at[rev] if rev >= first else 0
        if len(batches) > 1:
            findings.violation("atomic", f"watcher {w}: rev {rev} split across "
                                         f"{len(batches)} batches")
        elif 0 < received_at[rev] < want:
            findings.violation("atomic", f"watcher {w}: rev {rev} arrived with "
                                         f"{received_at[rev]} of its {want} events")
    last = top if end_rev is None else end_rev
    missed = [e for e in expected if first <= e["rev"] <= last and (e["rev"], e["key"]) not in seen]
    if missed:
        findings.violation("reliable", f"watcher {w} ({prefix!r} from rev {first} to {last}) "
                                       f"missed {len(missed)} event(s), first "
                                       f"{_describe_event(missed[0])}", n=len(missed))


def _check_resume(findings: _Findings, where: str, at: int, got: Event,
                  expected: list[Event], expected_revs: list[int]) -> None:
    i = bisect.bisect_left(expected_revs, at)
    if got["rev"] < at:
        findings.violation("resumable", f"{where}: started at rev {at} but first received "
                                        f"{_describe_event(got)}")
    elif i == len(expected):
        findings.violation("resumable", f"{where}: started at rev {at} and received "
                                        f"{_describe_event(got)}, but the reference has "
                                        "nothing there")
    elif got["rev"] != expected_revs[i]:
        findings.violation("resumable", f"{where}: started at rev {at} and first received "
                                        f"rev {got['rev']}, skipping "
                                        f"{_describe_event(expected[i])}")


# -- the store against the clients -------------------------------------------------------------
def check_events_agree(ops: Sequence[Operation], reference: Iterable[Event]) -> CheckResult:
    """Check that the reference holds what the clients wrote, where they were told.

    Every put is of a value some ``ok`` or ``info`` operation wrote to that key, and only
    once; every ``ok`` write with a revision is in the reference at that revision; every
    delete is of a key some non-failed ``delete`` operation named, and an ``ok`` delete's
    revision holds that delete (or the key was already absent). Keys that lock services
    create (under a lock's name, written by no client) are not client data and are skipped.
    """
    ref = _Reference(reference)
    findings = _Findings("events_agree")
    writes = list(_writes(ops))
    by_form = {form: w for w in writes for form in w.forms}
    lock_keys = _lock_keys(ops, ref.by_key)
    deleted_keys = {op.key for op in ops if op.f == "delete" and op.status != FAIL}
    counts = Counter(puts=0, deletes=0, acked_writes=0, info_applied=0, info_not_applied=0)
    applied: dict[str, Event] = {}
    for e in ref.events:
        if e["key"] in lock_keys:
            continue
        if e["type"] == "delete":
            counts["deletes"] += 1
            if e["key"] not in deleted_keys:
                findings.violation("unknown_delete", f"{_describe_event(e)}: no client "
                                                     "deleted that key")
            continue
        counts["puts"] += 1
        w = by_form.get(e["value"])
        if w is None:
            findings.violation("unknown_value", f"{_describe_event(e)}: no client wrote that "
                                                "value")
        elif w.key != e["key"]:
            findings.violation("wrong_key", f"{_describe_event(e)}: {w.describe()}")
        elif w.op.status == FAIL:
            findings.violation("failed_write_applied", f"{_describe_event(e)}: "
                                                       f"{w.describe()} failed")
        elif w.value in applied:
            findings.violation("applied_twice", f"{_describe_event(e)}: already at rev "
                                                f"{applied[w.value]['rev']}")
        applied.setdefault(w.value if w else e["value"], e)
    for w in writes:
        if w.op.status == INFO:
            counts["info_applied" if w.value in applied else "info_not_applied"] += 1
        elif w.op.status == OK and w.op.rev is not None:
            counts["acked_writes"] += 1
            problem = _ack_problem(w, ref)
            if problem:
                findings.violation(*problem)
    for op in ops:
        if op.f == "delete" and op.status == OK and op.rev is not None:
            _check_delete(findings, op, ref)
    return findings.result(counts)


def _check_delete(findings: _Findings, op: Operation, ref: _Reference) -> None:
    key = op.key or ""
    rev = op.rev or 0
    e = ref.at.get((rev, key))
    if e is not None and e["type"] != "delete":
        findings.violation("wrong_revision", f"delete {key} acknowledged at rev {rev}, but "
                                             f"the reference has {_describe_event(e)}")
    elif e is None:
        # Deleting an absent key changes nothing and takes no revision.
        prior = ref.before(key, rev)
        if prior is not None and prior["type"] == "put":
            findings.violation("missing", f"delete {key} acknowledged at rev {rev} is not in "
                                          f"the reference (last: {_describe_event(prior)})")


def check_no_lost_writes(ops: Sequence[Operation], reference: Iterable[Event],
                         final: Mapping[str, Sequence[Any]]) -> CheckResult:
    """Check that nothing acknowledged was lost and the end state follows from the history.

    Every ``ok`` write is in the reference (at its revision, when it has one). For every key
    the reference or ``final`` (key -> (value or None, mod_revision), from a linearizable read
    of all keys at the end) has, the final value and mod_revision are those of the key's last
    reference event: its put, or absent after a delete. Lock-service keys are skipped (their
    leases may expire between the two reads).
    """
    ref = _Reference(reference)
    findings = _Findings("no_lost_writes")
    acked = 0
    for w in _writes(ops):
        if w.op.status == OK:
            acked += 1
            problem = _ack_problem(w, ref)
            if problem:
                kind, message = problem
                findings.violation("lost" if kind == "missing" else kind, message)
    keys = set(ref.by_key) | set(final)
    keys -= _lock_keys(ops, keys)
    for key in sorted(keys):
        events = ref.by_key.get(key)
        last = events[-1] if events else None
        value, mod_rev = final.get(key, (None, 0))
        if last is None or last["type"] == "delete":
            if value is not None:
                ends = _describe_event(last) if last else "no event"
                findings.violation("final", f"{key}: final value {value!r} at rev {mod_rev}, "
                                            f"but the reference ends with {ends}")
        elif (value, mod_rev) != (last["value"], last["rev"]):
            findings.violation("final", f"{key}: final value {value!r} at rev {mod_rev}, but "
                                        f"the reference ends with {_describe_event(last)}")
    return findings.result({"acked_writes": acked, "keys": len(keys)})


# -- locks -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Section:
    """A critical section: from a lock's ok until its holder invokes the unlock, or gives
    the lock up otherwise: its next lock, or its next info (after which the process is
    gone); ``end`` is None when the history ends first."""

    name: str
    token: int
    process: int
    start: int
    end: int | None

    def describe(self) -> str:
        return (f"token {self.token} (process {self.process}, {_t(self.start)}-"
                f"{_t(self.end)})")


def _sections(ops: Sequence[Operation]) -> list[_Section]:
    by_process: dict[int, list[Operation]] = defaultdict(list)
    for op in sorted(ops, key=lambda op: op.index):
        by_process[op.process].append(op)
    sections = []
    for process, pops in by_process.items():
        for i, op in enumerate(pops):
            if op.f != "lock" or op.status != OK:
                continue
            token = op.result["token"]
            end = next((later.call for later in pops[i + 1:]
                        if later.f == "lock" or later.status == INFO
                        or (later.f == "unlock" and later.value == token)), None)
            start = op.call if op.ret is None else op.ret
            sections.append(_Section(op.key or "", token, process, start, end))
    return sections


def _possible_tokens(ops: Sequence[Operation], ref: _Reference) -> set[int]:
    """Revisions an ``info`` lock could have got as its token.

    Its lock key's creation: a put creating a key under its name, when the reference covers
    lock keys, or else a revision the reference has no event at (taken by a key outside it).
    """
    names = {op.key for op in ops if op.f == "lock" and op.status == INFO and op.key}
    if not names or not ref.events:
        return set()
    created = set()
    exists: set[str] = set()
    for e in ref.events:
        if e["type"] == "delete":
            exists.discard(e["key"])
        elif e["key"] not in exists:
            exists.add(e["key"])
            if any(e["key"].startswith(n) for n in names):
                created.add(e["rev"])
    used = {e["rev"] for e in ref.events}
    return created | (set(range(1, ref.events[-1]["rev"] + 1)) - used)


def check_locks(ops: Sequence[Operation], reference: Iterable[Event]) -> CheckResult:
    """Check fencing-token safety.

    Accepted fenced writes are the ``ok`` ones and the ``info`` ones whose value is in the
    reference. Per resource, ordered by revision, their tokens never decrease; each token is
    one an ``ok`` lock returned or an ``info`` lock could have. Critical sections of the same
    lock that overlap in real time (a holder paused past its lease) are allowed when every
    accepted write of the older token precedes every accepted write of the newer; otherwise
    the fence failed.
    """
    ref = _Reference(reference)
    findings = _Findings("locks")
    valid = {op.result["token"] for op in ops if op.f == "lock" and op.status == OK}
    valid |= _possible_tokens(ops, ref)
    accepted: dict[str, list[tuple[int, int, _Write]]] = defaultdict(list)
    revs_of: dict[int, list[int]] = defaultdict(list)
    rejected = 0
    for w in _writes(op for op in ops if op.f == "fenced-write"):
        if w.op.status == FAIL:
            rejected += 1
            continue
        token = w.op.value[0]
        placed = _placements(w, ref)
        rev = w.op.rev if w.op.rev is not None else (placed[0]["rev"] if placed else None)
        if rev is None:  # an info write that never happened (a missing ok one is "lost")
            continue
        accepted[w.key].append((rev, token, w))
        revs_of[token].append(rev)
        if token not in valid:
            findings.violation("unknown_token", f"{w.describe()} has token {token}, which no "
                                                "lock returned")
    for key, writes in accepted.items():
        writes.sort(key=lambda x: x[0])
        for (rev0, token0, _), (rev1, token1, w1) in pairwise(writes):
            if token1 < token0:
                findings.violation("token_order", f"{key}: rev {rev1} accepted token {token1} "
                                                  f"after rev {rev0} accepted token {token0} "
                                                  f"({w1.describe()})")
    sections = _sections(ops)
    overlaps = allowed = 0
    by_name: dict[str, list[_Section]] = defaultdict(list)
    for s in sections:
        by_name[s.name].append(s)
    for name, secs in by_name.items():
        secs.sort(key=lambda s: s.start)
        for i, a in enumerate(secs):
            for b in secs[i + 1:]:
                if a.end is not None and b.start >= a.end:
                    break
                if a.token == b.token:  # the same lock key: one holder, not two
                    continue
                overlaps += 1
                old, new = sorted((a, b), key=lambda s: s.token)
                old_revs, new_revs = revs_of[old.token], revs_of[new.token]
                if old_revs and new_revs and max(old_revs) > min(new_revs):
                    findings.violation("overlap", f"lock {name}: {old.describe()} and "
                                                  f"{new.describe()} overlapped, and the older "
                                                  f"wrote at rev {max(old_revs)} after the "
                                                  f"newer at rev {min(new_revs)}")
                else:
                    allowed += 1
    return findings.result({
        "critical_sections": len(sections), "overlaps": overlaps, "allowed_overlaps": allowed,
        "accepted_fenced_writes": sum(len(v) for v in accepted.values()),
        "rejected_fenced_writes": rejected,
        "violations": sum(findings.violations.values())})
