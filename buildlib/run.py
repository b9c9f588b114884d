"""One doit run: its command line read once, the images it selects, the run lock, signals.

A run is shaped by doit command-line variables (`doit build images=nova profile=x`): each
is a row of `variables.VARIABLES` (their table, and docs/reference/variables.md), read
through `variables` alone.

A run that builds, pushes or cleans holds `{build_dir}/.lock` (an `flock`, which the
kernel releases when the process ends, even by `kill -9`): a second run on the same
tree stops at once, naming the first. SIGINT and SIGTERM only set a flag; the running
builds see it, kill their own buildah process groups and fail as "interrupted".
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import json
import math
import os
import re
import shlex
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildlib import (
    build_access,
    buildah,
    builder,
    cache,
    config,
    dispatch,
    doit_seam,
    expanders,
    graph,
    processes,
    project,
    pushpool,
    storage,
    storagelock,
    variables,
)
from buildlib.errors import InputError
from buildlib.services import Services

LOCK_FILE = ".lock"
UNFINISHED_MARK = ".running"  # a building run's; left behind only by a run that was killed
# doit commands that change the tree's state or images, and so take the lock.
CHANGING_COMMANDS = {"run", "clean", "forget", "ignore", "reset-dep", "strace"}
# tasks that start no buildah themselves (`watch` starts `build` runs, each with its lock)
READ_ONLY_TASKS = {"status", "graph", "watch", "export", "render", "merge"}
STORAGE_FREE_TASKS = {"export", "render", "merge"}  # never read local image storage


@dataclass(frozen=True)
class Invocation:
    """doit's command line, read once: the command, the tasks it names, `-n` jobs."""

    command: str = "run"  # `doit build` is doit's `run` command with task `build`
    tasks: tuple[str, ...] = ()
    jobs: int | None = None
    words: tuple[str, ...] = field(default=(), compare=False)
    program: str = field(default="doit", compare=False)  # or `imagebake`

    @property
    def runs_tasks(self) -> bool:
        return self.command == "run"

    @property
    def builds(self) -> bool:
        """Whether it may start buildah to build or push (`doit status` does not)."""
        return self.runs_tasks and not (self.tasks and set(self.tasks) <= READ_ONLY_TASKS)

    @property
    def reads_storage(self) -> bool:
        """Whether its up-to-date checks list local images (`doit export` does not)."""
        return self.runs_tasks and not (self.tasks and set(self.tasks) <= STORAGE_FREE_TASKS)

    @property
    def pushes(self) -> bool:
        """Whether it runs a push task (`doit push`, `doit push:nova-api`), whose up-to-date
        checks ask the registry."""
        return self.runs_tasks and any(t == "push" or t.startswith("push:") for t in self.tasks)

    @property
    def may_push(self) -> bool:
        """Whether a push task may run or be shown: anything but `build` or `build:<image>`
        runs (doit's `list` and `info` show every task)."""
        return not self.runs_tasks or not all(
            task == "build" or task.startswith("build:") for task in self.tasks or ("build",))

    @property
    def watches(self) -> bool:
        return self.runs_tasks and "watch" in self.tasks

    @property
    def where(self) -> Path:
        """The folder the command was run in (doit has changed into dodo.py's since)."""
        return doit_seam.user_workdir()

    def rerun_as(self, task: str) -> list[str]:
        """This command line as a child process runs it, with `watch` replaced by `task`."""
        module = "buildlib.cli" if self.program == "imagebake" else "doit"
        return [sys.executable, "-m", module,
                *(task if word == "watch" else word for word in self.words)]

    @property
    def takes_lock(self) -> bool:
        return self.command in CHANGING_COMMANDS and (self.command != "run" or self.builds)


def parse_argv(argv: list[str], program: str = "doit") -> Invocation:
    """Read argv as doit reads it: its loader options (`-f dodo.py`) first, variables
    (`config=x`) aside; the first word left names the command, `run` when it names none."""
    rest = doit_seam.strip_loader_options(argv)
    words = [arg for arg in rest if arg.startswith("-") or "=" not in arg]
    command = "run"
    if words and words[0] in doit_seam.command_names():
        command, words = words[0], words[1:]
    parsed = doit_seam.run_options(words) if command == "run" else None
    if parsed is None:
        return Invocation(command, words=tuple(argv), program=program)
    jobs, tasks = parsed
    return Invocation(command, tuple(tasks), jobs, tuple(argv), program)


