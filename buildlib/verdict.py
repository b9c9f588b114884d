"""One verdict per image: what a build with this run's variables does with it, and why.

Every "is this image current?" is answered here, once: doit's up-to-date check, `doit
status`, the task titles and the build action all read the same `Verdict`. As pydoit's
`DependencyStatus`, it is one object to which each source adds its reasons: the saved
state, the key in local storage, the registry (cache=registry), `pin=`. A native image is a
tree with one platform (`None`): its records, like a multi-arch image's, are per platform.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from buildlib import cache, keys, sources
from buildlib.registry import RegistryError
from buildlib.settled import How, Platform, Settled
from buildlib.standing import Blocked, Ground

if TYPE_CHECKING:
    from buildlib.plan import ImagePlan
    from buildlib.project import Project
    from buildlib.storage import Storage

FRESH = "forced fresh build (no_cache=1)"  # buildah's layer cache off, though current
MISSING_SOURCES_FIX = ("add the missing paths to the image's context (beside its template, or "
                       "under `files:` in images.yaml), or correct the COPY/ADD")


class Judging(Protocol):
    """What `judge` reads of a run (as pydoit's `get_status(task, tasks_dict)` reads only
    the tasks): the tree, local storage, the registry, pins, what each image stands on."""

    @property
    def project(self) -> Project: ...

    @property
    def storage(self) -> Storage: ...

    @property
    def lookups(self) -> cache.Lookups | None: ...  # the registry, when this run asks it

    @property
    def from_registry(self) -> bool: ...  # cache=registry

    @property
    def pins(self) -> Mapping[str, str]: ...  # pin=NAME@DIGEST

    @property
    def fresh(self) -> frozenset[str]: ...  # no_cache=1: built afresh though current

    def stands_on(self, name: str, saved_of: Callable[[str], Settled | None] | None = None
                  ) -> Ground | Blocked: ...

    def warn(self, message: str) -> None: ...


class Outcome(Enum):
    CURRENT = "up-to-date"  # the image this task recorded carries the current key
    FOUND_LOCAL = "found locally"  # an image of the current key is in local storage
    FOUND_REGISTRY = "found in the registry"  # cache=registry: the registry holds it
    PINNED = "pinned"  # pin=NAME@DIGEST
    BUILD = "would build"
    FAIL = "would fail"


@dataclass
class Verdict:
    name: str
    outcome: Outcome = Outcome.BUILD
    reasons: list[str] = field(default_factory=list)
    # each platform's record, when the image it is built on is known
    records: dict[Platform, keys.Record] | None = None
    # what children stand on when no build is needed
    settled: Settled | None = None
    # why each platform's image must be built (what its build log's first line says)
    stale: dict[Platform, str] = field(default_factory=dict)
    fix: str | None = None  # how to fix what makes it fail, when known

    def add(self, outcome: Outcome, reason: str) -> Verdict:
        self.outcome = outcome
        self.reasons.append(reason)
        return self

    @property
    def runs_action(self) -> bool:
        """Whether doit must run the build action: to build, to tag what storage holds
        under the key, or to fail with the reason."""
        return self.outcome in (Outcome.BUILD, Outcome.FOUND_LOCAL, Outcome.FAIL)

    @property
    def why(self) -> str:
        return "; ".join(self.reasons)

    def line(self) -> str:
        """How `doit status` shows it."""
        if self.outcome is Outcome.CURRENT:
            return "up-to-date"
        return f"{self.outcome.value}: {self.why}" if self.reasons else self.outcome.value


def judge(run: Judging, name: str, saved: Settled | None,
          saved_of: Callable[[str], Settled | None] | None = None) -> Verdict:
    """What a build does with this image now. `saved`: what its task settled on when it
    last ran; `saved_of(task)`: another task's, outside a run (`doit info`)."""
    plan = run.project.plans[name]
    verdict = Verdict(name)
    if name in run.pins:
        return _pinned(run, plan, verdict)
    if plan.context.failures:  # (a source that cannot be fetched fails only its images)
        return verdict.add(Outcome.FAIL, "; ".join(plan.context.failures.values()))
    missing = plan.context.missing_sources()
    if missing:
        verdict.fix = MISSING_SOURCES_FIX
        return verdict.add(Outcome.FAIL, f"its build context lacks {', '.join(missing)}")
    if plan.context.fetches:  # (a run that builds fetches them first: their content decides)
        return verdict.add(Outcome.BUILD, f"would {sources.doing(plan.context.fetches)}")
    ground = run.stands_on(name, saved_of)
    if isinstance(ground, Blocked):
        return verdict.add(Outcome.FAIL if ground.fatal else Outcome.BUILD, ground.reason)
    verdict.records = ground.records(plan)
    if name in run.fresh:
        verdict.stale = dict.fromkeys(verdict.records, FRESH)
        return verdict.add(Outcome.BUILD, FRESH)
    stale = _stale(plan, saved, verdict.records, run.storage)
    if not stale and saved is not None:
        verdict.outcome, verdict.settled = Outcome.CURRENT, saved
        return verdict
    found = run.storage.with_keys(verdict.records)
    if all(found.values()):
        verdict.settled = _found_locally(plan, verdict.records, found)
        return verdict.add(Outcome.FOUND_LOCAL, "; ".join(
            f"{_on(p)}found in local storage by its key {keys.key_tag(verdict.records[p].key)}"
            for p in verdict.records))
    if run.from_registry and run.lookups is not None:
        try:
            in_registry = cache.find_image(run.lookups, plan, verdict.records, run.warn)
        except RegistryError as err:
            run.warn(f"warning: the registry cache could not be asked, building instead: "
                     f"{err}")
            in_registry = None
        if in_registry is not None:
            verdict.settled = in_registry
            return verdict.add(Outcome.FOUND_REGISTRY, f"{in_registry.pinned}")
    for platform, reason in stale.items():
        if platform == "manifest list" or not found.get(platform):
            verdict.reasons.append(f"{_on(platform)}{reason}")
            verdict.stale[platform] = reason
    verdict.outcome = Outcome.BUILD
    return verdict


