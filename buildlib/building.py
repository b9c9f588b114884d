"""The build use case: is an image current (its task's up-to-date decision), and its build
as its verdict says (build it, tag what storage holds under its key, or fail, saying why).
`tasks.py` wraps both in doit's task dict; this module knows no doit."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from buildlib import builder, keys, pulls
from buildlib.buildah import BuildahError, StorageError, command_line
from buildlib.plan import ForeignFolder
from buildlib.settled import How, Settled
from buildlib.standing import Blocked, Ground
from buildlib.verdict import Outcome, Verdict, judge

if TYPE_CHECKING:
    from buildlib.plan import ImagePlan
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


def build(run: Run, name: str, found: Verdict) -> Settled | str:
    """Build the image as its verdict (of its up-to-date check) says, or find it in
    storage by its key; what it settled on, or why it failed. The run keeps what it
    settled on (`Run.keep_built`)."""
    plan = run.project.plans[name]
    parent = Standing()
    if plan.parent:
        parent = Standing(run.project.plans[plan.parent], run.images.get(plan.parent))
    settled = build_judged(run.bench, plan, found, lambda: run.stands_on(name), parent,
                           tree=run.tree_references.keys(), fresh=name in run.fresh)
    if not isinstance(settled, str):
        run.keep_built(name, settled)
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
        return {platform: self.plan.build_from(parent[platform])
                if platform in parent else None for platform in platforms or (None,)}


def build_judged(bench: builder.Bench, plan: ImagePlan, found: Verdict,
                 ground_now: Callable[[], Ground | Blocked], parent: Standing,
                 tree: Collection[str], fresh: bool) -> Settled | str:
    """The build of `plan` as its verdict says, on `parent`; what it settled on, or why it
    failed. A verdict without records (what it stands on was not in storage) gets them
    from `ground_now()`, once the images it stands on are pulled. `tree`: the references
    of this tree's images (never pulled)."""
    name = plan.name
    if found.outcome is Outcome.FAIL:
        fix = f"\n  fix: {found.fix}" if found.fix else ""
        return f"cannot build {name}: {found.why}{fix}"
    pulled = pulls.images_read(bench.services, bench.storage, plan, tree)
    if isinstance(pulled, str):
        return pulled
    records, reasons = found.records, found.stale
    if records is None or pulled:  # keyed now, on what storage holds
        ground = ground_now()
        if isinstance(ground, Blocked):
            return f"cannot build {name}: {ground.reason}"
        records = ground.records(plan)
        reasons = found.stale or dict.fromkeys(records, found.why)
    try:
        if parent.plan and parent.settled and parent.settled.how is How.REGISTRY:
            pulls.pull_found(bench.services, bench.storage, parent.plan, parent.settled)
        return builder.build(bench, plan, records, reasons,
                             parent_names=parent.names(plan.platforms), fresh=fresh)
    except (BuildahError, StorageError, subprocess.CalledProcessError, ForeignFolder,
            OSError) as err:
        return str(err)  # the summary adds the log's tail and path


def title(run: Run, name: str, found: Verdict | None) -> str:
    """What the build does, from its verdict: per platform, found by its key or the exact
    buildah command."""
    found = found or judge(run, name, None)
    if not found.records:
        return f"building {name}"
    lines, in_storage = [], run.storage.with_keys(found.records)
    fresh = name in run.fresh  # (no_cache=1: built again though storage holds it)
    for platform, record in found.records.items():
        what = f"{name} for {platform}" if platform else name
        argv = builder.bud_argv(run.bench, run.project.plans[name], record, fresh)
        lines.append(f"found {what} in local storage by its key {keys.key_tag(record.key)}"
                     if in_storage[platform] and not fresh else
                     f"building {what}: {command_line(argv)}")
    return "\n.  ".join(lines)
