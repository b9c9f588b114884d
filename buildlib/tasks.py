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
    dispatch=fifo        doit's own order of ready builds, not the longest path first
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doit import get_var, loader
from doit.cmd_base import DodoTaskLoader
from doit.cmdparse import CmdOption, CmdParse, CmdParseError
from doit.dependency import UptodateCalculator
from doit.doit_cmd import DoitMain
from doit.exceptions import TaskFailed

from buildlib import builder, cache, dispatch, graph, keys, pictures, project, report
from buildlib.buildah import BuildahError, StorageError, command_line
from buildlib.errors import InputError
from buildlib.registry import RegistryError

CONFIG_FILE = "images.yaml"
LOCK_FILE = "images.lock.json"
TRUE_WORDS = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Run:
    """One doit run: the project, the images selected, and the run's options.

    `images` holds what each image's task settled in this run (its ID and key: saved by
    an up-to-date check or returned by a build), which is all a child needs of its
    parent: no `getargs`, so a child does not depend on the rest of its parent's result.
    """

    project: project.Project
    selection: graph.Selection
    storage: builder.Storage
    fail_fast: bool = False
    verbose: bool = False
    lookups: cache.Lookups | None = None  # the registry, when this run asks it
    from_registry: bool = False  # cache=registry: look images up before building them
    pins: dict[str, str] = field(default_factory=dict)  # pin=NAME@DIGEST: taken as is
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: set[str] = field(default_factory=set)

    def parent_task(self, name: str) -> str | None:
        parent = self.selection.parent_dependency(self.project.graph, name)
        return f"build:{parent}" if parent else None

    def parent_id(self, name: str,
                  saved: Callable[[str], dict[str, Any]] | None = None) -> str | None:
        """The parent image this image stands on: the one its parent's task settled in
        this run (else, outside a run as in `doit info`, what it recorded: `saved(task)`),
        or with skip_parents the parent image as it is in storage."""
        parent = self.project.plans[name].parent
        parent_task = self.parent_task(name)
        if parent is None:
            return None
        if parent_task is None:
            return self.parent_in_storage(name)
        if parent in self.images:
            return self.images[parent].get("id")
        return saved(parent_task).get("id") if saved else None

    def parent_in_storage(self, name: str) -> str | None:
        """The ID of the parent image as local storage holds it now (skip_parents)."""
        parent = self.project.plans[name].parent
        return self.storage.id_of(self.project.plans[parent].reference) if parent else None

    def record(self, name: str,
               saved: Callable[[str], dict[str, Any]] | None = None) -> keys.Record | None:
        """What makes the image now, on its parent's current ID; None when an image with a
        parent has none to stand on."""
        plan = self.project.plans[name]
        parent_id = self.parent_id(name, saved)
        if plan.parent and parent_id is None:
            return None
        return plan.sources.on_parent(parent_id)

    def in_registry(self, name: str, record: keys.Record) -> cache.Found | None:
        """With cache=registry, the image the registry holds for this key, unless local
        storage has one; a lookup that fails is "not cached", with one warning."""
        if not self.from_registry or self.lookups is None or self.storage.with_key(record.key):
            return None
        try:
            return self.lookups.find(self.project.plans[name].key_reference(record.key))
        except RegistryError as err:
            self.warn(f"warning: the registry cache could not be asked, building instead: {err}")
            return None

    def settle(self, name: str, found: cache.Found, key: str | None) -> dict[str, Any]:
        """Take the image the registry holds: children build on its ID, pulled if needed."""
        self.images[name] = {"id": found.image_id, "key": key, "found": "registry",
                             "digest": found.manifest.digest, "pinned": found.pinned,
                             "image": self.project.plans[name].reference}
        return self.images[name]

    def ask_for_children(self, name: str) -> None:
        """Once an image is built, its children's keys are known: ask the registry now."""
        if not self.from_registry or self.lookups is None:
            return
        for child in self.project.graph.children[name]:
            if child in self.selection.selected:
                plan = self.project.plans[child]
                key = plan.sources.on_parent(self.images[name]["id"]).key
                if not self.storage.with_key(key):
                    self.lookups.ask(plan.key_reference(key))

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.add(message)
            print(message, file=sys.stderr)


