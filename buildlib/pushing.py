"""One image's push as its push task runs it: whether the registry holds it already, what
the push does (its title), and the push."""

from __future__ import annotations

from typing import Any

from buildlib import publish
from buildlib.buildah import BuildahError, command_line
from buildlib.errors import CommandFailed
from buildlib.plan import ForeignFolder
from buildlib.run import Run
from buildlib.settled import How


def title(run: Run, name: str) -> str:
    """A tag set in the registry, or the exact buildah push command."""
    built = run.images.get(name)
    if built is None or built.how is How.REGISTRY or not built.key:
        return f"tagging {run.project.plans[name].reference}"
    argv = publish.push_argv(run.project, run.services, name, built.key)
    return f"pushing {name}: {command_line(argv)}"


def up_to_date(run: Run, name: str) -> dict[str, Any] | None:
    """What a push would leave, when the registry holds it already: the image under its
    key's tag, and the user's tag naming that manifest (an image taken by `pin=` is
    someone else's to push). None: the push has work to do."""
    built = run.images.get(name)
    if name in run.pins:
        return {"digest": built and built.digest, "attempts": 0}
    assert run.lookups is not None  # a run with pushes asks the registry
    plan = run.project.plans[name]
    if publish.push_stale_reason(plan, run.images[name], run.lookups,
                                 run.services) is not None:
        return None
    return {"digest": run.lookups.find(plan.reference).manifest.digest, "attempts": 0}


def pushed_first(run: Run, name: str) -> list[str]:
    """A signed push states its parent's pushed digest: the parent's push is handed over
    first (the push pool starts pushes in the order they come)."""
    parent = run.project.plans[name].parent
    signs = run.project.config.settings.sign is not None
    return [parent] if signs and parent and parent in run.selection.selected else []


def push(run: Run, name: str) -> dict[str, Any]:
    """Push the image as this run settled it; its values (digest, attempts) are the push
    task's. Raises CommandFailed when the push fails."""
    assert run.lookups is not None  # a run with pushes asks the registry
    try:
        parent = run.project.plans[name].parent
        return publish.push_image(run.project, run.services, name, run.images[name],
                                  run.lookups, run.images.get(parent) if parent else None)
    except (publish.PushFailed, BuildahError, ForeignFolder, OSError) as err:
        raise CommandFailed(str(err)) from None  # the summary adds the log's tail and path
