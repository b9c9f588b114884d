"""The time a run has left: the longer of the remaining critical path and the remaining
work over the jobs, from the last run's durations; the plain progress lines and the
summary carry it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from test_tasks import copy_example

from buildlib import dispatch, project, report
from buildlib.estimate import Estimate, clock
from buildlib.graph import Graph
from buildlib.progress import Progress

# base -> mid -> leaf (a chain), base -> side
TREE = Graph.build({"base": None, "mid": "base", "leaf": "mid", "side": "base"})
EXPECTED = {"build:base": 10.0, "build:mid": 20.0, "build:leaf": 30.0, "build:side": 25.0}


def estimate(jobs: int, pending: list[str] | None = None,
             expected: dict[str, float] = EXPECTED) -> Estimate:
    return Estimate(TREE, expected, jobs, expected if pending is None else pending)


def test_many_jobs_wait_for_the_critical_path_one_job_for_all_the_work() -> None:
    assert estimate(jobs=8).left() == 10 + 20 + 30
    assert estimate(jobs=1).left() == 10 + 20 + 30 + 25
    assert estimate(jobs=2).left() == 60  # the chain, not 85 / 2
    assert estimate(jobs=1, pending=["build:side", "build:leaf"]).left() == 55


def test_a_running_task_counts_what_it_has_left_and_a_finished_one_nothing() -> None:
    running = estimate(jobs=8)
    assert running.left({"build:base": 4.0}) == 6 + 20 + 30
    assert running.left({"build:base": 12.0}) == 20 + 30  # overdue: nothing left, not less
    running.finished("build:base")
    running.finished("build:mid")
    assert running.left({"build:leaf": 10.0, "build:side": 1.0}) == 24  # side: 24 > 20
    running.finished("build:side")
    running.finished("build:leaf")
    assert running.left() == 0


def test_a_push_follows_its_build_and_a_surprise_build_counts_once_started() -> None:
    expected = {**EXPECTED, "push:leaf": 7.0}
    assert estimate(jobs=8, expected=expected).left() == 10 + 20 + 30 + 7
    found_by_key = estimate(jobs=8, pending=["build:side"], expected=expected)
    assert found_by_key.left() == 25
    found_by_key.started("build:mid")  # expected up to date, but doit builds it
    assert found_by_key.left() == 25  # mid alone: 20 < side's 25
    found_by_key.started("build:leaf")
    assert found_by_key.left() == 50


def test_expected_durations_from_the_last_report() -> None:
    last = {"images": {"base": {"status": "built", "start": 100.0, "end": 110.0},
                       "mid": {"status": "up-to-date", "build_seconds": 30.0},
                       "side": {"status": "up-to-date", "start": 140.0, "end": 140.1},
                       "leaf": {"status": "failed", "start": 140.0, "end": None}},
            "pushes": {"base": {"start": 150.0, "end": 152.0}}}
    durations = dispatch.expected_durations(set(TREE.parents), last)
    assert durations["build:base"] == 10 and durations["build:mid"] == 30
    # found by its key, not built: no build time; the others get the median
    assert durations["build:leaf"] == durations["build:side"] == 20
    assert durations["push:base"] == 2 and durations["push:side"] == 2
    assert dispatch.expected_durations(set(TREE.parents), None) == {}  # nothing to go by


@pytest.mark.parametrize(("seconds", "shown"), [
    (0, "0:00"), (59.6, "1:00"), (65, "1:05"), (720, "12:00"), (3723, "1:02:03")])
def test_clock(seconds: float, shown: str) -> None:
    assert clock(seconds) == shown


def test_plain_progress_lines_say_what_is_left() -> None:
    out = io.StringIO()  # not a terminal: plain lines
    progress = Progress(out, total=4, estimate=estimate(jobs=8))
    progress.skip("build:base")  # up to date
    progress.begin("build:mid", "mid", "building mid")
    progress.end("build:mid", "built mid")
    progress.begin("build:side", "side", "building side")
    progress.end("build:side", "built side")
    lines = out.getvalue().splitlines()
    assert lines[0] == ".  building mid"
    assert lines[1].startswith("[2/4] built mid in ") and lines[1].endswith("; about 0:30 left")
    assert lines[3].endswith("; about 0:30 left")  # leaf
    progress.begin("build:leaf", "leaf", "building leaf")
    progress.end("build:leaf", "built leaf")
    assert out.getvalue().splitlines()[-1].endswith(" s")  # nothing left to say


def test_the_summary_compares_the_run_with_its_estimate(tmp_path: Path) -> None:
    run_report = report.RunReport(project.load(copy_example(tmp_path)))
    assert "estimated" not in run_report.summary()  # no earlier run to estimate from
    run_report.estimated = 42.25
    took = next(line for line in run_report.summary().splitlines() if line.startswith("took"))
    assert "s (estimated 42.2 s at the start); report: " in took


def test_a_run_that_builds_nothing_keeps_the_last_build_times(tmp_path: Path) -> None:
    proj = project.load(copy_example(tmp_path))
    last = {"images": {"base": {"status": "built", "start": 100.0, "end": 112.5},
                       "cron": {"status": "up-to-date", "build_seconds": 7.0}}}
    noop = report.RunReport(proj, last=last)
    for name in ("base", "cron", "nova-api"):
        noop.entry("build", name)["status"] = "up-to-date"
    written = noop.as_json(jobs=8)["images"]
    assert {name: entry["build_seconds"] for name, entry in written.items()} == {
        "base": 12.5, "cron": 7.0, "nova-api": None}
    rebuild = report.RunReport(proj, last=noop.as_json(jobs=8))
    rebuild.entry("build", "base").update(status="built", start=200.0, end=203.0,
                                          build_cpu_seconds=1.25)
    rebuild.entry("build", "cron")["status"] = "up-to-date"
    assert dispatch.build_seconds(rebuild.as_json(jobs=8)) == {"base": 3.0, "cron": 7.0}
    assert dispatch.build_cpu_seconds(rebuild.as_json(jobs=8)) == {"base": 1.25}
    later = report.RunReport(proj, last=rebuild.as_json(jobs=8))
    later.entry("build", "base")["status"] = "up-to-date"
    assert dispatch.build_cpu_seconds(later.as_json(jobs=8)) == {"base": 1.25}
