"""The only module that knows doit's task dicts: a loaded project -> doit tasks.

Task creators are small generators of plain dicts, as in pydoit's own code. A build
action returns the image's ID, key and record as the task's saved values; a child reads
its parent's ID from the run (`Run.images`, not `getargs`, which would make it depend on
the parent's whole result), and `ImageUpToDate` compares the current key with the saved.

The run itself (command line, selection, lock, signals) is `buildlib.run`'s.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from doit import get_var
from doit.dependency import UptodateCalculator
from doit.exceptions import TaskFailed

from buildlib import (
    buildah,
    builder,
    cache,
    dispatch,
    keys,
    pictures,
    project,
    prune,
    pushpool,
    report,
)
from buildlib.buildah import BuildahError, StorageError, command_line
from buildlib.errors import InputError
from buildlib.registry import DeletionRefused, RegistryError
from buildlib.run import TRUE_WORDS, Run, export_options

RESOLVED_FILE = "images.lock.json"


def namespace(run: Run) -> dict[str, Any]:
    """What doit loads tasks from, for dodo.py and the `imagebake` command alike:
    DOIT_CONFIG and one `task_<name>` creator per entry of `creators`."""
    return {"DOIT_CONFIG": doit_config(run),
            **{f"task_{name}": _creator(make, run) for name, make in creators().items()}}


def creators() -> dict[str, Callable[[Run], Any]]:
    return {"build": build_tasks, "push": push_tasks, "status": status_task,
            "resolve": resolve_task, "graph": graph_task, "watch": watch_task,
            "export": export_task, "prune": prune_task}


def _creator(make: Callable[[Run], Any], run: Run) -> Callable[[], Any]:
    def create() -> Any:
        return make(run)
    create.__doc__ = make.__doc__
    return create


def doit_config(run: Run) -> dict[str, Any]:
    run.project.build_dir.mkdir(parents=True, exist_ok=True)
    dispatch.install_for(run.project, run.selection.selected, run.jobs, run.last_report)
    return {
        "default_tasks": ["build"],
        "num_process": run.project.config.settings.jobs,
        "par_type": "thread",  # builds are subprocesses; threads share the storage lister
        "dep_file": str(run.project.state_file),
        "backend": "sqlite3",
        "continue": not run.fail_fast,
        "reporter": _pooled_pushes(run, report.reporter_for(
            run.project, run.selection, run.jobs, lambda: _finish(run), run.likely_builds,
            run.last_report)),
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
        "clean": [(_clean, [run, name])],
        "meta": {"image": name, "kind": "build", "log": plan.build_log},
        "verbosity": 2 if run.verbose else 1,
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
        "task_dep": [f"build:{name}"],
        "uptodate": [PushUpToDate(run, name)],
        "meta": {"image": name, "kind": "push", "log": plan.push_log, "pooled": pooled},
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


def watch_task(run: Run) -> dict[str, Any]:
    return {
        "basename": "watch",
        "doc": "build, then again on each change to images.yaml, a template or a context file",
        "actions": [(_watch, [run])],
        "uptodate": [False],
        "verbosity": 2,
    }


def _watch(run: Run) -> None:
    from buildlib import watch  # imports watchfiles: only watch mode pays for it

    watch.watch(run.project.config.path, run.invocation.rerun_as("build"),
                run.invocation.where)


def resolve_task(run: Run) -> dict[str, Any]:
    """write build/images.lock.json: each image's digest, key and ID in the registry"""
    lock = run.project.build_dir / RESOLVED_FILE
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
    multi_arch = sorted(name for name in resolved if run.project.plans[name].platforms)
    if multi_arch:
        return TaskFailed(f"resolve does not read manifest lists yet: {', '.join(multi_arch)} "
                          "(`platforms:`); select the other images (`images=`, `exclude=`)")
    missing = sorted(name for name, entry in resolved.items() if entry is None)
    if missing:
        return TaskFailed(f"not in the registry for their current keys: {', '.join(missing)}; "
                          "push them first (`doit push`)")
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"images": resolved}, indent=2, sort_keys=True) + "\n")
    print(f"wrote {report.display_path(lock)}: {len(resolved)} images")
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
        keep = _prune_keep(run.project)
    except InputError as err:
        return TaskFailed(f"error: {err}")
    return prune_tree(run, keep, dry=_yes("dry"), registry=_yes("registry"),
                      saved=lambda name: probe.values(f"build:{name}"))


