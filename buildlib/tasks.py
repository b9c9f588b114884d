"""The only module that knows doit's task dicts: a loaded project -> doit tasks.

Task creators are small generators of plain dicts, as in pydoit's own code. A build
action (`building.build`) returns what the image settled on as the task's saved values; a
child reads its parent's ID from the run (`Run.images`, not `getargs`, which would make it
depend on the parent's whole result), and `ImageUpToDate` compares the current key with
the saved. doit's saved values are plain dicts here only: `settled.Settled` elsewhere.

The run itself (command line, selection, lock, signals) is `buildlib.run`'s.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from buildlib import (
    build_access,
    buildah,
    builder,
    building,
    cache,
    config,
    config_load,
    dispatch,
    keys,
    pictures,
    processes,
    project,
    prune,
    publish,
    report,
    sources,
)
from buildlib.buildah import BuildahError, command_line, error_line
from buildlib.doit_seam import SavedValuesCalculator
from buildlib.errors import InputError
from buildlib.options import export_options, merge_parts, prune_keep
from buildlib.registry import RegistryError
from buildlib.run import Run
from buildlib.settled import How, Settled
from buildlib.verdict import MISSING_SOURCES_FIX, Outcome, Verdict, judge

RESOLVED_FILE = "images.lock.json"


def namespace(run: Run) -> dict[str, Any]:
    """What doit loads tasks from, for dodo.py and the `imagebake` command alike:
    DOIT_CONFIG and one `task_<name>` creator per entry of `creators`."""
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
        "reporter": _pooled_pushes(run, report.reporter_for(
            run.project, run.selection, run.jobs, lambda: _finish(run), run.likely_builds,
            run.last_report, stop=run.services.stop)),
    }


def _command(basename: str, doc: str, action: Callable[..., Any], *args: Any) -> dict[str, Any]:
    """A task that runs each time it is asked for, its output on the terminal."""
    return {"basename": basename, "doc": doc, "actions": [(action, list(args))],
            "uptodate": [False], "verbosity": 2}


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
        "task_dep": ([parent_task] if parent_task else []) + run.read_tasks(name),
        "uptodate": [ImageUpToDate(run, name)],
        "clean": [(_clean, [run, name])],
        "meta": {"image": name, "kind": "build", "log": plan.build_log},
        "verbosity": 2 if run.options.verbose else 1,
    }


def push_tasks(run: Run) -> Iterator[dict[str, Any]]:
    """`push` (every selected image) and one `push:<image>` each, after its build."""
    yield {"basename": "push", "name": None,
           "doc": "build what is stale, then push what the registry lacks"}
    if not run.invocation.may_push:
        return  # a build: its no-op would pay for tasks it never runs
    for name in _selected_in_order(run):
        yield push_task(run, name)


def push_task(run: Run, name: str) -> dict[str, Any]:
    plan = run.project.plans[name]
    pooled = run.project.config.settings.push_jobs > 0  # 0: pushes take build job slots
    return {
        "name": name,
        "doc": f"push {plan.reference}",
        "title": lambda task: _push_title(run, name),
        "actions": [(_hand_over_push, [run, name]) if pooled else (_push, [run, name])],
        "task_dep": [f"build:{name}", *_parent_push(run, name)],
        "uptodate": [PushUpToDate(run, name)],
        "meta": {"image": name, "kind": "push", "log": plan.push_log, "pooled": pooled},
        "verbosity": 2 if run.options.verbose else 1,
    }


def _parent_push(run: Run, name: str) -> list[str]:
    """A signed push states its parent's pushed digest: the parent's push is handed over
    first (the push pool starts pushes in the order they come)."""
    parent = run.project.plans[name].parent
    signs = run.project.config.settings.sign is not None
    return [f"push:{parent}"] if signs and parent in run.selection.selected else []


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


def render_task(run: Run) -> dict[str, Any]:
    """Build nothing; write each selected image's Dockerfile and build context."""
    where = report.display_path(run.project.build_dir)
    return _command("render", f"write {where}/<image>/Dockerfile and context/ of each "
                    "selected image, build nothing (kolla-build --template-only)",
                    _render, run)


def _render(run: Run) -> Any:
    """The Dockerfile as its template renders it (its own FROM line), and its context."""
    names = _selected_in_order(run)
    for name in names:
        plan = run.project.plans[name]
        try:
            plan.own_workdir()
        except project.ForeignFolder as err:
            return TaskFailed(f"cannot render {name}: {err}")
        plan.context.write(plan.dockerfile, plan.context_dir)
    where = report.display_path(run.project.build_dir)
    print(f"wrote the Dockerfile and context of {len(names)} images under {where}/<image>/")
    return None