def load_run(dodo_file: str) -> Run:
    """The project named by `config=` (default: images.yaml beside dodo.py) and the run
    the other variables ask for. Bad input ends the process here, with one message and
    status 1, before doit could print a traceback."""
    try:
        proj = project.load(_config_path(dodo_file))
        selection = _selection(proj)
        pins = _pins(proj)
        from_registry = _cache_mode(proj) == "registry"
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    asks_registry = from_registry or bool(pins) or _runs_pushes(sys.argv[1:])
    run = Run(proj, selection, builder.Storage(proj.buildah),
              fail_fast=_flag("fail_fast"), verbose=_flag("verbose"),
              lookups=cache.Lookups(proj.registry_client) if asks_registry else None,
              from_registry=from_registry, pins=pins)
    if _runs_tasks(sys.argv[1:]):
        run.storage.prefetch()
        if run.lookups is not None:  # ask the registry while doit loads and builds
            run.lookups.client.prefetch_check()
            if from_registry:
                threading.Thread(target=cache.walk, daemon=True, args=(
                    proj, selection.selected - set(pins), run.storage, run.lookups)).start()
    return run


def _cache_mode(proj: project.Project) -> str:
    mode = str(get_var("cache", "") or proj.config.settings.cache)
    if mode not in ("local", "registry"):
        raise InputError(proj.config.path, f"cache={mode}: not a cache",
                         fix="use cache=local or cache=registry")
    return mode


def _pins(proj: project.Project) -> dict[str, str]:
    """`pin=NAME@sha256:DIGEST,...`: images taken from the registry at that digest."""
    pins = {}
    for word in _words("pin"):
        name, _, digest = word.partition("@")
        if name not in proj.plans or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise InputError(proj.config.path, f"pin={word}: not an image of this tree "
                             "at a digest", image=name if name in proj.plans else None,
                             fix="write pin=NAME@sha256:<64 hex>, NAME under `images:`")
        pins[name] = digest
    return pins


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


def _runs_pushes(argv: list[str]) -> bool:
    """Whether this run runs a push task (`doit push`, `doit -n 4 push:nova-api`), whose
    up-to-date checks ask the registry; never `doit build` nor `doit list`."""
    return _runs_tasks(argv) and any(arg == "push" or arg.startswith("push:") for arg in argv)


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
    dispatch.install_for(run.project, run.selection.selected)
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
    return {
        "name": name,
        "doc": f"build {plan.reference}" + (f" on {plan.parent}" if plan.parent else ""),
        "title": lambda task: _build_title(run, name, task),
        "actions": [(_build, [run, name])],
        "task_dep": [parent_task] if parent_task else [],
        "uptodate": [ImageUpToDate(run, name)],
        "clean": [(_clean, [run.project, name])],
        "meta": {"image": name, "kind": "build", "log": plan.build_log},
        "verbosity": 2 if run.verbose else 1,
    }


def push_tasks(run: Run) -> Iterator[dict[str, Any]]:
    """`push` (every selected image) and one `push:<image>` each, after its build."""
    yield {"basename": "push", "name": None,
           "doc": "build what is stale, then push what the registry lacks"}
    for name in _selected_in_order(run):
        yield push_task(run, name)


def push_task(run: Run, name: str) -> dict[str, Any]:
    plan = run.project.plans[name]
    return {
        "name": name,
        "doc": f"push {plan.reference}",
        "title": lambda task: _push_title(run, name),
        "actions": [(_push, [run, name])],
        "task_dep": [f"build:{name}"],
        "uptodate": [PushUpToDate(run, name)],
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


def resolve_task(run: Run) -> dict[str, Any]:
    lock = run.project.build_dir / LOCK_FILE
    return {
        "basename": "resolve",
        "doc": f"write {lock.name}: each selected image's digest, key and ID in the registry",
        "actions": [(_resolve, [run, lock])],
        "uptodate": [False],
        "verbosity": 2,
    }


def _resolve(run: Run, lock: Path) -> Any:
    lookups = run.lookups or cache.Lookups(run.project.registry_client)
    try:
        resolved = cache.resolve(run.project, _selected_in_order(run), lookups)
    except RegistryError as err:
        return TaskFailed(str(err))
    missing = sorted(name for name, entry in resolved.items() if entry is None)
    if missing:
        return TaskFailed(f"not in the registry for their current keys: {', '.join(missing)}; "
                          "push them first (`doit push`)")
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"images": resolved}, indent=2, sort_keys=True) + "\n")
    print(f"wrote {report.display_path(lock)}: {len(resolved)} images")
    return None


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


