"""Watch mode (`imagebake watch`, `doit watch`): build, then wait for a change to what the
tree's images are made of (images.yaml, each image's template and the templates it
extends, imports or includes, each context file, what its named build contexts and read-only
volumes hold) and build again.

Each build is a fresh `build` run of the same command line in a child process: it reads
images.yaml anew, takes the tree's lock and rebuilds what the change made stale (content
keys), no more. Saves closer together than QUIET_MS are one build; a change during a build
is the next one. A failed build (bad input included) waits for the next change. SIGINT or
SIGTERM stops the running build as it would stop a `build` run, then the watcher ends.
`watchfiles` (inotify) is imported here only, so a plain build does not load it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from buildlib import config, config_load, expanders, processes, project, render
from buildlib.errors import InputError

QUIET_MS = 400  # a burst of saves: the changes until this long without one are one build
LONGEST_BURST_MS = 5000  # ... but build at the latest this long after the first
PREFIX = "[watch]"


def tree_inputs(sources: Path | config.Sources,
                previous: frozenset[Path] = frozenset()) -> frozenset[Path]:
    """The files the tree's images are made of, build_dir's aside. A tree that does not
    load (bad input) keeps what was watched before, plus its config files and templates."""
    configs = set(sources.files) if isinstance(sources, config.Sources) else {sources}
    try:
        proj = project.load(sources, fetch=False,  # each build fetches for itself
                            expand=expanders.kolla)
    except InputError:
        try:
            cfg = config_load.load(sources)
        except InputError:
            return previous | configs
        return _outside(cfg.build_dir, previous | configs | render.templates_used(cfg))
    files = configs | render.templates_used(proj.config)
    for plan in proj.plans.values():
        files.update(plan.context.files.values())
        # a local source's checkout (Kolla's `local`), named contexts, read-only volumes
        for read in (*plan.context.follows, *plan.paths_read()):
            files.update(path for path in (read, *read.rglob("*")) if path.is_file())
    return _outside(proj.build_dir, files)


def watched_paths(inputs: Iterable[Path]) -> set[str]:
    """The paths whose changes matter: each input, and each folder on the way to one (a
    template folder renamed away, or back, changes no file in it that inotify reports)."""
    return {str(path) for path in inputs} | {str(folder) for path in inputs
                                             for folder in path.parents}


def _outside(build_dir: Path, files: Iterable[Path]) -> frozenset[Path]:
    """Leave out what builds write (archived `sources:`), which would trigger builds."""
    return frozenset(path.absolute() for path in files
                     if not path.absolute().is_relative_to(build_dir.absolute()))


def folders_to_watch(tree_root: Path, files: Iterable[Path]) -> list[Path]:
    """The tree's folder, and the folders of the files outside it, none twice."""
    folders = sorted({tree_root.absolute()} | {path.parent for path in files})
    kept: list[Path] = []
    for folder in folders:  # sorted: a folder comes before the folders inside it
        if not any(folder.is_relative_to(outer) for outer in kept):
            kept.append(folder)
    return kept


class _StopRequested:
    """watchfiles' stop event: the run's signal flag (set by its signal handlers)."""

    def __init__(self, stop: processes.StopControl) -> None:
        self.stop = stop

    def is_set(self) -> bool:
        return bool(self.stop.signal)


def watch(sources: config.Sources, build_argv: list[str], cwd: Path,
          stop: processes.StopControl) -> None:
    """Build with `build_argv`, then once per burst of changes, until a signal (`stop`)."""
    import watchfiles

    config_path = sources.path
    inputs = tree_inputs(sources)
    _build(build_argv, cwd, stop)
    watched = watched_paths(inputs)
    while not stop.signal:
        roots = folders_to_watch(config_path.parent, inputs)
        _say(f"watching {len(inputs)} files (images.yaml, templates, context files) for "
             "changes; Ctrl-C ends")
        for changes in watchfiles.watch(
                *roots, watch_filter=lambda _change, path: path in watched,
                debounce=LONGEST_BURST_MS, step=QUIET_MS, stop_event=_StopRequested(stop),
                raise_interrupt=False):
            changed = sorted({Path(path) for _, path in changes})
            _say("changed: " + ", ".join(_shown(path, cwd) for path in changed[:5])
                 + (f" and {len(changed) - 5} more" if len(changed) > 5 else ""))
            failed = _build(build_argv, cwd, stop)
            inputs = tree_inputs(sources, inputs)
            watched.clear()
            watched.update(watched_paths(inputs))
            if folders_to_watch(config_path.parent, inputs) != roots:
                break  # watch the new folders (a file outside the tree joined it)
            if not failed:
                _say("watching for changes; Ctrl-C ends")
    _say("stopped")


def _build(argv: list[str], cwd: Path, stop: processes.StopControl) -> int:
    """One build run in a child process of its own group (so that the signal it gets is
    the one we pass on, once); a signal to us stops it as it would stop `build`."""
    _say("building: " + " ".join(argv[3:]))
    child = subprocess.Popen(argv, cwd=cwd, process_group=0)
    passed_on = None
    while (status := _wait(child)) is None:
        signum = stop.signal
        if signum and signum != passed_on:
            child.send_signal(signum)
            passed_on = signum
    if status and not stop.signal:
        _say(f"the build failed (exit {status}); waiting for the next change")
    return status


def _wait(child: subprocess.Popen, seconds: float = 0.2) -> int | None:
    try:
        return child.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return None


def _shown(path: Path, cwd: Path) -> str:
    return str(path.relative_to(cwd)) if path.is_relative_to(cwd) else str(path)


def _say(text: str) -> None:
    print(f"{PREFIX} {time.strftime('%H:%M:%S')} {text}", flush=True)
    sys.stderr.flush()


