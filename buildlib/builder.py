"""Build one image (or find it in storage by its key), per platform, and the manifest list
of a multi-arch image: the engine's side of a build, handed plain values (the plan, the
records, the names of the images it is built on)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from buildlib import buildah, keys, tree_files
from buildlib.buildah import BuildahError
from buildlib.plan import ImagePlan
from buildlib.services import Services
from buildlib.settled import How, Settled
from buildlib.storage import Storage


@dataclass(frozen=True)
class Bench:
    """What every build of a run works with beside its image's plan: buildah and the
    registry, local storage, the tree's folder (where secrets' and SSH keys' paths start)
    and its owner mark (`Project.owner`), and whether the build's output is echoed."""

    services: Services
    storage: Storage
    root: Path
    owner: str
    echo: bool = False


def build_image(bench: Bench, plan: ImagePlan, record: keys.Record,
                reason: str | None = None,
                parent_name: str | None = None, fresh: bool = False) -> Settled:
    """The image with this record's key: found in storage by its key tag (and tagged
    with the reference), or built from a fresh copy of the context, FROM `parent_name`:
    the parent's key name, or the digest reference of a pinned parent that carries no key
    (exactly that image; and buildah writes the FROM name into the image's history, so a
    tag there would make the ID depend on the tag). Returns what later runs, children and
    pushes need. `fresh`: built without buildah's layer cache, though storage holds it,
    and the new image takes the key's names."""
    storage, start = bench.storage, time.time()
    with storage.lock_for(record.key):
        found = None if fresh else storage.with_key(record.key)
        if found is not None:
            missing = [n for n in plan.local_names(record.key)
                       if n not in storage.names(found)]
            if missing:
                bench.services.buildah.tag(found, *missing)
                storage.add(found, missing)
            return _settled(plan, found, record, How.LOCAL, start)
        built = _build(bench, plan, parent_name, record, reason, start, fresh)
        storage.add(built.id, plan.local_names(record.key))
        return built


def _build(bench: Bench, plan: ImagePlan, parent_name: str | None,
           record: keys.Record, reason: str | None,
           start: float, fresh: bool = False) -> Settled:
    name = plan.name
    plan.write_build_folder(parent_name)
    # What is in the image is the copy: if a file changed since it was hashed, key the copy.
    copied = {inner: tree_files.context_file_digest(plan.context_dir / inner)
              for inner in record.files}
    if copied != record.files:
        record = replace(record, files=copied)
    what = f"{name} for {record.platform}" if record.platform else name
    note = f"building {what}: {reason or 'asked to'}"
    blind = plan.cache_blind_reads
    if blind:
        note += f"\n# without buildah's layer cache, blind to {'; '.join(blind)}"
    try:  # a multi-arch image's platforms share its log, one after another
        built = bench.services.buildah.bud(bud_argv(bench, plan, record, fresh), plan.iidfile,
                                           plan.build_log, plan.timeout, note=note,
                                           echo=bench.echo,
                                     append=record.platform is not None)
    except BuildahError as err:
        if not any(race in err.output for race in TRIED_AGAIN):
            raise
        # Two keys of one image ID (inputs that change no byte) committed at once (the
        # other build's image is there now, and the layer cache makes this one quick), or
        # a RUN step's runtime could not start under load: the same build once more.
        built = bench.services.buildah.bud(bud_argv(bench, plan, record, fresh), plan.iidfile,
                                           plan.build_log, plan.timeout, note=f"{note} (again)",
                                           echo=bench.echo, append=True)
    return _settled(plan, built.id, record, How.BUILT, start, built.cpu_seconds)


TRIED_AGAIN = (
    "locating just-written image",  # buildah 1.28, one ID committed twice at once
    "sealing memfd copy: Device or resource busy",  # chroot isolation's runtime, under load
)


