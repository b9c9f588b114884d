"""What an image stands on: a root on its base image, a child on its parent's image of each
platform, each also on the other images its build reads; or why that cannot be known yet
(`Blocked`). The one rule for it, the one place a key is derived (`Ground.records`), and
the one walk of a tree from its roots that the run's estimate, the registry cache's
lookups, `doit resolve` and prune's current keys share.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from buildlib.settled import Platform

if TYPE_CHECKING:
    from buildlib.keys import Record
    from buildlib.plan import ImagePlan

IdOf = Callable[[str | None], str | None]  # an image reference -> its ID, when known


@dataclass(frozen=True)
class Blocked:
    """Why what an image stands on cannot be known: it must be built (or its parent) to
    know, or, when `fatal`, its build must fail."""

    reason: str
    fatal: bool = False


@dataclass(frozen=True)
class Ground:
    """The images an image is built on: per platform its parent's (a root's: its base
    image's; the ID None: `FROM scratch`), and each other image its build reads."""

    parent_ids: Mapping[Platform, str | None]
    reads: Mapping[str, str]

    def records(self, plan: ImagePlan) -> dict[Platform, Record]:
        """Its record (and so its key) of each platform, built on this ground."""
        return {platform: plan.record_on(parent_id, platform, self.reads)
                for platform, parent_id in self.parent_ids.items()}


# The parent's image of each platform, as the caller knows it; None: not known (it is
# built first), a Blocked: what stops the child too.
Parent = Mapping[Platform, str | None] | Blocked | None


def stands_on(plan: ImagePlan, parent: Parent, id_of: IdOf) -> Ground | Blocked:
    """What this image is built on: a root its base image as `id_of` finds it, a child its
    `parent`'s image of each of its platforms; and the images it reads as `id_of` finds
    them."""
    platforms = plan.platforms or (None,)
    if plan.parent is None:
        base_id = id_of(plan.base) if plan.base else None
        if plan.base and base_id is None:
            return Blocked(f"base image '{plan.base}' is not in local storage (pulled first)")
        parent_ids = dict.fromkeys(platforms, base_id)
    elif isinstance(parent, Blocked):
        return parent
    elif parent is None:
        return Blocked(f"parent '{plan.parent}' would be rebuilt")
    else:
        parent_ids = {platform: parent.get(platform) for platform in platforms}
        if not all(parent_ids.values()):
            return Blocked(f"parent '{plan.parent}' has no image of "
                           f"{', '.join(map(str, platforms))}")
    read = plan.read_ids(id_of)
    if isinstance(read, str):
        return Blocked(f"image '{read}' is not in local storage (pulled first)")
    return Ground(parent_ids, read)


@dataclass(frozen=True)
class Step:
    """One image of a walk: what it stands on, its records, the images found for them."""

    name: str
    standing: Ground | Blocked
    records: Mapping[Platform, Record]  # empty when blocked
    ids: Mapping[Platform, str | None]  # per platform: the image found for its record

    @property
    def found(self) -> bool:
        """Whether an image was found for each of its platforms."""
        return bool(self.ids) and all(self.ids.values())


# What a walk finds for an image's records (one per platform): the ID of each.
FindImages = Callable[[str, Mapping[Platform, "Record"]], Mapping[Platform, str | None]]


def walk(plans: Mapping[str, ImagePlan], names: Iterable[str], id_of: IdOf,
         find: FindImages, outside: Callable[[str], Parent] = lambda name: None
         ) -> Iterator[Step]:
    """Each image of `names` (parents first) on what it stands on: its parent as `find`
    found it earlier in the walk (a parent outside `names` as `outside(name)` says), a
    root's base image and the images it reads as `id_of` finds them. Below an image found
    for no platform, its children are blocked: their keys cannot be known before it is
    built."""
    found: dict[str, Mapping[Platform, str | None]] = {}
    for name in names:
        plan = plans[name]
        parent: Parent = None
        if plan.parent is not None:
            parent = found[plan.parent] if plan.parent in found else outside(name)
        ground = stands_on(plan, parent, id_of)
        records = ground.records(plan) if isinstance(ground, Ground) else {}
        found[name] = dict(find(name, records)) if records else {}
        yield Step(name, ground, records, found[name])
