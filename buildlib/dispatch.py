"""Critical-path-first dispatch: of the tasks ready to run, doit starts the build with the
longest remaining path first (its own expected duration plus the longest chain of its
descendants' durations), ties broken by name.

doit has no hook for this. Its `TaskDispatcher` keeps ready tasks in a FIFO `deque` and a
finished task's waiting children come out of a `set`, so a long chain may start last.
`install_for` puts a `ReadyQueue` in place of that deque through `doit_seam` (which uses
doit's internals; tests/test_doit_seam.py fails if a doit upgrade changes them), when a
run is loaded (`run.load_run`), for the life of that process.

Expected durations are each image's `build_seconds` in the last report.json (its last
real build, carried over by runs that did not build it); an image without one is
estimated as the median of the known ones (1 s when none is known). A push
blocks nothing, so its remaining path is its own last push time (estimated likewise):
it waits while builds with longer remaining paths are ready. Group tasks (`build`,
`push`) take no time and go first, so that doit learns every task early. Beside
`build_seconds`, report.json keeps `build_cpu_seconds`: buildah's CPU time in that build.

When the jobs outnumber the cores, doit's own order is the default (`default_strategy`);
`doit build dispatch=fifo` or `dispatch=critical-path` chooses either.
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from buildlib import doit_seam
from buildlib.errors import InputError
from buildlib.graph import Graph

if TYPE_CHECKING:
    from buildlib.project import Project

FIRST = float("inf")
STRATEGIES = ("critical-path", "fifo")


class ReadyQueue:
    """Stands in for `TaskDispatcher.ready`: pops the node whose task has the highest
    priority (tasks without one first), ties broken by task name, then by arrival."""

    def __init__(self, priorities: Mapping[str, float]) -> None:
        self.priorities = priorities
        self._heap: list[tuple[float, str, int, Any]] = []
        self._arrivals = itertools.count()

    def append(self, node: Any) -> None:
        name = node.task.name
        priority = self.priorities.get(name, FIRST)
        heapq.heappush(self._heap, (-priority, name, next(self._arrivals), node))

    def popleft(self) -> Any:
        return heapq.heappop(self._heap)[-1]

    def __bool__(self) -> bool:
        return bool(self._heap)

    def __len__(self) -> int:
        return len(self._heap)


def default_strategy(jobs: int) -> str:
    """critical-path while every job has a core of its own; fifo when the jobs outnumber
    the cores. (Measured on 2 cores at -n 8, Kolla's shape: plain critical-path-first was
    1.0-1.18x FIFO's wall time, and with at most one CPU-heavy build per core 1.01-1.10x;
    the job slots were 92-98% busy under every order, so an order has little to win
    there, and each build took 3.5-4.4x its isolated time beyond its sleep. At -n 2 the
    two were equal.)"""
    return "critical-path" if jobs <= len(os.sched_getaffinity(0)) else "fifo"


def chosen_strategy(proj: Project, jobs: int, asked: str | None) -> str:
    """The strategy the `dispatch=` variable asks for (default: `default_strategy`);
    InputError when it names none we know."""
    strategy = asked or default_strategy(jobs)
    if strategy not in STRATEGIES:
        raise InputError(proj.config.path, f"dispatch={strategy} on the command line is not "
                         "a dispatch strategy", fix="use dispatch=critical-path (the default "
                         "while jobs do not outnumber cores) or dispatch=fifo (doit's own "
                         "order)")
    return strategy


def install_for(strategy: str, graph: Graph, images: frozenset[str],
                report: Mapping[str, Any] | None) -> None:
    """Dispatch as `strategy` says: critical-path orders the ready tasks by each task's
    priority over `images` (the selected ones), from the last run's report, from now on
    in this process; fifo leaves doit's own order."""
    if strategy == "critical-path":
        doit_seam.install_ready_queue(
            lambda: ReadyQueue(task_priorities(graph, images, report)))


def task_priorities(graph: Graph, images: set[str] | frozenset[str],
                    report: Mapping[str, Any] | None) -> dict[str, float]:
    """`build:<image>` -> its remaining path over `images` (the ones this run may build);
    `push:<image>` -> its expected push time."""
    builds = _expected(images, build_seconds(report))
    pushes = _expected(images, _push_seconds(report))
    remaining = graph.longest_path(builds).remaining
    return ({f"build:{name}": length for name, length in remaining.items()}
            | {f"push:{name}": length for name, length in pushes.items()})


def expected_durations(images: set[str] | frozenset[str], report: Mapping[str, Any] | None
                       ) -> dict[str, float]:
    """`build:<image>` and `push:<image>` -> how long it is expected to take (as above);
    empty when the report has no build durations to go by."""
    known = build_seconds(report)
    if not known:
        return {}
    builds = _expected(images, known)
    pushes = _expected(images, _push_seconds(report))
    return ({f"build:{name}": length for name, length in builds.items()}
            | {f"push:{name}": length for name, length in pushes.items()})


BUILD_SECONDS = "build_seconds"  # in report.json's entry of an image
BUILD_CPU_SECONDS = "build_cpu_seconds"  # buildah's CPU time in that build, beside it


def last_report(path: Path) -> dict[str, Any] | None:
    """The last run's report.json; None when there is no run yet, or a report cut short
    or not a report at all: every duration is estimated then."""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


def build_seconds(report: Mapping[str, Any] | None) -> dict[str, float]:
    """How long each image's last build took, as report.json keeps it: measured in the run
    that built it and carried by every later run that did not (a no-op keeps them all)."""
    found = {}
    for name, entry in ((report or {}).get("images") or {}).items():
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get(BUILD_SECONDS), (int, float)):
            found[name] = float(entry[BUILD_SECONDS])
        elif entry.get("status") == "built" and entry.get("start") and entry.get("end"):
            found[name] = entry["end"] - entry["start"]  # a report written before the field
    return found


def build_cpu_seconds(report: Mapping[str, Any] | None) -> dict[str, float]:
    """The CPU seconds buildah took in each image's last build, kept like `build_seconds`."""
    return {name: float(entry[BUILD_CPU_SECONDS])
            for name, entry in ((report or {}).get("images") or {}).items()
            if isinstance(entry, dict)
            and isinstance(entry.get(BUILD_CPU_SECONDS), (int, float))}


def _push_seconds(report: Mapping[str, Any] | None) -> dict[str, float]:
    """How long each push of the last run took."""
    entries = (report or {}).get("pushes") or {}
    return {name: entry["end"] - entry["start"] for name, entry in entries.items()
            if isinstance(entry, dict) and entry.get("start") and entry.get("end")}


def _expected(images: set[str] | frozenset[str], known: Mapping[str, float]
              ) -> dict[str, float]:
    estimate = _median(known.values()) if known else 1.0
    return {name: known.get(name, estimate) for name in images}


def _median(values: Iterable[float]) -> float:
    """`statistics.median`, which every run would import (3 ms, with fractions and decimal)."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