def config_task(run: Run) -> dict[str, Any]:
    """Build nothing; print images.yaml as merged with images.override.yaml (or the `-c`
    files) and the `--set` values, validated (as `docker buildx bake --print`)."""
    return _command("config", "print the merged images.yaml (override files, --set), "
                    "validated", _print_config, run.project.config)


def _print_config(cfg: config.Config) -> None:
    print(config_load.merged_yaml(cfg), end="")


def watch_task(run: Run) -> dict[str, Any]:
    """Build, then build again on each change to images.yaml, a template or a context file."""
    return _command("watch", "build, then again on each change to images.yaml, a template "
                    "or a context file", _watch, run)


def _watch(run: Run) -> None:
    from buildlib import watch  # imports watchfiles: only watch mode pays for it

    watch.watch(run.project.config.sources, run.invocation.rerun_as("build"),
                run.invocation.where, run.services.stop)


def resolve_task(run: Run) -> dict[str, Any]:
    """write build/images.lock.json: each image's digest, key and ID in the registry"""
    lock = run.project.build_dir / RESOLVED_FILE
    return _command("resolve", f"write {lock.name}: each selected image's digest, key and ID "
                    "in the registry", _resolve, run, lock)


def _resolve(run: Run, lock: Path) -> Any:
    lookups = run.lookups or cache.Lookups(run.services.client(), run.services.budget,
                                             run.services.trusted)
    try:
        resolved = cache.resolve(run.project, _selected_in_order(run), lookups, run.bases,
                                 run.warn)
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


def verify_task(run: Run) -> dict[str, Any]:
    """check each selected image's pushed tag: signature, provenance, current key"""
    return _command("verify", "check each selected image's pushed tag: signed by a key of "
                    "settings.trust, its provenance attached, the image of its current key",
                    _verify, run)


def _verify(run: Run) -> Any:
    from buildlib import verify

    problem = verify.no_keys(run)
    if problem:
        return TaskFailed(f"error: {problem}")
    try:
        rows = verify.verify(run, _selected_in_order(run))
    except RegistryError as err:
        return TaskFailed(f"error: {err}")
    print(verify.table(rows))
    failure = verify.failed(rows)
    return TaskFailed(failure) if failure else None


def merge_task(run: Run) -> dict[str, Any]:
    """make each multi-arch image's manifest list of its platforms' lists (parts=...)"""
    return _command("merge", "make each multi-arch image's manifest list of the lists its "
                    "platforms' runs pushed (push platform=P): parts=NAME@sha256:...,...",
                    _merge, run)


def _merge(run: Run) -> Any:
    """Each image's platforms' lists in one list, under its key's tag and the user's tag."""
    proj = run.project
    lookups = run.lookups or cache.Lookups(run.services.client(), run.services.budget,
                                             run.services.trusted)
    try:
        parts = merge_parts(proj, run.options)
        for name, digests in parts.items():
            repository = cache.repository_of(proj.plans[name].reference)
            found = [lookups.find(f"{repository}@{digest}") for digest in digests]
            absent = [d for d, f in zip(digests, found, strict=True) if f is None]
            if absent:
                return TaskFailed(f"error: {repository} has no {', '.join(absent)}")
            index = publish.merge(proj, run.services, name, [f for f in found if f is not None])
            print(f"merged {proj.plans[name].reference}: {index.digest} "
                  f"({', '.join(proj.plans[name].platforms)})")
    except InputError as err:
        return TaskFailed(f"error: {err}")
    except RegistryError as err:
        return TaskFailed(f"error: {err}")
    return None


def prune_task(run: Run) -> dict[str, Any]:
    """remove the images of old keys from local storage (keep=N dry=1 registry=1)"""
    probe = StateProbe()
    return {
        "basename": "prune",
        "doc": "remove this tree's images of old keys from local storage: keep=N (old keys "
               "to keep per image), dry=1 (list only), registry=1 (the registry's key tags too)",
        "actions": [(_prune, [run, probe])],
        "uptodate": [probe],
        "verbosity": 2,
    }


