"""Everything known before a build: the validated config, the graph and one plan per image.

Loading a project finds every bad input (config, graph, templates, context files) at
once, before any build starts, and reports it as one `InputError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NoReturn, Protocol

from buildlib import (
    build_access,
    config,
    config_load,
    dockerfile,
    render,
    sources,
)
from buildlib.errors import InputError
from buildlib.graph import Graph, GraphError
from buildlib.plan import IMAGE_CONTEXT, ImagePlan


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
