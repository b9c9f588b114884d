"""One doit run = project + options + state + services: its command line read once, the
images it selects, the run lock taken, signals.

A run is shaped by doit command-line variables (`doit build images=nova profile=x`): each
is a field of `options.Options` (their model, and docs/reference/variables.md), read from
the command line once, when the run loads.

A run that builds, pushes or cleans takes over its tree (`takeover`: one run per tree at
a time). SIGINT and SIGTERM only set the run's stop request (`Services.stop`); the running
builds see it, kill their own buildah process groups and fail as "interrupted".
"""

from __future__ import annotations

import contextlib
import functools
import gc
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
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
    project,
    prune,
    pulls,
    pushpool,
    standing,
    storage,
)
from buildlib.errors import InputError
from buildlib.invocation import Invocation, parse_argv
from buildlib.options import (
    Options,
    cache_mode,
    check_platform_selection,
    pin_digests,
    platform_tree,
)
from buildlib.services import Services
from buildlib.settled import Settled
from buildlib.takeover import RunError, take_over


@dataclass
class RunState:
    """What a run keeps beside what its images settled on (`Run.images`)."""

    remembered: set[str] = field(default_factory=set)  # images whose keys it recorded
    # held by a build while it appends its keys to the tree's record (`prune.remember`)
    record_lock: threading.Lock = field(default_factory=threading.Lock)
    # Why doit could not save this run's state. doit saves it when the run ends, before its
    # reporter's summary; a full disk there raised a traceback and lost the summary and
    # report.json: the error is kept for `Run.finish` instead.
    unsaved: list[Exception] = field(default_factory=list)
    lock: int | None = None  # the open `{build_dir}/.lock`, held for the process's life


