"""A multi-arch tree built one platform per run, as native runners build it (`push
platform=P`, each run in storage of its own, the children pinned to their parent's list of
that platform), and `merge` joining each image's platforms' lists: the registry then serves
the lists a local `push` of all platforms at once makes. Real buildah, a real registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import Tree, repository_with_tool, unmount_under
from registry import Registry
from test_platforms_integration import PLATFORMS, index_entries, platform_tree

pytestmark = pytest.mark.integration


def copy_only_tree(tmp_path: Path, registry: Registry, namespace: str) -> Tree:
    tree = platform_tree(
        tmp_path / namespace, {"root": {}, "child": {"parent": "root"}},
        {"root/Dockerfile.j2": "FROM scratch\nCOPY hello.txt /hello.txt\n",
         "child/Dockerfile.j2": "FROM {{ parent_image }}\nCOPY child.txt /child.txt\n"},
        {"root/hello.txt": "hello\n", "child/child.txt": "child\n"},
        registry=registry.address, namespace=namespace)
    return tree


def lock(tree: Tree) -> dict:
    return json.loads((tree.root / "build" / "images.lock.json").read_text())["images"]


@pytest.fixture
def trees(tmp_path: Path, registry: Registry):
    yield {name: copy_only_tree(tmp_path, registry, name) for name in ("local", "native")}
    unmount_under(tmp_path)


def push_one_platform(tree: Tree, platform: str, storage: Path, images: str,
                      pins: dict[str, str]) -> dict:
    """`push platform=P` of `images` in storage of its own (another runner), then
    `resolve platform=P`: each image's list of that platform."""
    tree.settings(buildah_args=["--root", str(storage / "root"), "--runroot",
                                str(storage / "run"), "--storage-driver", "overlay"])
    pin = [f"pin={','.join(f'{n}@{d}' for n, d in pins.items())}"] if pins else []
    tree.doit("push", "cache=registry", f"platform={platform}", f"images={images}", *pin)
    tree.doit("resolve", f"platform={platform}", f"images={images}")
    return lock(tree)


def test_platforms_pushed_apart_and_merged_are_the_local_push(
        trees: dict[str, Tree], registry: Registry, tmp_path: Path) -> None:
    trees["local"].doit("push")
    native = trees["native"]
    lists: dict[str, dict[str, str]] = {}  # platform -> image -> its list's digest
    for platform in PLATFORMS:
        storage = tmp_path / "runners" / platform.replace("/", "-")
        root = push_one_platform(native, platform, storage, "^root$", {})
        child = push_one_platform(native, platform, storage / "child", "^child$",
                                  {"root": root["root"]["digest"]})
        lists[platform] = {"root": root["root"]["digest"], "child": child["child"]["digest"]}
        assert set(root["root"]["platforms"]) == {platform}
    assert registry.digest("native/root", "latest") is None  # the user's tag is merge's

    result = native.doit("merge", "parts=" + ",".join(
        f"{name}@{lists[p][name]}" for name in ("root", "child") for p in PLATFORMS))
    assert "merged" in result.stdout
    for name in ("root", "child"):
        assert index_entries(registry, f"native/{name}", "latest") == \
            index_entries(registry, f"local/{name}", "latest"), name
    assert registry.digest("native/root", "latest") == registry.digest("local/root", "latest")

    native.doit("resolve")  # the merged lists are what the tree's current keys name
    assert set(lock(native)) == {"root", "child"}
    again = native.doit("push", "cache=registry")  # all platforms: nothing to do
    assert "built" not in again.stdout.split("builds:")[-1].split("\n")[0], again.stdout


@pytest.mark.parametrize("variables, message", [
    (["push", "platform=linux/s390x"], "platform='linux/s390x' is none of the tree's"),
    (["merge"], "merge needs parts=NAME@sha256:<digest>"),
    (["merge", "parts=root@sha256:12"], "parts=root@sha256:12: not an image of this tree"),
])
def test_bad_platform_variables(trees: dict[str, Tree], variables: list[str],
                                message: str) -> None:
    result = trees["native"].doit(*variables, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_merge_refuses_a_list_of_all_platforms(trees: dict[str, Tree],
                                               registry: Registry) -> None:
    tree = trees["native"]
    tree.doit("push", "images=^root$")
    digest = registry.digest("native/root", "latest")
    result = tree.doit("merge", f"parts=root@{digest}", check=False)
    assert result.returncode == 1
    assert "is not one platform's list of root" in result.stdout + result.stderr


def test_export_jobs_per_platform(trees: dict[str, Tree]) -> None:
    """What the act test runs: one job per image and platform, merges after them."""
    tree = trees["native"]
    repository_with_tool(tree)
    tree.doit("export", "format=gha", "out=images.yml", "runners=linux/arm64=my-arm+arm64")
    jobs = yaml.safe_load((tree.root / "images.yml").read_text())["jobs"]
    assert jobs["root-linux-arm64"]["runs-on"] == ["my-arm", "arm64"]
    assert jobs["child-linux-arm64"]["needs"] == "root-linux-arm64"
    assert jobs["merge-child"]["needs"] == ["child-linux-amd64", "child-linux-arm64"]
    assert "platform=linux/arm64" in jobs["child-linux-arm64"]["steps"][3]["run"]