def _prune(run: Run, probe: StateProbe) -> Any:
    try:
        keep = prune_keep(run.project, run.options)
    except InputError as err:
        return TaskFailed(f"error: {err}")
    error = prune.prune_tree(run, keep, dry=run.options.dry, registry=run.options.registry,
                             saved=lambda name: Settled.from_values(
                                 probe.values(f"build:{name}")))
    return TaskFailed(error) if error else None


def _finish(run: Run) -> None:
    """The end of a run, after its summary: with `settings.keep_keys`, a run that built
    something and in which every selected image was built or found prunes old keys; then
    `Run.finish`."""
    keep = run.project.config.settings.keep_keys
    if (keep is not None and run.state.remembered and not run.services.stop.signal
            and run.selection.selected <= set(run.images)):
        print(f"pruning old keys (settings.keep_keys: {keep})")
        failed = prune.prune_tree(run, keep, dry=False, registry=False,
                                  saved=run.images.get)
        if failed:
            print(f"warning: {failed}", file=sys.stderr)
    processes.exit_as(run.finish())
    if run.push_pool.failed:  # doit saw each push handed over, not how it ended
        sys.exit(1)


TOOL_DIR = Path(__file__).resolve().parents[1]  # the imagebake checkout running now


def export_task(run: Run) -> dict[str, Any]:
    """write the image graph as a GitHub Actions, GitLab CI or Argo Workflows workflow"""
    return _command("export", "write the image graph as a CI workflow: format=gha|gitlab|argo "
                    "[out=PATH max_jobs=N job_start=SECONDS runs_on=LABEL,... "
                    "storage=runner|job|/PATH runners=PLATFORM=LABEL,...]", _export, run, TOOL_DIR)


# Where GitHub and GitLab look for the workflow, in the repository.
WORKFLOW_FILES = {"gha": ".github/workflows/images.yml", "gitlab": ".gitlab-ci.yml"}
UNKNOWN_DURATION = 60.0  # seconds per image when the last report.json has none


