"""How to build one image: its plan (the rendered context, args, labels, base, platforms,
what its build reads) and the record of what makes it once the image it is built on is
known; the folder a build writes in `build_dir`, and the names it gives the image."""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from buildlib import build_access, dockerfile, keys, render, tree_files
from buildlib.reference import ImageRef

if TYPE_CHECKING:
    from buildlib.settled import Settled

LOCAL_KEY_REPOSITORY = "localhost/imagebake"
IMAGE_CONTEXT = "docker-image://"  # a named build context that is an image

WORKDIR_MARK = ".made-by-imagebake"
# What a build or push writes in its image's folder (besides the logs and the mark).
WORKDIR_FILES = {"Dockerfile", "context", "image-id", "pushed-digest", WORKDIR_MARK}


class ForeignFolder(Exception):
    """`{build_dir}/{name}` holds files this tool did not make: it is left alone."""


def _input_volume_host(volume: str) -> str | None:
    """The host path of a `--volume HOST:CONTAINER[:OPTIONS]` mounted read-only (`ro`) or
    as an overlay (`O`); None for a writable one."""
    parts = volume.split(":")
    options = parts[2].split(",") if len(parts) > 2 else []
    return parts[0] if len(parts) > 1 and ("ro" in options or "O" in options) else None


def _in_workdir(file_name: str) -> property:
    """A file of the image's folder in build_dir (`{name}`: the image's name)."""
    return property(lambda plan: plan.workdir / file_name.format(name=plan.name))