def _yes(name: str) -> bool:
    return str(get_var(name, "")).lower() in TRUE_WORDS


def _prune_keep(proj: project.Project) -> int:
    text = str(get_var("keep", "") or "")
    if not text:
        return proj.config.settings.keep_keys or 0
    if not text.isdigit():
        raise InputError(proj.config.path, f"keep={text!r} is not a whole number >= 0",
                         fix="write keep=N: how many old keys of each image to keep")
    return int(text)


def _finish(run: Run) -> None:
    """The end of a run, after its summary: with `settings.keep_keys`, a run that built
    something and in which every selected image was built or found prunes old keys; then
    `Run.finish`."""
    keep = run.project.config.settings.keep_keys
    if (keep is not None and prune.remembered and not buildah.stop_signal()
            and run.selection.selected <= set(run.images)):
        print(f"pruning old keys (settings.keep_keys: {keep})")
        failed = prune_tree(run, keep, dry=False, registry=False,
                            saved=lambda name: run.images.get(name, {}))
        if isinstance(failed, TaskFailed):
            print(f"warning: {failed.message}", file=sys.stderr)
    run.finish()
    if push_pool(run).failed:  # doit saw each push handed over, not how it ended
        sys.exit(1)


def prune_tree(run: Run, keep: int, *, dry: bool, registry: bool,
               saved: Callable[[str], dict[str, Any]]) -> Any:
    """Prune the selected images' old keys: the registry's first when asked (the record
    of this tree's keys still lists the keys local storage loses), then local storage."""
    proj, names = run.project, _selected_in_order(run)
    try:
        contents = proj.buildah.contents()
    except (StorageError, subprocess.CalledProcessError, OSError) as err:
        return TaskFailed(f"error: cannot read local image storage: {err}")
    record = prune.recorded(proj)
    kept = prune.kept_tags(names, prune.current_tags(proj, names, contents, saved), record,
                           keep)
    failure = _prune_registry(run, names, kept, record, dry) if registry else None
    plan = prune.plan_local(proj, names, contents, kept, record)
    for line in prune.describe_local(plan, contents, dry):
        print(line)
    if dry:
        print(f"would remove {_count(len(plan.remove), 'image')} of old keys and "
              f"{_count(len(plan.intermediates), 'intermediate image')}, untag "
              f"{_count(len(plan.untag), 'name')}; would free {_freed(plan.frees, contents)}")
        return failure
    result = prune.prune_local(proj, plan, contents)
    print(f"removed {_count(result.named, 'image')} of old keys and "
          f"{_count(result.images - result.named, 'intermediate image')}, untagged "
          f"{_count(result.untagged, 'name')}; freed {_freed(result.freed, contents)}")
    _compact_record(proj, record)
    if result.errors:
        shown = "\n  ".join(result.errors[:10])
        return TaskFailed(f"prune could not remove everything:\n  {shown}")
    return failure


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}{'s' * (number != 1)}"


def _freed(count: int, contents: Any) -> str:
    if not contents.complete:
        return "an unknown amount (storage lists no layers: extra read-only stores?)"
    return prune.size(count)


def _compact_record(proj: project.Project, record: dict[str, list[str]]) -> None:
    """One line per key: still in local storage, or maybe in the registry (a registry prune
    drops those it deleted)."""
    prune.rewrite_record(proj, record)


