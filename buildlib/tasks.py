"""The only module that knows doit's task dicts: a loaded project -> doit tasks.

Task creators are small generators of plain dicts, as in pydoit's own code. A build
action returns the built image's ID (and what shaped it) as the task's saved values;
a child reads its parent's ID through `getargs`, and `ImageUpToDate` compares both
with what the last successful build recorded.

A run is shaped by doit command-line variables (`doit build images=nova profile=x`):

    config=PATH          another images.yaml (default: the one beside dodo.py)
    images=RE[,RE...]    build only images whose name matches, with their ancestors
    profile=NAME[,...]   the patterns of named `profiles:` in images.yaml
    exclude=RE[,RE...]   never build these nor their descendants (adds to settings.excludes)
    skip_parents=1       build the selected images on their parents as they are in storage
    fail_fast=1          stop at the first failure instead of building everything else
    verbose=1            show buildah's output as it builds (it always goes to the logs)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doit import get_var, loader
from doit.cmd_base import DodoTaskLoader
from doit.cmdparse import CmdOption, CmdParse, CmdParseError
from doit.dependency import UptodateCalculator
from doit.doit_cmd import DoitMain
from doit.exceptions import TaskFailed

from buildlib import builder, graph, pictures, project, registry, report
from buildlib.buildah import BuildahError, command_line
from buildlib.errors import InputError

CONFIG_FILE = "images.yaml"
TRUE_WORDS = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Run:
    """One doit run: the project, the images selected, and the run's options."""

    project: project.Project
    selection: graph.Selection
    storage: builder.Storage
    fail_fast: bool = False
    verbose: bool = False

    @classmethod
    def of(cls, proj: project.Project) -> Run:
        """A run of every image, with default options."""
        return cls(proj, graph.select(proj.graph, [], []), builder.Storage(proj.buildah))

    def parent_task(self, name: str) -> str | None:
        parent = self.selection.parent_dependency(self.project.graph, name)
        return f"build:{parent}" if parent else None

    def parent_id(self, name: str, saved: Callable[[str], dict[str, Any]]) -> str | None:
        """The parent image this image stands on: the ID its parent's task recorded
        (`saved(task_name)`), or with skip_parents the parent image as it is in storage."""
        parent = self.project.plans[name].parent
        if parent is None:
            return None
        parent_task = self.parent_task(name)
        if parent_task:
            return saved(parent_task).get("id")
        return self.parent_in_storage(name)

    def parent_in_storage(self, name: str) -> str | None:
        """The ID of the parent image as local storage holds it now (skip_parents)."""
        parent = self.project.plans[name].parent
        return self.storage.id_of(self.project.plans[parent].reference) if parent else None


def load_run(dodo_file: str) -> Run:
    """The project named by `config=` (default: images.yaml beside dodo.py) and the run
    the other variables ask for. Bad input ends the process here, with one message and
    status 1, before doit could print a traceback."""
    try:
        proj = project.load(_config_path(dodo_file))
        selection = _selection(proj)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    run = Run(proj, selection, builder.Storage(proj.buildah),
              fail_fast=_flag("fail_fast"), verbose=_flag("verbose"))
    if _runs_tasks(sys.argv[1:]):
        run.storage.prefetch()
    return run


def _runs_tasks(argv: list[str]) -> bool:
    """Whether doit was asked to run tasks (`doit`, `doit -n 8 build`, `doit push`), whose
    up-to-date checks list local images, rather than `doit list`, `info`, `clean`...
    Read as doit reads it: its loader options (`-f dodo.py`) first, then variables
    (`config=x`) aside; the first word left names the command, `run` when it names none."""
    try:
        _, rest = CmdParse([CmdOption(o) for o in DodoTaskLoader.cmd_options]).parse_only(argv)
    except CmdParseError:
        rest = argv
    words = [arg for arg in rest if arg.startswith("-") or "=" not in arg]
    others = {command.get_name() for command in DoitMain.DOIT_CMDS} - {"run"}
    return not words or words[0] not in others


def _config_path(dodo_file: str) -> Path:
    named = get_var("config")
    if not named:
        return Path(dodo_file).resolve().parent / CONFIG_FILE
    # doit has already changed into dodo.py's folder; the user meant their own cwd.
    start = getattr(loader, "initial_workdir", None) or os.getcwd()
    return Path(start, named).resolve()


def _flag(name: str) -> bool:
    return str(get_var(name, "")).lower() in TRUE_WORDS


