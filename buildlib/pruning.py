"""When a run prunes old keys: `doit prune keep=N dry=1 registry=1`, and the prune after a
build with `settings.keep_keys`; the prune itself, local storage's and the registry's, as the
run asks it. What goes is `prune`'s to say, how many stay `options`'."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

from buildlib import prune
from buildlib.buildah import StorageError
from buildlib.errors import CommandFailed, InputError
from buildlib.options import prune_keep
from buildlib.reference import ImageRef
from buildlib.registry import DeletionRefused, RegistryError
from buildlib.run import Run
from buildlib.settled import Settled


def prune_command(run: Run, saved: Callable[[str], dict[str, Any]]) -> None:
    """`doit prune keep=N dry=1 registry=1`: `saved(task)` is what a build task saved when
    it last ran. Raises CommandFailed on a bad keep= or when a removal fails."""
    try:
        keep = prune_keep(run.project, run.options)
    except InputError as err:
        raise CommandFailed(f"error: {err}") from None
    error = prune_tree(run, keep, dry=run.options.dry, registry=run.options.registry,
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
    failed = prune_tree(run, keep, dry=False, registry=False, saved=run.images.get)
    if failed:
        print(f"warning: {failed}", file=sys.stderr)


def prune_tree(run: Run, keep: int, *, dry: bool, registry: bool,
               saved: Callable[[str], Settled | None]) -> str | None:
    """Prune the selected images' old keys: the registry's first when asked, then local
    storage, both planned from the same record of this tree's keys (so a dry run lists
    what the real run removes), while no other run uses the storage (`storagelock`).
    Returns what went wrong, if anything."""
    if dry:
        return _prune(run, keep, dry=dry, registry=registry, saved=saved)
    busy = run.services.storage_lock.exclusive()
    if busy:
        return f"error: {busy}"
    try:
        return _prune(run, keep, dry=dry, registry=registry, saved=saved)
    finally:
        run.services.storage_lock.release()


def _prune(run: Run, keep: int, *, dry: bool, registry: bool,
           saved: Callable[[str], Settled | None]) -> str | None:
    proj = run.project
    names = proj.graph.ordered(run.selection.selected)
    try:
        contents = run.services.buildah.contents()
    except (StorageError, subprocess.CalledProcessError, OSError) as err:
        return f"error: cannot read local image storage: {err}"
    record = prune.recorded(proj)
    kept = prune.kept_tags(names, prune.current_tags(proj, names, contents, saved), record,
                           keep)
    plan = prune.plan_local(proj, names, contents, kept, record)
    failure, in_registry = (_prune_registry(run, names, kept, record, dry) if registry
                            else (None, None))
    for line in prune.describe_local(plan, contents, dry):
        print(line)
    if dry:
        print(f"would remove {_count(len(plan.remove), 'image')} of old keys and "
              f"{_count(len(plan.intermediates), 'intermediate image')}, untag "
              f"{_count(len(plan.untag), 'name')}; would free {_freed(plan.frees, contents)}")
        return failure
    result = prune.prune_local(run.services.buildah, plan, contents)
    print(f"removed {_count(result.named, 'image')} of old keys and "
          f"{_count(result.images - result.named, 'intermediate image')}, untagged "
          f"{_count(result.untagged, 'name')}; freed {_freed(result.freed, contents)}")
    prune.rewrite_record(proj, prune.still_held(record, result.held, in_registry))
    if result.errors:
        shown = "\n  ".join(result.errors[:10])
        return f"prune could not remove everything:\n  {shown}"
    return failure


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}{'s' * (number != 1)}"


def _freed(count: int, contents: Any) -> str:
    if not contents.complete:
        return "an unknown amount (storage lists no layers: extra read-only stores?)"
    return prune.size(count)


def _prune_registry(run: Run, names: list[str], kept: dict[str, set[str]],
                    record: dict[str, list[str]], dry: bool
                    ) -> tuple[str | None, dict[str, set[str]] | None]:
    """Delete the manifests of old key tags of the selected images' repositories. Returns
    what went wrong, and each image's tags the registry still holds (None: unknown)."""
    proj = run.project
    client = run.services.client()
    repositories = {name: ImageRef.parse(proj.plans[name].reference).registry_path
                    for name in names}
    try:
        tags = {name: {tag: client.digest(f"{proj.config.settings.registry}/{repo}:{tag}")
                       for tag in client.tags(repo)}
                for name, repo in repositories.items()}
    except RegistryError as err:
        return f"error: registry prune: {err}", None
    plan = prune.plan_registry(repositories, tags, kept, record)
    host = proj.config.settings.registry
    for where, why in sorted(plan.kept.items()):
        print(f"kept {host}/{where}: {why}")
    left = {name: set(held) for name, held in tags.items()}
    for where, old in sorted(plan.delete.items()):
        repo, _, digest = where.partition("@")
        print(f"{'would delete' if dry else 'deleting'} {host}/{where} (tags {', '.join(old)})")
        if dry:
            continue
        try:
            client.delete_manifest(repo, digest)
        except DeletionRefused as err:
            return f"error: {err}", None
        except RegistryError as err:
            return f"error: registry prune: {err}", None
        left[next(n for n, r in repositories.items() if r == repo)] -= set(old)
    print(f"{'would delete' if dry else 'deleted'} {len(plan.delete)} manifests of old keys "
          f"from {host} (its storage frees their blobs at its garbage collection)")
    return None, left
