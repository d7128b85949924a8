"""write_report writes every file of a run's report, from a synthetic run or an empty one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chaos.checks import check_no_lost_writes, check_watches
from chaos.history import HistoryWriter, pair, read_events
from chaos.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MS = 1_000_000
S = 1_000_000_000
REPRODUCE = "python -m chaos --seed 7 --nodes 3 --duration 3"


def write_lines(path: Path, records: list[dict[str, Any]]) -> Path:
    writer = HistoryWriter(path)
    for r in records:
        writer.write(r)
    writer.close()
    return path


def synthetic_history(path: Path) -> Path:
    """Three processes over 3 s: ok writes and reads, a failed cas, a timed-out write."""
    events: list[dict[str, Any]] = []
    rev = 1
    for k in range(30):
        p, t = k % 3, k * 100 * MS
        f = "read" if k % 2 else "write"
        value = None if f == "read" else f"v{k}"
        events.append({"type": "invoke", "process": p, "f": f, "key": "/d/a", "value": value,
                       "time": t})
        done = {"type": "ok", "process": p, "f": f, "key": "/d/a", "time": t + (k + 1) * MS}
        if f == "write":
            rev += 1
            done["rev"] = rev
        events.append(done)
    events += [
        {"type": "invoke", "process": 0, "f": "cas", "key": "/d/a", "value": ["x", "y"],
         "time": 31 * 100 * MS},
        {"type": "fail", "process": 0, "f": "cas", "key": "/d/a", "time": 32 * 100 * MS},
        {"type": "invoke", "process": 1, "f": "write", "key": "/d/a", "value": "lost",
         "time": 31 * 100 * MS},
        {"type": "info", "process": 1, "f": "write", "key": "/d/a", "error": "DEADLINE",
         "time": 33 * 100 * MS},
    ]
    return write_lines(path, events)


def test_a_failing_run_writes_every_file(tmp_path: Path) -> None:
    history = synthetic_history(tmp_path / "history.jsonl")
    ops = pair(read_events(history))
    reference = [{"rev": op.rev, "type": "put", "key": op.key, "value": op.value}
                 for op in ops if op.f == "write" and op.rev is not None]
    lost = check_no_lost_writes(ops, reference[:-1], {"/d/a": (reference[-2]["value"],
                                                               reference[-2]["rev"])})
    assert not lost.ok
    watches = write_lines(tmp_path / "watch.jsonl", [
        {"watcher": 0, "type": "start", "start_rev": 1, "prefix": "/d/", "time": 0},
        {"watcher": 0, "type": "batch", "events": reference, "time": 3 * S},
        {"watcher": 0, "type": "end", "last_rev": reference[-1]["rev"], "time": 3 * S}])
    timeline = [
        {"name": "kill", "start": 1 * S, "end": 1500 * MS, "detail": {"node": 2}},
        {"name": "partition", "start": 2 * S, "end": None, "detail": "majorities-ring"},
        {"name": "kill", "start": 2500 * MS, "end": 2700 * MS, "detail": {"node": 1}},
    ]
    meta = {"seed": 7, "nodes": 3, "duration": 3.0, "reproduce": REPRODUCE}
    verdicts = {"watches": check_watches(read_events(watches), reference),
                "no_lost_writes": lost,
                "linearizable": {"ok": True, "model": "register"}}

    out = write_report(tmp_path / "report", history, watches, timeline, verdicts, meta)

    assert out == tmp_path / "report"
    png = (out / "latency.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000
    saved = json.loads((out / "verdicts.json").read_text())
    assert saved["ok"] is False
    assert saved["meta"]["reproduce"] == REPRODUCE
    assert saved["checks"]["watches"]["ok"] is True
    assert saved["checks"]["no_lost_writes"]["violations"] == {"lost": 1}
    assert saved["checks"]["linearizable"] == {"ok": True, "model": "register"}
    assert [json.loads(line) for line in (out / "timeline.jsonl").read_text().splitlines()
            ] == timeline
    summary = (out / "summary.txt").read_text()
    assert summary.startswith("Confer chaos run: FAIL (no_lost_writes failed)")
    assert "FAIL  no_lost_writes: lost 1" in summary
    assert "PASS  watches" in summary
    assert "write /d/a='v28'" in summary  # the lost write, from the checker's problems
    assert f"Reproduce:\n  {REPRODUCE}" in summary
    words = " ".join(summary.split())
    assert "cas 0 ok 1 fail 0 info read 15 ok 0 fail 0 info write 15 ok 0 fail 1 info" in words
    assert "kill: 2 (0.7 s in total)" in summary
    assert "partition: 1 (0.0 s in total; 1 still active at the end)" in summary
    assert "Watches: 1 watchers, 1 batches, 15 events, 0 errors, 0 reconnects" in summary


def test_an_empty_passing_run_still_reports(tmp_path: Path) -> None:
    history = write_lines(tmp_path / "history.jsonl", [])
    out = write_report(tmp_path / "report", history, None, [],
                       {"watches": check_watches([], [])},
                       {"seed": 1, "reproduce": "python -m chaos --seed 1"})
    assert (out / "latency.png").read_bytes().startswith(PNG_MAGIC)
    assert (out / "timeline.jsonl").read_text() == ""
    assert json.loads((out / "verdicts.json").read_text())["ok"] is True
    summary = (out / "summary.txt").read_text()
    assert summary.startswith("Confer chaos run: PASS\n")
    assert "Reproduce" not in summary and "--seed 1" not in summary
