"""The dependency graph, the Chrome trace and the timeline: checked on synthetic runs and on a
real one."""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from itertools import pairwise

import pytest
import yaml
from conftest import KOLLA_TREE, Tree

from buildlib import pictures
from buildlib.graph import Graph

SVG = "{http://www.w3.org/2000/svg}"


def small_graph() -> Graph:
    return Graph.build({"base": None, "mid": "base", "leaf-a": "mid", "leaf-b": "mid",
                        "side": "base"})


def run_report() -> dict:
    """base 0-2 s, mid 2-5, side 2-3, leaf-a 5-6, leaf-b 5-9 (the last to end), pushes after."""
    t0 = 1000.0
    times = {"base": (0, 2), "mid": (2, 5), "side": (2, 3), "leaf-a": (5, 6), "leaf-b": (5, 9)}
    images = {name: {"status": "built", "start": t0 + a, "end": t0 + b}
              for name, (a, b) in times.items()}
    pushes = {"side": {"status": "pushed", "start": t0 + 3, "end": t0 + 4}}
    return {"command": "push", "started": t0, "finished": t0 + 9, "images": images,
            "pushes": pushes}


def test_dot_has_a_node_per_image_and_an_edge_per_parent_link() -> None:
    graph = Graph.build(yaml.safe_load(KOLLA_TREE.read_text()))
    dot = pictures.graph_dot(graph, {"nova-api": "failed"})
    nodes = re.findall(r'^  "([^"]+)" \[', dot, re.M)
    edges = re.findall(r'^  "([^"]+)" -> "([^"]+)";', dot, re.M)
    assert sorted(nodes) == sorted(graph.parents)
    assert sorted(edges) == sorted((p, n) for n, p in graph.parents.items() if p)
    assert '"nova-api" [fillcolor="#e53935"' in dot


def test_trace_has_one_complete_span_per_task_on_non_overlapping_lanes() -> None:
    report = run_report()
    trace = pictures.chrome_trace(report)
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert sorted((e["cat"], e["name"]) for e in spans) == sorted(
        [("build", n) for n in report["images"]] + [("push", "side")])
    for event in spans:
        section = report["images" if event["cat"] == "build" else "pushes"]
        entry = section[event["name"]]
        assert event["ts"] == round((entry["start"] - report["started"]) * 1e6)
        assert event["ts"] + event["dur"] == round((entry["end"] - report["started"]) * 1e6)
    for lane in {e["tid"] for e in spans}:
        on_lane = sorted((e["ts"], e["ts"] + e["dur"]) for e in spans if e["tid"] == lane)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in pairwise(on_lane))
    assert len({e["tid"] for e in spans}) == 2  # never more than two ran at once


def test_timeline_is_svg_with_the_critical_path_outlined() -> None:
    graph, report = small_graph(), run_report()
    assert pictures.critical_path(graph, report) == ["base", "mid", "leaf-b"]
    root = ET.fromstring(pictures.timeline_svg(graph, report))
    assert root.tag == f"{SVG}svg"
    bars = root.findall(f"{SVG}g")
    assert len(bars) == 6
    critical = {g.find(f"{SVG}text").text for g in bars if "critical" in g.get("class")}
    assert critical == {"base", "mid", "leaf-b"}


@pytest.mark.integration
def test_a_real_run_writes_trace_timeline_and_graph(tree: Tree) -> None:
    tree.doit("build", "images=^(cron|multipathd)$")
    build_dir = tree.root / "build"
    report = tree.report()
    trace = json.loads((build_dir / "trace.json").read_text())
    spans = {e["name"]: e for e in trace["traceEvents"] if e["ph"] == "X"}
    assert set(spans) == {"base", "cron", "multipathd"}
    for name, event in spans.items():
        entry = report["images"][name]
        assert abs(event["ts"] / 1e6 - (entry["start"] - report["started"])) < 1e-3
        assert abs(event["dur"] / 1e6 - (entry["end"] - entry["start"])) < 1e-3
    timeline = ET.parse(build_dir / "timeline.svg").getroot()
    assert {g.find(f"{SVG}text").text for g in timeline.findall(f"{SVG}g")} == set(spans)

    out = tree.doit("graph").stdout
    assert "wrote build/graph.dot" in out
    dot = (build_dir / "graph.dot").read_text()
    assert len(re.findall(r'^  "[^"]+" \[', dot, re.M)) == 9
    assert '"cron" [fillcolor="#4caf50"' in dot and '"nova-api" [fillcolor="#e0e0e0"' in dot
    if shutil.which("dot"):
        svg = ET.parse(build_dir / "graph.svg").getroot()
        titles = {t.text for t in svg.iter(f"{SVG}title")}
        assert {"base", "cron", "nova-api", "base->cron", "nova-base->nova-api"} <= titles


def test_graph_svg_legend_shows_each_status_in_its_colour(tmp_path) -> None:
    if shutil.which("dot") is None:
        pytest.skip("graphviz is not installed (make setup installs it)")
    svg = pictures.write_graph(small_graph(), {"images": {"mid": {"status": "failed"}}},
                               tmp_path / "graph.dot")
    root = ET.parse(svg).getroot()
    fills, fill = {}, None  # the legend's cells: a filled polygon, its border, its word
    for shape in root.iter():
        if shape.tag == f"{SVG}polygon" and shape.get("fill") != "none":
            fill = shape.get("fill")
        elif shape.tag == f"{SVG}text" and fill is not None:
            fills[shape.text] = fill
    for status, colour in pictures.COLOURS.items():
        assert fills[status or "not built yet"].lower() == colour