def _words(name: str) -> list[str]:
    return [word for word in str(get_var(name, "")).split(",") if word]


def _selection(proj: project.Project) -> graph.Selection:
    patterns = _words("images")
    for profile in _words("profile"):
        if profile not in proj.config.profiles:
            known = ", ".join(sorted(proj.config.profiles)) or "none declared"
            raise InputError(proj.config.path, f"profile '{profile}' is not declared "
                             f"(known: {known})", fix="add it under `profiles:` or use one "
                             "of those names")
        patterns += proj.config.profiles[profile]
    excludes = proj.config.settings.excludes + _words("exclude")
    try:
        return graph.select(proj.graph, patterns, excludes, _flag("skip_parents"))
    except re.error as err:
        raise InputError(proj.config.path, f"bad pattern on the command line: {err}",
                         fix="correct `images=` or `exclude=` (Python `re` syntax)") from None


def doit_config(run: Run) -> dict[str, Any]:
    run.project.build_dir.mkdir(parents=True, exist_ok=True)
    return {
        "default_tasks": ["build"],
        "num_process": run.project.config.settings.jobs,
        "par_type": "thread",  # builds are subprocesses; threads share the storage lister
        "dep_file": str(run.project.state_file),
        "backend": "sqlite3",
        "continue": not run.fail_fast,
        "reporter": report.reporter_for(run.project, run.selection),
    }


def build_tasks(run: Run) -> Iterator[dict[str, Any]]:
    """`build` (every selected image) and one `build:<image>` per selected image."""
    yield {"basename": "build", "name": None,
           "doc": "build every image that is out of date"}
    for name in _selected_in_order(run):
        yield build_task(run, name)


def _selected_in_order(run: Run) -> list[str]:
    return [name for name in run.project.graph.order() if name in run.selection.selected]


def build_task(run: Run, name: str) -> dict[str, Any]:
    plan = run.project.plans[name]
    parent_task = run.parent_task(name)
    command = command_line(run.project.bud_argv(name))
    return {
        "name": name,
        "doc": f"build {plan.reference}" + (f" on {plan.parent}" if plan.parent else ""),
        "title": lambda task: f"building {name}: {command}",
        "actions": [(_build, [run, name])],
        "task_dep": [parent_task] if parent_task else [],
        "getargs": {"parent_id": (parent_task, "id")} if parent_task else {},
        "uptodate": [ImageUpToDate(run, name)],
        "clean": [(_clean, [run.project, name])],
        "meta": {"image": name, "kind": "build", "log": plan.build_log},
        "verbosity": 2 if run.verbose else 1,
    }


def push_tasks(run: Run) -> Iterator[dict[str, Any]]:
    """`push` (every selected image) and one `push:<image>` each, after its build."""
    yield {"basename": "push", "name": None,
           "doc": "build what is stale, then push what the registry lacks"}
    # The credentials the registry check uses: ours, or those buildah finds by itself.
    authfile = run.project.authfile or registry.default_authfile()
    for name in _selected_in_order(run):
        yield push_task(run, name, authfile)


def push_task(run: Run, name: str, authfile: Path | None) -> dict[str, Any]:
    plan = run.project.plans[name]
    command = command_line(run.project.push_argv(name))
    return {
        "name": name,
        "doc": f"push {plan.reference}",
        "title": lambda task: f"pushing {name}: {command}",
        "actions": [(_push, [run.project, name])],
        "task_dep": [f"build:{name}"],
        "getargs": {"image_id": (f"build:{name}", "id")},
        "uptodate": [PushUpToDate(plan, run.project.config.settings.tls_verify, authfile)],
        "meta": {"image": name, "kind": "push", "log": plan.push_log},
        "verbosity": 2 if run.verbose else 1,
    }


def status_task(run: Run) -> dict[str, Any]:
    """Build nothing; list each image, its parent and whether (and why) it would build."""
    probe = StateProbe()
    return {
        "basename": "status",
        "doc": "list images with their parents and what a build would do (a dry run)",
        "actions": [(_print_status, [run, probe])],
        "uptodate": [probe],
        "verbosity": 2,
    }


def graph_task(run: Run) -> dict[str, Any]:
    proj = run.project
    dot = proj.build_dir / "graph.dot"
    return {
        "basename": "graph",
        "doc": f"draw the image graph, coloured by last status: {dot} and graph.svg",
        "actions": [(_draw_graph, [proj, dot])],
        "uptodate": [False],
        "verbosity": 2,
    }