def _export(run: Run, tool_dir: Path) -> Any:
    """Partition the selection into jobs, write the workflow, print the estimates."""
    # (and a YAML writer): only this task needs them
    from buildlib import export, export_argo, export_gha, export_gitlab, export_jobs

    proj = run.project
    try:
        options = export_options(proj, run.options)
        root = _repository_root(proj.config.root)
        sub = export_jobs.selected_graph(proj.graph, run.selection.selected)
        folder = _inside(root, proj.config.root, proj, "images.yaml")
        tool = export.Tool(directory=_inside(root, tool_dir, proj, "imagebake (dodo.py)"),
                           config=_config_files(root, proj),
                           lock=_inside(root, proj.build_dir / RESOLVED_FILE, proj,
                                        "build_dir"),
                           secrets=tuple((name, tuple(build_access.engine_secrets(
                               proj.plans[name].access, folder))) for name in sub.parents))
        target = export.Target(proj.config.settings.registry,
                               proj.config.settings.tls_verify,
                               runs_on=options.runs_on or (export.GHA_RUNNER
                                                          if options.format == "gha" else ()),
                               storage=options.storage, runners=options.runners,
                               signs=proj.config.settings.sign is not None,
                               verifies=proj.config.settings.trust is not None)
        unsafe = export.unsafe(tool, target, sub.parents)
        if unsafe:
            raise InputError(proj.config.path, f"cannot write it into a workflow: {unsafe}",
                             fix="rename that folder (or build_dir) without `{{` and "
                             "control characters")
    except InputError as err:
        return TaskFailed(f"error: {err}")
    measured = dispatch.build_seconds(run.last_report)
    durations = {name: measured.get(name, UNKNOWN_DURATION) for name in sub.parents}
    estimates = export_jobs.partition(sub, durations, options.max_jobs, options.job_start)
    try:
        whole = not run.selection.excluded
        platforms = {name: proj.plans[name].platforms for name in sub.parents}
        if options.format == "argo":
            text = export_argo.argo(estimates.chosen, tool, target, whole)
        else:
            exporter = {"gha": export_gha.gha, "gitlab": export_gitlab.gitlab}[options.format]
            text = exporter(estimates.chosen, tool, target, whole, platforms=platforms)
    except ValueError as err:  # jobs the format cannot write
        return TaskFailed(f"error: {proj.config.path}: {err}; export with another max_jobs= "
                          "(or none: one job per image)")
    except ModuleNotFoundError as err:  # hera, for format=argo
        return TaskFailed(f"error: format={options.format} needs {err.name}: install the "
                          "`argo` extra (`pip install '.[argo]'` in the imagebake checkout)")
    path = options.out or (root / WORKFLOW_FILES[options.format]
                           if options.format in WORKFLOW_FILES
                           else proj.build_dir / "argo-workflow.yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    count = len(estimates.chosen.jobs)
    print(f"wrote {report.display_path(path)}: {count} job{'s' * (count != 1)} for "
          f"{len(sub.parents)} images ({len(text.encode()) / 1024:.1f} KiB)")
    known = sum(name in measured for name in sub.parents)
    print(f"estimated makespan (job start {options.job_start:g} s; build times of {known} "
          f"images from the last report.json, {UNKNOWN_DURATION:g} s for the others):")
    for label, part in [(f"this workflow ({count} job{'s' * (count != 1)})", estimates.chosen),
                        (f"one job per image ({len(estimates.per_image.jobs)} jobs)",
                         estimates.per_image),
                        ("one job for everything", estimates.single)]:
        print(f"  {label:<32} {_duration(part.makespan)}")
    return None


def _repository_root(start: Path) -> Path:
    """The git work tree holding images.yaml (the workflow checks it out), else its folder."""
    for folder in [start, *start.parents]:
        if (folder / ".git").exists():
            return folder
    return start


def _config_files(root: Path, proj: project.Project) -> str:
    """images.yaml and the files merged on top of it, as the jobs name them (`-c A,B`); a
    --set is this run's only, never the workflow's."""
    sources = proj.config.sources
    if sources.sets:
        raise InputError(proj.config.path, f"--set {sources.sets[0]!r} is for this run only",
                         fix="put the change in images.override.yaml (or a file named by "
                         "-c) for the workflow's jobs, and export again")
    return ",".join(_inside(root, file, proj, "images.yaml") for file in sources.files)


def _inside(root: Path, path: Path, proj: project.Project, what: str) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix() or "."
    except ValueError:
        raise InputError(proj.config.path, f"{what} at {path} is outside the repository "
                         f"{root} that the workflow checks out",
                         fix="keep imagebake, images.yaml and build_dir in the repository "
                         "that the workflow runs in") from None


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def keygen_task(run: Run) -> dict[str, Any]:
    """Write a new cosign signing key pair beside images.yaml: cosign.key, encrypted with
    COSIGN_PASSWORD, and cosign.pub; never overwrites a key."""
    return _command("keygen", "write cosign.key (encrypted with COSIGN_PASSWORD) and "
                    "cosign.pub beside images.yaml", _keygen, run.project.config.root)


def _keygen(folder: Path) -> Any:
    from buildlib import signing  # its crypto libraries load only when a key is made

    try:
        private, public = signing.write_pair(folder, signing.password())
    except ImportError as err:
        return TaskFailed(f"error: imagebake keygen needs the `sign` extra ({err.name} is "
                          "missing): pip install 'buildlib[sign]'")
    except signing.SigningError as err:
        return TaskFailed(f"error: {err}")
    print(f"wrote {report.display_path(private)} (secret: keep it out of the repository) "
          f"and {report.display_path(public)} (commit it: `cosign verify --key` reads it)")
    return None


def graph_task(run: Run) -> dict[str, Any]:
    """Draw the image graph, coloured by each image's last status: build/graph.dot and
    graph.svg."""
    proj = run.project
    dot = proj.build_dir / "graph.dot"
    return _command("graph", f"draw the image graph, coloured by last status: {dot} and "
                    "graph.svg", _draw_graph, proj, dot)


def _draw_graph(proj: project.Project, dot: Path) -> None:
    last = json.loads(proj.report_path.read_text()) if proj.report_path.exists() else None
    svg = pictures.write_graph(proj.graph, last, dot)
    print(f"wrote {report.display_path(dot)}"
          + (f" and {report.display_path(svg)}" if svg else " (install graphviz for the SVG)"))


def _build_title(run: Run, name: str, task: Any) -> str:
    """What the build does, from its verdict: per platform, found by its key or the exact
    buildah command."""
    found: Verdict = task.meta.get("verdict") or judge(run, name, None)
    if not found.records:
        return f"building {name}"
    lines, in_storage = [], run.storage.with_keys(found.records)
    for platform, record in found.records.items():
        what = f"{name} for {platform}" if platform else name
        argv = builder.bud_argv(run.project, run.services, name, record)
        lines.append(f"found {what} in local storage by its key {keys.key_tag(record.key)}"
                     if in_storage[platform] else
                     f"building {what}: {command_line(argv)}")
    return "\n.  ".join(lines)


def _build(run: Run, name: str, task: Any) -> Any:
    """The build use case (`building.build`), its result as doit saves it."""
    result = building.build(run, name, task.meta.get("verdict"))
    return TaskFailed(result) if isinstance(result, str) else result.as_values()


def _push_title(run: Run, name: str) -> str:
    built = run.images.get(name)
    if built is None or built.how is How.REGISTRY or not built.key:
        return f"tagging {run.project.plans[name].reference}"
    argv = publish.push_argv(run.project, run.services, name, built.key)
    return f"pushing {name}: {command_line(argv)}"


def _hand_over_push(run: Run, name: str, task: Any) -> None:
    """A push task's action: the push goes to the run's push pool, and the task ends at
    once, so that its job slot goes to the next build. The reporter hears of the push
    when it starts and ends in the pool, and the run's end waits for it."""
    run.push_pool.submit(task, lambda: _failed_raises(_push(run, name)),
                         lambda: _stopped(run))


class _PushFailed(Exception):
    def __init__(self, failure: TaskFailed) -> None:
        super().__init__(failure.message)
        self.failure = failure


def _failed_raises(result: Any) -> Any:
    """A push's result, its TaskFailed raised (the pool counts what raises as failed)."""
    if isinstance(result, TaskFailed):
        raise _PushFailed(result)
    return result


def _stopped(run: Run) -> BaseException | None:
    return buildah.Interrupted("interrupted") if run.services.stop.signal else None


def _pooled_pushes(run: Run, reporter: type) -> type:
    """The run's reporter, told of pooled pushes by the pool (when each really starts and
    ends) instead of by doit (when it was handed over), one event at a time; its end
    waits for the pushes, before the summary and report.json."""
    pool = run.push_pool

    class PooledPushes(reporter):  # type: ignore[misc,valid-type]
        def __init__(self, outstream: Any, options: dict[str, Any]) -> None:
            super().__init__(outstream, options)
            pool.listener = self

        def execute_task(self, task: Any) -> None:
            if not _pooled(task):
                with pool.lock:
                    super().execute_task(task)

        def add_success(self, task: Any) -> None:
            if not _pooled(task):
                with pool.lock:
                    super().add_success(task)

        def add_failure(self, task: Any, fail: Any) -> None:
            with pool.lock:  # (a pooled push fails here only when it was never handed over)
                super().add_failure(task, fail)

        def skip_uptodate(self, task: Any) -> None:
            with pool.lock:
                super().skip_uptodate(task)

        def started(self, task: Any) -> None:
            super().execute_task(task)

        def finished(self, task: Any, result: Any, error: BaseException | None) -> None:
            if error is not None:
                super().add_failure(task, error.failure if isinstance(error, _PushFailed)
                                    else TaskFailed(str(error)))
                return
            task.values.update(result or {})
            super().add_success(task)

        def complete_run(self) -> None:
            pool.wait()
            super().complete_run()

    return PooledPushes


def _pooled(task: Any) -> bool:
    return bool((task.meta or {}).get("pooled"))


def _push(run: Run, name: str) -> Any:
    assert run.lookups is not None  # a run with pushes asks the registry
    try:
        parent = run.project.plans[name].parent
        return publish.push_image(run.project, run.services, name, run.images[name],
                                  run.lookups, run.images.get(parent) if parent else None)
    except (publish.PushFailed, BuildahError, project.ForeignFolder, OSError) as err:
        return TaskFailed(str(err))  # the summary adds the log's tail and path


def _clean(run: Run, name: str) -> None:
    """Take off the names imagebake gave the image (its key names and its reference): an
    image goes with the last of them, so one that a user named too stays, by that name."""
    buildah_, plan = run.services.buildah, run.project.plans[name]
    image_id = run.storage.id_of(plan.reference)
    try:
        if image_id and plan.platforms:  # the manifest list, then the images it lists
            images = buildah_.manifest_images(plan.reference)
            buildah_.manifest_rm(*_names_made(plan, run.storage.names(image_id)))
            for image in images:
                if made := _names_made(plan, run.storage.names(image)):
                    buildah_.remove_names(*made)
        elif image_id:
            buildah_.remove_names(*_names_made(plan, run.storage.names(image_id)))
    except subprocess.CalledProcessError as err:  # gone meanwhile, or a container uses it
        print(f"left {plan.reference} in local storage: {error_line(err.stderr or '')}")
    if plan.owns_workdir():
        shutil.rmtree(plan.workdir, ignore_errors=True)
    elif plan.workdir.exists():
        print(f"left {plan.workdir} alone: imagebake did not make it")


def _names_made(plan: project.ImagePlan, names: set[str]) -> list[str]:
    """Those of an image's names that builds of this image give: its reference, and the
    names made of its keys (`localhost/imagebake/<name>:ib-<key>`)."""
    key_names = f"{project.LOCAL_KEY_REPOSITORY}/{plan.name}:{keys.KEY_TAG_PREFIX}"
    return sorted(n for n in names if n == plan.reference or n.startswith(key_names))


def _print_status(run: Run, probe: StateProbe) -> Any:
    """Each image's verdict, judged parents first as a build judges it (what it settles on
    is what its children are judged on): exactly what `doit build` with the same variables
    does."""
    proj, counts, failing, fetching = run.project, Counter(), set(), set()
    rows = [("IMAGE", "PARENT", "STATUS")]
    for name in proj.graph.order():
        plan = proj.plans[name]
        if name not in run.selection.selected:
            rows.append((name, plan.parent or "-", "excluded"))
            continue
        if fetch := _would_fetch(run, name, fetching):  # (status downloads nothing)
            fetching.add(name)
            rows.append((name, plan.parent or "-", fetch))
            continue
        if plan.parent in failing:
            failing.add(name)
            rows.append((name, plan.parent, f"blocked: parent '{plan.parent}' would fail"))
            continue
        found = judge(run, name, Settled.from_values(probe.values(f"build:{name}")))
        counts[found.outcome] += 1
        if found.outcome is Outcome.FAIL:
            failing.add(name)
        elif found.settled is not None:
            run.settle(name, found.settled)
        rows.append((name, plan.parent or "-", found.line()))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for image, parent, status in rows:
        print(f"{image:<{widths[0]}}  {parent:<{widths[1]}}  {status}")
    print(f"{counts[Outcome.BUILD]} of {len(run.selection.selected)} selected images would "
          "build" + "".join(f", {counts[o]} {o.value}" for o in (
              Outcome.FOUND_LOCAL, Outcome.FOUND_REGISTRY, Outcome.PINNED) if counts[o])
          + (f"; {len(fetching)} would first fetch or archive a source (then build "
             "if it changed)"
             if fetching else ""))
    failed = sorted(n for n in failing if proj.plans[n].context.missing_sources())
    if failed:
        return TaskFailed(f"{len(failed)} images would fail, their build context lacks what "
                          f"their Dockerfile copies: {', '.join(failed)}\n  fix: "
                          f"{MISSING_SOURCES_FIX}")
    if counts[Outcome.FAIL]:
        return TaskFailed(f"{counts[Outcome.FAIL]} images would fail (above)")
    return None


def _would_fetch(run: Run, name: str, fetching: set[str]) -> str | None:
    """What a build would download before it could judge this image by its key."""
    fetches = run.project.plans[name].context.fetches
    if fetches:
        return f"would {sources.doing(fetches)}, then build if it changed"
    parent = run.project.plans[name].parent
    return f"parent '{parent}' would fetch a source first" if parent in fetching else None


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
        if settled is not None:
            task.meta["settled"] = settled.as_values()
        return settled is not None

    def _saved(self, task_name: str) -> Settled | None:
        """What another task saved when it last ran (outside a run: its values)."""
        return Settled.from_values(self.saved_values(task_name))


class PushUpToDate:
    """Up to date when the registry holds the image under its key's tag and the user's
    tag names that manifest (an image taken by `pin=` is someone else's to push)."""

    def __init__(self, run: Run, name: str) -> None:
        self.run, self.name = run, name

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:
        built = self.run.images.get(self.name)
        if self.name in self.run.pins:
            task.meta["settled"] = {"digest": built and built.digest, "attempts": 0}
            return True
        assert self.run.lookups is not None  # a run with pushes asks the registry
        plan = self.run.project.plans[self.name]
        reason = publish.push_stale_reason(plan, self.run.images[self.name], self.run.lookups,
                                           self.run.services)
        if reason is None:
            digest = self.run.lookups.find(plan.reference).manifest.digest
            task.meta["settled"] = {"digest": digest, "attempts": 0}
        return reason is None
