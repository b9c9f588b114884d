"""Critical-path-first dispatch: of the tasks ready to run, doit starts the build with the
longest remaining path first (its own expected duration plus the longest chain of its
descendants' durations), ties broken by name; when the jobs outnumber the cores, it keeps
no more than `cores` CPU-heavy builds running at once (`CpuAwareQueue`).

doit has no hook for this. Its `TaskDispatcher` keeps ready tasks in a FIFO `deque`
(`ready`, used through `append`, `popleft` and truth only) and a finished task's waiting
children come out of a `set`, so a long chain may start last. `install` puts a priority
queue in place of that deque, through a `TaskControl` subclass that doit's `run` command
uses; tests/test_dispatch.py fails if a doit upgrade changes these internals.

Expected durations are each image's `build_seconds` in the last report.json (its last
real build, carried over by runs that did not build it), and its CPU time
`build_cpu_seconds` beside it; an image without one is estimated as the median of the
known ones (1 s when none is known). A push blocks nothing, so its remaining path is its
own last push time (estimated likewise): it waits while builds with longer remaining
paths are ready. Group tasks (`build`, `push`) take no time and go first, so that doit
learns every task early.

`doit build dispatch=fifo` keeps doit's own order, which is also the default when the jobs
outnumber the cores and the last report has no CPU times (`default_strategy`).
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import statistics
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doit import cmd_run, control, get_var

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


class Running:
    """The tasks doit dispatched and has not seen end, as its reporter is told (in doit's
    main thread, where the ready queue is used too)."""

    def __init__(self) -> None:
        self.tasks: set[str] = set()

    def started(self, task: str) -> None:
        self.tasks.add(task)

    def ended(self, task: str) -> None:
        self.tasks.discard(task)


class CpuAwareQueue:
    """Stands in for `TaskDispatcher.ready` when the jobs outnumber the cores: two priority
    queues, the builds expected to keep a core busy for more than cores/jobs of their
    time ("busy") and the rest ("idle": a long RUN step that waits, a push). While the
    running builds' expected CPU load is under the cores, the busy queue goes first, else
    the idle one; each pops by priority, ties broken by task name, then by arrival.

    Critical-path-first alone fills every slot with the long, idle builds first, leaves
    the cores idle, then runs the short busy builds all at once (measured on 2 cores at
    -n 8: up to 1.18x FIFO's wall time)."""

    def __init__(self, priorities: Mapping[str, float], share: Mapping[str, float],
                 running: Running, cores: int, jobs: int) -> None:
        self.first = ReadyQueue(priorities)  # tasks with no duration of their own: groups
        self.busy = ReadyQueue(priorities)
        self.idle = ReadyQueue(priorities)
        self.priorities, self.share, self.running = priorities, share, running
        self.cores = cores
        self.busy_share = cores / jobs

    def append(self, node: Any) -> None:
        name = node.task.name
        if name not in self.priorities:
            self.first.append(node)
        elif self.share.get(name, 0.0) > self.busy_share:
            self.busy.append(node)
        else:
            self.idle.append(node)

    def popleft(self) -> Any:
        if self.first:
            return self.first.popleft()
        busy = sum(self.share.get(name, 0.0) > self.busy_share for name in self.running.tasks)
        order = (self.busy, self.idle) if busy < self.cores else (self.idle, self.busy)
        return (order[0] or order[1]).popleft()

    def __bool__(self) -> bool:
        return bool(self.first or self.busy or self.idle)

    def __len__(self) -> int:
        return len(self.first) + len(self.busy) + len(self.idle)


def default_strategy(jobs: int, report: Mapping[str, Any] | None) -> str:
    """critical-path, unless the jobs outnumber the cores and the report has no CPU times
    to mind them by: then fifo. (Measured on 2 cores at -n 8, Kolla's shape: critical-path
    -first without minding the cores fills the slots with the long, idle builds first,
    leaves the cores idle, then runs the short CPU-bound builds eight at once, 1.0-1.18x
    FIFO's wall time.)"""
    if jobs <= len(os.sched_getaffinity(0)) or build_cpu_seconds(report):
        return "critical-path"
    return "fifo"


def install_for(proj: Project, images: frozenset[str], jobs: int, running: Running,
                report: Mapping[str, Any] | None) -> None:
    """Dispatch as the `dispatch=` variable says (default: `default_strategy`): by each
    task's priority over `images` (the selected ones), from the last run's report,
    minding the cores (`CpuAwareQueue`) when the jobs outnumber them and the report has
    the builds' CPU times. A strategy we do not know ends the process with one message
    and status 1."""
    strategy = get_var("dispatch") or default_strategy(jobs, report)
    if strategy not in STRATEGIES:
        err = InputError(proj.config.path, f"dispatch={strategy} on the command line is not a "
                         "dispatch strategy", fix="use dispatch=critical-path (the default) "
                         "or dispatch=fifo (doit's own order)")
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    if strategy == "fifo":
        return
    cores = len(os.sched_getaffinity(0))

    def queue() -> ReadyQueue | CpuAwareQueue:
        priorities = task_priorities(proj.graph, images, report)
        shares = cpu_shares(images, report) if jobs > cores else {}
        if not shares:
            return ReadyQueue(priorities)
        return CpuAwareQueue(priorities, shares, running, cores, jobs)

    install(queue)


def install(make_queue: Callable[[], Any]) -> None:
    """Make doit's `run` command keep its ready tasks in `make_queue()`, made once, when
    the run starts dispatching."""

    class PriorityControl(control.TaskControl):
        def task_dispatcher(self) -> control.TaskDispatcher:
            dispatcher = super().task_dispatcher()
            dispatcher.ready = make_queue()
            return dispatcher

    cmd_run.TaskControl = PriorityControl


def cpu_shares(images: set[str] | frozenset[str], report: Mapping[str, Any] | None
               ) -> dict[str, float]:
    """`build:<image>` -> the part of its expected build time buildah spends on a CPU
    (its last CPU seconds over its last build seconds; the median when one is unknown);
    empty when the report has no CPU times."""
    cpu = build_cpu_seconds(report)
    if not cpu:
        return {}
    seconds = _expected(images, build_seconds(report))
    cpus = _expected(images, cpu)
    return {f"build:{name}": min(1.0, cpus[name] / max(seconds[name], 0.001))
            for name in images}


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
    estimate = statistics.median(known.values()) if known else 1.0
    return {name: known.get(name, estimate) for name in images}
