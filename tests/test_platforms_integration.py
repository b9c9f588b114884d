"""Multi-arch images with real buildah and a real registry: a COPY-only tree for
linux/amd64 and linux/arm64 (no emulator needed), and RUN steps for arm64 where qemu's
binfmt_misc registration and an arm64 busybox are there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Tree, install_wrapper, unmount_under
from registry import SKOPEO, Registry

pytestmark = pytest.mark.integration

PLATFORMS = ["linux/amd64", "linux/arm64"]
QEMU_AARCH64 = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
ARM64_BUSYBOX = "IMAGEBAKE_TEST_ARM64_BUSYBOX"  # a static aarch64 busybox, for the RUN test
ELF_MACHINE = {b"\x3e\x00": "amd64", b"\xb7\x00": "arm64"}  # e_machine, little endian


def platform_tree(tmp_path: Path, images: dict[str, Any], templates: dict[str, str],
                  files: dict[str, str], **settings: Any) -> Tree:
    """A tree of `images` for linux/amd64 and linux/arm64 with its own storage; its
    registry is set by the test."""
    root = tmp_path / "tree"
    for relative, text in {**templates, **files}.items():
        (root / "templates" / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / "templates" / relative).write_text(text)
    tree = Tree(root, tmp_path / "storage")
    tree.config.write_text(yaml.safe_dump({
        "settings": {"namespace": "multi", "tls_verify": False, "isolation": "chroot",
                     "platforms": PLATFORMS, "buildah_args": tree.global_args, **settings},
        "images": images}, sort_keys=False))
    install_wrapper(tree)
    return tree


@pytest.fixture
def copy_only(tmp_path: Path, registry: Registry) -> Any:
    tree = platform_tree(
        tmp_path, {"root": {}, "child": {"parent": "root"}},
        {"root/Dockerfile.j2": "FROM scratch\nCOPY hello.txt /hello.txt\n",
         "child/Dockerfile.j2": "FROM {{ parent_image }}\nCOPY child.txt /child.txt\n"},
        {"root/hello.txt": "hello\n", "child/child.txt": "child\n"},
        registry=registry.address)
    yield tree
    unmount_under(tmp_path)


def calls(tree: Tree, verb: str) -> list[list[str]]:
    return [call for call in tree.buildah_calls() if verb in call]


def built_for(call: list[str]) -> tuple[str, str]:
    """(image, platform) of a `buildah bud` call, from its key tag and --platform."""
    tag = call[call.index("--tag") + 1]
    return tag.split("/")[-1].split(":")[0], call[call.index("--platform") + 1]


def raw(registry: Registry, reference: str) -> dict[str, Any]:
    argv = [SKOPEO, "inspect", "--tls-verify=false", "--raw", f"docker://{reference}"]
    return json.loads(subprocess.run(argv, check=True, capture_output=True, text=True,
                                     timeout=60).stdout)


def index_entries(registry: Registry, repository: str, tag: str) -> dict[str, str]:
    """platform -> the ID (config digest) of its image, from the index a tag names."""
    index = raw(registry, registry.reference(repository, tag))
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json", index
    found = {}
    for entry in index["manifests"]:
        platform = f"{entry['platform']['os']}/{entry['platform']['architecture']}"
        manifest = raw(registry, f"{registry.address}/{repository}@{entry['digest']}")
        found[platform] = manifest["config"]["digest"]
    assert len(found) == len(index["manifests"]), index
    return found


def platform_ids(tree: Tree, name: str) -> dict[str, str]:
    return {platform: entry["id"]
            for platform, entry in tree.report()["images"][name]["platforms"].items()}


def platform_statuses(tree: Tree) -> dict[tuple[str, str], str]:
    return {(name, platform): entry["status"]
            for name, image in tree.report()["images"].items()
            for platform, entry in image["platforms"].items()}


def test_a_copy_only_tree_builds_pushes_and_rebuilds_per_platform(
        copy_only: Tree, registry: Registry) -> None:
    tree = copy_only
    tree.doit("build")
    assert {built_for(call) for call in calls(tree, "bud")} == {
        (name, platform) for name in ("root", "child") for platform in PLATFORMS}
    assert set(platform_statuses(tree).values()) == {"built"}
    for name in ("root", "child"):
        for platform, image_id in platform_ids(tree, name).items():
            config = tree.inspect(image_id)["OCIv1"]
            assert f"{config['os']}/{config['architecture']}" == platform
        manifest_list = json.loads(tree.buildah("manifest", "inspect",
                                                f"{registry.address}/multi/{name}:latest"))
        assert sorted(f"{m['platform']['os']}/{m['platform']['architecture']}"
                      for m in manifest_list["manifests"]) == PLATFORMS
    assert len(set(platform_ids(tree, "root").values())) == 2

    tree.doit("push")
    assert calls(tree, "bud") == []
    assert len(calls(tree, "push")) == 2
    assert all(call[call.index("push") - 1] == "manifest" and "--all" in call
               for call in calls(tree, "push"))
    for name in ("root", "child"):
        assert index_entries(registry, f"multi/{name}", "latest") == platform_ids(tree, name)
        pushed = tree.report()["pushes"][name]
        assert registry.head_digest(f"multi/{name}", "latest") == pushed["digest"]
    arm64 = subprocess.run([SKOPEO, "inspect", "--tls-verify=false", "--override-arch",
                            "arm64", f"docker://{registry.address}/multi/child:latest"],
                           check=True, capture_output=True, text=True, timeout=60).stdout
    assert json.loads(arm64)["Architecture"] == "arm64"

    tree.doit("push")  # nothing to build, nothing to push
    assert calls(tree, "bud") == [] and calls(tree, "push") == []
    assert set(tree.statuses().values()) == {"up-to-date"}
    assert {e["status"] for e in tree.report()["pushes"].values()} == {"up-to-date"}

    root_ids = platform_ids(tree, "root")
    tree.edit("templates/child/child.txt", "child", "child, edited")
    result = tree.doit("push")
    assert sorted(built_for(call) for call in calls(tree, "bud")) == [
        ("child", platform) for platform in PLATFORMS]
    assert platform_ids(tree, "root") == root_ids
    assert tree.statuses() == {"root": "up-to-date", "child": "built"}
    assert {name: e["status"] for name, e in tree.report()["pushes"].items()} == {
        "root": "up-to-date", "child": "pushed"}
    assert index_entries(registry, "multi/child", "latest") == platform_ids(tree, "child")
    assert "platform images: 2 built, 2 up-to-date (linux/amd64, linux/arm64)" in result.stdout
    log = (tree.root / "build" / "child" / "child-build.log").read_text()
    assert "# building child for linux/arm64: context file changed: child.txt" in log


def test_a_rebuilt_platform_image_of_the_same_id_leaves_the_children_be(
        copy_only: Tree) -> None:
    tree = copy_only
    tree.doit("build")
    arm64 = platform_ids(tree, "root")["linux/arm64"]
    key = tree.report()["images"]["root"]["platforms"]["linux/arm64"]["key"]
    tree.buildah("rmi", f"localhost/imagebake/root:ib-{key[:32]}")
    tree.doit("build")
    assert [built_for(call) for call in calls(tree, "bud")] == [("root", "linux/arm64")]
    assert platform_ids(tree, "root")["linux/arm64"] == arm64
    assert platform_statuses(tree)[("child", "linux/arm64")] == "up-to-date"
    assert tree.statuses()["child"] == "up-to-date"

    current = {image_id for name in ("root", "child")
               for image_id in platform_ids(tree, name).values()}
    tree.doit("clean")  # the manifest lists and the images they list
    left = tree.image_ids()
    assert not current & set(left.values())
    assert not [name for name in left if name.endswith(":latest")]


def elf_machine(path: Path) -> str | None:
    with path.open("rb") as binary:
        head = binary.read(20)
    return ELF_MACHINE.get(head[18:20]) if head[:4] == b"\x7fELF" else None


def test_run_steps_for_arm64_run_arm64_code(tmp_path: Path, registry: Registry) -> None:
    """Only with qemu's binfmt registration (Debian qemu-user-static) and a real arm64
    busybox: the amd64 busybox in an arm64 image would run here and prove nothing."""
    if not QEMU_AARCH64.exists():
        pytest.skip(f"no qemu binfmt_misc registration for aarch64 ({QEMU_AARCH64}): "
                    "install qemu-user-static to run RUN steps for linux/arm64")
    arm64_busybox = Path(os.environ.get(ARM64_BUSYBOX, "/nonexistent"))
    if not arm64_busybox.is_file() or elf_machine(arm64_busybox) != "arm64":
        pytest.skip(f"set {ARM64_BUSYBOX} to a static aarch64 busybox (e.g. bin/busybox of "
                    "Debian's busybox-static_*_arm64.deb)")
    amd64_busybox = Path(shutil.which("busybox") or "/bin/busybox")
    assert elf_machine(amd64_busybox) == "amd64"
    tree = platform_tree(
        tmp_path, {"root": {"files": {"busybox-amd64": str(amd64_busybox),
                                      "busybox-arm64": str(arm64_busybox)}}},
        {"root/Dockerfile.j2": "FROM scratch\nARG TARGETARCH\n"
                               "COPY busybox-${TARGETARCH} /bin/busybox\n"
                               'RUN ["/bin/busybox", "sh", "-c", '
                               '"/bin/busybox uname -m > /machine"]\n'},
        {}, registry=registry.address)
    try:
        tree.doit("build")
        for platform, image_id in platform_ids(tree, "root").items():
            container = tree.buildah("from", "--pull=never", image_id).strip()
            mounted = Path(tree.buildah("mount", container).strip())
            machine = (mounted / "machine").read_text().strip()
            assert machine == {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}[platform]
            assert elf_machine(mounted / "bin" / "busybox") == platform.split("/")[1]
            tree.buildah("rm", container)
    finally:
        unmount_under(tmp_path)