def _build_title(run: Run, name: str, task: Any) -> str:
    record = task.meta.get("record") or run.record(name)
    if record is None:
        return f"building {name}"
    if run.storage.with_key(record.key):
        return f"found {name} in local storage by its key {keys.key_tag(record.key)}"
    return f"building {name}: {command_line(run.project.bud_argv(name, record))}"


def _build(run: Run, name: str, task: Any) -> Any:
    proj, parent = run.project, run.project.plans[name].parent
    if name in run.pins:
        return TaskFailed(task.meta.get("pin_error") or f"pin {name}: not found")
    missing = proj.plans[name].context.missing_sources()
    if missing:
        return TaskFailed(f"cannot build {name}: its build context lacks {', '.join(missing)}"
                          f"\n  fix: {MISSING_SOURCES_FIX}")
    record = task.meta.get("record") or run.record(name)
    if record is None:  # skip_parents, and no parent image in storage
        return TaskFailed(f"cannot build {name}: its parent image "
                          f"{proj.plans[parent].reference} is not in local storage; "
                          f"build it first (`doit build:{parent}`) or drop skip_parents")
    try:
        if parent and run.images.get(parent, {}).get("found") == "registry":
            builder.pull(proj, parent, run.images[parent], run.storage)
        values = builder.build_image(proj, name, record, run.storage,
                                     task.meta.get("reason"), echo=run.verbose)
    except (BuildahError, StorageError, subprocess.CalledProcessError, OSError) as err:
        return TaskFailed(str(err))  # the summary adds the log's tail and path
    run.images[name] = values
    run.ask_for_children(name)
    return values


def _push_title(run: Run, name: str) -> str:
    built = run.images.get(name, {})
    if built.get("found") == "registry" or not built.get("key"):
        return f"tagging {run.project.plans[name].reference}"
    return f"pushing {name}: {command_line(run.project.push_argv(name, built['key']))}"


def _push(run: Run, name: str) -> Any:
    assert run.lookups is not None  # a run with pushes asks the registry
    try:
        return builder.push_image(run.project, name, run.images.get(name, {}), run.lookups)
    except (builder.PushFailed, BuildahError, OSError) as err:
        return TaskFailed(str(err))  # the summary adds the log's tail and path


def _clean(proj: project.Project, name: str) -> None:
    plan = proj.plans[name]
    with contextlib.suppress(subprocess.CalledProcessError):  # never built or already gone
        proj.buildah.rmi(plan.reference)
    shutil.rmtree(plan.workdir, ignore_errors=True)


def _print_status(run: Run, probe: StateProbe) -> Any:
    proj, rebuilding, failing = run.project, set(), set()
    rows = [("IMAGE", "PARENT", "STATUS")]
    for name in proj.graph.order():
        plan = proj.plans[name]
        if name not in run.selection.selected:
            rows.append((name, plan.parent or "-", "excluded"))
            continue
        missing = plan.context.missing_sources()
        if missing or plan.parent in failing:
            failing.add(name)
            rows.append((name, plan.parent or "-", f"would fail: context lacks "
                         f"{', '.join(missing)}" if missing else
                         f"blocked: parent '{plan.parent}' would fail"))
            continue
        reason = _dry_run(run, name, probe.values(f"build:{name}"), rebuilding)
        if reason:
            rebuilding.add(name)
        rows.append((name, plan.parent or "-", f"would build: {reason}" if reason
                     else "up-to-date"))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for image, parent, status in rows:
        print(f"{image:<{widths[0]}}  {parent:<{widths[1]}}  {status}")
    print(f"{len(rebuilding)} of {len(run.selection.selected)} selected images would build")
    failed = sorted(n for n in failing if proj.plans[n].context.missing_sources())
    if failed:
        return TaskFailed(f"{len(failed)} images would fail, their build context lacks what "
                          f"their Dockerfile copies: {', '.join(failed)}\n  fix: "
                          f"{MISSING_SOURCES_FIX}")
    return None