@dataclass(frozen=True)
class Run:
    """One doit run: the project, the images selected, the run's options (the command
    line's variables), its state and its services.

    `images` holds what each image's task settled in this run (its ID and key: saved by
    an up-to-date check or returned by a build), which is all a child needs of its
    parent: no `getargs`, so a child does not depend on the rest of its parent's result.
    """

    project: project.Project
    selection: graph.Selection
    storage: storage.Storage
    services: Services  # buildah and the registry clients, made once per run
    options: Options = Options()  # the command line's variables
    state: RunState = field(default_factory=RunState)
    images: dict[str, Settled] = field(default_factory=dict)
    invocation: Invocation = Invocation()
    lookups: cache.Lookups | None = None  # the registry, when this run asks it
    from_registry: bool = False  # cache=registry: look images up before building them
    pins: dict[str, str] = field(default_factory=dict)  # pin=NAME@DIGEST: taken as is
    fresh: frozenset[str] = frozenset()  # no_cache=1: built afresh though current
    warnings: set[str] = field(default_factory=set)

    @functools.cached_property
    def bases(self) -> cache.BaseImages:
        """The roots' base images' IDs (storage, else the registry with cache=registry)."""
        return cache.BaseImages(self.storage, self.services.client, self.from_registry,
                                self.services.budget)

    @functools.cached_property
    def bench(self) -> builder.Bench:
        """What this run's builds work with beside each image's plan."""
        return bench_of(self.project, self.services, self.storage, echo=self.options.verbose)

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

    def stands_on(self, name: str, saved_of: Callable[[str], Settled | None] | None = None
                  ) -> standing.Ground | standing.Blocked:
        """What this image is built on (`standing.stands_on`): its parent as its task
        settled it in this run (outside a run, as in `doit info`, as it recorded it:
        `saved_of(task)`), with skip_parents as local storage holds it, or for a root its
        base image."""
        return standing.stands_on(self.project.plans[name], self._parent(name, saved_of),
                                  self.bases.id_of)

    def _parent(self, name: str, saved_of: Callable[[str], Settled | None] | None
                ) -> standing.Parent:
        parent = self.project.plans[name].parent
        if parent is None:
            return None
        parent_task = self.parent_task(name)
        if parent_task is None:
            return self._parent_in_storage(name)
        if parent in self.images:
            return self.images[parent].ids()
        if saved_of is None:
            return None
        return (saved_of(parent_task) or Settled(None, None)).ids()

    def _parent_in_storage(self, name: str) -> standing.Parent:
        """skip_parents: the parent's image (of each platform) as local storage holds it."""
        plan = self.project.plans[name]
        reference = self.project.plans[plan.parent].reference
        ids: dict[str | None, str | None] = (
            self.services.buildah.manifest_platform_ids(reference) if plan.platforms
            and self.storage.id_of(reference) else {None: self.storage.id_of(reference)})
        missing = [p for p in plan.platforms or (None,) if not ids.get(p)]
        if missing:
            return standing.Blocked(
                f"cannot build {name}: its parent image {reference} is not in local "
                "storage" + (f" for {', '.join(map(str, missing))}" if plan.platforms
                             else "") + f"; build it first (`doit build:{plan.parent}`)"
                " or drop skip_parents", fatal=True)
        return ids

    def likely_builds(self) -> set[str]:
        """The selected images local storage holds no image of the current key for, judged
        from the roots as a build judges them (doit's state aside), and those no_cache=1
        builds afresh: what this run is expected to build, for its estimate of the time
        left."""
        names = self.project.graph.ordered(self.selection.selected)

        def outside(name: str) -> standing.Parent:  # skip_parents: as storage holds it now
            parent = self.project.plans[name].parent
            return None if self.project.plans[name].platforms else {
                None: self.storage.id_of(self.project.plans[parent].reference)}

        steps = standing.walk(self.project.plans, names, self.bases.id_of,
                              lambda name, records: self.storage.with_keys(records), outside)
        return {step.name for step in steps if not step.found} | self.fresh

    def settle(self, name: str, settled: Settled) -> None:
        """What this image's task settled on (built, found, pinned): what its children are
        judged and built on, and its push pushes. The one writer of `images`."""
        self.images[name] = settled

    def keep_built(self, name: str, settled: Settled) -> None:
        """An image its build action built or found by its key: settled, its keys recorded
        as this tree's (prune keeps them), and its children's keys asked of the registry."""
        self.settle(name, settled)
        prune.remember(self.project, name, settled, self.state.record_lock)
        self.state.remembered.add(name)
        self.ask_for_children(name, settled)

    def ask_for_children(self, name: str, settled: Settled) -> None:
        """Once an image is built (`settled`), its children's keys are known: ask the
        registry now. (Each selected child stands on it: its parent's task.)"""
        if not self.from_registry or self.lookups is None:
            return
        for child in self.project.graph.children[name]:
            plan = self.project.plans[child]
            if child not in self.selection.selected or plan.platforms:
                continue
            ground = standing.stands_on(plan, settled.ids(), self.bases.id_of)
            if isinstance(ground, standing.Ground):
                records = ground.records(plan)
                if not self.storage.with_keys(records)[None]:
                    self.lookups.ask(plan.key_reference(records[None].key))

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.add(message)
            print(message, file=sys.stderr)

    def finish(self) -> int | None:
        """The end of a run, after its summary: the status its process ends with (None:
        as doit says). An interrupted run ends with 128 + signal; a run whose state doit
        could not save says so and ends with 1. (The caller ends the process.)"""
        signum = self.services.stop.signal
        if signum:
            return 128 + signum
        if self.state.unsaved:
            print(f"error: {self.project.state_file}: doit could not save this run's state: "
                  f"{self.state.unsaved[0]}\n  fix: make room or fix what the error names; "
                  "what this run built is not lost: each image is in local storage under "
                  "its key, where the next run finds it instead of building it again",
                  file=sys.stderr)
            return 1
        return None


