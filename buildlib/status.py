"""`doit status`: each image, its parent and what a build with the same variables would do
with it (and why), judged parents first as a build judges them; builds and downloads
nothing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from buildlib import sources
from buildlib.errors import CommandFailed
from buildlib.run import Run
from buildlib.settled import Settled
from buildlib.verdict import MISSING_SOURCES_FIX, Outcome, judge

SHOWN = (Outcome.FOUND_LOCAL, Outcome.FOUND_REGISTRY, Outcome.PINNED)  # in the count line


@dataclass
class Table:
    """The status of each image in the graph's order, and what the count line sums."""

    rows: list[tuple[str, str, str]] = field(default_factory=lambda: [("IMAGE", "PARENT",
                                                                        "STATUS")])
    counts: Counter[Outcome] = field(default_factory=Counter)
    failing: set[str] = field(default_factory=set)
    fetching: set[str] = field(default_factory=set)


def print_status(run: Run, saved: Callable[[str], dict[str, Any]]) -> None:
    """Print the table and its count line; `saved(task)` is what a build task saved when
    it last ran. Raises CommandFailed when an image would fail."""
    table = judged(run, saved)
    widths = [max(len(row[i]) for row in table.rows) for i in range(2)]
    for image, parent, status in table.rows:
        print(f"{image:<{widths[0]}}  {parent:<{widths[1]}}  {status}")
    print(_count_line(run, table))
    _fail_on(run, table)


def judged(run: Run, saved: Callable[[str], dict[str, Any]]) -> Table:
    """Each image's row; what an image settles on is what its children are judged on."""
    table = Table()
    for name in run.project.graph.order():
        table.rows.append((name, run.project.plans[name].parent or "-",
                           _status(run, name, saved, table)))
    return table


def _status(run: Run, name: str, saved: Callable[[str], dict[str, Any]], table: Table) -> str:
    parent = run.project.plans[name].parent
    if name not in run.selection.selected:
        return "excluded"
    if fetch := _would_fetch(run, name, table.fetching):  # (status downloads nothing)
        table.fetching.add(name)
        return fetch
    if parent in table.failing:
        table.failing.add(name)
        return f"blocked: parent '{parent}' would fail"
    found = judge(run, name, Settled.from_values(saved(f"build:{name}")))
    table.counts[found.outcome] += 1
    if found.outcome is Outcome.FAIL:
        table.failing.add(name)
    elif found.settled is not None:
        run.settle(name, found.settled)
    return found.line()


def _would_fetch(run: Run, name: str, fetching: set[str]) -> str | None:
    """What a build would download before it could judge this image by its key."""
    fetches = run.project.plans[name].context.fetches
    if fetches:
        return f"would {sources.doing(fetches)}, then build if it changed"
    parent = run.project.plans[name].parent
    return f"parent '{parent}' would fetch a source first" if parent in fetching else None


def _count_line(run: Run, table: Table) -> str:
    counts = table.counts
    return (f"{counts[Outcome.BUILD]} of {len(run.selection.selected)} selected images would "
            "build" + "".join(f", {counts[o]} {o.value}" for o in SHOWN if counts[o])
            + (f"; {len(table.fetching)} would first fetch or archive a source (then build "
               "if it changed)" if table.fetching else ""))


def _fail_on(run: Run, table: Table) -> None:
    lacking = sorted(n for n in table.failing if run.project.plans[n].context.missing_sources())
    if lacking:
        raise CommandFailed(f"{len(lacking)} images would fail, their build context lacks what "
                            f"their Dockerfile copies: {', '.join(lacking)}\n  fix: "
                            f"{MISSING_SOURCES_FIX}")
    if table.counts[Outcome.FAIL]:
        raise CommandFailed(f"{table.counts[Outcome.FAIL]} images would fail (above)")