def _prune_registry(run: Run, names: list[str], kept: dict[str, set[str]],
                    record: dict[str, list[str]], dry: bool) -> Any:
    """Delete the manifests of old key tags of the selected images' repositories."""
    from buildlib.registry import Reference

    proj = run.project
    client = proj.registry_client
    repositories = {name: Reference.parse(proj.plans[name].reference).repository
                    for name in names}
    try:
        tags = {name: {tag: client.digest(f"{proj.config.settings.registry}/{repo}:{tag}")
                       for tag in client.tags(repo)}
                for name, repo in repositories.items()}
    except RegistryError as err:
        return TaskFailed(f"error: registry prune: {err}")
    plan = prune.plan_registry(repositories, tags, kept, record)
    host = proj.config.settings.registry
    for where, why in sorted(plan.kept.items()):
        print(f"kept {host}/{where}: {why}")
    deleted: set[tuple[str, str]] = set()
    for where, old in sorted(plan.delete.items()):
        repo, _, digest = where.partition("@")
        print(f"{'would delete' if dry else 'deleting'} {host}/{where} (tags {', '.join(old)})")
        if dry:
            continue
        try:
            client.delete_manifest(repo, digest)
        except DeletionRefused as err:
            return TaskFailed(f"error: {err}")
        except RegistryError as err:
            return TaskFailed(f"error: registry prune: {err}")
        name = next(n for n, r in repositories.items() if r == repo)
        deleted.update((name, tag) for tag in old)
    print(f"{'would delete' if dry else 'deleted'} {len(plan.delete)} manifests of old keys "
          f"from {host} (its storage frees their blobs at its garbage collection)")
    for name, tag in deleted:
        record[name].remove(tag)
    return None


TOOL_DIR = Path(__file__).resolve().parents[1]  # the imagebake checkout running now


def export_task(run: Run) -> dict[str, Any]:
    """write the image graph as a GitHub Actions or Argo Workflows workflow (format=gha|argo)"""
    return {
        "basename": "export",
        "doc": "write the image graph as a CI workflow: format=gha|argo [out=PATH max_jobs=N "
               "job_start=SECONDS]",
        "actions": [(_export, [run, TOOL_DIR])],
        "uptodate": [False],
        "verbosity": 2,
    }


UNKNOWN_DURATION = 60.0  # seconds per image when the last report.json has none


def _export(run: Run, tool_dir: Path) -> Any:
    """Partition the selection into jobs, write the workflow, print the estimates."""
    from buildlib import export  # (and a YAML writer): only this task needs them

    proj = run.project
    try:
        options = export_options(proj)
        root = _repository_root(proj.config.root)
        tool = export.Tool(directory=_inside(root, tool_dir, proj, "imagebake (dodo.py)"),
                           config=_inside(root, proj.config.path, proj, "images.yaml"),
                           lock=_inside(root, proj.build_dir / RESOLVED_FILE, proj,
                                        "build_dir"))
    except InputError as err:
        return TaskFailed(f"error: {err}")
    sub = export.selected_graph(proj.graph, run.selection.selected)
    measured = dispatch.build_seconds(run.last_report)
    durations = {name: measured.get(name, UNKNOWN_DURATION) for name in sub.parents}
    estimates = export.partition(sub, durations, options.max_jobs, options.job_start)
    multi_arch = sorted(name for name in sub.parents if proj.plans[name].platforms)
    if multi_arch and len(estimates.chosen.jobs) > 1:
        return TaskFailed(f"error: {', '.join(multi_arch[:5])} are multi-arch (`platforms:`): "
                          "jobs pass parents by digest (pin=, doit resolve), which do not take "
                          "manifest lists yet; export them as one job (max_jobs=1), or exclude "
                          "them")
    target = export.Target(proj.config.settings.registry, proj.config.settings.tls_verify)
    try:
        exporter = {"gha": export.gha, "argo": export.argo}[options.format]
        text = exporter(estimates.chosen, tool, target, whole=not run.selection.excluded)
    except ModuleNotFoundError as err:  # hera, for format=argo
        return TaskFailed(f"error: format={options.format} needs {err.name}: install the "
                          "`argo` extra (`pip install '.[argo]'` in the imagebake checkout)")
    path = options.out or (root / ".github" / "workflows" / "images.yml"
                           if options.format == "gha" else proj.build_dir / "argo-workflow.yaml")
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
    if run.project.plans[name].platforms:
        return _platforms_title(run, name, task)
    record = task.meta.get("record") or run.record(name)
    if record is None:
        return f"building {name}"
    if run.storage.with_key(record.key):
        return f"found {name} in local storage by its key {keys.key_tag(record.key)}"
    return f"building {name}: {command_line(run.project.bud_argv(name, record))}"


