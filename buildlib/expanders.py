"""The expanders the entry points pass to `project.load`: each makes another tool's section
of images.yaml ordinary images, and imports that tool's room only for a tree that has the
section, so a tree without `kolla:` never loads Kolla's."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from buildlib.config import Config
    from buildlib.project import Expansion


def kolla(config: Config) -> Expansion:
    """`kolla:`: Kolla's images, read live from the installed kolla package."""
    from buildlib import kolla as kolla_tree

    return kolla_tree.expand(config)
