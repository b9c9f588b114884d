"""Everything known before a build: the validated config, the graph and one plan per image.

Loading a project finds every bad input (config, graph, templates, context files) at
once, before any build starts, and reports it as one `InputError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NoReturn, Protocol

from buildlib import (
    build_access,
    config,
    config_load,
    dockerfile,
    keys,
    render,
    sources,
    tree_files,
)
from buildlib.errors import InputError
from buildlib.graph import Graph, GraphError
from buildlib.reference import ImageRef

LOCAL_KEY_REPOSITORY = "localhost/imagebake"
IMAGE_CONTEXT = "docker-image://"  # a named build context that is an image

WORKDIR_MARK = ".made-by-imagebake"
# What a build or push writes in its image's folder (besides the logs and the mark).
WORKDIR_FILES = {"Dockerfile", "context", "image-id", "pushed-digest", WORKDIR_MARK}


class Sourced(Protocol):
    """What an expander's sources put into one image's context (Kolla's sources)."""

    @property
    def fetches(self) -> Mapping[str, str]: ...  # context name -> what a build fetches
    @property
    def folders(self) -> tuple[Path, ...]: ...  # the local source folders they are made of
    @property
    def failures(self) -> Mapping[str, str]: ...  # context name -> why it failed


# A config with `kolla:` made ordinary: its images, each one's rendered Dockerfile (as
# kolla-build renders it) and what each one's sources would fetch.
Expansion = tuple[config.Config, dict[str, str], Mapping[str, Sourced]]
Expander = Callable[[config.Config], Expansion]


class ForeignFolder(Exception):
    """`{build_dir}/{name}` holds files this tool did not make: it is left alone."""


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
        build pulls it first, and is judged again)."""
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
                           target=self.target, contexts=self.context_digests())

    def context_digests(self) -> dict[str, str]:
        """Each named build context -> its folder's content digest, or its image
        reference (whose ID is among the images the build reads)."""
        return {name: value if value.startswith(IMAGE_CONTEXT) else
                tree_files.folder_digest(Path(value))
                for name, value in sorted(self.contexts.items())}

    def record_on(self, parent_id: str | None, platform: str | None = None,
                  images: Mapping[str, str] | None = None) -> keys.Record:
        """The record of this image built on that parent image (for that platform),
        reading these `images` (each of `reads` -> its ID)."""
        own = self.sources if platform is None else replace(self.sources, platform=platform)
        return replace(own.on_parent(parent_id), images=dict(images or {}))

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


@dataclass(frozen=True)
class Project:
    config: config.Config
    graph: Graph
    plans: dict[str, ImagePlan]

    def one_platform(self, platform: str) -> Project:
        """The tree as a run for one platform builds it (`platform=linux/arm64`, on a
        runner of that platform): each multi-arch image of that platform a manifest list of
        that platform alone (its image's key is the same as in the list of all platforms:
        a record holds its platform and the parent's image of that platform)."""
        return replace(self, plans={
            name: replace(plan, platforms=(platform,), one_of=plan.platforms)
            if platform in plan.platforms else plan for name, plan in self.plans.items()})

    def asking_storage(self, base_triggers: Callable[[str], tuple[dockerfile.Instruction, ...]
                                                    | None]) -> Project:
        """The tree whose roots' keys count their base images' ONBUILD triggers as
        `base_triggers` reads them from local storage (a run's services hold it)."""
        return replace(self, plans={name: replace(plan, base_triggers=base_triggers)
                                    for name, plan in self.plans.items()})

    @property
    def build_dir(self) -> Path:
        return self.config.build_dir

    @property
    def report_path(self) -> Path:
        return self.build_dir / "report.json"

    @property
    def lock_path(self) -> Path:
        """`doit resolve`'s images.lock.json: each image's digest, key and ID pushed."""
        return self.build_dir / "images.lock.json"

    @property
    def state_file(self) -> Path:
        return self.build_dir / ".doit.db"

    @property
    def owner(self) -> str:
        """What marks this tree's builds (host and build_dir) among others in one storage."""
        where = f"{socket.gethostname()}:{self.build_dir.resolve()}"
        return hashlib.sha256(where.encode()).hexdigest()[:16]


def load(path: Path | str | config.Sources, fetch: bool | Collection[str] | None = None,
         expand: Expander | None = None) -> Project:
    """The project of this images.yaml. Its sources are made (downloaded, cloned,
    archived) only for the images `fetch` names (True: all; None: as `sources.fetching`
    says around this call, by default none): another image's context then names what a
    build would fetch or archive first, where the archive is not here yet. `expand` makes
    a `kolla:` section ordinary images (the caller that knows Kolla passes
    `expanders.kolla`), so that this module knows nothing of Kolla."""
    with contextlib.nullcontext() if fetch is None else sources.fetching(fetch):
        return _load(path, expand)


def _load(path: Path | str | config.Sources, expand: Expander | None) -> Project:
    cfg, texts, sourced = _expanded(config_load.load(path), expand)
    try:
        graph = Graph.build({name: image.parent for name, image in cfg.images.items()})
    except GraphError as err:
        raise InputError(cfg.path, err.problem, image=err.image, fix=err.fix) from None
    contexts = render.render_all(cfg, graph, texts)
    for name, made in sourced.items():  # what Kolla's sources would fetch, and are made of
        contexts[name] = replace(contexts[name], fetches=made.fetches, follows=made.folders,
                                 failures=made.failures)
    for name, image in cfg.images.items():
        if image.sources:
            contexts[name] = _with_sources(cfg, contexts[name])
    if cfg.settings.format == "docker":  # (the OCI format drops ONBUILD triggers)
        for name, parent in graph.parents.items():
            if parent is not None:
                contexts[name] = replace(contexts[name], triggers=dockerfile.onbuild_triggers(
                    contexts[parent].dockerfile))
    for name, image in cfg.images.items():
        contexts[name] = replace(contexts[name], target=image.target)
    plans: dict[str, ImagePlan] = {}
    for name in graph.order():  # parents first: a child's platforms default to its parent's
        plans[name] = _plan(cfg, graph, contexts[name], plans)
    return Project(cfg, graph, plans)


def _expanded(cfg: config.Config, expand: Expander | None) -> Expansion:
    if cfg.kolla is None:
        return cfg, {}, {}
    if expand is None:
        raise ValueError(f"{cfg.path}: `kolla:` needs an expander; pass "
                         "`expand=expanders.kolla` to project.load")
    return expand(cfg)


def _with_sources(cfg: config.Config, context: render.Context) -> render.Context:
    """The context with the archives of the image's `sources:`, as far as they are made."""
    made = sources.archives(cfg, context.name)
    taken = sorted(set(context.files) & {*made.files, *made.fetches, *made.failures})
    if taken:
        raise InputError(cfg.path, f"images.{context.name}: the context path {taken[0]!r} is "
                         f"both a file of the context and the archive of source "
                         f"'{taken[0].removesuffix('-archive')}'", image=context.name,
                         fix="rename the `files:` entry (or the file beside the template), "
                         "or the source")
    return replace(context, files={**context.files, **made.files},
                   fetches={**context.fetches, **made.fetches},
                   failures={**context.failures, **made.failures},
                   digests={**context.digests, **made.digests})


def _platforms(cfg: config.Config, name: str, parent: ImagePlan | None) -> tuple[str, ...]:
    """The image's own `platforms:`, else its parent's, else (a root) settings.platforms;
    a child's must be among its parent's, whose images it is built on."""
    own = cfg.images[name].platforms
    if parent is None:
        return tuple(own or cfg.settings.platforms or ())
    if own is None:
        return parent.platforms
    missing = [p for p in own if p not in parent.platforms]
    if missing:
        built = (f"is built for {', '.join(parent.platforms)}" if parent.platforms
                 else "has no `platforms:` (it is built for the native platform only)")
        raise InputError(cfg.path, f"images.{name}.platforms: {', '.join(missing)} is not a "
                         f"platform of its parent '{parent.name}', which {built}", image=name,
                         fix=f"add {', '.join(missing)} to the `platforms:` of "
                         f"'{parent.name}', or drop it from '{name}'")
    return tuple(own)


def _plan(cfg: config.Config, graph: Graph, context: render.Context,
          plans: Mapping[str, ImagePlan]) -> ImagePlan:
    name, settings = context.name, cfg.settings
    image = cfg.images[name]
    parent = graph.parents[name]
    args = _spelled({**settings.args, **image.args})
    remote = dockerfile.remote_inputs(context.dockerfile, args)
    if remote:
        raise InputError(cfg.path, f"rendered {context.template}: ADD {remote[0]} fetches "
                         "from the network at build time, which no key can cover", image=name,
                         fix="declare it under the image's `sources:` (fetched once, checked "
                         "by its sha256 and keyed by its content) and COPY or ADD it from the "
                         "context")
    target = _target(cfg, context)
    contexts = _named_contexts(cfg, name)
    images = [value.removeprefix(IMAGE_CONTEXT) for value in contexts.values()
              if value.startswith(IMAGE_CONTEXT)]
    reads = dockerfile.images_read(context.dockerfile, args, context.triggers, target, contexts)
    return ImagePlan(name=name, parent=parent, reference=cfg.reference(name),
                     parent_reference=cfg.reference(parent) if parent else None,
                     context=context, workdir=cfg.build_dir / name,
                     args=args,
                     labels=_spelled({**settings.labels, **image.labels}),
                     volumes=tuple(image.volumes), format=settings.format,
                     timestamp=cfg.timestamp, isolation=settings.isolation,
                     timeout=image.timeout or settings.build_timeout,
                     platforms=_platforms(cfg, name, plans[parent] if parent else None),
                     base=None if parent else _base(cfg, context, args, contexts),
                     reads=tuple(dict.fromkeys([*reads, *images])), target=target,
                     contexts=contexts,
                     access=build_access.access_of(cfg, name), extra_tags=tuple(image.tags))


def _base(cfg: config.Config, context: render.Context, args: Mapping[str, str],
          contexts: Mapping[str, str]) -> str | None:
    """A root's base image: what its first FROM names, or the image of the named context
    it names."""
    base = dockerfile.base_image(context.dockerfile, args)
    if base is None or base not in contexts:
        return base
    if not contexts[base].startswith(IMAGE_CONTEXT):
        _refuse(cfg, context.name, f"contexts.{base}: the first FROM names this folder",
                f"build FROM an image (`{IMAGE_CONTEXT}<reference>`, or the reference itself)")
    return contexts[base].removeprefix(IMAGE_CONTEXT)


def _target(cfg: config.Config, context: render.Context) -> str | None:
    """The image's `target:`, a stage its Dockerfile names."""
    target = cfg.images[context.name].target
    names = dockerfile.stage_names(context.dockerfile)
    if target is None or target in names:
        return target
    return _refuse(cfg, context.name, f"target: the rendered {context.template} has no "
                   f"stage named {target!r}" + (f" (its stages: {', '.join(names)})"
                                                 if names else " (it names no stage)"),
                   "name a stage of its `FROM ... AS <name>` lines (as spelled there), "
                   "or drop `target:` to build the last stage")


def _named_contexts(cfg: config.Config, name: str) -> dict[str, str]:
    """The image's `contexts:`: each folder made absolute (and checked), each image
    reference kept."""
    found = {}
    for context_name, value in sorted(cfg.images[name].contexts.items()):
        if value.startswith(IMAGE_CONTEXT):
            found[context_name] = value
            continue
        if dockerfile.is_remote(value):
            _refuse(cfg, name, f"contexts.{context_name}: {value} is fetched from the "
                    "network at build time, which no key can cover",
                    f"use a folder or `{IMAGE_CONTEXT}<reference>`")
        folder = cfg.source_path(value)
        if not folder.is_dir():
            _refuse(cfg, name, f"contexts.{context_name}: {folder} is no folder",
                    f"name a folder (relative to {cfg.root}) or `{IMAGE_CONTEXT}<reference>`")
        found[context_name] = str(folder.resolve())
    return found


def _refuse(cfg: config.Config, name: str, problem: str, fix: str) -> NoReturn:
    raise InputError(cfg.path, f"images.{name}.{problem}", image=name, fix=fix)


def _spelled(values: Mapping[str, object]) -> dict[str, str]:
    """Values as YAML spells them: `true`, not Python's `True`."""
    return {key: str(value).lower() if isinstance(value, bool) else str(value)
            for key, value in sorted(values.items())}
