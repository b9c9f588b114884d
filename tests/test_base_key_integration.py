"""A complete, exact key with real buildah: a root's base image is in its key (a new base
under the same name rebuilds the tree, `bases=pull` moves to the registry's newer one),
and what changes no byte of an image (a comment, a file no COPY reads) rebuilds nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import Tree, install_wrapper
from registry import Registry
from test_build_integration import EXAMPLE, NOVA_SUBTREE, built, ids, why

pytestmark = pytest.mark.integration

LOCAL_BASE = "localhost/mybase:1"


def make_base(tree: Tree, name: str, content: str) -> str:
    """A small base image named `name` in the tree's storage (FROM scratch, one file)."""
    context = tree.root.parent / f"base-{content}"
    context.mkdir(exist_ok=True)
    (context / "release").write_text(f"{content}\n")
    (context / "Containerfile").write_text("FROM scratch\nCOPY release /etc/base-release\n")
    tree.buildah("bud", "--quiet", "--timestamp", "0", "--identity-label=false", "--layers",
                 "--tag", name, "-f", str(context / "Containerfile"), str(context))
    return tree.image_ids()[name]


def on_base(tree: Tree, base: str) -> None:
    """The example tree with its root built FROM `base`, and a second root FROM scratch."""
    tree.edit("templates/base/Dockerfile.j2", "FROM scratch", f"FROM {base}")
    (tree.root / "templates/tool").mkdir()
    (tree.root / "templates/tool/Dockerfile.j2").write_text("FROM scratch\nCOPY t /t\n")
    (tree.root / "templates/tool/t").write_text("tool\n")
    tree.edit_yaml(lambda data: data["images"].update(tool={}))


def buds(tree: Tree) -> int:
    return sum("bud" in call for call in tree.buildah_calls())


def status_lines(tree: Tree, *args: str) -> dict[str, str]:
    """`doit status`: image -> what it says a build would do."""
    out = tree.doit("status", *args).stdout
    return {line.split()[0]: line for line in out.splitlines()
            if line.split() and line.split()[0] in EXAMPLE | {"tool"}}


def test_a_new_base_under_the_same_name_rebuilds_exactly_its_tree(tree: Tree) -> None:
    first_base = make_base(tree, LOCAL_BASE, "one")
    on_base(tree, LOCAL_BASE)
    tree.doit("build")
    assert built(tree) == EXAMPLE | {"tool"}
    before = ids(tree)

    second_base = make_base(tree, LOCAL_BASE, "two")  # a security fix, same name
    assert second_base != first_base
    said = status_lines(tree)
    change = f"base image '{LOCAL_BASE}' changed: {first_base} -> {second_base}"
    assert change in said["base"]
    assert all("would build" in said[name] for name in EXAMPLE)
    assert "up-to-date" in said["tool"]

    tree.doit("build")
    assert built(tree) == EXAMPLE and buds(tree) == len(EXAMPLE)
    assert why(tree, "base") == f"# building base: {change}"
    after = ids(tree)
    assert all(after[name] != before[name] for name in EXAMPLE)
    assert after["tool"] == before["tool"]
    print(f"\nnew base: {buds(tree)} buildah bud, {len(EXAMPLE)} of {len(after)} IDs changed")

    tree.doit("build")
    assert buds(tree) == 0 and built(tree) == set()


def test_a_comment_and_an_unread_file_rebuild_nothing(tree: Tree) -> None:
    tree.doit("build")
    before = ids(tree)
    tree.edit("templates/nova-base/Dockerfile.j2", "{% block install %}",
              "{% block install %}\n# installs nova's folders and config\n")
    (tree.root / "templates/nova-base/README.txt").write_text("notes no COPY reads\n")
    said = status_lines(tree)
    assert all("up-to-date" in line for line in said.values()), said
    tree.doit("build")
    assert buds(tree) == 0
    assert ids(tree) == before
    # a change that the image does read still rebuilds it, and its children
    tree.edit("templates/nova-base/nova.conf", "[DEFAULT]", "[DEFAULT]\ndebug = true")
    tree.doit("build")
    assert built(tree) == NOVA_SUBTREE


def test_bases_pull_moves_to_the_registrys_newer_base(tree: Tree, registry: Registry,
                                                     tmp_path: Path) -> None:
    remote = f"{registry.address}/library/mybase:1"
    tree.settings(registry=registry.address, tls_verify=False)
    publish_base(tree, registry, remote, "one")
    on_base(tree, remote)
    tree.doit("build")  # the base is pulled once, because storage lacks it
    assert built(tree) == EXAMPLE | {"tool"}
    pulls = [c for c in tree.buildah_calls() if "pull" in c]
    assert len(pulls) == 1 and pulls[0][-1] == remote
    first = ids(tree)

    newer = publish_base(tree, registry, remote, "two")  # the registry's base moves on
    tree.doit("build")
    assert buds(tree) == 0 and not [c for c in tree.buildah_calls() if "pull" in c]

    run = tree.doit("build", "bases=pull")
    assert f"pulled base image {remote}: " in run.stdout
    assert built(tree) == EXAMPLE, run.stdout + run.stderr
    assert tree.image_ids()[remote] == newer
    assert all(ids(tree)[name] != first[name] for name in EXAMPLE)
    again = tree.doit("build", "bases=pull")
    assert buds(tree) == 0 and f"pulled base image {remote}: unchanged" in again.stdout

    # the key is found again after build/ is lost, and a fresh machine that lacks the base
    # finds every image in the registry by its key, the base's ID read from its manifest
    subprocess.run(["rm", "-rf", str(tree.root / "build")], check=True)
    tree.doit("build")
    assert buds(tree) == 0
    tree.doit("push")
    fresh = fresh_machine(tree, tmp_path)
    fresh.doit("build", "cache=registry")
    assert buds(fresh) == 0 and not [c for c in fresh.buildah_calls() if "pull" in c]
    assert {e["found"] for e in fresh.report()["images"].values()} == {"registry"}
    assert remote not in fresh.image_ids()


def publish_base(tree: Tree, registry: Registry, remote: str, content: str) -> str:
    """Build a base under a scratch name and push it to `remote`; its image ID."""
    image_id = make_base(tree, f"localhost/scratch-base-{content}:1", content)
    tree.buildah("push", "--tls-verify=false", image_id, f"docker://{remote}")
    return image_id


def fresh_machine(tree: Tree, tmp_path: Path) -> Tree:
    """The same tree on another machine: its own storage (no base image), no build/."""
    root = tmp_path / "fresh"
    subprocess.run(["cp", "-a", str(tree.root), str(root)], check=True)
    subprocess.run(["rm", "-rf", str(root / "build"), str(root / "wrapper-bin")], check=True)
    fresh = Tree(root, tmp_path / "fresh-storage")
    fresh.settings(buildah_args=fresh.global_args)
    install_wrapper(fresh)
    return fresh
