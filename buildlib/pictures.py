"""Pictures of a tree and of a run: the dependency graph (DOT, SVG via Graphviz), the
build trace (Chrome trace format, for Perfetto) and a build timeline (an SVG Gantt chart
with the critical path highlighted). Pure functions of the graph and report.json."""

from __future__ import annotations

import json
import shutil
import subprocess
from html import escape  # (xml.sax.saxutils's imports urllib.request)
from pathlib import Path
from typing import Any

from buildlib.graph import Graph

COLOURS = {"built": "#4caf50", "pushed": "#2e7d32", "up-to-date": "#90caf9",
           "failed": "#e53935", "blocked": "#ffb74d", "excluded": "#e0e0e0", None: "#ffffff"}


def graph_dot(graph: Graph, statuses: dict[str, str | None]) -> str:
    """One node per image, coloured by its last status; one edge per parent link."""
    lines = ["digraph images {", '  rankdir=LR; node [shape=box, style="rounded,filled", '
             'fontname="Helvetica"];']
    for name in graph.order():
        status = statuses.get(name)
        lines.append(f'  "{name}" [fillcolor="{COLOURS.get(status, "#ffffff")}", '
                     f'tooltip="{status or "not built yet"}"];')
    for name in graph.order():
        parent = graph.parents[name]
        if parent is not None:
            lines.append(f'  "{parent}" -> "{name}";')
    lines += [f"  label=<{legend_table()}>; labelloc=b;", "}"]
    return "\n".join(lines) + "\n"


def legend_table() -> str:
    """Graphviz's HTML-like label: one cell per status, filled with its colour."""
    cells = "".join(f'<td bgcolor="{colour}" border="1">{status}</td>'
                    for status, colour in COLOURS.items() if status)
    cells += f'<td bgcolor="{COLOURS[None]}" border="1">not built yet</td>'
    return f'<table border="0" cellspacing="4" cellpadding="4"><tr>{cells}</tr></table>'


def write_graph(graph: Graph, report: dict[str, Any] | None, dot_path: Path) -> Path | None:
    """Write the DOT file, and the SVG beside it when Graphviz is installed."""
    statuses = {name: entry["status"] for name, entry in (report or {}).get("images", {}).items()}
    dot_path.parent.mkdir(parents=True, exist_ok=True)
    dot_path.write_text(graph_dot(graph, statuses))
    dot = shutil.which("dot")
    if dot is None:
        return None
    svg_path = dot_path.with_suffix(".svg")
    subprocess.run([dot, "-Tsvg", "-o", str(svg_path), str(dot_path)], check=True)
    return svg_path