def load_run(tree_dir: Path, argv: list[str] | None = None, program: str = "doit") -> Run:
    """The project named by `config=` (default: images.yaml in `tree_dir`, dodo.py's folder
    or the imagebake command's working directory) and the run the other variables ask for.
    Bad input, or a run that cannot start, ends the process here with one message and
    status 1, before doit could print a traceback; Ctrl-C while loading (a slow download)
    with one line and status 130. Only a run that builds makes sources (downloads, clones,
    archives), and only those of the images it builds."""
    invocation = parse_argv(sys.argv[1:] if argv is None else argv, program)
    with _terminated_while_loading():
        run = _load_run(tree_dir, invocation)
    # The loaded tree lives as long as the process: kept out of the cyclic collector, it is
    # not walked again by each collection nor at exit (a no-op of 188 images: about 9%).
    gc.freeze()
    return run


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
        options = Options.read()
        proj = _load_project(tree_dir, options, fetch=False)
        services = services_of(proj)
        services.open_keys(signs=invocation.pushes)
        proj = proj.asking_storage(services.base_triggers)
        pins = pin_digests(proj, options)
        selection = _selection(proj, options, frozenset(pins))
        check_platform_selection(proj, options, selection.selected)
        building = _building(proj, selection, invocation) if invocation.builds else set()
        if build_access.builds_images(invocation.tasks):
            build_access.check(proj.config, ((n, proj.plans[n].access) for n in sorted(building)))
        state = RunState()
        if invocation.takes_lock:
            state.lock = take_over(proj, services, invocation)
        if any(proj.plans[name].context.fetches for name in building):
            # the sources of the images it builds, and of no other (under the lock)
            proj = _load_project(tree_dir, options, fetch=building).asking_storage(
                services.base_triggers)
        from_registry = cache_mode(proj, options) == "registry"
        strategy = dispatch.chosen_strategy(proj, invocation.jobs or proj.config.settings.jobs,
                                            options.dispatch)
    except (InputError, RunError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # before any build: nothing to stop, nothing to keep
        print("interrupted while loading the tree; nothing was built", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    if invocation.builds and options.bases == "pull":
        _pull_bases(proj, services, selection.selected)
    asks_registry = from_registry or bool(pins) or invocation.pushes
    run = Run(proj, selection, storage.Storage(services.buildah), services,
              options=options, state=state, invocation=invocation,
              lookups=(cache.Lookups(services.client(), services.budget, services.trusted)
                       if asks_registry else None),
              from_registry=from_registry, pins=pins,
              fresh=selection.selected - set(pins) if options.no_cache else frozenset())
    dispatch.install_for(strategy, proj.graph, selection.selected, run.last_report)
    if invocation.runs_tasks:
        doit_seam.keep_state_save_errors(state.unsaved)
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
            # ignored on entry (a background job of a script, nohup): left so, as make does
            if signal.getsignal(sig) is not signal.SIG_IGN:
                signal.signal(sig, services.stop.handle)
    return run


def services_of(proj: project.Project) -> Services:
    """The run's services: buildah as settings say, and the registry of the tree's pushes
    (where its first image's reference points) as the default registry client."""
    return Services(proj.config, home=next((p.reference for p in proj.plans.values()), None))


def bench_of(proj: project.Project, services: Services,
             listed: storage.Storage | None = None, echo: bool = False) -> builder.Bench:
    """What builds of this tree work with beside each image's plan (`listed`: the run's
    local storage; default: a listing of its own)."""
    return builder.Bench(services, listed or storage.Storage(services.buildah),
                         proj.config.root, proj.owner, echo=echo)


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
            before, after = pulls.pull_base(services, base, listed, anew=True)
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


def _load_project(tree_dir: Path, options: Options, fetch: bool | set[str]
                  ) -> project.Project:
    return platform_tree(project.load(_config_sources(tree_dir, options),
                                               fetch=fetch, expand=expanders.kolla), options)


def _config_sources(tree_dir: Path, options: Options) -> config.Sources:
    """The files `config=` names (`imagebake -c`), each merged on top of those before it,
    else images.yaml in tree_dir with images.override.yaml beside it (as bake: its
    override file counts only when no file is named); and the `set.PATH=VALUE` variables."""
    named, sets = options.config, options.sets
    if not named:
        return config.Sources.default(Path(tree_dir).resolve(), sets)
    # doit has already changed into dodo.py's folder; the user meant their own cwd.
    return config.Sources(tuple((doit_seam.user_workdir() / n).resolve() for n in named), sets)


def _selection(proj: project.Project, options: Options, pinned: frozenset[str] = frozenset()
               ) -> graph.Selection:
    patterns = list(options.images)
    for profile in options.profile:
        if profile not in proj.config.profiles:
            known = ", ".join(sorted(proj.config.profiles)) or "none declared"
            raise InputError(proj.config.path, f"profile '{profile}' is not declared "
                             f"(known: {known})", fix="add it under `profiles:` or use one "
                             "of those names")
        patterns += proj.config.profiles[profile]
    excludes = proj.config.settings.excludes + list(options.exclude)
    try:
        return graph.select(proj.graph, patterns, excludes, options.skip_parents,
                            pinned)
    except re.error as err:
        raise InputError(proj.config.path, f"bad pattern on the command line: {err}",
                         fix="correct `images=` or `exclude=` (Python `re` syntax)") from None
