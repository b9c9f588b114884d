"""The benchmark's level-by-level scheduler (bench/levels.py) builds with the tool's own
`buildah bud` arguments: a change to the builder's signature that the bench misses shows
here, not only when someone runs `make bench`."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO, Tree
from test_inputs_integration import file_in, small_tree

pytestmark = pytest.mark.integration


def test_levels_builds_a_tree_with_our_arguments(tree: Tree) -> None:
    small_tree(tree, {"root": {}, "leaf": {"parent": "root"}},
               {"root": {"Dockerfile.j2": "FROM scratch\nCOPY a /a\n", "a": "root\n"},
                "leaf": {"Dockerfile.j2": "FROM {{ parent_image }}\nCOPY b /b\n", "b": "leaf\n"}})
    done = subprocess.run([sys.executable, str(REPO / "bench" / "levels.py"),
                           str(tree.config), "--jobs", "2"], capture_output=True, text=True,
                          env=tree.env, cwd=tree.root)
    assert done.returncode == 0, done.stderr
    assert "levels: built 2 images in 2 levels (1+1)" in done.stdout
    leaf = tree.image_ids()
    assert file_in(tree, next(n for n in leaf if "/leaf:" in n), "/a") == "root\n"