MISSING_SOURCES_FIX = ("add the missing paths to the image's context (beside its template, or "
                       "under `files:` in images.yaml), or correct the COPY/ADD")


def _dry_run(run: Run, name: str, saved: dict[str, Any], rebuilding: set[str]) -> str | None:
    """Why a build would build this image, or None; settles its ID in `run.images` as a
    build would, so that its children are judged on it."""
    parent = run.project.plans[name].parent
    if parent in rebuilding:
        return f"parent '{parent}' would be rebuilt"
    record = run.record(name)
    if record is None:
        return f"parent '{parent}' is not in local storage"
    reason = builder.stale_reason(run.project.plans[name], saved, record, run.storage)
    found = saved.get("id") if reason is None else run.storage.with_key(record.key)
    if found is None:
        return reason
    run.images[name] = {"id": found, "key": record.key}
    return None


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
    """Up to date when the image this task recorded carries the current key (the parent's
    ID in this run included) and is still in storage under its reference; or, with
    cache=registry, when the registry holds an image of that key."""

    def __init__(self, run: Run, name: str) -> None:
        super().__init__()
        self.run, self.name = run, name

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:
        _check_storage(self.run)
        if self.name in self.run.pins:
            return self._pinned(task)
        record = self.run.record(self.name,
                                 lambda task_name: self.get_val(task_name, "_values_:") or {})
        if record is None:
            return False  # the build says why
        task.meta["record"] = record
        reason = builder.stale_reason(self.run.project.plans[self.name], values, record,
                                      self.run.storage)
        task.meta["reason"] = reason
        if reason is None:
            self.run.images[self.name] = values
            task.meta["settled"] = {"id": values["id"], "found": "local"}
            return True
        found = self.run.in_registry(self.name, record)
        if found is None:
            return False
        task.meta["settled"] = self.run.settle(self.name, found, record.key)
        return True

    def _pinned(self, task: Any) -> bool:
        repository = cache.repository_of(self.run.project.plans[self.name].reference)
        reference = f"{repository}@{self.run.pins[self.name]}"
        try:
            found = self.run.lookups.find(reference) if self.run.lookups else None
        except RegistryError as err:
            found, task.meta["pin_error"] = None, f"pin {reference}: {err}"
        if found is None:
            task.meta.setdefault("pin_error", f"pin {reference}: the registry has no such "
                                 "image; correct pin= or push it first")
            return False
        task.meta["settled"] = self.run.settle(self.name, found, None)
        return True


def _check_storage(run: Run) -> None:
    """A storage that cannot be listed stops the run before any build, with one message
    (the first up-to-date check comes before every build)."""
    try:
        run.storage.check()
    except StorageError as err:
        raise SystemExit(f"error: cannot read local image storage: {err}\n"
                         "  fix: check `buildah_args` under settings in "
                         f"{run.project.config.path} (--root, --runroot, --storage-driver) "
                         "and that `buildah images` works with them") from None


class PushUpToDate:
    """Up to date when the registry holds the image under its key's tag and the user's
    tag names that manifest (an image taken by `pin=` is someone else's to push)."""

    def __init__(self, run: Run, name: str) -> None:
        self.run, self.name = run, name

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:
        built = self.run.images.get(self.name, {})
        if self.name in self.run.pins:
            task.meta["settled"] = {"digest": built.get("digest"), "attempts": 0}
            return True
        assert self.run.lookups is not None  # a run with pushes asks the registry
        plan = self.run.project.plans[self.name]
        reason = builder.push_stale_reason(plan, built, self.run.lookups)
        task.meta["reason"] = reason
        if reason is None:
            digest = self.run.lookups.find(plan.reference).manifest.digest
            task.meta["settled"] = {"digest": digest, "attempts": 0}
        return reason is None
