"""The only module that knows doit's task dicts: a loaded project -> doit tasks, small
generators of plain dicts (as in pydoit's own code) whose actions and up-to-date checks
call the use cases' rooms and decide nothing. A child reads its parent's ID from the run
(`Run.images`, not `getargs`, which would make it depend on the parent's whole result).
doit's saved values are plain dicts here only: `settled.Settled` elsewhere."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

from doit.exceptions import TaskFailed

from buildlib import building, doit_seam, processes, pruning, push_report, report
from buildlib.doit_seam import SavedValuesCalculator, display_path
from buildlib.errors import CommandFailed
from buildlib.run import Run
from buildlib.settled import Settled


def namespace(run: Run) -> dict[str, Any]:
    """doit's namespace for dodo.py and `imagebake`: DOIT_CONFIG, a `task_<name>` each."""
    return {"DOIT_CONFIG": doit_config(run),
            **{f"task_{name}": _creator(make, run) for name, make in creators().items()}}


def creators() -> dict[str, Callable[[Run], Any]]:
    return {"build": build_tasks, "push": push_tasks, "status": status_task,
            "resolve": resolve_task, "graph": graph_task, "watch": watch_task,
            "export": export_task, "render": render_task, "prune": prune_task,
            "keygen": keygen_task, "merge": merge_task, "config": config_task,
            "verify": verify_task}


def _creator(make: Callable[[Run], Any], run: Run) -> Callable[[], Any]:
    def create() -> Any:
        return make(run)
    create.__doc__ = make.__doc__
    return create


def doit_config(run: Run) -> dict[str, Any]:
    run.project.build_dir.mkdir(parents=True, exist_ok=True)
    return {
        "default_tasks": ["build"],
        "num_process": run.project.config.settings.jobs,
        "par_type": "thread",  # builds are subprocesses; threads share the storage lister
        "dep_file": str(run.project.state_file),
        "backend": "sqlite3",
        "continue": not run.options.fail_fast,
        "reporter": push_report.pooled_pushes(run.push_pool, report.reporter_for(
            run.project, run.selection, run.jobs, lambda: _finish(run), run.likely_builds,
            run.last_report, stop=run.services.stop)),
    }


def _finish(run: Run) -> None:
    """After the summary: the prune after a build, `Run.finish`; 1 if a pooled push failed."""
    pruning.after_build(run)
    processes.exit_as(run.finish())
    if run.push_pool.failed:
        sys.exit(1)


def _command(basename: str, doc: str, action: Callable[..., Any], *args: Any) -> dict[str, Any]:
    """A task that runs each time it is asked for, its output on the terminal."""
    return {"basename": basename, "doc": doc, "actions": [(_failing(action), list(args))],
            "uptodate": [False], "verbosity": 2}


def _reading_saved(basename: str, doc: str, action: Callable[..., Any],
                   run: Run) -> dict[str, Any]:
    """A command whose action reads what each build task saved when it last ran."""
    probe = StateProbe()
    return {**_command(basename, doc, action, run, probe.values), "uptodate": [probe]}


def _room(module: str, function: str) -> Callable[..., Any]:
    """`buildlib.<module>.<function>`, imported when first called: a run loads the rooms of
    the commands it runs only (their imports would be a build's no-op's cost)."""
    def call(*args: Any) -> Any:
        return getattr(importlib.import_module(f"buildlib.{module}"), function)(*args)
    return call


def _failing(action: Callable[..., Any]) -> Callable[..., Any]:
    """`action` as doit runs it: its CommandFailed is the task's failure."""
    def run_action(*args: Any) -> Any:
        try:
            return action(*args)
        except CommandFailed as err:
            return TaskFailed(str(err))
    return run_action


def build_tasks(run: Run) -> Iterator[dict[str, Any]]:
    """`build` (every selected image) and one `build:<image>` per selected image."""
    yield {"basename": "build", "name": None,
           "doc": "build every image that is out of date"}
    for name in run.project.graph.ordered(run.selection.selected):
        yield build_task(run, name)


