"""`doit prune`: a tree edited four times holds 30 images; prune leaves the current ones and
what a user named, in local storage and (registry=1) in a loopback registry."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import Tree
from registry import SKOPEO, Registry, start_registry

pytestmark = pytest.mark.integration

SIX = {"base", "openstack-base", "nova-base", "nova-api", "nova-conductor", "cron"}
KEY_NAME = re.compile(r"^localhost/imagebake/(?P<image>[^:]+):(?P<tag>ib-[0-9a-f]{32})$")


def six_image_tree(tree: Tree) -> None:
    tree.edit_yaml(lambda data: [data["images"].pop(name) for name in
                                 ("neutron-base", "neutron-dhcp-agent", "multipathd")])


def edit_base(tree: Tree, generation: int) -> None:
    """A change to a file base COPYs: new layers in base and so in every image."""
    with (tree.root / "templates" / "base" / "set_configs.sh").open("a") as script:
        script.write(f"# edit {generation}\n")


def storage(tree: Tree) -> dict[str, frozenset[str]]:
    """Every image in the tree's storage, intermediate ones too: ID -> names."""
    listed = json.loads(tree.buildah("images", "--all", "--json", "--no-trunc") or "[]")
    return {entry["id"]: frozenset(entry.get("names") or ()) for entry in listed}


def key_names(tree: Tree) -> dict[str, str]:
    """Key name -> image ID."""
    return {name: image_id for image_id, names in storage(tree).items() for name in names
            if KEY_NAME.match(name)}


def build_five_generations(tree: Tree, push: bool = False) -> None:
    tree.doit("-n", "2", "push" if push else "build")
    for generation in range(1, 5):
        edit_base(tree, generation)
        tree.doit("-n", "2", "push" if push else "build")