def _platforms_title(run: Run, name: str, task: Any) -> str:
    records = task.meta.get("records") or run.platform_records(name)
    if records is None:
        return f"building {name}"
    lines = [f"found {name} for {platform} in local storage by its key" if
             run.storage.with_key(record.key) else
             f"building {name} for {platform}: "
             f"{command_line(run.project.bud_argv(name, record))}"
             for platform, record in records.items()]
    return "\n.  ".join(lines)


def _build(run: Run, name: str, task: Any) -> Any:
    proj, parent = run.project, run.project.plans[name].parent
    if name in run.pins:
        return TaskFailed(task.meta.get("pin_error") or f"pin {name}: not found")
    missing = proj.plans[name].context.missing_sources()
    if missing:
        return TaskFailed(f"cannot build {name}: its build context lacks {', '.join(missing)}"
                          f"\n  fix: {MISSING_SOURCES_FIX}")
    if proj.plans[name].platforms:
        return _build_platforms(run, name, task)
    record = task.meta.get("record") or run.record(name)
    if record is None:  # skip_parents, and no parent image in storage
        return TaskFailed(f"cannot build {name}: its parent image "
                          f"{proj.plans[parent].reference} is not in local storage; "
                          f"build it first (`doit build:{parent}`) or drop skip_parents")
    try:
        if parent and run.images.get(parent, {}).get("found") == "registry":
            builder.pull(proj, parent, run.images[parent], run.storage)
        values = builder.build_image(proj, name, record, run.storage, task.meta.get("reason"),
                                     echo=run.verbose,
                                     parent_key=run.images.get(parent, {}).get("key"))
    except (BuildahError, StorageError, subprocess.CalledProcessError, project.ForeignFolder,
            OSError) as err:
        return TaskFailed(str(err))  # the summary adds the log's tail and path
    run.images[name] = values
    prune.remember(proj, name, values)
    run.ask_for_children(name)
    return values


def _build_platforms(run: Run, name: str, task: Any) -> Any:
    proj, parent = run.project, run.project.plans[name].parent
    records = task.meta.get("records") or run.platform_records(name)
    if records is None:
        return TaskFailed(f"cannot build {name}: its parent '{parent}' is multi-arch and was "
                          "not built or checked in this run (skip_parents follows no "
                          f"manifest list); drop skip_parents, or `doit build:{name}`")
    parent_done = run.images.get(parent, {}).get("platforms") or {}
    try:
        values = builder.build_platforms(
            proj, name, records, run.storage, task.meta.get("reasons") or {}, echo=run.verbose,
            parent_keys={platform: done["key"] for platform, done in parent_done.items()})
    except (BuildahError, StorageError, subprocess.CalledProcessError, project.ForeignFolder,
            OSError) as err:
        return TaskFailed(str(err))
    run.images[name] = values
    prune.remember(proj, name, values)
    return values


def _push_title(run: Run, name: str) -> str:
    built = run.images.get(name, {})
    if built.get("found") == "registry" or not built.get("key"):
        return f"tagging {run.project.plans[name].reference}"
    return f"pushing {name}: {command_line(run.project.push_argv(name, built['key']))}"


_POOLS: dict[int, pushpool.PushPool] = {}


def push_pool(run: Run) -> pushpool.PushPool:
    """The run's pool of pushes (`settings.push_jobs` at once)."""
    return _POOLS.setdefault(id(run), pushpool.PushPool(run.project.config.settings.push_jobs))


def _hand_over_push(run: Run, name: str, task: Any) -> None:
    """A push task's action: the push goes to the run's push pool, and the task ends at
    once, so that its job slot goes to the next build. The reporter hears of the push
    when it starts and ends in the pool, and the run's end waits for it."""
    push_pool(run).submit(task, lambda: _failed_raises(_push(run, name)), _stopped)


