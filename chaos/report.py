"""The report of a run: verdicts, the fault timeline, a summary and a latency plot.

:func:`write_report` writes into one directory:

- ``verdicts.json``: every checker's result and the run's meta (seed, nodes, duration, the
  command that reproduces it);
- ``timeline.jsonl``: the nemesis intervals, ``{"name", "start", "end", "detail"}`` (ns since
  the run began; ``end`` null for a fault still active when the run ended);
- ``summary.txt``: operations by f and status, faults by type, the verdicts and, when a check
  failed, the command to reproduce it;
- ``latency.png``: Jepsen's latency and throughput plots, with the faults shaded.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from chaos.checks import CheckResult
from chaos.history import COMPLETIONS, FAIL, INFO, INVOKE, OK, pair, read_events

STATUS_COLOURS = {OK: "#4C72B0", FAIL: "#C44E52", INFO: "#DD8452"}
MARKERS = "os^Dv<>pP*hX"
MIN_LATENCY_MS = 1e-3
"""Where a zero latency is drawn: a log scale has no zero."""

Verdict = CheckResult | Mapping[str, Any]
"""A checker's result: a :class:`CheckResult`, or a mapping with at least ``ok`` (for
checkers with results of their own, such as a linearizability search)."""


def write_report(out_dir: Path, history_path: Path, watch_path: Path | None,
                 nemesis_timeline: Iterable[Mapping[str, Any]],
                 verdicts: Mapping[str, Verdict], meta: Mapping[str, Any]) -> Path:
    """Write the report files into ``out_dir`` (created if needed) and return ``out_dir``.

    ``verdicts`` maps each checker's name to its result; ``meta`` is free-form, and its
    ``reproduce`` entry, if any, is the command printed when a check failed.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    events = list(read_events(history_path))
    watch_records = list(read_events(watch_path)) if watch_path is not None else []
    intervals = [{"name": i["name"], "start": i["start"], "end": i.get("end"),
                  "detail": i.get("detail")} for i in nemesis_timeline]
    checks = {name: v.to_dict() if isinstance(v, CheckResult) else dict(v)
              for name, v in verdicts.items()}
    ok = all(c["ok"] for c in checks.values())

    (out_dir / "verdicts.json").write_text(json.dumps(
        {"ok": ok, "meta": dict(meta), "checks": checks}, indent=2, default=str) + "\n",
        encoding="utf-8")
    with open(out_dir / "timeline.jsonl", "w", encoding="utf-8") as f:
        for i in intervals:
            f.write(json.dumps(i, separators=(",", ":"), default=str) + "\n")
    (out_dir / "summary.txt").write_text(
        _summary(ok, events, watch_records, intervals, checks, meta), encoding="utf-8")
    _plot(out_dir / "latency.png", _completions(events), intervals)
    return out_dir


# -- summary -----------------------------------------------------------------------------------
def _summary(ok: bool, events: list[dict[str, Any]], watch_records: list[dict[str, Any]],
             intervals: list[dict[str, Any]], checks: dict[str, dict[str, Any]],
             meta: Mapping[str, Any]) -> str:
    failed = [name for name, c in checks.items() if not c["ok"]]
    lines = [f"Confer chaos run: {'PASS' if ok else 'FAIL'}"
             + (f" ({', '.join(failed)} failed)" if failed else "")]
    lines += [f"  {k}: {v}" for k, v in meta.items() if k != "reproduce"]

    by_f: dict[str, Counter[str]] = defaultdict(Counter)
    for op in pair(events):
        by_f[op.f][op.status] += 1
    lines += ["", "Operations (f: ok / fail / info):"]
    width = max((len(f) for f in by_f), default=0)
    lines += [f"  {f:<{width}}  {c[OK]:>7} ok  {c[FAIL]:>7} fail  {c[INFO]:>7} info"
              for f, c in sorted(by_f.items())] or ["  none"]

    lines += ["", "Faults injected:"]
    by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for i in intervals:
        by_name[i["name"]].append(i)
    for name, its in sorted(by_name.items()):
        closed = sum(i["end"] - i["start"] for i in its if i["end"] is not None) / 1e9
        still = sum(1 for i in its if i["end"] is None)
        lines.append(f"  {name}: {len(its)} ({closed:.1f} s in total"
                     + (f"; {still} still active at the end" if still else "") + ")")
    if not intervals:
        lines.append("  none")

    if watch_records:
        kinds = Counter(r["type"] for r in watch_records)
        watchers = len({r["watcher"] for r in watch_records})
        received = sum(len(r["events"]) for r in watch_records if r["type"] == "batch")
        lines += ["", f"Watches: {watchers} watchers, {kinds['batch']} batches, {received} "
                      f"events, {kinds['error']} errors, {kinds['start'] - watchers} reconnects"]

    lines += ["", "Checks:"]
    for name, c in checks.items():
        violations = c.get("violations") or {}
        detail = ", ".join(f"{k} {n}" for k, n in sorted(violations.items()))
        lines.append(f"  {'PASS' if c['ok'] else 'FAIL'}  {name}"
                     + (f": {detail}" if detail else ""))
        lines += [f"        - {p}" for p in c.get("problems") or []]
    if failed and meta.get("reproduce"):
        lines += ["", "Reproduce:", f"  {meta['reproduce']}"]
    return "\n".join(lines) + "\n"