@dataclass(frozen=True)
class Run:
    """One doit run: the project, the images selected, and the run's options.

    `images` holds what each image's task settled in this run (its ID and key: saved by
    an up-to-date check or returned by a build), which is all a child needs of its
    parent: no `getargs`, so a child does not depend on the rest of its parent's result.
    """

    project: project.Project
    selection: graph.Selection
    storage: storage.Storage
    services: Services  # buildah and the registry clients, made once per run
    fail_fast: bool = False
    verbose: bool = False
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    invocation: Invocation = Invocation()
    lookups: cache.Lookups | None = None  # the registry, when this run asks it
    from_registry: bool = False  # cache=registry: look images up before building them
    pins: dict[str, str] = field(default_factory=dict)  # pin=NAME@DIGEST: taken as is
    warnings: set[str] = field(default_factory=set)

    @functools.cached_property
    def bases(self) -> cache.BaseImages:
        """The roots' base images' IDs (storage, else the registry with cache=registry)."""
        return cache.BaseImages(self.storage, self.services.client, self.from_registry,
                                self.services.budget)

    @functools.cached_property
    def push_pool(self) -> pushpool.PushPool:
        """The run's pool of pushes (`settings.push_jobs` at once)."""
        return pushpool.PushPool(self.project.config.settings.push_jobs)

    @functools.cached_property
    def last_report(self) -> dict[str, Any] | None:
        """The report.json of the run before, read once for dispatch and the reporter."""
        return dispatch.last_report(self.project.report_path)

    @property
    def jobs(self) -> int:
        return self.invocation.jobs or self.project.config.settings.jobs

    @functools.cached_property
    def tree_references(self) -> dict[str, str]:
        """The reference of each image of this tree -> its name."""
        return {plan.reference: name for name, plan in self.project.plans.items()}

    def read_tasks(self, name: str) -> list[str]:
        """The build tasks of this run's images that this image's build reads (by
        reference: COPY --from, a later stage's FROM), which it waits for."""
        tree = self.tree_references
        return [f"build:{tree[image]}" for image in self.project.plans[name].reads
                if tree.get(image) in self.selection.selected]

    def parent_task(self, name: str) -> str | None:
        parent = self.selection.parent_dependency(self.project.graph, name)
        return f"build:{parent}" if parent else None

    def stands_on(self, name: str, saved_of: Callable[[str], Mapping[str, Any]] | None = None
                  ) -> dict[str | None, str | None] | str:
        """The ID of the image each platform of this image is built on (`None`: a native
        image's one platform; the ID None: `FROM scratch`), or why it cannot be known
        (starting "cannot" when the build must fail): its parent as its task settled it in
        this run (outside a run, as in `doit info`, as it recorded it: `saved_of(task)`),
        with skip_parents as local storage holds it, or for a root its base image."""
        plan = self.project.plans[name]
        platforms = plan.platforms or (None,)
        if plan.parent is None:
            base_id = self.bases.id_of(plan.base)
            if plan.base and base_id is None:
                return f"base image '{plan.base}' is not in local storage (pulled first)"
            return dict.fromkeys(platforms, base_id)
        parent_task = self.parent_task(name)
        if parent_task is None:
            return self._parent_in_storage(name)
        if plan.parent in self.images:
            values: Mapping[str, Any] = self.images[plan.parent]
        elif saved_of is not None:
            values = saved_of(parent_task)
        else:
            return f"parent '{plan.parent}' would be rebuilt"
        ids = {p: (builder.per_platform(values).get(p) or {}).get("id") for p in platforms}
        if not all(ids.values()):
            return f"parent '{plan.parent}' has no image of {', '.join(map(str, platforms))}"
        return ids

    def _parent_in_storage(self, name: str) -> dict[str | None, str | None] | str:
        """skip_parents: the parent's image (of each platform) as local storage holds it."""
        plan = self.project.plans[name]
        reference = self.project.plans[plan.parent].reference
        ids: dict[str | None, str | None] = (
            self.services.buildah.manifest_platform_ids(reference) if plan.platforms
            and self.storage.id_of(reference) else {None: self.storage.id_of(reference)})
        missing = [p for p in plan.platforms or (None,) if not ids.get(p)]
        if missing:
            return (f"cannot build {name}: its parent image {reference} is not in local "
                    f"storage" + (f" for {', '.join(map(str, missing))}" if plan.platforms
                                  else "") + f"; build it first (`doit build:{plan.parent}`)"
                    " or drop skip_parents")
        return {p: ids[p] for p in plan.platforms or (None,)}

    def parent_in_storage(self, name: str) -> str | None:
        """The ID of the parent image as local storage holds it now (skip_parents)."""
        parent = self.project.plans[name].parent
        return self.storage.id_of(self.project.plans[parent].reference) if parent else None

    def likely_builds(self) -> set[str]:
        """The selected images local storage holds no image of the current key for, judged
        from the roots as a build judges them (doit's state aside): what this run is
        expected to build, for its estimate of the time left."""
        names = [name for name in self.project.graph.order() if name in self.selection.selected]
        walked = self.project.keys_from_roots(
            names, lambda name, key: self.storage.with_key(key), self.parent_in_storage,
            self.base_id, self.bases.id_of)
        return {name for name, _, image_id in walked if image_id is None}

    def base_id(self, name: str) -> str | None:
        return self.bases.id_of(self.project.plans[name].base)

    def settle(self, name: str, values: Mapping[str, Any]) -> None:
        """What this image's task settled on (its ID and key: built, found, pinned): what
        its children are judged and built on, and its push pushes. The one writer of
        `images`."""
        self.images[name] = dict(values)

    def ask_for_children(self, name: str) -> None:
        """Once an image is built, its children's keys are known: ask the registry now."""
        if not self.from_registry or self.lookups is None:
            return
        for child in self.project.graph.children[name]:
            if child in self.selection.selected and not self.project.plans[child].platforms:
                plan = self.project.plans[child]
                read = plan.read_ids(self.bases.id_of)
                if isinstance(read, str):
                    continue
                key = plan.record_on(self.images[name]["id"], images=read).key
                if not self.storage.with_key(key):
                    self.lookups.ask(plan.key_reference(key))

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.add(message)
            print(message, file=sys.stderr)

    def finish(self) -> None:
        """The end of a run, after its summary: an interrupted run exits 128 + signal; a
        run whose state doit could not save says so and exits 1."""
        signum = processes.stop_signal()
        if signum:
            # doit has saved what finished; leave now, without KeyboardInterrupt's traceback.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + signum)
        if _unsaved_state:
            print(f"error: {self.project.state_file}: doit could not save this run's state: "
                  f"{_unsaved_state[0]}\n  fix: make room or fix what the error names; "
                  "what this run built is not lost: each image is in local storage under "
                  "its key, where the next run finds it instead of building it again",
                  file=sys.stderr)
            sys.exit(1)


