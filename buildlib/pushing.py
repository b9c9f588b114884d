"""One image's push as its push task runs it: what it does (its title) and the push."""

from __future__ import annotations

from typing import Any

from buildlib import project, publish
from buildlib.buildah import BuildahError, command_line
from buildlib.errors import CommandFailed
from buildlib.run import Run
from buildlib.settled import How


def title(run: Run, name: str) -> str:
    """A tag set in the registry, or the exact buildah push command."""
    built = run.images.get(name)
    if built is None or built.how is How.REGISTRY or not built.key:
        return f"tagging {run.project.plans[name].reference}"
    argv = publish.push_argv(run.project, run.services, name, built.key)
    return f"pushing {name}: {command_line(argv)}"


def push(run: Run, name: str) -> dict[str, Any]:
    """Push the image as this run settled it; its values (digest, attempts) are the push
    task's. Raises CommandFailed when the push fails."""
    assert run.lookups is not None  # a run with pushes asks the registry
    try:
        return publish.push_image(run.project, run.services, name, run.images[name],
                                  run.lookups)
    except (publish.PushFailed, BuildahError, project.ForeignFolder, OSError) as err:
        raise CommandFailed(str(err)) from None  # the summary adds the log's tail and path