def skopeo_copy(source: str, destination: str, *options: str) -> None:
    subprocess.run([SKOPEO, "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
                    *options, f"docker://{source}", f"docker://{destination}"],
                   check=True, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.slow
def test_prune_leaves_the_current_images_and_the_users(tree: Tree) -> None:
    six_image_tree(tree)
    build_five_generations(tree)
    assert len(key_names(tree)) == 30
    current = current_tags_at(tree, "localhost:5000")
    old_api = next(image_id for name, image_id in key_names(tree).items()
                   if name.startswith("localhost/imagebake/nova-api:")
                   and not name.endswith(current["nova-api"]))
    tree.buildah("tag", old_api, "localhost/mine/nova-api:pinned")
    before = storage(tree)

    listed = tree.doit("prune", "dry=1")
    assert storage(tree) == before  # dry=1 removes nothing
    assert listed.stdout.count("would remove localhost/imagebake/") == 23

    pruned = tree.doit("prune")
    left = key_names(tree)
    assert {KEY_NAME.match(name)["tag"] for name in left} == set(current.values())
    assert len(left) == 6
    assert "localhost/mine/nova-api:pinned" in storage(tree)[old_api]  # the user's stays
    assert len(storage(tree)) < len(before) - 24  # their intermediate images went too
    freed = re.search(r"freed (\d+\.\d+|\d+) (B|KB|MB)", pruned.stdout)
    assert freed and float(freed[1]) > 0, pruned.stdout
    assert current_tags_at(tree, "localhost:5000") == current

    tree.doit("build")
    assert set(tree.statuses().values()) == {"up-to-date"}
    assert not [call for call in tree.buildah_calls() if "bud" in call]


def test_prune_takes_the_run_lock(tree: Tree) -> None:
    """A prune while another run holds the tree stops at once, naming it."""
    (tree.root / "build").mkdir()
    fd = os.open(tree.root / "build" / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, json.dumps({"pid": os.getpid(), "command": "doit build"}).encode())
        result = tree.doit("prune", check=False)
    finally:
        os.close(fd)
    assert result.returncode == 1
    assert f"another run is using {tree.root / 'build'}: pid {os.getpid()}" in result.stderr


@pytest.mark.slow
def test_registry_prune_leaves_the_current_key_tags_and_the_users(tree: Tree,
                                                                   registry: Registry) -> None:
    six_image_tree(tree)
    tree.settings(registry=registry.address)
    build_five_generations(tree, push=True)
    api = "kolla/nova-api"
    old_api = sorted(t for t in registry.tags(api) if t.startswith("ib-"))
    current = current_tags_at(tree, registry.address)
    old_one, old_two = [t for t in old_api if t != current["nova-api"]][:2]
    # a user's tag on the very manifest of an old key, and one on a copy of another
    skopeo_copy(registry.reference(api, old_one), registry.reference(api, "mine"))
    skopeo_copy(registry.reference(api, old_two), registry.reference(api, "theirs"),
                "--format", "v2s2")
    user_digests = {tag: registry.head_digest(api, tag) for tag in ("mine", "theirs", "latest")}

    tree.doit("prune", "registry=1")
    for name in SIX:
        key_tags = {t for t in registry.tags(f"kolla/{name}") if t.startswith("ib-")}
        expected = {current[name]} | ({old_one} if name == "nova-api" else set())
        assert key_tags == expected, name
        assert registry.head_digest(f"kolla/{name}", current[name])
        assert registry.head_digest(f"kolla/{name}", "latest")
    assert {tag: registry.head_digest(api, tag) for tag in user_digests} == user_digests
    assert registry.head_digest(api, old_two) is None


def current_tags_at(tree: Tree, address: str) -> dict[str, str]:
    images = storage(tree)
    tags = {}
    for name in SIX:
        reference = f"{address}/kolla/{name}:latest"
        names = next(names for names in images.values() if reference in names)
        tags[name] = next(KEY_NAME.match(n)["tag"] for n in names if KEY_NAME.match(n))
    return tags


def test_registry_prune_says_when_the_registry_refuses_deletion(tree: Tree,
                                                               tmp_path: Path) -> None:
    server = start_registry(tmp_path / "no-delete", deletion=False)
    try:
        tree.settings(registry=server.address)
        tree.edit_yaml(lambda data: data.update(images={"base": data["images"]["base"]}))
        tree.doit("push")
        edit_base(tree, 1)
        tree.doit("push")
        before = server.tags("kolla/base")
        result = tree.doit("prune", "registry=1", check=False)
        assert result.returncode == 1
        assert "does not allow deleting manifests (HTTP 405" in result.stdout + result.stderr
        assert "delete: enabled: true" in result.stdout + result.stderr
        assert sorted(server.tags("kolla/base")) == sorted(before)
    finally:
        server.stop()


def test_keep_keys_prunes_after_each_build_keeping_that_many_old_keys(tree: Tree) -> None:
    tree.edit_yaml(lambda data: data.update(images={"base": data["images"]["base"],
                                                   "cron": data["images"]["cron"]}))
    tree.settings(keep_keys=1)
    for generation in range(3):
        edit_base(tree, generation)
        result = tree.doit("build")
    assert "pruning old keys (settings.keep_keys: 1)" in result.stdout
    by_image: dict[str, int] = {}
    for name in key_names(tree):
        image = KEY_NAME.match(name)["image"]
        by_image[image] = by_image.get(image, 0) + 1
    assert by_image == {"base": 2, "cron": 2}  # the current key and the one before
    tree.doit("build")
    assert set(tree.statuses().values()) == {"up-to-date"}


def test_a_bad_keep_is_one_clear_error_and_removes_nothing(tree: Tree) -> None:
    result = tree.doit("prune", "keep=two", check=False)
    assert result.returncode == 1
    said = result.stdout + result.stderr
    assert "keep='two' is not a whole number" in said and "Traceback" not in said
    assert not [call for call in tree.buildah_calls() if "rmi" in call]


def listed_removals(said: str, verb: str) -> set[str]:
    """The key names a prune says it (would) remove, from its `verb NAME (ID)` lines."""
    return {line.split()[-2] for line in said.splitlines()
            if re.match(rf"^{verb} localhost/imagebake/\S+ \(", line)}


def test_registry_prune_removes_locally_what_its_dry_run_listed(tree: Tree,
                                                                registry: Registry) -> None:
    """registry=1 deletes old key tags in the registry and removes the same keys' local
    images: the dry run's list is exactly what the real run removes, and a second prune
    finds nothing left of the old keys."""
    tree.settings(registry=registry.address)
    tree.edit_yaml(lambda data: data.update(images={"base": data["images"]["base"],
                                                   "cron": data["images"]["cron"]}))
    tree.doit("push")
    first = set(key_names(tree))
    edit_base(tree, 1)
    tree.doit("push")
    old = first & set(key_names(tree))
    assert len(old) == 2

    dry = tree.doit("prune", "registry=1", "dry=1").stdout
    assert listed_removals(dry, "would remove") == old, dry
    would = re.search(r"would remove (2 images of old keys and \d+ intermediate images?)", dry)
    assert would, dry
    before = set(key_names(tree))
    real = tree.doit("prune", "registry=1").stdout
    assert listed_removals(real, "removing") == old, real
    assert before - set(key_names(tree)) == old  # what it said is what went
    assert f"removed {would[1]}" in real  # the intermediate images it counted too
    for name in ("base", "cron"):
        assert len([t for t in registry.tags(f"kolla/{name}") if t.startswith("ib-")]) == 1

    again = tree.doit("prune", "registry=1", "dry=1").stdout
    assert "would remove 0 images of old keys" in again, again
    assert "left alone" not in again  # no key name of this tree is left without a record