class RunError(Exception):
    """This run cannot start: another holds the tree, or build_dir cannot be written."""


# Why doit could not save this run's state. doit saves it when the run ends, before its
# reporter's summary; a full disk there raised a traceback and lost the summary and
# report.json: the error is kept for `Run.finish` instead.
_unsaved_state: list[Exception] = []


def load_run(tree_dir: Path, argv: list[str] | None = None, program: str = "doit") -> Run:
    """The project named by `config=` (default: images.yaml in `tree_dir`, dodo.py's folder
    or the imagebake command's working directory) and the run the other variables ask for.
    Bad input, or a run that cannot start, ends the process here with one message and
    status 1, before doit could print a traceback; Ctrl-C while loading (a slow download)
    with one line and status 130. Only a run that builds makes sources (downloads, clones,
    archives), and only those of the images it builds."""
    invocation = parse_argv(sys.argv[1:] if argv is None else argv, program)
    with _terminated_while_loading():
        return _load_run(tree_dir, invocation)


class _Terminated(Exception):
    """SIGTERM while the tree loads (a download): the loading code's `finally` blocks run."""


@contextlib.contextmanager
def _terminated_while_loading() -> Iterator[None]:
    """SIGTERM while loading ends the process with one line and status 143, after the
    loading code cleaned up (a download's partial file), as Ctrl-C does."""
    def terminated(signum: int, frame: Any) -> None:
        raise _Terminated

    try:
        previous = signal.signal(signal.SIGTERM, terminated)
    except ValueError:  # not the main thread: nothing to catch there
        yield
        return
    try:
        yield
    except _Terminated:
        print("terminated while loading the tree (SIGTERM); nothing was built", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    finally:
        if signal.getsignal(signal.SIGTERM) is terminated:
            signal.signal(signal.SIGTERM, previous)


def _load_run(tree_dir: Path, invocation: Invocation) -> Run:
    try:
        proj = _load_project(tree_dir, fetch=False)
        services = services_of(proj)
        proj = proj.asking_storage(services.base_triggers)
        pins = _pins(proj)
        selection = _selection(proj, frozenset(pins))
        _check_platform_selection(proj, selection.selected)
        building = _building(proj, selection, invocation) if invocation.builds else set()
        if build_access.builds_images(invocation.tasks):
            build_access.check(proj.config, ((n, proj.plans[n].access) for n in sorted(building)))
        if invocation.takes_lock:
            _take_over(proj, services.buildah, invocation)
        if any(proj.plans[name].context.fetches for name in building):
            # the sources of the images it builds, and of no other (under the lock)
            proj = _load_project(tree_dir, fetch=building).asking_storage(
                services.base_triggers)
        from_registry = _cache_mode(proj) == "registry"
        strategy = dispatch.chosen_strategy(proj, invocation.jobs or proj.config.settings.jobs)
    except (InputError, RunError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # before any build: nothing to stop, nothing to keep
        print("interrupted while loading the tree; nothing was built", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    if invocation.builds and str(variables.value("bases", "")) == "pull":
        _pull_bases(proj, services, selection.selected)
    asks_registry = from_registry or bool(pins) or invocation.pushes
    run = Run(proj, selection, storage.Storage(services.buildah), services,
              fail_fast=variables.flag("fail_fast"), verbose=variables.flag("verbose"),
              invocation=invocation,
              lookups=(cache.Lookups(services.client(), services.budget) if asks_registry
                       else None),
              from_registry=from_registry, pins=pins)
    dispatch.install_for(strategy, proj.graph, selection.selected, run.last_report)
    if invocation.runs_tasks:
        doit_seam.keep_state_save_errors(_unsaved_state)
        if invocation.reads_storage:
            run.storage.prefetch()
        if run.lookups is not None:  # ask the registry while doit loads and builds
            run.lookups.client.prefetch_check()
            if from_registry:
                threading.Thread(target=cache.walk, daemon=True, args=(
                    proj, selection.selected - set(pins), run.storage, run.lookups,
                    run.bases, run.warn)).start()
    if invocation.builds or invocation.watches:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _on_signal)
    return run


def services_of(proj: project.Project) -> Services:
    """The run's services: buildah as settings say, and the registry of the tree's pushes
    (where its first image's reference points) as the default registry client."""
    return Services(proj.config, home=next((p.reference for p in proj.plans.values()), None))


def _pull_bases(proj: project.Project, services: Services,
                selected: frozenset[str] | set[str]) -> None:
    """`bases=pull`: every selected root's base image pulled anew (the run then builds what
    a changed base changed): the "rebuild on today's base" run that security fixes need.
    A base that cannot be pulled stops the run before any build."""
    tree = {plan.reference for plan in proj.plans.values()}  # built here, never pulled
    wanted = sorted({image for name, plan in proj.plans.items() if name in selected
                     for image in (plan.base, *plan.reads) if image and image not in tree})
    listed = storage.Storage(services.buildah)  # (the run lists storage anew, after the pulls)
    for base in wanted:
        try:
            before, after = builder.pull_base(services, base, listed, anew=True)
        except buildah.BuildahError as err:
            print(f"error: cannot pull base image {base!r} (bases=pull): {err}\n  fix: check "
                  f"the FROM line's name, the registry and its credentials, or run without "
                  f"bases=pull to build on the base in local storage", file=sys.stderr)
            sys.exit(1)
        said = "unchanged" if before == after else f"{before or 'not in storage'} -> {after}"
        print(f"pulled base image {base}: {said}")


def _building(proj: project.Project, selection: graph.Selection,
              invocation: Invocation) -> set[str]:
    """The images a building run may build: the selection, or, when it names only
    `build:<image>`/`push:<image>` tasks, those images and their ancestors in it."""
    named = [task.partition(":")[2] for task in invocation.tasks]
    if not invocation.tasks or not all(named):
        return set(selection.selected)
    wanted: set[str] = set()
    for name in named:
        while name in proj.graph.parents and name not in wanted:
            wanted.add(name)
            name = proj.graph.parents[name]
    return wanted & selection.selected


def _cache_mode(proj: project.Project) -> str:
    mode = str(variables.value("cache", "") or proj.config.settings.cache)
    if mode not in ("local", "registry"):
        raise InputError(proj.config.path, f"cache={mode}: not a cache",
                         fix="use cache=local or cache=registry")
    return mode


def _pins(proj: project.Project) -> dict[str, str]:
    """`pin=NAME@sha256:DIGEST,...`: images taken from the registry at that digest."""
    pins: dict[str, str] = {}
    for name, digest in _images_at_digests(proj, "pin"):
        if pins.get(name, digest) != digest:
            raise InputError(proj.config.path, f"pin= names two digests for {name}: "
                             f"{pins[name]} and {digest}", image=name,
                             fix=f"pin {name} once")
        pins[name] = digest
    return pins


def _images_at_digests(proj: project.Project, variable: str) -> list[tuple[str, str]]:
    """`VARIABLE=NAME@sha256:DIGEST,...` as (name, digest) pairs."""
    pairs = []
    for word in variables.words(variable):
        name, _, digest = word.partition("@")
        if name not in proj.plans or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise InputError(proj.config.path, f"{variable}={word}: not an image of this "
                             "tree at a digest", image=name if name in proj.plans else None,
                             fix=f"write {variable}=NAME@sha256:<64 hex>, NAME under `images:`")
        pairs.append((name, digest))
    return pairs


def merge_parts(proj: project.Project) -> dict[str, list[str]]:
    """`doit merge`'s `parts=NAME@sha256:DIGEST,...`: for each multi-arch image, the
    digests of its platforms' lists (one each, pushed by `push platform=P`)."""
    parts: dict[str, list[str]] = {}
    for name, digest in _images_at_digests(proj, "parts"):
        if not proj.plans[name].platforms:
            raise InputError(proj.config.path, f"parts={name}@...: {name} has no "
                             "`platforms:`", image=name, fix="merge multi-arch images only")
        parts.setdefault(name, []).append(digest)
    if not parts:
        raise InputError(proj.config.path, "merge needs parts=NAME@sha256:<digest>,... (the "
                         "lists that `push platform=P` pushed, one per platform)",
                         fix="give each platform's list of the image")
    return parts


EXPORT_FORMATS = ("gha", "argo", "gitlab")
DEFAULT_JOB_START = 30.0  # seconds: a fresh runner's start, checkout and install


@dataclass(frozen=True)
class ExportOptions:
    format: str
    out: Path | None  # from the user's directory
    max_jobs: int | None
    job_start: float
    runs_on: tuple[str, ...] | None  # runner labels; None: the format's default
    storage: str  # runner | job | an absolute path
    runners: tuple[tuple[str, tuple[str, ...]], ...]  # platform -> its jobs' runner labels


def export_options(proj: project.Project) -> ExportOptions:
    """`doit export`'s variables; read when it runs, so that other commands ignore them."""
    fmt = str(variables.value("format", "") or "")
    if fmt not in EXPORT_FORMATS:
        raise InputError(proj.config.path, f"export needs format=gha, format=gitlab or "
                         f"format=argo (got {fmt!r})", fix="`doit export format=gha` (GitHub "
                         "Actions), `format=gitlab` (GitLab CI) or `format=argo` (Argo "
                         "Workflows)")
    out = variables.value("out")
    path = (doit_seam.user_workdir() / out).resolve() if out else None
    if path is not None and path.is_dir():
        raise InputError(proj.config.path, f"out={out!r} is a folder", fix="give out= the "
                         "path of the file to write, e.g. out=.github/workflows/images.yml")
    return ExportOptions(fmt, path, _number(proj, "max_jobs", int, None, minimum=1),
                         _number(proj, "job_start", float, DEFAULT_JOB_START, minimum=0),
                         _runner_labels(proj, "runs_on", variables.value("runs_on", "")),
                         _storage(proj), _platform_runners(proj))


def _runner_labels(proj: project.Project, variable: str, text: str, separator: str = ","
                   ) -> tuple[str, ...] | None:
    text = str(text or "")
    if not text:
        return None
    labels = tuple(label.strip() for label in text.split(separator))
    if not all(labels) or any(re.search(r"[\s{}\x00-\x1f,=+]", label) for label in labels):
        raise InputError(proj.config.path, f"{variable}={text!r} is not a list of runner "
                         "labels", fix="give labels separated by commas, e.g. "
                         "runs_on=self-hosted,linux (in runners=: by +, e.g. "
                         "runners=linux/arm64=self-hosted+arm64)")
    return labels


def _platform_runners(proj: project.Project) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """`runners=linux/arm64=my-arm,...`: the runner labels (joined by `+`) of each
    platform's jobs."""
    known = {p for plan in proj.plans.values() for p in plan.platforms}
    result = []
    for word in variables.words("runners"):
        platform, _, labels = word.partition("=")
        if platform not in known:
            raise InputError(proj.config.path, f"runners={word}: {platform!r} is none of the "
                             f"tree's platforms ({', '.join(sorted(known)) or 'none'})",
                             fix="write runners=PLATFORM=LABEL[+LABEL],... for platforms "
                             "under `platforms:`")
        result.append((platform, _runner_labels(proj, "runners", labels, "+") or ()))
        if not result[-1][1]:
            raise InputError(proj.config.path, f"runners={word}: no labels",
                             fix="write runners=linux/arm64=my-arm-runner")
    return tuple(result)


def _storage(proj: project.Project) -> str:
    text = str(variables.value("storage", "") or "runner")
    if text not in ("runner", "job") and not text.startswith("/"):
        raise InputError(proj.config.path, f"storage={text!r} is not runner, job or an "
                         "absolute path", fix="storage=runner (the runner's default storage), "
                         "storage=job (one per job) or storage=/a/folder (shared by the "
                         "runner's jobs)")
    return text


def _for_platform(proj: project.Project) -> project.Project:
    """With `platform=os/arch`: the tree as one runner of that platform builds it."""
    wanted = str(variables.value("platform", "") or "")
    if not wanted:
        return proj
    known = {p for plan in proj.plans.values() for p in plan.platforms}
    if wanted not in known:
        raise InputError(proj.config.path, f"platform={wanted!r} is none of the tree's "
                         f"platforms ({', '.join(sorted(known)) or 'none: no `platforms:`'})",
                         fix="name one of the platforms under `platforms:`")
    return proj.one_platform(wanted)


def _check_platform_selection(proj: project.Project, selected: frozenset[str]) -> None:
    """A run for one platform builds only images of that platform."""
    wanted = str(variables.value("platform", "") or "")
    other = sorted(name for name in selected if wanted and not proj.plans[name].one_of)
    if other:
        raise InputError(proj.config.path, f"platform={wanted} selects {', '.join(other)}, "
                         f"which {'is' if len(other) == 1 else 'are'} not built for {wanted}",
                         image=other[0], fix="select only images of that platform (images=)")


def _number(proj: project.Project, name: str, kind: type, default: Any, minimum: float) -> Any:
    text = variables.value(name)
    if text is None or text == "":
        return default
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < minimum:
        raise InputError(proj.config.path, f"{name}={text!r} is not a number >= {minimum:g}",
                         fix=f"give {name} a {'whole ' if kind is int else ''}number")
    return value


def _end_building_run(unfinished: Path) -> None:
    """A run that killed no build leaves nothing behind: the next run need not look."""
    if not processes.killed_any():
        unfinished.unlink(missing_ok=True)


def _on_signal(signum: int, frame: Any) -> None:
    """Only records the signal: no locks, no waiting, so a second signal cannot hang."""
    processes.request_stop(signum)


def _take_over(proj: project.Project, buildah_: buildah.Buildah,
               invocation: Invocation) -> None:
    """Lock build_dir for this run; set aside unreadable state; clean up after a killed run."""
    build_dir = proj.build_dir
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
        lock_build_dir(build_dir, invocation)
        storagelock.share(buildah_)  # another tree's prune waits for this run
        unfinished = build_dir / UNFINISHED_MARK
        if unfinished.exists():
            _clean_up_after_killed_run(proj, buildah_)
        if invocation.builds:
            unfinished.write_text(f"{os.getpid()}\n")
            atexit.register(_end_building_run, unfinished)  # os._exit skips it: mark kept
        set_aside_unreadable_state(proj.state_file)
    except OSError as err:
        raise RunError(f"cannot write in {build_dir}: {err.strerror or err}; free some "
                       "space there or choose a writable settings.build_dir") from None


_LOCK_FDS: list[int] = []  # kept open for the life of the process


def lock_build_dir(build_dir: Path, invocation: Invocation) -> None:
    """Take `{build_dir}/.lock` for this process, or raise RunError naming its holder."""
    path = build_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise RunError(f"another run is using {build_dir}: {holder}; wait for it to end "
                       "(one run per tree at a time)") from None
    os.ftruncate(fd, 0)
    record = {"pid": os.getpid(), "command": shlex.join([invocation.program, *invocation.words])}
    os.write(fd, (json.dumps(record) + "\n").encode())
    _LOCK_FDS.append(fd)


def _read_holder(fd: int) -> str:
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {record['pid']}, `{record['command']}`"
    except (ValueError, KeyError, OSError):
        return "a run that is starting"


def set_aside_unreadable_state(state_file: Path) -> Path | None:
    """Rename doit's state file when sqlite or doit could not read it, with one warning,
    so that the run goes on as if nothing had been built; return the new name."""
    problem = _state_problem(state_file)
    if problem is None:
        return None
    aside = state_file.with_name(state_file.name + ".unreadable")
    state_file.replace(aside)
    print(f"warning: {state_file} is unreadable ({problem}); set aside as {aside.name}. "
          "What earlier runs recorded is lost, so images are checked as never built.",
          file=sys.stderr)
    return aside


def _state_problem(state_file: Path) -> str | None:
    if not state_file.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{state_file}?mode=ro", uri=True)) as db:
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                return check
            tables = {row[0] for row in db.execute("select name from sqlite_master")}
            if "doit" in tables:
                for (data,) in db.execute("select task_data from doit"):
                    json.loads(data)
    except (sqlite3.DatabaseError, ValueError) as err:
        return str(err)
    return None


def _clean_up_after_killed_run(proj: project.Project, buildah_: buildah.Buildah) -> None:
    """The last building run here did not end (kill -9): stop the builds it left running
    and remove their working containers. Only builds of this tree carry its owner mark, and
    no other run of this tree is alive while we hold the lock."""
    stopped = buildah.kill_orphans(proj.owner)
    removed = buildah_.remove_containers_of(proj.owner)
    if stopped or removed:
        print(f"cleaned up after a killed run: stopped {stopped} buildah process group(s), "
              f"removed {removed} working container(s)", file=sys.stderr)


def _load_project(tree_dir: Path, fetch: bool | set[str]) -> project.Project:
    return _for_platform(project.load(_config_sources(tree_dir), fetch=fetch,
                                      expand=expanders.kolla))


def _config_sources(tree_dir: Path) -> config.Sources:
    """The files `config=` names (`imagebake -c`), each merged on top of those before it,
    else images.yaml in tree_dir with images.override.yaml beside it (as bake: its
    override file counts only when no file is named); and the `set.PATH=VALUE` variables."""
    sets = tuple(variables.assignments())
    named = variables.words("config")
    if not named:
        return config.Sources.default(Path(tree_dir).resolve(), sets)
    # doit has already changed into dodo.py's folder; the user meant their own cwd.
    return config.Sources(tuple((doit_seam.user_workdir() / n).resolve() for n in named), sets)


def _selection(proj: project.Project, pinned: frozenset[str] = frozenset()) -> graph.Selection:
    patterns = variables.words("images")
    for profile in variables.words("profile"):
        if profile not in proj.config.profiles:
            known = ", ".join(sorted(proj.config.profiles)) or "none declared"
            raise InputError(proj.config.path, f"profile '{profile}' is not declared "
                             f"(known: {known})", fix="add it under `profiles:` or use one "
                             "of those names")
        patterns += proj.config.profiles[profile]
    excludes = proj.config.settings.excludes + variables.words("exclude")
    try:
        return graph.select(proj.graph, patterns, excludes, variables.flag("skip_parents"),
                            pinned)
    except re.error as err:
        raise InputError(proj.config.path, f"bad pattern on the command line: {err}",
                         fix="correct `images=` or `exclude=` (Python `re` syntax)") from None