def build_task(run: Run, name: str) -> dict[str, Any]:
    plan = run.project.plans[name]
    parent_task = run.parent_task(name)
    return {
        "name": name,
        "doc": f"build {plan.reference}" + (f" on {plan.parent}" if plan.parent else ""),
        "title": lambda task: building.title(run, name, task.meta.get("verdict")),
        "actions": [(_build, [run, name])],
        "task_dep": ([parent_task] if parent_task else []) + run.read_tasks(name),
        "uptodate": [ImageUpToDate(run, name)],
        "clean": [(_room("clean", "clean_image"), [run, name])],
        "meta": {"image": name, "kind": "build", "log": plan.build_log},
        "verbosity": 2 if run.options.verbose else 1,
    }


def push_tasks(run: Run) -> Iterator[dict[str, Any]]:
    """`push` (every selected image) and one `push:<image>` each, after its build."""
    yield {"basename": "push", "name": None,
           "doc": "build what is stale, then push what the registry lacks"}
    if not run.invocation.may_push:
        return  # a build: its no-op would pay for tasks it never runs
    for name in run.project.graph.ordered(run.selection.selected):
        yield push_task(run, name)


def push_task(run: Run, name: str) -> dict[str, Any]:
    plan = run.project.plans[name]
    pooled = run.project.config.settings.push_jobs > 0  # 0: pushes take build job slots
    return {
        "name": name,
        "doc": f"push {plan.reference}",
        "title": lambda task: _room("pushing", "title")(run, name),
        "actions": [(_hand_over_push, [run, name]) if pooled
                    else (_failing(_room("pushing", "push")), [run, name])],
        "task_dep": [f"build:{name}",
                     *(f"push:{p}" for p in _room("pushing", "pushed_first")(run, name))],
        "uptodate": [PushUpToDate(run, name)],
        "meta": {"image": name, "kind": "push", "log": plan.push_log, "pooled": pooled},
        "verbosity": 2 if run.options.verbose else 1,
    }


def status_task(run: Run) -> dict[str, Any]:
    """Build nothing; list each image, its parent and whether (and why) it would build."""
    return _reading_saved("status", "list images with their parents and what a build would "
                          "do (a dry run)", _room("status", "print_status"), run)


def render_task(run: Run) -> dict[str, Any]:
    """Build nothing; write each selected image's Dockerfile and build context."""
    where = display_path(run.project.build_dir)
    return _command("render", f"write {where}/<image>/Dockerfile and context/ of each "
                    "selected image, build nothing (kolla-build --template-only)",
                    _room("preview", "render_images"), run)


def config_task(run: Run) -> dict[str, Any]:
    """Build nothing; print images.yaml as merged with images.override.yaml (or the `-c`
    files) and the `--set` values, validated (as `docker buildx bake --print`)."""
    return _command("config", "print the merged images.yaml (override files, --set), "
                    "validated", _room("preview", "print_config"), run.project.config)


def watch_task(run: Run) -> dict[str, Any]:
    """Build, then build again on each change to images.yaml, a template or a context file."""
    return _command("watch", "build, then again on each change to images.yaml, a template "
                    "or a context file", _room("watch", "watch"), run.project.config.sources,
                    run.invocation.rerun_as("build"), run.invocation.where, run.services.stop)


def resolve_task(run: Run) -> dict[str, Any]:
    """write build/images.lock.json: each image's digest, key and ID in the registry"""
    return _command("resolve", f"write {run.project.lock_path.name}: each selected image's "
                    "digest, key and ID in the registry", _room("resolve", "write_lock"), run)


def verify_task(run: Run) -> dict[str, Any]:
    """check each selected image's pushed tag: signature, provenance, current key"""
    return _command("verify", "check each selected image's pushed tag: signed by a key of "
                    "settings.trust, its provenance attached, the image of its current key",
                    _room("verify", "verify_command"), run)


