"""The commands that show what imagebake reads and makes of a tree, building nothing:
`config` (the merged images.yaml, as `docker buildx bake --print`), `render` (each image's
Dockerfile and context, as `kolla-build --template-only`) and `graph` (the image graph in
the colours of the last run)."""

from __future__ import annotations

import json
from pathlib import Path

from buildlib import config, config_load, pictures, project
from buildlib.doit_seam import display_path
from buildlib.errors import CommandFailed
from buildlib.plan import ForeignFolder
from buildlib.run import Run


def print_config(cfg: config.Config) -> None:
    """images.yaml as merged with its override files and --set values, validated."""
    print(config_load.merged_yaml(cfg), end="")


def render_images(run: Run) -> None:
    """Each selected image's Dockerfile as its template renders it (its own FROM line),
    and its context; raises CommandFailed when an image's work folder is not imagebake's."""
    proj = run.project
    names = proj.graph.ordered(run.selection.selected)
    for name in names:
        plan = proj.plans[name]
        try:
            plan.own_workdir()
        except ForeignFolder as err:
            raise CommandFailed(f"cannot render {name}: {err}") from None
        plan.context.write(plan.dockerfile, plan.context_dir)
    where = display_path(proj.build_dir)
    print(f"wrote the Dockerfile and context of {len(names)} images under {where}/<image>/")


def draw_graph(proj: project.Project, dot: Path) -> None:
    """graph.dot, and graph.svg when graphviz is there, coloured by the last report.json."""
    last = json.loads(proj.report_path.read_text()) if proj.report_path.exists() else None
    svg = pictures.write_graph(proj.graph, last, dot)
    print(f"wrote {display_path(dot)}"
          + (f" and {display_path(svg)}" if svg else " (install graphviz for the SVG)"))
