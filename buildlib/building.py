"""The build use case: is an image current (its task's up-to-date decision), and its build
as its verdict says (build it, tag what storage holds under its key, or fail, saying why).
`tasks.py` wraps both in doit's task dict; this module knows no doit."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import TYPE_CHECKING

from buildlib import builder, keys, project, prune, publish
from buildlib.buildah import BuildahError, StorageError, command_line
from buildlib.settled import How, Settled
from buildlib.verdict import Outcome, Verdict, judge

if TYPE_CHECKING:
    from buildlib.run import Run


def up_to_date(run: Run, name: str, saved: Settled | None,
               saved_of: Callable[[str], Settled | None]) -> tuple[Verdict, Settled | None]:
    """The image's verdict, and what it settles on when it needs no action (then settled
    in the run: what its children are judged on): the image its task recorded carries the
    current key, or the registry holds it (cache=registry), or it is pinned."""
    check_storage(run)
    found = judge(run, name, saved, saved_of)
    if found.runs_action or found.settled is None:
        return found, None
    settled = found.settled
    if found.outcome is Outcome.CURRENT:
        settled = settled.found_locally()
    run.settle(name, settled)
    return found, settled


def check_storage(run: Run) -> None:
    """A storage that cannot be listed stops the run before any build, with one message
    (the first up-to-date check comes before every build)."""
    try:
        run.storage.check()
    except StorageError as err:
        raise SystemExit(f"error: cannot read local image storage: {err}\n"
                         "  fix: check `buildah_args` under settings in "
                         f"{run.project.config.path} (--root, --runroot, --storage-driver) "
                         "and that `buildah images` works with them") from None


def build(run: Run, name: str, found: Verdict | None) -> Settled | str:
    """Build the image as its verdict says (or find it in storage by its key); what it
    settled on, or why it failed."""
    proj, plan = run.project, run.project.plans[name]
    found = found or judge(run, name, None)
    if found.outcome is Outcome.FAIL:
        fix = f"\n  fix: {found.fix}" if found.fix else ""
        return f"cannot build {name}: {found.why}{fix}"
    pulled = images_in_storage(run, name)  # its base, and the other images it reads
    if isinstance(pulled, str):
        return pulled
    if found.records is None or pulled:  # judged again on what storage holds now
        found = judge(run, name, None)
        if found.records is None:
            return f"cannot build {name}: {found.why}"
    parent = run.images.get(plan.parent) if plan.parent else None
    try:
        if plan.parent and parent is not None and parent.how is How.REGISTRY:
            publish.pull(proj, run.services, plan.parent, parent, run.storage)
        settled = builder.build(proj, run.services, name, found.records, run.storage,
                                found.stale, echo=run.options.verbose,
                                parent_names=parent_names(run, name), fresh=name in run.fresh)
    except (BuildahError, StorageError, subprocess.CalledProcessError, project.ForeignFolder,
            OSError) as err:
        return str(err)  # the summary adds the log's tail and path
    run.settle(name, settled)
    prune.remember(proj, name, settled, run.state.record_lock)
    run.state.remembered.add(name)
    run.ask_for_children(name)
    return settled


def parent_names(run: Run, name: str) -> dict[str | None, str | None]:
    """The name each platform's image is built FROM: its parent's (of that platform) as
    this run settled it; none with skip_parents (FROM the reference)."""
    plan = run.project.plans[name]
    settled = run.images.get(plan.parent) if plan.parent else None
    if settled is None:
        return {}
    parent_plan, parent = run.project.plans[plan.parent], settled.per_platform()
    return {platform: builder.build_from(parent_plan, parent[platform])
            if platform in parent else None for platform in plan.platforms or (None,)}


def images_in_storage(run: Run, name: str) -> str | bool:
    """A root's base image, and every other image the build reads but this tree's own,
    pulled when local storage lacks it (it is built on exactly the images its key names,
    with `--pull=never`): whether any was, or the error when one cannot be pulled."""
    plan = run.project.plans[name]
    wanted = [plan.base] if plan.base and not plan.parent else []
    wanted += [image for image in plan.reads if image not in run.tree_references]
    pulled = False
    for image in wanted:
        if run.storage.id_of_image(image):
            continue
        what = "its base image" if image == plan.base and not plan.parent else "the image"
        try:
            builder.pull_base(run.services, image, run.storage)
        except BuildahError as err:
            return (f"cannot build {name}: {what} {image!r} is not in local storage and "
                    f"could not be pulled: {err}\n  fix: correct the line that names it, "
                    "or pull or build that image first")
        pulled = True
        run.services.base_triggers.pulled(image)
    return pulled


def title(run: Run, name: str, found: Verdict | None) -> str:
    """What the build does, from its verdict: per platform, found by its key or the exact
    buildah command."""
    found = found or judge(run, name, None)
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