def _draw_graph(proj: project.Project, dot: Path) -> None:
    last = json.loads(proj.report_path.read_text()) if proj.report_path.exists() else None
    svg = pictures.write_graph(proj.graph, last, dot)
    print(f"wrote {report.display_path(dot)}"
          + (f" and {report.display_path(svg)}" if svg else " (install graphviz for the SVG)"))


def _build(run: Run, name: str, task: Any, parent_id: str | None = None) -> Any:
    proj, parent = run.project, run.project.plans[name].parent
    if parent_id is None and parent:  # skip_parents: no parent task hands over its ID
        parent_id = run.parent_in_storage(name)
        if parent_id is None:
            return TaskFailed(f"cannot build {name}: its parent image "
                              f"{proj.plans[parent].reference} is not in local storage; "
                              f"build it first (`doit build:{parent}`) or drop skip_parents")
    try:
        return builder.build_image(proj, name, parent_id, task.meta.get("reason"),
                                   echo=run.verbose)
    except (BuildahError, OSError) as err:
        return TaskFailed(str(err))  # the summary adds the log's tail and path


def _push(proj: project.Project, name: str, image_id: str | None = None) -> Any:
    try:
        return builder.push_image(proj, name, image_id)
    except (builder.PushFailed, BuildahError, OSError) as err:
        return TaskFailed(str(err))  # the summary adds the log's tail and path


def _clean(proj: project.Project, name: str) -> None:
    plan = proj.plans[name]
    with contextlib.suppress(subprocess.CalledProcessError):  # never built or already gone
        proj.buildah.rmi(plan.reference)
    shutil.rmtree(plan.workdir, ignore_errors=True)


def _print_status(run: Run, probe: StateProbe) -> None:
    proj, rebuilding = run.project, set()
    rows = [("IMAGE", "PARENT", "STATUS")]
    for name in proj.graph.order():
        plan = proj.plans[name]
        if name not in run.selection.selected:
            rows.append((name, plan.parent or "-", "excluded"))
            continue
        saved = probe.values(f"build:{name}")
        if plan.parent in rebuilding:
            reason: str | None = f"parent '{plan.parent}' would be rebuilt"
        else:
            reason = builder.stale_reason(plan, saved, run.parent_id(name, probe.values),
                                          run.storage)
        if reason:
            rebuilding.add(name)
        rows.append((name, plan.parent or "-", f"would build: {reason}" if reason
                     else "up-to-date"))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for image, parent, status in rows:
        print(f"{image:<{widths[0]}}  {parent:<{widths[1]}}  {status}")
    print(f"{len(rebuilding)} of {len(run.selection.selected)} selected images would build")


class StateProbe(UptodateCalculator):
    """Never up to date; reads every build task's saved values for its own task's action
    (in doit's main thread: the state database may be used by that thread only)."""

    def __init__(self) -> None:
        super().__init__()
        self.saved: dict[str, dict[str, Any]] = {}

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:
        self.saved = {name: self.get_val(name, "_values_:") or {}
                      for name in self.tasks_dict if name.startswith("build:")}
        return False

    def values(self, task_name: str) -> dict[str, Any]:
        return self.saved.get(task_name, {})


class ImageUpToDate(UptodateCalculator):
    """Up to date when inputs, parent ID and the image in storage are as last built."""

    def __init__(self, run: Run, name: str) -> None:
        super().__init__()
        self.run, self.name = run, name

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:
        plan = self.run.project.plans[self.name]
        parent_id = self.run.parent_id(self.name,
                                       lambda task_name: self.get_val(task_name, "_values_:") or {})
        reason = builder.stale_reason(plan, values, parent_id, self.run.storage)
        task.meta["reason"] = reason
        return reason is None


class PushUpToDate(UptodateCalculator):
    """Up to date when the image is the one pushed last and the registry still serves it."""

    def __init__(self, plan: project.ImagePlan, tls_verify: bool,
                 authfile: Path | None) -> None:
        super().__init__()
        self.plan, self.tls_verify, self.authfile = plan, tls_verify, authfile

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:
        build_values = self.get_val(f"build:{self.plan.name}", "_values_:") or {}

        def served() -> str | None:
            return registry.remote_digest(self.plan.reference, tls_verify=self.tls_verify,
                                          authfile=self.authfile)

        reason = builder.push_stale_reason(self.plan, values, build_values.get("id"), served)
        task.meta["reason"] = reason
        return reason is None
