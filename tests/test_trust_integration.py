"""Trust: an image found under a key (a registry's key tag, a pin) is used as that key's
image only when it verifiably carries the key; a push never points a user's tag at bytes
this run did not build or check. Planted images, with no key and with a forged label."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import Tree
from registry import Registry
from test_build_integration import EXAMPLE, built, ids

pytestmark = pytest.mark.integration


def plant(tree: Tree, registry: Registry, destination: str, forged_key: str | None) -> str:
    """Push another image (the tree's base with a file added; with `forged_key`, a label
    claiming that key) to `destination` in the registry; its manifest digest."""
    context = tree.root.parent / "planted"
    context.mkdir(exist_ok=True)
    (context / "evil").write_text("planted\n")
    label = f"LABEL imagebake.key={forged_key}\n" if forged_key else ""
    base = f"{registry.address}/kolla/base:latest"  # as the tree's build named it
    (context / "Containerfile").write_text(f"FROM {base}\nCOPY evil /evil\n{label}")
    tree.buildah("bud", "--quiet", "--format", "oci", "--pull=never", "--tag",
                 "localhost/planted:1", "-f", str(context / "Containerfile"), str(context))
    digest_file = context / "digest"
    tree.buildah("push", "--tls-verify=false", "--digestfile", str(digest_file),
                 "localhost/planted:1", f"docker://{registry.address}/{destination}")
    tree.buildah("rmi", "localhost/planted:1")
    return digest_file.read_text().strip()


def key_tag(tree: Tree, name: str) -> str:
    return "ib-" + tree.report()["images"][name]["key"][:32]


def config_digest(registry: Registry, repository: str, tag: str) -> str:
    raw = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw",
                          f"docker://{registry.address}/{repository}:{tag}"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(raw)["config"]["digest"]


@pytest.mark.parametrize("forged", [False, True], ids=["no-key", "forged-label"])
def test_a_planted_key_tag_is_neither_used_nor_published(machines: tuple[Tree, Tree],
                                                        registry: Registry,
                                                        forged: bool) -> None:
    machine_a, machine_b = machines
    machine_a.doit("push")
    tag = key_tag(machine_a, "base")
    a_ids = ids(machine_a)
    plant(machine_a, registry, f"kolla/base:{tag}",
          machine_a.report()["images"]["base"]["key"] if forged else None)

    # (b) a fresh machine with the registry cache does not take it: it builds the root
    run_b = machine_b.doit("build", "cache=registry")
    assert f"kolla/base:{tag} names" in run_b.stderr and "not taken" in run_b.stderr
    assert "base" in built(machine_b)
    assert ids(machine_b)["base"] == a_ids["base"]  # reproducible: the real image
    names = machine_b.image_ids()
    assert names[f"localhost/imagebake/base:{tag}"] == a_ids["base"]
    # and later runs without the cache, even after build/ is lost, keep the real one
    subprocess.run(["rm", "-rf", str(machine_b.root / "build")], check=True)
    machine_b.doit("build")
    assert ids(machine_b)["base"] == a_ids["base"]

    # (a) the machine that built the tree pushes, nothing edited: its own image goes to
    # both tags, and the summary says the key tag was replaced
    run_a = machine_a.doit("push")
    assert "key tag replaced for base" in run_a.stdout
    for each in ("latest", tag):
        assert config_digest(registry, "kolla/base", each) == a_ids["base"]
    assert machine_a.report()["pushes"]["base"]["status"] == "pushed"
    machine_a.doit("push")
    assert {e["status"] for e in machine_a.report()["pushes"].values()} == {"up-to-date"}


def test_a_pin_that_only_claims_a_key_gets_no_key_name(machines: tuple[Tree, Tree],
                                                      registry: Registry) -> None:
    machine_a, machine_b = machines
    machine_a.doit("push")
    key = machine_a.report()["images"]["base"]["key"]
    digest = plant(machine_a, registry, "kolla/base:other", forged_key=key)

    # (c) pinned, it is used for this run, by its digest only
    machine_b.doit("build", "images=^cron$", f"pin=base@{digest}")
    assert machine_b.report()["images"]["base"]["found"] == "registry"
    names = {n for n, i in machine_b.image_ids().items() if i.startswith("sha256:")}
    assert not any(n.startswith("localhost/imagebake/base:") for n in names), names
    assert f"{registry.address}/kolla/base@{digest}" in names
    assert built(machine_b) == {"cron"}

    # the next run without the pin does not take it as base: base is built
    machine_b.doit("build", "images=^cron$")
    assert built(machine_b) == {"base", "cron"}
    assert ids(machine_b)["base"] == ids(machine_a)["base"]

    # two different pins for one image are an input error
    bad = machine_b.doit("build", f"pin=base@{digest},base@sha256:{'0' * 64}", check=False)
    assert bad.returncode == 1 and "pin= names two digests for base" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_key_tag_that_names_a_manifest_list_is_not_cached(machines: tuple[Tree, Tree],
                                                           registry: Registry) -> None:
    machine_a, machine_b = machines
    machine_a.doit("push")
    tag = key_tag(machine_a, "base")
    machine_a.buildah("manifest", "create", "localhost/a-list:1",
                      f"{registry.address}/kolla/cron:latest")
    machine_a.buildah("manifest", "push", "--all", "--tls-verify=false", "localhost/a-list:1",
                      f"docker://{registry.address}/kolla/base:{tag}")
    run_b = machine_b.doit("build", "cache=registry")
    assert "not taken" in run_b.stderr
    assert built(machine_b) == {"base"} and set(ids(machine_b)) == EXAMPLE
    assert "skip_parents" not in run_b.stdout + run_b.stderr
