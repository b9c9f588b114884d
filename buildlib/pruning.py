"""When a run prunes old keys: `doit prune keep=N dry=1 registry=1`, and the prune after a
build with `settings.keep_keys`. What goes is `prune`'s to say, how many stay `options`'."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from buildlib import prune
from buildlib.errors import CommandFailed, InputError
from buildlib.options import prune_keep
from buildlib.run import Run
from buildlib.settled import Settled


def prune_command(run: Run, saved: Callable[[str], dict[str, Any]]) -> None:
    """`doit prune keep=N dry=1 registry=1`: `saved(task)` is what a build task saved when
    it last ran. Raises CommandFailed on a bad keep= or when a removal fails."""
    try:
        keep = prune_keep(run.project, run.options)
    except InputError as err:
        raise CommandFailed(f"error: {err}") from None
    error = prune.prune_tree(run, keep, dry=run.options.dry, registry=run.options.registry,
                             saved=lambda name: Settled.from_values(saved(f"build:{name}")))
    if error:
        raise CommandFailed(error)


def after_build(run: Run) -> None:
    """With `settings.keep_keys`, a run that built something and in which every selected
    image was built or found prunes old keys (a failure is a warning)."""
    keep = run.project.config.settings.keep_keys
    if (keep is None or not run.state.remembered or run.services.stop.signal
            or not run.selection.selected <= set(run.images)):
        return
    print(f"pruning old keys (settings.keep_keys: {keep})")
    failed = prune.prune_tree(run, keep, dry=False, registry=False,
                              saved=run.images.get)
    if failed:
        print(f"warning: {failed}", file=sys.stderr)