def merge_task(run: Run) -> dict[str, Any]:
    """make each multi-arch image's manifest list of its platforms' lists (parts=...)"""
    return _command("merge", "make each multi-arch image's manifest list of the lists its "
                    "platforms' runs pushed (push platform=P): parts=NAME@sha256:...,...",
                    _room("merge", "merge_lists"), run)


def prune_task(run: Run) -> dict[str, Any]:
    """remove the images of old keys from local storage (keep=N dry=1 registry=1)"""
    return _reading_saved("prune", "remove this tree's images of old keys from local storage: "
                          "keep=N (old keys to keep per image), dry=1 (list only), registry=1 "
                          "(the registry's key tags too)", pruning.prune_command, run)


def export_task(run: Run) -> dict[str, Any]:
    """write the image graph as a GitHub Actions, GitLab CI or Argo Workflows workflow"""
    return _command("export", "write the image graph as a CI workflow: format=gha|gitlab|argo "
                    "[out=PATH max_jobs=N job_start=SECONDS runs_on=LABEL,... "
                    "storage=runner|job|/PATH runners=PLATFORM=LABEL,...]",
                    _room("ci_export", "write_workflow"), run)


def keygen_task(run: Run) -> dict[str, Any]:
    """Write a new cosign signing key pair beside images.yaml: cosign.key, encrypted with
    COSIGN_PASSWORD, and cosign.pub; never overwrites a key."""
    return _command("keygen", "write cosign.key (encrypted with COSIGN_PASSWORD) and "
                    "cosign.pub beside images.yaml", _room("keygen", "write_key_pair"),
                    run.project.config.root)


def graph_task(run: Run) -> dict[str, Any]:
    """Draw the image graph, coloured by each image's last status: build/graph.dot and
    graph.svg."""
    proj = run.project
    dot = proj.build_dir / "graph.dot"
    return _command("graph", f"draw the image graph, coloured by last status: {dot} and "
                    "graph.svg", _room("preview", "draw_graph"), proj, dot)


def _build(run: Run, name: str, task: Any) -> Any:
    """The build use case (`building.build`), its result as doit saves it."""
    result = building.build(run, name, task.meta["verdict"])  # (its up-to-date check's)
    return TaskFailed(result) if isinstance(result, str) else result.as_values()


def _hand_over_push(run: Run, name: str, task: Any) -> None:
    """A pooled push task's action: hands the push over (`push_report.hand_over`)."""
    push_report.hand_over(run.push_pool, task, lambda: _room("pushing", "push")(run, name),
                          run.services.stop)


class StateProbe(SavedValuesCalculator):
    """Never up to date; reads every build task's saved values for its own task's action
    (in doit's main thread: the state database may be used by that thread only)."""

    def __init__(self) -> None:
        super().__init__()
        self.saved: dict[str, dict[str, Any]] = {}

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:
        self.saved = {name: self.saved_values(name)
                      for name in self.tasks_dict if name.startswith("build:")}
        return False

    def values(self, task_name: str) -> dict[str, Any]:
        return self.saved.get(task_name, {})


class ImageUpToDate(SavedValuesCalculator):
    """Up to date when the image's verdict needs no action (`building.up_to_date`); what
    it settled on goes to the reporter."""

    def __init__(self, run: Run, name: str) -> None:
        super().__init__()
        self.run, self.name = run, name

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:
        verdict, settled = building.up_to_date(self.run, self.name,
                                               Settled.from_values(values), self._saved)
        task.meta["verdict"] = verdict
        task.meta["settled"] = settled
        return settled is not None

    def _saved(self, task_name: str) -> Settled | None:
        """What another task saved when it last ran (outside a run: its values)."""
        return Settled.from_values(self.saved_values(task_name))


class PushUpToDate:
    """Up to date when the registry holds the image as a push leaves it (`pushing`)."""

    __signature__ = doit_seam.TASK_AND_VALUES

    def __init__(self, run: Run, name: str) -> None:
        self.run, self.name = run, name

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:
        settled = _room("pushing", "up_to_date")(self.run, self.name)
        if settled is not None:
            task.meta["settled"] = settled
        return settled is not None
