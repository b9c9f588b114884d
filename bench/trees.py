"""Benchmark image trees, written in the project's own images.yaml format.

Two shapes: the 188 images of OpenStack Kolla (tests/fixtures/kolla-tree.yaml, made by
scripts/kolla-tree: `name: parent`) and seeded random trees of any size. Every image renders
one shared template that copies a small file and runs `RUN sleep {{ seconds }}`, with each
image's seconds drawn from a seeded distribution (0 for no-op benchmarks). The root is
busybox on scratch, built offline. Each image's Dockerfile names the image, so that
buildah's layer cache never lets one image reuse another's layers. Levels, subtrees and
critical paths come from buildlib.graph.

A `RUN sleep 0` is left out unless `always_run` is set: a RUN step costs buildah about 0.5 s
of CPU per image (chroot setup and a second layer), which would more than double the time to
build the 1,000-image no-op tree on a 2-core machine, and a no-op run never executes it.

    tree = write_tree(tmp / "kolla", kolla_parents(), draw_lognormal(names, 1, 1.3), storage)
    tree.edit_image("nova-base")      # -> that image and its descendants go stale
"""

from __future__ import annotations

import math
import random
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from buildlib.graph import Graph

HERE = Path(__file__).resolve().parent
KOLLA_TREE = HERE.parent / "tests" / "fixtures" / "kolla-tree.yaml"  # made by scripts/kolla-tree
BUSYBOX = Path("/bin/busybox")
ROOT_NAME = "base"

ROOT_TEMPLATE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY payload.txt /bench/{{ image_name }}-{{ edit }}.txt
{% if seconds or always_run %}
RUN sleep {{ seconds }} && echo {{ image_name }} >> /bench/built
{% endif %}
"""

LEAF_TEMPLATE = """\
FROM {{ parent_image }}
COPY payload.txt /bench/{{ image_name }}-{{ edit }}.txt
{% if seconds or always_run %}
RUN sleep {{ seconds }} && echo {{ image_name }} >> /bench/built
{% endif %}
"""

PAYLOAD = "a small file that every benchmark image copies\n"


def kolla_parents(path: Path = KOLLA_TREE) -> dict[str, str | None]:
    """Kolla's 188 images: name -> parent (None for the root)."""
    parents = yaml.safe_load(path.read_text())
    return {str(name): parent for name, parent in parents.items()}


def random_parents(count: int, seed: int = 1) -> dict[str, str | None]:
    """A random recursive tree: image i's parent is drawn uniformly from images 0..i-1."""
    rng = random.Random(seed)
    names = [ROOT_NAME] + [f"img-{i:04d}" for i in range(1, count)]
    parents: dict[str, str | None] = {ROOT_NAME: None}
    for i, name in enumerate(names[1:], start=1):
        parents[name] = names[rng.randrange(i)]
    return parents


def draw_lognormal(names: Iterable[str], median: float, sigma: float, seed: int = 1
                   ) -> dict[str, float]:
    """Heavy-tailed `RUN sleep` seconds: lognormal with this median and sigma, to 0.1 s
    (at least 0.1 s, so that every image keeps its RUN step)."""
    rng = random.Random(seed)
    return {name: max(0.1, round(rng.lognormvariate(math.log(median), sigma), 1))
            for name in names}


def subtree(parents: Mapping[str, str | None], name: str) -> set[str]:
    """The image and all its descendants."""
    return {name} | Graph.build(parents).descendants(name)


def levels(parents: Mapping[str, str | None]) -> list[list[str]]:
    """Images grouped by depth (the root is level 0)."""
    return Graph.build(parents).levels()


def mid_level_image(parents: Mapping[str, str | None]) -> str:
    """The `nova-base` equivalent: nova-base itself if present, else the image of the
    middle level with the largest subtree."""
    if "nova-base" in parents:
        return "nova-base"
    grouped = levels(parents)
    candidates = grouped[max(1, (len(grouped) - 1) // 2)]
    return max(candidates, key=lambda name: len(subtree(parents, name)))


def storage_args(storage: Path) -> list[str]:
    """Global buildah flags for a private storage root under `storage`."""
    return ["--root", str(storage / "root"), "--runroot", str(storage / "run"),
            "--storage-driver", "overlay"]


@dataclass
class Tree:
    """A generated tree: its folder (images.yaml, templates/, build/) and its shape."""

    root: Path
    parents: dict[str, str | None]
    seconds: dict[str, float]

    @property
    def config(self) -> Path:
        return self.root / "images.yaml"

    @property
    def build_dir(self) -> Path:
        return self.root / self.read()["settings"]["build_dir"]

    @property
    def report_path(self) -> Path:
        return self.build_dir / "report.json"

    def read(self) -> dict[str, Any]:
        return yaml.safe_load(self.config.read_text())

    def edit_yaml(self, change: Callable[[dict[str, Any]], None]) -> None:
        data = self.read()
        change(data)
        self.config.write_text(yaml.safe_dump(data, sort_keys=False))

    def settings(self, **changes: Any) -> None:
        self.edit_yaml(lambda data: data["settings"].update(changes))

    def use_storage(self, storage: Path, build_dir: str = "build") -> None:
        """Point the tree at another buildah storage root and build dir (a fresh cache)."""
        self.settings(buildah_args=storage_args(storage), build_dir=build_dir)

    def edit_image(self, name: str) -> set[str]:
        """Change one image's vars (so its rendered Dockerfile changes); return the images
        that must rebuild: it and its descendants."""

        def bump(data: dict[str, Any]) -> None:
            image_vars = data["images"][name].setdefault("vars", {})
            image_vars["edit"] = int(image_vars.get("edit", 0)) + 1

        self.edit_yaml(bump)
        return subtree(self.parents, name)

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())


def write_tree(dest: Path, parents: Mapping[str, str | None], seconds: Mapping[str, float],
               storage: Path, *, jobs: int = 8, always_run: bool = False) -> Tree:
    """Write images.yaml and the two templates into `dest` (created, must not exist)."""
    dest.mkdir(parents=True)
    for folder, template in (("root", ROOT_TEMPLATE), ("leaf", LEAF_TEMPLATE)):
        (dest / "templates" / folder).mkdir(parents=True)
        (dest / "templates" / folder / "Dockerfile.j2").write_text(template)
        (dest / "templates" / folder / "payload.txt").write_text(PAYLOAD)
    busybox = dest / "busybox"
    shutil.copy2(BUSYBOX, busybox)
    images: dict[str, Any] = {}
    for name, parent in parents.items():
        entry: dict[str, Any] = {"parent": parent, "vars": {"seconds": seconds[name]}}
        if parent is None:
            entry.update(template="root/Dockerfile.j2", files={"busybox": "busybox"})
        else:
            entry["template"] = "leaf/Dockerfile.j2"
        images[name] = entry
    data = {
        "settings": {"registry": "localhost:5000", "namespace": "bench", "tag": "latest",
                     "jobs": jobs, "isolation": "chroot", "build_dir": "build",
                     "buildah_args": storage_args(storage)},
        "vars": {"edit": 0, "always_run": always_run},
        "images": images,
    }
    tree = Tree(dest, dict(parents), dict(seconds))
    tree.config.write_text(yaml.safe_dump(data, sort_keys=False))
    return tree

