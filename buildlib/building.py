"""The build use case: is an image current (its task's up-to-date decision), and its build
as its verdict says (build it, tag what storage holds under its key, or fail, saying why).
`tasks.py` wraps both in doit's task dict; this module knows no doit."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from buildlib import builder, keys, project, prune, publish
from buildlib.buildah import BuildahError, StorageError, command_line
from buildlib.settled import How, Settled
from buildlib.verdict import Outcome, Verdict, judge

if TYPE_CHECKING:
    from buildlib.project import ImagePlan
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
    settled on, or why it failed. What it settled on is settled in the run and remembered
    as this tree's; its children's keys are then known."""
    plan, parent_plan = run.project.plans[name], None
    parent = run.images.get(plan.parent) if plan.parent else None
    if plan.parent and parent is not None:
        parent_plan = run.project.plans[plan.parent]
    settled = build_judged(
        run.bench, plan, found or judge(run, name, None), lambda: judge(run, name, None),
        Standing(parent_plan, parent), tree=run.tree_references.keys(),
        fresh=name in run.fresh)
    if isinstance(settled, str):
        return settled
    run.settle(name, settled)
    prune.remember(run.project, name, settled, run.state.record_lock)
    run.state.remembered.add(name)
    run.ask_for_children(name, settled)
    return settled


@dataclass(frozen=True)
class Standing:
    """The parent an image is built on, as this run settled it (None: a root, a parent
    outside the selection, or one not settled)."""

    plan: ImagePlan | None = None
    settled: Settled | None = None

    def names(self, platforms: tuple[str, ...]) -> dict[str | None, str | None]:
        """The name each platform's image is built FROM: the parent's (of that platform)
        as this run settled it; none with skip_parents (FROM the reference)."""
        if self.plan is None or self.settled is None:
            return {}
        parent = self.settled.per_platform()
        return {platform: builder.build_from(self.plan, parent[platform])
                if platform in parent else None for platform in platforms or (None,)}


def build_judged(bench: builder.Bench, plan: ImagePlan, found: Verdict,
                 judged_again: Callable[[], Verdict], parent: Standing,
                 tree: Collection[str], fresh: bool) -> Settled | str:
    """The build of `plan` as its verdict says (`judged_again`: its verdict on what
    storage holds now), on `parent`; what it settled on, or why it failed. `tree`: the
    references of this tree's images (never pulled)."""
    name = plan.name
    if found.outcome is Outcome.FAIL:
        fix = f"\n  fix: {found.fix}" if found.fix else ""
        return f"cannot build {name}: {found.why}{fix}"
    pulled = images_in_storage(bench, plan, tree)  # its base, and the other images it reads
    if isinstance(pulled, str):
        return pulled
    if found.records is None or pulled:  # judged again on what storage holds now
        found = judged_again()
        if found.records is None:
            return f"cannot build {name}: {found.why}"
    try:
        if parent.plan and parent.settled and parent.settled.how is How.REGISTRY:
            publish.pull(parent.plan, bench.services, parent.settled, bench.storage)
        return builder.build(bench, plan, found.records, found.stale,
                             parent_names=parent.names(plan.platforms), fresh=fresh)
    except (BuildahError, StorageError, subprocess.CalledProcessError, project.ForeignFolder,
            OSError) as err:
        return str(err)  # the summary adds the log's tail and path


def images_in_storage(bench: builder.Bench, plan: ImagePlan,
                      tree: Collection[str]) -> str | bool:
    """A root's base image, and every other image the build reads but this tree's own
    (`tree`: their references), pulled when local storage lacks it (it is built on
    exactly the images its key names, with `--pull=never`): whether any was, or the
    error when one cannot be pulled."""
    wanted = [plan.base] if plan.base and not plan.parent else []
    wanted += [image for image in plan.reads if image not in tree]
    pulled = False
    for image in wanted:
        if bench.storage.id_of_image(image):
            continue
        what = "its base image" if image == plan.base and not plan.parent else "the image"
        try:
            builder.pull_base(bench.services, image, bench.storage)
        except BuildahError as err:
            return (f"cannot build {plan.name}: {what} {image!r} is not in local storage and "
                    f"could not be pulled: {err}\n  fix: correct the line that names it, "
                    "or pull or build that image first")
        pulled = True
        bench.services.base_triggers.pulled(image)
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
        argv = builder.bud_argv(run.bench, run.project.plans[name], record)
        lines.append(f"found {what} in local storage by its key {keys.key_tag(record.key)}"
                     if in_storage[platform] else
                     f"building {what}: {command_line(argv)}")
    return "\n.  ".join(lines)
