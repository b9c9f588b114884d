"""When a run prunes old keys, and how many it keeps: `doit prune keep=N dry=1 registry=1`,
and the prune after a build with `settings.keep_keys`. What goes is `prune`'s to say."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from buildlib import processes, prune, variables
from buildlib.errors import CommandFailed, InputError
from buildlib.project import Project
from buildlib.run import Run


def prune_command(run: Run, saved: Callable[[str], dict[str, Any]]) -> None:
    """`doit prune`: `saved(task)` is what a build task saved when it last ran. Raises
    CommandFailed on a bad keep= or when a removal fails."""
    try:
        keep = keep_keys(run.project)
    except InputError as err:
        raise CommandFailed(f"error: {err}") from None
    error = prune.prune_tree(run, keep, dry=variables.flag("dry"),
                             registry=variables.flag("registry"),
                             saved=lambda name: saved(f"build:{name}"))
    if error:
        raise CommandFailed(error)


def keep_keys(proj: Project) -> int:
    """How many old keys of each image to keep: keep=N, else settings.keep_keys, else 0."""
    text = str(variables.value("keep", "") or "")
    if not text:
        return proj.config.settings.keep_keys or 0
    if not text.isdigit():
        raise InputError(proj.config.path, f"keep={text!r} is not a whole number >= 0",
                         fix="write keep=N: how many old keys of each image to keep")
    return int(text)


def after_build(run: Run) -> None:
    """With `settings.keep_keys`, a run that built something and in which every selected
    image was built or found prunes old keys (a failure is a warning)."""
    keep = run.project.config.settings.keep_keys
    if (keep is None or not prune.remembered or processes.stop_signal()
            or not run.selection.selected <= set(run.images)):
        return
    print(f"pruning old keys (settings.keep_keys: {keep})")
    failed = prune.prune_tree(run, keep, dry=False, registry=False,
                              saved=lambda name: run.images.get(name, {}))
    if failed:
        print(f"warning: {failed}", file=sys.stderr)
