"""How long a run has left: from the last run's durations, the longer of the remaining
critical path (the longest chain of tasks still to run, a running one counting what it
has left of its expected time) and the remaining work spread over the jobs. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from buildlib.graph import Graph


def task_parents(graph: Graph, tasks: Iterable[str]) -> dict[str, str | None]:
    """`build:<image>` waits for its parent's build (when that is in the run), and
    `push:<image>` for its own build."""
    tasks = set(tasks)
    parents: dict[str, str | None] = {}
    for task in tasks:
        kind, _, image = task.partition(":")
        parent = f"build:{image}" if kind == "push" else f"build:{graph.parents[image]}"
        parents[task] = parent if parent in tasks else None
    return parents


class Estimate:
    """The tasks of a run still to finish and the time each is expected to take."""

    def __init__(self, graph: Graph, expected: Mapping[str, float], jobs: int,
                 pending: Iterable[str]) -> None:
        self.expected = dict(expected)
        self.jobs = max(jobs, 1)
        self.pending = set(pending)
        self.graph = Graph(task_parents(graph, self.expected))

    def left(self, running: Mapping[str, float] | None = None) -> float:
        """Seconds left; `running`: task -> seconds it has run so far."""
        running = running or {}
        durations = {task: max(self.expected.get(task, 0.0) - running.get(task, 0.0), 0.0)
                     for task in self.pending}
        path = self.graph.longest_path(durations).length
        return max(path, sum(durations.values()) / self.jobs)

    def started(self, task: str) -> None:
        """A task not counted in (found up to date by key, yet doit runs it) now counts."""
        if task in self.expected:
            self.pending.add(task)

    def finished(self, task: str) -> None:
        self.pending.discard(task)


def clock(seconds: float) -> str:
    """`1:05`, `12:00`, `1:02:03`."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    return (f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours
            else f"{rest // 60}:{rest % 60:02d}")