class _PushFailed(Exception):
    def __init__(self, failure: TaskFailed) -> None:
        super().__init__(failure.message)
        self.failure = failure


def _failed_raises(result: Any) -> Any:
    """A push's result, its TaskFailed raised (the pool counts what raises as failed)."""
    if isinstance(result, TaskFailed):
        raise _PushFailed(result)
    return result


def _stopped() -> BaseException | None:
    return buildah.Interrupted("interrupted") if buildah.stop_signal() else None


def _pooled_pushes(run: Run, reporter: type) -> type:
    """The run's reporter, told of pooled pushes by the pool (when each really starts and
    ends) instead of by doit (when it was handed over), one event at a time; its end
    waits for the pushes, before the summary and report.json."""
    pool = push_pool(run)

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
        return builder.push_image(run.project, name, run.images.get(name, {}), run.lookups)
    except (builder.PushFailed, BuildahError, project.ForeignFolder, OSError) as err:
        return TaskFailed(str(err))  # the summary adds the log's tail and path


def _clean(run: Run, name: str) -> None:
    proj, plan = run.project, run.project.plans[name]
    image_id = run.storage.id_of(plan.reference)
    if image_id and plan.platforms:  # the manifest list, then the images it lists
        with contextlib.suppress(subprocess.CalledProcessError):  # gone meanwhile
            images = proj.buildah.manifest_images(plan.reference)
            proj.buildah.manifest_rm(*sorted(run.storage.names(image_id)))
            if images:
                proj.buildah.rmi(*images)
    elif image_id:  # by ID: the image, with its other names (its key's)
        with contextlib.suppress(subprocess.CalledProcessError):  # gone meanwhile
            proj.buildah.rmi(image_id)
    if plan.owns_workdir():
        shutil.rmtree(plan.workdir, ignore_errors=True)
    elif plan.workdir.exists():
        print(f"left {plan.workdir} alone: imagebake did not make it")


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
    if run.project.plans[name].platforms:
        return _dry_run_platforms(run, name, saved)
    record = run.record(name)
    if record is None:
        return f"parent '{parent}' is not in local storage"
    reason = builder.stale_reason(run.project.plans[name], saved, record, run.storage)
    found = saved.get("id") if reason is None else run.storage.with_key(record.key)
    if found is None:
        return reason
    run.images[name] = {"id": found, "key": record.key}
    return None


def _dry_run_platforms(run: Run, name: str, saved: dict[str, Any]) -> str | None:
    """`_dry_run` of a multi-arch image: the platforms that would build, and why."""
    records = run.platform_records(name)
    if records is None:
        return f"parent '{run.project.plans[name].parent}' has no image of its platforms"
    reasons = builder.platforms_stale(run.project.plans[name], saved, records, run.storage)
    found = {platform: run.storage.with_key(record.key) for platform, record in records.items()}
    building = [f"{platform}: {reason}" for platform, reason in reasons.items()
                if platform in found and found[platform] is None]
    if not building:
        run.images[name] = {"platforms": {platform: {"id": found[platform], "key": record.key}
                                          for platform, record in records.items()}}
    return "; ".join(building) or None


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
        if self.run.project.plans[self.name].platforms:
            return self._platforms(task, values)
        record = self.run.record(self.name, self._saved)
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

    def _saved(self, task_name: str) -> dict[str, Any]:
        """What another task saved when it last ran (outside a run: its values)."""
        return self.get_val(task_name, "_values_:") or {}

    def _platforms(self, task: Any, values: dict[str, Any]) -> bool:
        """A multi-arch image: up to date when each platform's recorded image carries its
        current key and the manifest list of them is named by the reference. (Not looked up
        in the registry: built.)"""
        records = self.run.platform_records(self.name, self._saved)
        if records is None:
            return False  # the build says why
        task.meta["records"] = records
        reasons = builder.platforms_stale(self.run.project.plans[self.name], values, records,
                                          self.run.storage)
        task.meta["reasons"] = reasons
        if reasons:
            return False
        self.run.images[self.name] = values
        task.meta["settled"] = {"id": values["id"], "found": "local",
                                "platforms": values["platforms"]}
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
