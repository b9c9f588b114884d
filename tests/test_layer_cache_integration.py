"""buildah's layer cache never gives a new key old content: a step whose reads buildah
1.28's cache does not look at (a RUN's mounts, volumes) is built without that cache, so
each content of what it reads gives its own image, holding those bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
import rootfs
from conftest import Tree

pytestmark = pytest.mark.integration

# Each reads `s` (a context file) in a way buildah's cache does not look at.
READERS = {
    "bind mount": "RUN --mount=type=bind,source=s,target=/m cp /m /f\n",
    "bind mount from a stage": "FROM {{ parent_image }} AS s\nCOPY s /s\n"
                               "FROM {{ parent_image }}\n"
                               "RUN --mount=type=bind,from=s,source=/s,target=/m cp /m /f\n",
    "cache mount from a stage": "FROM {{ parent_image }} AS s\nCOPY s /s\n"
                                "FROM {{ parent_image }}\n"
                                "RUN --mount=type=cache,from=s,source=/,target=/m cp /m/s /f\n",
}


def probe_tree(tree: Tree, reader: str) -> Path:
    """The example's base and one image `probe` on it whose RUN reads the file `s`."""
    folder = tree.root / "templates" / "probe"
    folder.mkdir()
    text = reader if reader.startswith("FROM") else "FROM {{ parent_image }}\n" + reader
    (folder / "Dockerfile.j2").write_text(text)
    tree.edit_yaml(lambda data: data.update(images={
        "base": data["images"]["base"], "probe": {"parent": "base"}}))
    return folder / "s"


@pytest.mark.parametrize("reader", sorted(READERS))
def test_four_contents_of_a_mounted_file_give_four_images(tree: Tree, reader: str) -> None:
    mounted = probe_tree(tree, READERS[reader])
    images = {}
    for content in ("one", "two", "three", "four"):
        mounted.write_text(content)
        tree.doit("build")
        assert tree.statuses()["probe"] == "built"
        image = tree.report()["images"]["probe"]["id"]
        assert rootfs.read(tree.global_args, image, "/f") == content.encode(), content
        images[image] = content
    assert len(images) == 4, images


def test_a_volume_s_new_content_is_built(tree: Tree, tmp_path: Path) -> None:
    """A volume's content is no part of the key (its spelling is): a change of the key
    for another reason must still read the volume as it is now."""
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "v").write_text("one")
    probe_tree(tree, "LABEL edit=1\nRUN cp /v/v /f\n").write_text("")
    tree.edit_yaml(lambda data: data["images"]["probe"].update(volumes=[f"{volume}:/v:ro"]))
    tree.doit("build")
    (volume / "v").write_text("two")
    tree.edit("templates/probe/Dockerfile.j2", "edit=1", "edit=2")
    tree.doit("build")
    image = tree.report()["images"]["probe"]["id"]
    assert rootfs.read(tree.global_args, image, "/f") == b"two"
    log = (tree.root / "build" / "probe" / "probe-build.log").read_text()
    assert f"without buildah's layer cache, blind to volume {volume}:/v:ro" in log


def test_a_build_arg_s_new_value_reaches_env_label_and_workdir(tree: Tree) -> None:
    """buildah caches ENV, LABEL, WORKDIR by their text before substitution."""
    probe_tree(tree, "ARG F\nENV E=${F}-env\nLABEL l=${F}\nWORKDIR /w-${F}\n")
    for value in ("one", "two"):
        tree.edit_yaml(lambda data, v=value: data["images"]["probe"].update(args={"F": v}))
        tree.doit("build")
        config = rootfs.config(tree.global_args, tree.report()["images"]["probe"]["id"])
        assert f"E={value}-env" in config["Env"]
        assert config["Labels"]["l"] == value
        assert config["WorkingDir"] == f"/w-{value}"