def bud_argv(bench: Bench, plan: ImagePlan, record: keys.Record,
             fresh: bool = False) -> list[str]:
    """`buildah bud` of this record, tagged with the key name and the reference (the
    key is no label: it would change the image ID; every build arg is given, those no
    ARG reads are no part of the key; the labels are in the Dockerfile it writes)."""
    options = buildah.bud_options(
        plan.local_names(record.key), fmt=record.format,
        timestamp=record.timestamp, isolation=plan.isolation, args=plan.args,
        volumes=record.volumes, platform=record.platform,
        layer_cache=not fresh and not plan.cache_blind_reads, target=record.target,
        contexts=plan.contexts)
    options += buildah.access_options(plan.access.secret_sources(bench.root),
                                      plan.access.ssh_sources(bench.root),
                                      plan.access.network)
    # An image is built on exactly the image its key names: its parent as this run
    # built or checked it, or for a root the base image in storage (pulled before the
    # key was made, when storage lacked it). Never a pull during the build, so a
    # registry serving another image under that name (or not answering) changes nothing.
    pull = "missing" if plan.base_found_by_buildah else "never"
    return bench.services.buildah.bud_argv(options, plan.dockerfile, plan.context_dir,
                                           plan.iidfile, pull=pull, owner=bench.owner)


def _settled(plan: ImagePlan, image_id: str, record: keys.Record, how: How,
             start: float, cpu_seconds: float = 0.0) -> Settled:
    """`cpu_seconds`: what buildah took to build it (0 for an image found by its key)."""
    return Settled(image_id, record.key, how, record=record.as_dict(), image=plan.reference,
                   start=start, end=time.time(), cpu_seconds=cpu_seconds)


def build(bench: Bench, plan: ImagePlan, records: Mapping[str | None, keys.Record],
          reasons: Mapping[str | None, str],
          parent_names: Mapping[str | None, str | None] | None = None,
          fresh: bool = False) -> Settled:
    """The image of these records (one per platform; `None`: a native image's one), each
    found by its key or built on `parent_names[platform]`, one after another into one log;
    of a multi-arch image, then the manifest list of them, named by its key and the
    reference. Returns what later runs, children and pushes need (a multi-arch image's
    per platform under "platforms")."""
    parent_names = parent_names or {}
    if not plan.platforms:
        return build_image(bench, plan, records[None], reasons.get(None),
                           parent_names.get(None), fresh)
    start = time.time()
    if not all(bench.storage.with_keys(records).values()):
        plan.own_workdir()
        plan.build_log.write_text("")  # the platforms' builds follow one another in it
    platforms = {platform: build_image(bench, plan, record, reasons.get(platform),
                                       parent_names.get(platform), fresh)
                 for platform, record in records.items()}
    key = keys.list_key({platform: image.key for platform, image in platforms.items()})
    list_id = manifest_list(bench.services, plan, key,
                            [image.id for image in platforms.values()], bench.storage, fresh)
    built = any(image.how is How.BUILT for image in platforms.values())
    return Settled(list_id, key, How.BUILT if built else How.LOCAL, image=plan.reference,
                   start=start, end=time.time(),
                   cpu_seconds=sum(image.cpu_seconds or 0.0 for image in platforms.values()),
                   platforms={platform: Settled(image.id, image.key, image.how,
                                                record=image.record)
                              for platform, image in platforms.items() if platform})


def manifest_list(services: Services, plan: ImagePlan, key: str, image_ids: list[str],
                  storage: Storage, fresh: bool = False) -> str:
    """The manifest list of these images (one per platform): found by its key name, or
    made; named by the reference too. Returns its ID in storage. `fresh`: made anew (the
    images were built afresh under their keys: the list found lists the old ones)."""
    names = plan.list_names(key)
    with storage.lock_for(key):
        found = storage.with_key(key)
        if found is not None and fresh:
            services.buildah.manifest_rm(*sorted(set(names) & storage.names(found)))
            found = None
        if found is None:
            found = services.buildah.manifest_create(names[0], image_ids)
            storage.add(found, names[:1])
        missing = [n for n in names if n not in storage.names(found)]
        if missing:
            services.buildah.tag(found, *missing)
            storage.add(found, missing)
    return found
