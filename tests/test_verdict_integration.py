"""One verdict: `doit status` names exactly the images that `doit build` with the same
variables then builds (fresh machine with the registry cache, after an edit, with pin=),
and a multi-arch tree takes the same path as a native one (found in the registry by its
keys, resolved, exported one job per image, an edit rebuilding exactly its platforms)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import Tree, actionlint, make_tree, repository_with_tool, unmount_under
from registry import Registry
from test_build_integration import EXAMPLE, NOVA_SUBTREE, built
from test_platforms_integration import PLATFORMS, built_for, calls, platform_tree

pytestmark = pytest.mark.integration


@pytest.fixture
def three_machines(tmp_path: Path, registry: Registry) -> Iterator[list[Tree]]:
    trees = []
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        tree = make_tree(tmp_path / name)
        tree.settings(registry=registry.address, tls_verify=False)
        trees.append(tree)
    yield trees
    unmount_under(tmp_path)


def would_build(tree: Tree, *args: str) -> set[str]:
    """The images `doit status` says a build would build."""
    out = tree.doit("status", *args).stdout
    return {line.split()[0] for line in out.splitlines() if "  would build" in line}


def test_status_predicts_the_build(three_machines: list[Tree]) -> None:
    machine_a, machine_b, machine_c = three_machines
    machine_a.doit("push")

    assert would_build(machine_b, "cache=registry") == set()
    status = machine_b.doit("status", "cache=registry").stdout
    assert status.count("  found in the registry: ") == len(EXAMPLE), status
    machine_b.doit("build", "cache=registry")
    assert built(machine_b) == set() and calls(machine_b, "bud") == []

    machine_b.edit("templates/nova-base/nova.conf", "[DEFAULT]", "[DEFAULT]\ndebug = true")
    assert would_build(machine_b, "cache=registry") == NOVA_SUBTREE
    machine_b.doit("build", "cache=registry")
    assert built(machine_b) == NOVA_SUBTREE

    digest = machine_a.report()["pushes"]["nova-base"]["digest"]
    pinned = ("images=^nova-api$", f"pin=nova-base@{digest}")
    status = machine_c.doit("status", *pinned).stdout
    assert "pinned" in status and would_build(machine_c, *pinned) == {"nova-api"}
    machine_c.doit("build", *pinned)
    assert built(machine_c) == {"nova-api"}
    assert would_build(machine_c, "cache=registry", *pinned) == set()


def test_a_multi_arch_tree_takes_the_native_path(tmp_path: Path, registry: Registry) -> None:
    trees = []
    for name in ("a", "b"):
        tree = platform_tree(
            tmp_path / name, {"root": {}, "child": {"parent": "root"}},
            {"root/Dockerfile.j2": "FROM scratch\nCOPY hello.txt /hello.txt\n",
             "child/Dockerfile.j2": "FROM {{ parent_image }}\nCOPY child.txt /child.txt\n"},
            {"root/hello.txt": "hello\n", "child/child.txt": "child\n"},
            registry=registry.address)
        trees.append(tree)
    machine_a, machine_b = trees
    try:
        machine_a.doit("push")
        machine_b.doit("push", "cache=registry")
        assert calls(machine_b, "bud") == [] and calls(machine_b, "push") == []
        report = machine_b.report()
        assert {e["found"] for e in report["images"].values()} == {"registry"}
        assert {e["status"] for e in report["pushes"].values()} == {"up-to-date"}

        machine_b.doit("resolve")
        lock = json.loads((machine_b.root / "build/images.lock.json").read_text())["images"]
        for name in ("root", "child"):
            assert lock[name]["digest"] == registry.digest(f"multi/{name}", "latest")
            assert set(lock[name]["platforms"]) == set(PLATFORMS)

        repository_with_tool(machine_b)
        machine_b.doit("export", "format=gha", f"out={tmp_path / 'wf.yml'}")
        workflow = yaml.safe_load((tmp_path / "wf.yml").read_text())
        # one job per image and platform, each on its platform's runner, and one merge per image
        assert sorted(workflow["jobs"]) == sorted(
            [f"{name}-{p.replace('/', '-')}" for name in ("root", "child") for p in PLATFORMS]
            + [f"merge-{name}" for name in ("root", "child")])
        assert actionlint(tmp_path / "wf.yml") == []

        machine_b.edit("templates/child/child.txt", "child", "child edited")
        machine_b.doit("push", "cache=registry")
        assert sorted(built_for(c) for c in calls(machine_b, "bud")) == [
            ("child", p) for p in PLATFORMS]
        pulls = calls(machine_b, "pull")
        assert len(pulls) == len(PLATFORMS) and all("multi/root@sha256:" in c[-1]
                                                    for c in pulls)
    finally:
        unmount_under(tmp_path)