def spans(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every build and push of the run that started and ended, earliest first."""
    found = []
    for kind, section in (("build", "images"), ("push", "pushes")):
        for name, entry in report.get(section, {}).items():
            if entry.get("start") and entry.get("end"):
                found.append({"name": name, "kind": kind, "status": entry["status"],
                              "start": entry["start"], "end": entry["end"]})
    return sorted(found, key=lambda span: (span["start"], span["name"]))


def assign_lanes(found: list[dict[str, Any]]) -> list[int]:
    """A worker lane per span: the first lane free when it starts (as a pool hands out work)."""
    lane_free_at: list[float] = []
    lanes = []
    for span in found:
        lane = next((i for i, free in enumerate(lane_free_at) if free <= span["start"]),
                    len(lane_free_at))
        if lane == len(lane_free_at):
            lane_free_at.append(0.0)
        lane_free_at[lane] = span["end"]
        lanes.append(lane)
    return lanes


def chrome_trace(report: dict[str, Any]) -> dict[str, Any]:
    """Chrome trace format: one complete ("X") event per build and push, one lane each."""
    found = spans(report)
    origin = report.get("started", 0.0)
    events: list[dict[str, Any]] = [{"name": "process_name", "ph": "M", "pid": 1,
                                     "args": {"name": f"doit {report.get('command', '')}"}}]
    for span, lane in zip(found, assign_lanes(found), strict=True):
        events.append({"name": span["name"], "cat": span["kind"], "ph": "X", "pid": 1,
                       "tid": lane + 1, "ts": round((span["start"] - origin) * 1e6),
                       "dur": round((span["end"] - span["start"]) * 1e6),
                       "args": {"status": span["status"]}})
    lanes = {event["tid"] for event in events if event["ph"] == "X"}
    events += [{"name": "thread_name", "ph": "M", "pid": 1, "tid": tid,
                "args": {"name": f"worker {tid}"}} for tid in sorted(lanes)]
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def critical_path(graph: Graph, report: dict[str, Any]) -> list[str]:
    """The chain of builds that determined when the last build ended: the longest chain
    of each build's time from its parent's end (or the run's start) to its own end, so
    waiting for a worker counts. Root first."""
    builds = {s["name"]: s for s in spans(report) if s["kind"] == "build"}
    started = report.get("started", 0.0)

    def since_parent(name: str) -> float:
        parent = graph.parents[name]
        return builds[name]["end"] - (builds[parent]["end"] if parent in builds else started)

    return graph.longest_path({name: since_parent(name) for name in builds}).chain


def timeline_svg(graph: Graph, report: dict[str, Any]) -> str:
    """A Gantt chart: one row per worker lane, one bar per build/push, critical path outlined."""
    found = spans(report)
    lanes = assign_lanes(found)
    critical = set(critical_path(graph, report))
    origin = report.get("started", 0.0)
    total = max([s["end"] for s in found], default=origin) - origin or 1.0
    width, left, row, top = 1200, 70, 26, 30
    scale = (width - left - 20) / total
    height = top + row * (max(lanes, default=0) + 1) + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="Helvetica, Arial, sans-serif" font-size="11">',
             f"<title>build timeline: doit {escape(str(report.get('command', '')))}, "
             f"{total:.1f} s</title>",
             f'<text x="{left}" y="18" font-size="13">{len(found)} tasks in {total:.1f} s; '
             f"critical path (outlined): {escape(' → '.join(critical_path(graph, report)))}"
             f"</text>"]
    for lane in range(max(lanes, default=-1) + 1):
        y = top + lane * row
        parts.append(f'<text x="4" y="{y + 16}">worker {lane + 1}</text>')
    for span, lane in zip(found, lanes, strict=True):
        x = left + (span["start"] - origin) * scale
        w = max(1.0, (span["end"] - span["start"]) * scale)
        y = top + lane * row
        on_path = span["kind"] == "build" and span["name"] in critical
        stroke = ' stroke="#b71c1c" stroke-width="3"' if on_path else ' stroke="#555"'
        label = f"{span['kind']} {span['name']}: {span['end'] - span['start']:.1f} s"
        parts.append(f'<g class="{span["kind"]}{" critical" if on_path else ""}">'
                     f"<title>{escape(label)} ({escape(str(span['status']))})</title>"
                     f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" '
                     f'fill="{COLOURS.get(span["status"], "#fff")}"{stroke}/>'
                     f'<text x="{x + 3:.1f}" y="{y + 17}">{escape(span["name"])}</text></g>')
    axis_y = height - 20
    for second in _ticks(total):
        x = left + second * scale
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{axis_y - 8}" '
                     f'stroke="#ddd"/><text x="{x:.1f}" y="{axis_y}">{second:g} s</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _ticks(total: float) -> list[float]:
    step = next(s for s in (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 1e9)
                if total / s <= 12)
    return [i * step for i in range(int(total // step) + 1)]


def write_run_pictures(graph: Graph, report: dict[str, Any], build_dir: Path) -> None:
    (build_dir / "trace.json").write_text(json.dumps(chrome_trace(report)) + "\n")
    (build_dir / "timeline.svg").write_text(timeline_svg(graph, report))