@dataclass(frozen=True)
class ImagePlan:
    """How to build one image, and the record of what makes it (its key, once the
    parent's image ID is known)."""

    name: str
    parent: str | None
    reference: str
    parent_reference: str | None
    context: render.Context
    workdir: Path  # {build_dir}/{name}
    args: Mapping[str, str]
    labels: Mapping[str, str]
    volumes: tuple[str, ...]
    format: str
    timestamp: int
    isolation: str | None
    timeout: float
    platforms: tuple[str, ...] = ()  # a manifest list of one image per platform; (): native
    base: str | None = None  # a root's FROM image (its ID is in the key); None: scratch
    # one platform of a multi-arch image (`push platform=P`): a list of that platform alone,
    # pushed under its key's tag only; `merge` makes the image's list of all its platforms
    one_of: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()  # every other image the build reads (their IDs are in the key)
    # a root's base image -> its ONBUILD triggers (None: not in storage), asked when keyed
    base_triggers: Callable[[str], tuple[dockerfile.Instruction, ...] | None] | None = None
    access: build_access.Access = build_access.Access()  # secrets, SSH, network: not keyed
    extra_tags: tuple[str, ...] = ()  # tags beside the reference's, pushed to one digest
    target: str | None = None  # the stage it builds (`--target`); None: the last
    # named build contexts: name -> an absolute folder, or `docker-image://<reference>`
    contexts: Mapping[str, str] = field(default_factory=dict)

    dockerfile = _in_workdir("Dockerfile")
    context_dir = _in_workdir("context")
    iidfile = _in_workdir("image-id")
    build_log = _in_workdir("{name}-build.log")
    push_log = _in_workdir("{name}-push.log")
    digestfile = _in_workdir("pushed-digest")

    def own_workdir(self) -> None:
        """Make `{build_dir}/{name}` (marked as ours), or check that the one there is ours:
        a build rewrites its context and `doit clean` deletes it, so a folder of
        someone else's files must not be taken."""
        mark = self.workdir / WORKDIR_MARK
        if mark.exists():
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        foreign = sorted(p.name for p in self.workdir.iterdir()
                         if p.name not in WORKDIR_FILES and not p.name.endswith(".log"))
        if foreign:
            raise ForeignFolder(f"{self.workdir} holds files imagebake did not make "
                                f"({', '.join(foreign[:5])}); move them elsewhere")
        mark.touch()  # empty, or what an earlier version of this tool made: ours from now

    def owns_workdir(self) -> bool:
        return (self.workdir / WORKDIR_MARK).exists()

    def write_build_folder(self, parent_name: str | None) -> None:
        """Write the Dockerfile a build reads (its first FROM naming the parent as
        `parent_name`, the labels in it) and a fresh copy of the context, into the image's
        folder (made ours first)."""
        self.own_workdir()
        context = self.context
        if parent_name and self.parent:
            context = context.from_parent(self.parent_reference, parent_name)
        try:
            context.as_built(self.labels).write(self.dockerfile, self.context_dir)
        except OSError:
            shutil.rmtree(self.context_dir, ignore_errors=True)  # a full disk: free what we took
            raise

    @functools.cached_property
    def cache_blind_reads(self) -> tuple[str, ...]:
        """What its build reads that buildah's layer cache does not look at: when any, it
        is built without that cache (else a new key could take old bytes)."""
        return tuple(dockerfile.cache_blind_reads(self.context.dockerfile, self.args,
                                                  self.volumes, self.triggers, self.target))

    @property
    def base_found_by_buildah(self) -> bool:
        """A root whose first FROM names a variable without a default: the image is not
        known before the build, and buildah pulls it."""
        return self.parent is None and self.base is None and (
            dockerfile.first_from(self.context.dockerfile) or "").lower() != "scratch"

    def build_from(self, settled: Settled) -> str | None:
        """The name a child of this image is built FROM: its key name, or for an image taken
        by a pin that carries no key, its digest reference."""
        return self.key_name(settled.key) if settled.key else settled.pinned

    @property
    def triggers(self) -> tuple[dockerfile.Instruction, ...]:
        """The ONBUILD triggers buildah runs first in this image's build: its parent's
        (kept by `format: docker`), or a root's base image's once storage holds it."""
        if self.base and self.base_triggers is not None:
            return self.base_triggers(self.base) or ()
        return self.context.triggers

    @property
    def sources(self) -> keys.Record:
        """The record of this image's own inputs, from the files as they are now (hashed
        on first use: listing or dry runs that never ask pay nothing). A root's base
        image's ONBUILD triggers count once storage holds the base (none before: the
        build pulls it first, then keys it again)."""
        triggers = self.triggers
        made: dict = self.__dict__.setdefault("_sources", {})  # (frozen: cached by hand)
        if triggers not in made:
            made[triggers] = self.record_of(replace(self.context, triggers=triggers)
                                            .file_digests())
        return made[triggers]

    def record_of(self, file_digests: Mapping[str, str]) -> keys.Record:
        """The record with these context file digests, and no parent yet."""
        read = dockerfile.args_read(self.context.dockerfile)
        return keys.Record(dockerfile=self.context.dockerfile_digest(self.parent_reference),
                           files=file_digests,
                           args={name: value for name, value in self.args.items() if read(name)},
                           labels=self.labels, volumes=self.volumes,
                           format=self.format, timestamp=self.timestamp,
                           target=self.target, contexts=self.context_digests(),
                           volume_contents=self.volume_digests())

    def paths_read(self) -> list[Path]:
        """What its build reads beside its context, keyed by what it holds: each named
        build context's folder and each read-only volume's host path."""
        return [*(Path(value) for _, value in sorted(self.contexts.items())
                  if not value.startswith(IMAGE_CONTEXT)),
                *map(Path, self.input_volumes())]

    def context_digests(self) -> dict[str, str]:
        """Each named build context -> its folder's content digest, or its image
        reference (whose ID is among the images the build reads)."""
        return {name: value if value.startswith(IMAGE_CONTEXT) else
                tree_files.folder_digest(Path(value), self._stats)
                for name, value in sorted(self.contexts.items())}

    def input_volumes(self) -> list[str]:
        """The host path of each volume its build reads as an input: mounted `ro`, or `O`
        (its writes go to an overlay). A writable volume is a cache the build writes to, as
        a `RUN --mount=type=cache` is: keyed by its spelling alone (its content would change
        the key of the build that wrote it)."""
        return [host for host in map(_input_volume_host, self.volumes) if host]

    def volume_digests(self) -> dict[str, str]:
        """Each of `input_volumes` -> the content digest of what is there ("absent")."""
        return {host: tree_files.folder_digest(Path(host), self._stats)
                if os.path.lexists(host) else "absent" for host in self.input_volumes()}

    @property
    def _stats(self) -> tree_files.StatCache:
        """The digests of the files of named contexts and volumes, by their stat: a folder
        read again only where a file changed (in build_dir, for every image)."""
        return tree_files.StatCache.of(self.workdir.parent / "stat-cache.json")

    def record_on(self, parent_id: str | None, platform: str | None = None,
                  images: Mapping[str, str] | None = None) -> keys.Record:
        """The record of this image built on that parent image (for that platform),
        reading these `images` (each of `reads` -> its ID); made once (its key is asked by
        the run's estimate, the up-to-date check and the build)."""
        read = tuple(sorted((images or {}).items()))
        made: dict = self.__dict__.setdefault("_records", {})  # (frozen: cached by hand)
        asked = (self.triggers, parent_id, platform, read)
        if asked not in made:
            made[asked] = replace(self.sources, parent_id=parent_id, platform=platform,
                                  images=dict(read))
        return made[asked]

    def read_ids(self, id_of: Callable[[str], str | None]) -> dict[str, str] | str:
        """Each image the build reads (besides parent or base) -> its ID as `id_of` finds
        it, or the first one it cannot find."""
        ids = {reference: id_of(reference) for reference in self.reads}
        missing = [reference for reference, image_id in ids.items() if image_id is None]
        return missing[0] if missing else {r: i for r, i in ids.items() if i is not None}

    @property
    def built_on(self) -> str:
        """What the record's `parent_id` is the ID of, in words."""
        return f"parent '{self.parent}'" if self.parent else f"base image '{self.base}'"

    def key_name(self, key: str) -> str:
        """The name made of a key alone, which a build gives an image in local storage."""
        return f"{LOCAL_KEY_REPOSITORY}/{self.name}:{keys.key_tag(key)}"

    def local_names(self, key: str) -> list[str]:
        """The names a build gives this image in local storage, in this order: a name made
        of its key alone, then the reference. (buildah writes a parent's first name into a
        child's history, so that name must not say where images go: with it first, the
        same inputs give the same ID under any registry, namespace, prefix or tag.) A
        platform's image of a multi-arch image has its key name only: the reference names
        the manifest list (`list_names`)."""
        if self.platforms:
            return [self.key_name(key)]
        return [self.key_name(key), self.reference]

    def list_names(self, key: str) -> list[str]:
        """The names of a multi-arch image's manifest list: its key name, the reference."""
        return [self.key_name(key), self.reference]

    @property
    def tag_references(self) -> list[str]:
        """The reference, then the same repository under each extra tag."""
        ref = ImageRef.parse(self.reference)
        return [self.reference, *(str(replace(ref, tag=tag)) for tag in self.extra_tags)]

    def key_reference(self, key: str) -> str:
        """The reference that names this image by its key, beside the user's tag."""
        return str(replace(ImageRef.parse(self.reference), tag=keys.key_tag(key)))
