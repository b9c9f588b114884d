"""The only module that knows doit's task dicts: a loaded project -> doit tasks.

Task creators are small generators of plain dicts, as in pydoit's own code. A build
action returns the built image's ID (and what shaped it) as the task's saved values;
a child reads its parent's ID through `getargs`, and `ImageUpToDate` compares both
with what the last successful build recorded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from doit import get_var, loader
from doit.dependency import UptodateCalculator
from doit.exceptions import TaskFailed

from buildlib import builder, project, registry, report
from buildlib.buildah import BuildahError, command_line
from buildlib.errors import InputError

CONFIG_FILE = "images.yaml"


def load_project(dodo_file: str) -> project.Project:
    """The project named by `doit config=...` (default: images.yaml beside dodo.py).

    Bad input ends the process here, with one message and status 1, before doit
    could print a traceback.
    """
    path = _config_path(dodo_file)
    try:
        return project.load(path)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


def _config_path(dodo_file: str) -> Path:
    named = get_var("config")
    if not named:
        return Path(dodo_file).resolve().parent / CONFIG_FILE
    # doit has already changed into dodo.py's folder; the user meant their own cwd.
    start = getattr(loader, "initial_workdir", None) or os.getcwd()
    return Path(start, named).resolve()


def doit_config(proj: project.Project) -> dict[str, Any]:
    proj.build_dir.mkdir(parents=True, exist_ok=True)
    return {
        "default_tasks": ["build"],
        "num_process": proj.config.settings.jobs,
        "par_type": "thread",  # builds are subprocesses; threads share the storage lister
        "dep_file": str(proj.state_file),
        "backend": "sqlite3",
        "continue": True,
        "reporter": report.reporter_for(proj),
    }


def build_tasks(proj: project.Project) -> Iterator[dict[str, Any]]:
    """`build` (every image) and one `build:<image>` per image."""
    storage = builder.Storage(proj.buildah)
    yield {"basename": "build", "name": None,
           "doc": "build every image that is out of date"}
    for name in proj.graph.order():
        yield build_task(proj, name, storage)


def build_task(proj: project.Project, name: str, storage: builder.Storage) -> dict[str, Any]:
    plan = proj.plans[name]
    parent_task = f"build:{plan.parent}" if plan.parent else None
    command = command_line(proj.bud_argv(name))
    return {
        "name": name,
        "doc": f"build {plan.reference}" + (f" on {plan.parent}" if plan.parent else ""),
        "title": lambda task: f"building {name}: {command}",
        "actions": [(_build, [proj, name])],
        "task_dep": [parent_task] if parent_task else [],
        "getargs": {"parent_id": (parent_task, "id")} if parent_task else {},
        "uptodate": [ImageUpToDate(plan, storage, parent_task)],
        "clean": [(_clean, [proj, name])],
        "meta": {"image": name, "kind": "build", "log": plan.build_log},
        "verbosity": 1,
    }


def push_tasks(proj: project.Project) -> Iterator[dict[str, Any]]:
    """`push` (every image) and one `push:<image>` per image, each after its build."""
    yield {"basename": "push", "name": None,
           "doc": "build what is stale, then push what the registry lacks"}
    for name in proj.graph.order():
        yield push_task(proj, name)


def push_task(proj: project.Project, name: str) -> dict[str, Any]:
    plan = proj.plans[name]
    command = command_line(proj.push_argv(name))
    return {
        "name": name,
        "doc": f"push {plan.reference}",
        "title": lambda task: f"pushing {name}: {command}",
        "actions": [(_push, [proj, name])],
        "task_dep": [f"build:{name}"],
        "getargs": {"image_id": (f"build:{name}", "id")},
        "uptodate": [PushUpToDate(proj, plan)],
        "meta": {"image": name, "kind": "push", "log": plan.push_log},
        "verbosity": 1,
    }


def _build(proj: project.Project, name: str, task: Any, parent_id: str | None = None) -> Any:
    try:
        return builder.build_image(proj, name, parent_id, task.meta.get("reason"))
    except (BuildahError, OSError) as err:
        return TaskFailed(f"build of {name} failed: {err}; log: {proj.plans[name].build_log}")


def _push(proj: project.Project, name: str, image_id: str | None = None) -> Any:
    try:
        return builder.push_image(proj, name, image_id)
    except (builder.PushFailed, BuildahError, OSError) as err:
        return TaskFailed(f"push of {name} failed: {err}; log: {proj.plans[name].push_log}")


def _clean(proj: project.Project, name: str) -> None:
    plan = proj.plans[name]
    with contextlib.suppress(subprocess.CalledProcessError):  # never built or already gone
        proj.buildah.rmi(plan.reference)
    shutil.rmtree(plan.workdir, ignore_errors=True)


class PushUpToDate(UptodateCalculator):
    """Up to date when the image is the one pushed last and the registry still serves it."""

    def __init__(self, proj: project.Project, plan: project.ImagePlan) -> None:
        super().__init__()
        self.proj, self.plan = proj, plan

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:
        build_values = self.get_val(f"build:{self.plan.name}", "_values_:") or {}
        settings = self.proj.config.settings
        authfile = self.proj.authfile or registry.default_authfile()

        def served() -> str | None:
            return registry.remote_digest(self.plan.reference, tls_verify=settings.tls_verify,
                                          authfile=authfile)

        reason = builder.push_stale_reason(self.plan, values, build_values.get("id"), served)
        task.meta["reason"] = reason
        return reason is None


class ImageUpToDate(UptodateCalculator):
    """Up to date when inputs, parent ID and the image in storage are as last built."""

    def __init__(self, plan: project.ImagePlan, storage: builder.Storage,
                 parent_task: str | None) -> None:
        super().__init__()
        self.plan, self.storage, self.parent_task = plan, storage, parent_task

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:
        parent_id = None
        if self.parent_task:
            parent_id = (self.get_val(self.parent_task, "_values_:") or {}).get("id")
        reason = builder.stale_reason(self.plan, values, parent_id, self.storage)
        task.meta["reason"] = reason
        return reason is None