def _found_locally(plan: ImagePlan, records: Mapping[Platform, keys.Record],
                   found: Mapping[Platform, str | None]) -> Settled:
    """What a build that finds these images by their keys settles on."""
    if not plan.platforms:
        return Settled(found[None], records[None].key, How.LOCAL)
    return Settled(None, keys.list_key({p: r.key for p, r in records.items()}), How.LOCAL,
                   platforms={p: Settled(found[p], r.key, How.LOCAL)
                              for p, r in records.items() if p is not None})


def _on(platform: Platform | str) -> str:
    return f"{platform}: " if platform else ""


def _pinned(run: Judging, plan: ImagePlan, verdict: Verdict) -> Verdict:
    reference = f"{cache.repository_of(plan.reference)}@{run.pins[plan.name]}"
    try:
        found = run.lookups.find(reference) if run.lookups else None
    except RegistryError as err:
        return verdict.add(Outcome.FAIL, f"pin {reference}: {err}")
    if found is None:
        return verdict.add(Outcome.FAIL, f"pin {reference}: the registry has no such image; "
                           "correct pin= or push it first")
    if found.manifest.is_index != bool(plan.platforms):
        what = "a manifest list" if found.manifest.is_index else "one image"
        return verdict.add(Outcome.FAIL, f"pin {reference}: {what}, but {plan.name} is "
                           + ("multi-arch (`platforms:`)" if plan.platforms else
                              "one image (no `platforms:`)"))
    try:
        verdict.settled = cache.settled_from(run.lookups, plan, found, _key_of(run, found))
    except RegistryError as err:
        return verdict.add(Outcome.FAIL, f"pin {reference}: {err}")
    return verdict.add(Outcome.PINNED, reference)


def _key_of(run: Judging, found: cache.Found) -> str | None:
    """The key a pinned image verifiably carries (its manifest's annotation, unless this
    machine holds another image under that key), else None: then it is used by its digest
    reference only, and given no key name."""
    unsigned = found.key and run.lookups and run.lookups.unsigned(found)
    if unsigned:
        run.warn(f"warning: pin {found.pinned}: {unsigned} (settings.trust): used by its "
                 "digest only, under no key")
        return None
    local = found.key and run.storage.with_key(found.key)
    if local and local != found.image_id and not found.manifest.is_index:
        run.warn(f"warning: pin {found.pinned} carries key {found.key[:32]}..., whose "
                 f"image here is {local}: used by its digest only")
        return None
    return found.key


def _stale(plan: ImagePlan, saved: Settled | None, records: Mapping[Platform, keys.Record],
           storage: Storage) -> dict[Platform | str, str]:
    """Why each platform's recorded image no longer stands (the ones that do are left
    out), and under "manifest list" why a multi-arch image's list must be made again;
    empty when the image this task recorded is current."""
    if not plan.platforms:
        reason = stale_image(plan, saved, records[None], storage)
        return {None: reason} if reason else {}
    if saved is not None and saved.id and saved.platforms is None:
        return {p: f"platforms changed: native -> {', '.join(records)}" for p in records}
    done = (saved and saved.platforms) or {}
    reasons: dict[Platform | str, str] = {
        p: reason for p, record in records.items()
        if (reason := stale_image(plan, done.get(p), record, storage))}
    if not reasons and saved is not None:
        key = keys.list_key({p: record.key for p, record in records.items()})
        missing = [n for n in plan.list_names(key)
                   if saved.key != key or not storage.has(saved.id, n)]
        if missing:
            reasons["manifest list"] = f"no manifest list named {missing[0]}"
    return reasons


def stale_image(plan: ImagePlan, saved: Settled | None, record: keys.Record,
                storage: Storage) -> str | None:
    """Why the image must be built (or found by its key), or None when the image this
    task recorded carries the current key and is still in storage under its names."""
    if saved is None or not saved.id:
        return "never built"
    if saved.key != record.key:
        return keys.changes(saved.record, record, plan.built_on)
    if not storage.holds(saved.id):
        return f"image {saved.id} ({plan.reference}) is no longer in local storage"
    for name in plan.local_names(record.key):  # children build FROM the first
        if not storage.has(saved.id, name):
            return f"image {saved.id} is not tagged {name}"
    return None
