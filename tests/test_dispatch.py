"""Critical-path-first dispatch: the queue's order, the priorities from a report, the order
of a doit run with the queue installed (doit's internals it relies on: test_doit_seam.py),
and the order of a real build at -n 1."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import Tree
from doit.cmd_base import ModuleTaskLoader
from doit.doit_cmd import DoitMain

from buildlib import dispatch, doit_seam
from buildlib.graph import Graph

# A root, three short leaves declared first, then a chain of three: FIFO may well start
# the chain after the leaves; the longest remaining path goes first.
PARENTS = {"root": None, "short-a": "root", "short-b": "root", "short-c": "root",
           "zlong-1": "root", "zlong-2": "zlong-1", "zlong-3": "zlong-2"}
# Every image estimated alike (1 s): root 4, zlong-1 3, zlong-2 2, the rest 1, then by name.
BY_DEPTH = ["root", "zlong-1", "zlong-2", "short-a", "short-b", "short-c", "zlong-3"]


def node(name: str) -> SimpleNamespace:
    return SimpleNamespace(task=SimpleNamespace(name=name))


def test_queue_pops_the_highest_priority_first_then_by_name() -> None:
    priority = {"b": 2.0, "a": 2.0, "c": 5.0, "d": 0.5}
    queue = dispatch.ReadyQueue(priority)
    assert not queue
    for name in ("d", "b", "group", "a", "c"):
        queue.append(node(name))
    assert queue and len(queue) == 5
    popped = [queue.popleft().task.name for _ in range(5)]
    assert popped == ["group", "c", "a", "b", "d"]
    assert not queue


def test_the_same_node_twice_pops_twice_without_comparing_nodes() -> None:
    queue = dispatch.ReadyQueue({"x": 1.0})
    same = node("x")
    queue.append(same)
    queue.append(same)
    assert [queue.popleft(), queue.popleft()] == [same, same]


def test_priorities_from_the_last_report_with_estimates_for_the_rest() -> None:
    graph = Graph.build(PARENTS)
    report = {"images": {"root": {"start": 10.0, "end": 12.0, "status": "built"},
                         "short-c": {"start": 12.0, "end": 21.0, "status": "built"},
                         "zlong-1": {"start": 12.0, "end": 14.0, "status": "built"},
                         "short-a": {"start": None, "end": None, "status": "up-to-date"}},
              "pushes": {"short-a": {"start": 30.0, "end": 30.5}}}
    got = dispatch.task_priorities(graph, frozenset(PARENTS), report)
    # known: root 2, short-c 9, zlong-1 2; the others the median of those, 2.
    assert got["build:zlong-3"] == 2.0
    assert got["build:zlong-1"] == 2.0 + 2.0 + 2.0
    assert got["build:short-c"] == 9.0
    assert got["build:root"] == 2.0 + 9.0
    assert got["push:short-a"] == 0.5 and got["push:root"] == 0.5
    assert "build" not in got  # group tasks are not in it: they go first


def test_an_image_without_a_build_time_is_expected_to_take_the_median() -> None:
    report = {"images": {"a": {"build_seconds": 1.0}, "b": {"build_seconds": 4.0}}}
    assert dispatch.expected_durations({"a", "new"}, report)["build:new"] == 2.5
    report["images"]["c"] = {"build_seconds": 10.0}
    assert dispatch.expected_durations({"new"}, report)["build:new"] == 4.0


def test_priorities_without_a_report_follow_depth_and_skip_unselected_images() -> None:
    graph = Graph.build(PARENTS)
    got = dispatch.task_priorities(graph, frozenset(PARENTS) - {"zlong-3"}, None)
    assert got["build:root"] == 3.0 and got["build:zlong-1"] == 2.0
    assert "build:zlong-3" not in got


# --- in a doit run -------------------------------------------------------------------


def _run_doit(tmp_path: Path, parents: dict[str, str | None], *args: str) -> list[str]:
    """Run doit in this process on one python-action task per image; return the order the
    actions ran in."""
    ran: list[str] = []

    def record(name: str) -> None:
        ran.append(name)

    def task_build():
        yield {"basename": "build", "name": None}
        for name in Graph.build(parents).order():
            parent = parents[name]
            yield {"name": name, "actions": [(record, [name])],
                   "task_dep": [f"build:{parent}"] if parent else [], "verbosity": 0}

    loader = ModuleTaskLoader({"task_build": task_build,
                               "DOIT_CONFIG": {"dep_file": str(tmp_path / "state.json"),
                                               "backend": "json", "reporter": "zero"}})
    assert DoitMain(loader).run([*args, "build"]) == 0
    return ran


@pytest.mark.parametrize("args", [("-n", "1", "-P", "thread"), ()],
                         ids=["thread runner -n 1", "sequential runner"])
def test_installed_queue_orders_doit_run(tmp_path: Path, args: tuple[str, ...]) -> None:
    asked: set[str] = set()
    priorities = dispatch.task_priorities(Graph.build(PARENTS), frozenset(PARENTS), None)
    doit_seam.install_ready_queue(lambda: dispatch.ReadyQueue(_Spy(priorities, asked)))
    assert _run_doit(tmp_path, PARENTS, *args) == BY_DEPTH
    assert asked >= {f"build:{name}" for name in PARENTS}, "doit did not use the queue"


class _Spy(dict):
    """Priorities that note which task names the queue asked for."""

    def __init__(self, values: dict[str, float], asked: set[str]) -> None:
        super().__init__(values)
        self.asked = asked

    def get(self, name: str, default: float | None = None) -> float | None:  # type: ignore[override]
        self.asked.add(name)
        return super().get(name, default)


# --- a real build ---------------------------------------------------------------------


def write_copy_only_tree(tree: Tree) -> None:
    """PARENTS as images that each COPY one small file: about a second each to build."""
    folder = tree.root / "templates" / "copy"
    folder.mkdir()
    (folder / "Dockerfile.j2").write_text(
        "{% if parent_image %}FROM {{ parent_image }}{% else %}FROM scratch{% endif %}\n"
        "COPY payload.txt /{{ image_name }}.txt\n")
    (folder / "payload.txt").write_text("a small file\n")

    def images(data: dict) -> None:
        data["images"] = {name: {"parent": parent, "template": "copy/Dockerfile.j2"}
                          for name, parent in PARENTS.items()}

    tree.edit_yaml(images)


def start_order(tree: Tree) -> list[str]:
    images = tree.report()["images"]
    assert {entry["status"] for entry in images.values()} == {"built"}
    return sorted(images, key=lambda name: images[name]["start"])


@pytest.mark.integration
def test_a_real_build_starts_the_longest_remaining_path_first(tree: Tree) -> None:
    write_copy_only_tree(tree)
    tree.doit("-n", "1", "build")  # no report yet: every image estimated alike
    assert start_order(tree) == BY_DEPTH

    # The last report says short-c took 9 s: now it goes before the chain of three.
    report = tree.report()
    for name, entry in report["images"].items():
        assert entry["build_seconds"] == entry["end"] - entry["start"]
        assert 0 < entry["build_cpu_seconds"] < 4 * entry["build_seconds"]  # buildah's CPU
        entry["build_seconds"] = 9.0 if name == "short-c" else 1.0
    (tree.root / "build" / "report.json").write_text(json.dumps(report))
    tree.edit("templates/copy/payload.txt", "small", "changed")  # every image rebuilds
    tree.doit("-n", "1", "build")
    assert start_order(tree) == ["root", "short-c", "zlong-1", "zlong-2", "short-a",
                                 "short-b", "zlong-3"]

    result = tree.doit("build", "dispatch=sideways", check=False)
    assert result.returncode == 1
    assert "dispatch=sideways" in result.stderr and "dispatch=fifo" in result.stderr
    assert "Traceback" not in result.stderr



def test_the_default_order_is_fifo_once_the_jobs_outnumber_the_cores() -> None:
    cores = len(os.sched_getaffinity(0))
    assert dispatch.default_strategy(cores) == "critical-path"
    assert dispatch.default_strategy(cores + 1) == "fifo"
