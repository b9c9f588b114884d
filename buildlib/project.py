"""Everything known before a build: the validated config, the graph and one plan per image.

Loading a project finds every bad input (config, graph, templates, context files) at
once, before any build starts, and reports it as one `InputError`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from buildlib import buildah, config, render
from buildlib.errors import InputError
from buildlib.graph import Graph, GraphError


@dataclass(frozen=True)
class ImagePlan:
    """How to build one image, and the key of everything that shapes it."""

    name: str
    parent: str | None
    reference: str
    context: render.Context
    workdir: Path  # {build_dir}/{name}
    bud_options: tuple[str, ...]
    timeout: float

    @property
    def dockerfile(self) -> Path:
        return self.workdir / "Dockerfile"

    @property
    def context_dir(self) -> Path:
        return self.workdir / "context"

    @property
    def iidfile(self) -> Path:
        return self.workdir / "image-id"

    @property
    def build_log(self) -> Path:
        return self.workdir / f"{self.name}-build.log"

    @property
    def push_log(self) -> Path:
        return self.workdir / f"{self.name}-push.log"

    @property
    def digestfile(self) -> Path:
        return self.workdir / "pushed-digest"

    @cached_property
    def inputs(self) -> dict[str, Any]:
        """Digests of what shapes the image: the rendered Dockerfile, each context file,
        and the bud options (args, labels, volumes, format, isolation, reference).
        The parent's image ID is checked apart."""
        return {"Dockerfile": self.context.dockerfile_digest(),
                "files": self.context.file_digests(), "options": list(self.bud_options)}

    @cached_property
    def inputs_key(self) -> str:
        return hashlib.sha256(json.dumps(self.inputs, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Project:
    config: config.Config
    graph: Graph
    plans: dict[str, ImagePlan]

    @property
    def build_dir(self) -> Path:
        return self.config.build_dir

    @property
    def buildah(self) -> buildah.Buildah:
        return buildah.Buildah(tuple(self.config.settings.buildah_args))

    @property
    def report_path(self) -> Path:
        return self.build_dir / "report.json"

    @property
    def state_file(self) -> Path:
        return self.build_dir / ".doit.db"

    @property
    def authfile(self) -> Path | None:
        """The authfile named by settings or REGISTRY_AUTH_FILE; None lets buildah choose."""
        named = self.config.settings.authfile or os.environ.get("REGISTRY_AUTH_FILE")
        return self.config.root / named if named else None

    def push_argv(self, name: str) -> list[str]:
        settings = self.config.settings
        return self.buildah.push_argv(self.plans[name].reference, fmt=settings.format,
                                      digestfile=self.plans[name].digestfile,
                                      tls_verify=settings.tls_verify, authfile=self.authfile)

    def bud_argv(self, name: str) -> list[str]:
        plan = self.plans[name]
        return self.buildah.bud_argv(plan.bud_options, plan.dockerfile, plan.context_dir,
                                     plan.iidfile)


def load(path: Path | str) -> Project:
    cfg = config.load(path)
    try:
        graph = Graph.build({name: image.parent for name, image in cfg.images.items()})
    except GraphError as err:
        raise InputError(cfg.path, err.problem, image=err.image, fix=err.fix) from None
    contexts = render.render_all(cfg, graph)
    plans = {name: _plan(cfg, graph, contexts[name]) for name in graph.order()}
    return Project(cfg, graph, plans)


def _plan(cfg: config.Config, graph: Graph, context: render.Context) -> ImagePlan:
    name, settings = context.name, cfg.settings
    image = cfg.images[name]
    reference = cfg.reference(name)
    options = buildah.bud_options(reference, fmt=settings.format, isolation=settings.isolation,
                                  args=image.args, labels=image.labels, volumes=image.volumes)
    return ImagePlan(name=name, parent=graph.parents[name], reference=reference,
                     context=context, workdir=cfg.build_dir / name,
                     bud_options=tuple(options),
                     timeout=image.timeout or settings.build_timeout)