# -- plot --------------------------------------------------------------------------------------
def _completions(events: Iterable[dict[str, Any]]) -> list[tuple[str, str, int, int]]:
    """(f, status, invoke time, completion time) of every completed operation.

    Unlike :func:`chaos.history.pair`, this keeps the time of an ``info``
    completion (the client's timeout), so those are plotted too.
    """
    invoked: dict[int, dict[str, Any]] = {}
    done = []
    for e in events:
        if e["type"] == INVOKE:
            invoked[e["process"]] = e
        elif e["type"] in COMPLETIONS and e["process"] in invoked:
            inv = invoked.pop(e["process"])
            done.append((inv["f"], e["type"], inv["time"], e["time"]))
    return done


def _plot(path: Path, completions: list[tuple[str, str, int, int]],
          intervals: list[dict[str, Any]]) -> None:
    times = [t for c in completions for t in c[2:]]
    times += [t for i in intervals for t in (i["start"], i["end"]) if t is not None]
    span = max(max(times, default=0) / 1e9, 1.0)

    fig = Figure(figsize=(12, 7), layout="constrained")
    FigureCanvasAgg(fig)  # Agg explicitly: no display, and no pyplot global state
    lat_ax, tput_ax = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    handles = _shade_faults((lat_ax, tput_ax), intervals, span)

    fs = sorted({c[0] for c in completions})
    marker_of = {f: MARKERS[i % len(MARKERS)] for i, f in enumerate(fs)}
    points: dict[tuple[str, str], tuple[list[float], list[float]]] = defaultdict(
        lambda: ([], []))
    for f, status, call, ret in completions:
        xs, ys = points[f, status]
        xs.append(call / 1e9)
        ys.append(max((ret - call) / 1e6, MIN_LATENCY_MS))
    for (f, status), (xs, ys) in sorted(points.items()):
        lat_ax.scatter(xs, ys, s=12, marker=marker_of[f], color=STATUS_COLOURS[status],
                       alpha=0.7, linewidths=0)
    lat_ax.set_yscale("log")
    lat_ax.set_ylabel("latency (ms)")
    lat_ax.set_title("Latency of each operation, at its invocation")
    if not completions:
        lat_ax.set_ylim(MIN_LATENCY_MS, 1e4)
        lat_ax.text(0.5, 0.5, "no completed operations", transform=lat_ax.transAxes,
                    ha="center", va="center")

    # Bins wider than a second on long runs keep the line readable; still per second.
    width = max(1.0, span / 300)
    bins = math.ceil(span / width)
    for status, colour in STATUS_COLOURS.items():
        counts = [0] * bins
        for c in completions:
            if c[1] == status:
                counts[min(int(c[3] / 1e9 / width), bins - 1)] += 1
        tput_ax.stairs([n / width for n in counts], [k * width for k in range(bins + 1)],
                       color=colour, label=status)
    tput_ax.set_ylabel("completions / s")
    tput_ax.set_xlabel("time (s)")
    tput_ax.set_title("Throughput")
    tput_ax.set_xlim(0, span)

    handles += [Line2D([], [], linestyle="", marker="o", color=colour, label=status)
                for status, colour in STATUS_COLOURS.items()]
    handles += [Line2D([], [], linestyle="", marker=marker_of[f], color="black", label=f)
                for f in fs]
    fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    fig.savefig(path, dpi=100)


def _shade_faults(axes: tuple[Axes, ...], intervals: list[dict[str, Any]], span: float
                  ) -> list[Artist]:
    """Shade each fault on every panel; one legend entry per nemesis type."""
    names = sorted({i["name"] for i in intervals})
    palette = colormaps["Accent"]  # unlike tab10, no clash with the status colours
    colour_of = {name: palette(k % palette.N) for k, name in enumerate(names)}
    for i in intervals:
        end = span if i["end"] is None else i["end"] / 1e9
        for ax in axes:
            ax.axvspan(i["start"] / 1e9, end, color=colour_of[i["name"]], alpha=0.15, lw=0)
    return [Patch(color=colour_of[n], alpha=0.3, label=n) for n in names]
