"""Canaries of buildlib.storage_format: a tiny storage made by the installed buildah, and
every field the seam reads from containers/storage's private files checked against what
buildah itself says. A test here fails when a buildah or containers/storage upgrade moves
a file or a field (then fix that function of the seam, not its callers)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import REAL_BUILDAH, unmount_under

from buildlib import buildah, storage_format

pytestmark = pytest.mark.integration

OWNER = "canary-owner"


@dataclass(frozen=True)
class Storage:
    """A private buildah storage holding a base image, a child on it, a manifest list of the
    child, and the working container a failed build left on the child."""

    global_args: tuple[str, ...]
    base: str  # image IDs, `sha256:<hex>`
    child: str
    manifest_list: str
    container: str  # the failed build's working container

    def buildah(self, *args: str, check: bool = True) -> str:
        done = subprocess.run([REAL_BUILDAH, *self.global_args, *args], check=check,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.buildah(*args))

    @property
    def images_file(self) -> Path:
        store = self.json("info")["store"]
        return storage_format.images_file(Path(store["GraphRoot"]), store["GraphDriverName"])


def build(storage: Storage, folder: Path, dockerfile: str, *args: str) -> str:
    """`buildah bud` of `dockerfile` in `folder`; the image's ID."""
    folder.mkdir()
    (folder / "Dockerfile").write_text(dockerfile)
    (folder / "file").write_text(f"{folder.name}\n")
    storage.buildah("bud", "--format", "docker", "--layers", "--isolation", "chroot",
                    "--iidfile", str(folder / "iid"), *args, str(folder))
    return storage_format.image_id((folder / "iid").read_text())


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storage]:
    if REAL_BUILDAH is None:
        pytest.fail("buildah is not installed: run `make test`, which installs it")
    tmp = tmp_path_factory.mktemp("storage-format")
    empty = Storage(("--root", str(tmp / "root"), "--runroot", str(tmp / "run"),
                     "--storage-driver", "overlay"), "", "", "", "")
    base = build(empty, tmp / "base", "FROM scratch\nCOPY file /base\n", "--tag", "canary/base")
    child = build(empty, tmp / "child", "FROM canary/base\nCOPY file /child\n",
                  "--tag", "canary/child")
    manifest_list = storage_format.image_id(
        empty.buildah("manifest", "create", "canary/list", "canary/child").splitlines()[-1])
    failed = tmp / "failed"
    failed.mkdir()
    (failed / "Dockerfile").write_text("FROM canary/child\nRUN /no-such-program\n")
    empty.buildah("bud", "--layers", "--isolation", "chroot", "--build-arg",
                  f"{buildah.OWNER_ARG}={OWNER}", str(failed), check=False)
    containers = json.loads(empty.buildah("containers", "--json") or "[]")
    assert len(containers) == 1, "a failed build no longer keeps its working container"
    yield Storage(empty.global_args, base, child, manifest_list, containers[0]["id"])
    unmount_under(tmp)


def test_buildah_info_names_the_image_list_and_counts_its_images(storage: Storage) -> None:
    """`buildah info`'s GraphRoot, GraphDriverName and ImageStore.number locate the list."""
    info = storage.json("info")["store"]
    assert info["GraphDriverName"] == "overlay"
    assert storage.images_file.is_file(), "the storage keeps its image list elsewhere"
    assert storage_format.graph_root(storage.images_file) == Path(info["GraphRoot"])
    listed = storage_format.read_image_store(storage.images_file)
    assert listed is not None and len(listed) == info["ImageStore"]["number"]


def test_images_json_holds_every_image_with_its_names(storage: Storage) -> None:
    by_buildah = {storage_format.image_id(entry["id"]): set(entry.get("names") or [])
                  for entry in storage.json("images", "--json", "--no-trunc", "--all")}
    assert storage_format.read_image_store(storage.images_file) == by_buildah
    assert by_buildah[storage.child] == {"localhost/canary/child:latest"}


def test_images_json_holds_each_image_top_layer_and_marks_manifest_lists(
        storage: Storage) -> None:
    images = storage_format.read_images(storage.images_file)
    layers = storage_format.read_layers(storage.images_file)
    assert images is not None and layers is not None
    for image in (storage.base, storage.child):
        assert images[image].layer in layers and not images[image].is_list
    assert images[storage.manifest_list].is_list
    assert images[storage.manifest_list].names == frozenset({"localhost/canary/list:latest"})


def test_the_image_config_beside_images_json_holds_history_and_diff_ids(
        storage: Storage) -> None:
    """The config a step reads (`=<base64 of the digest>` in the image's folder) is the
    one `buildah inspect` shows: the same history, the same layer digests."""
    for image in (storage.base, storage.child):
        history, diff_ids = storage_format.read_image_steps(storage.images_file,
                                                            image.removeprefix("sha256:"))
        config = storage.json("inspect", "--type", "image", image)["Docker"]
        assert history is not None, "the image's config is no longer where the seam reads it"
        assert [json.loads(step)["created_by"] for step in history] == \
            [step["created_by"] for step in config["history"]]
        assert list(diff_ids) == config["rootfs"]["diff_ids"]
    base_steps, _ = storage_format.read_image_steps(storage.images_file,
                                                    storage.base.removeprefix("sha256:"))
    child_steps, _ = storage_format.read_image_steps(storage.images_file,
                                                     storage.child.removeprefix("sha256:"))
    assert child_steps[:len(base_steps)] == base_steps  # type: ignore[index]


def test_layers_json_chains_a_child_layer_onto_its_parent_with_sizes(storage: Storage) -> None:
    contents = storage_format.read_storage_contents(storage.images_file)
    assert contents is not None and contents.complete
    base, child = contents.images[storage.base], contents.images[storage.child]
    assert contents.chain(child.layer) == [child.layer, base.layer]
    assert len(contents.chain(child.layer)) == len(child.diff_ids)
    assert contents.layers[base.layer][1] > 0 and contents.layers[child.layer][1] > 0


def test_containers_json_names_the_image_a_working_container_stands_on(
        storage: Storage) -> None:
    assert storage_format.read_images_in_use(storage.images_file) == frozenset({storage.child})


def test_a_working_container_record_keeps_its_build_args(storage: Storage) -> None:
    info = storage.json("info")["store"]
    args = storage_format.read_build_args(Path(info["GraphRoot"]), info["GraphDriverName"],
                                          storage.container)
    assert args.get(buildah.OWNER_ARG) == OWNER, \
        "buildah no longer records a container's build args where the seam reads them"


def test_buildah_reads_the_storage_through_the_seam(storage: Storage, tmp_path: Path) -> None:
    """What the verbs answer from the files equals what buildah answers itself."""
    engine = buildah.Buildah(storage.global_args, tmp_path / "store-note.json")
    named = {image: names for image, names in engine.list_images().items() if names}
    assert {image: names for image, names in engine.images().items() if names} == named
    assert {storage.base, storage.child} <= set(named)
    assert engine.contents().complete
    assert engine.graph_root() == storage_format.graph_root(storage.images_file)
