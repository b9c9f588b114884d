"""The registry as the shared cache, with real buildah and a real registry on loopback:
two "machines" (two trees, each with its own buildah storage and build dir), one registry."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest
from conftest import Tree
from registry import FlakyProxy, Registry
from test_build_integration import EXAMPLE, NOVA_SUBTREE

pytestmark = pytest.mark.integration


def calls(tree: Tree, verb: str) -> list[list[str]]:
    """The buildah processes of the last run with this verb (`bud`, `push`, `pull`)."""
    return [call for call in tree.buildah_calls() if verb in call]


def found(tree: Tree) -> dict[str, str]:
    return {name: entry["found"] for name, entry in tree.report()["images"].items()}


def test_fresh_machine_builds_only_what_nobody_pushed(machines: tuple[Tree, Tree],
                                                     registry: Registry) -> None:
    machine_a, machine_b = machines
    machine_a.doit("push")
    pushed = {name: e["digest"] for name, e in machine_a.report()["pushes"].items()}
    assert set(pushed) == EXAMPLE

    with FlakyProxy(registry, failure_rate=0.0) as proxy:
        machine_b.settings(registry=proxy.address)
        machine_b.doit("push", "cache=registry")
        machine_b.settings(registry=registry.address)
    assert calls(machine_b, "bud") == [] and calls(machine_b, "push") == []
    assert calls(machine_b, "pull") == []  # found means not pulled: no child is built
    assert found(machine_b) == dict.fromkeys(EXAMPLE, "registry")
    assert proxy.counters.requests <= 2 * len(EXAMPLE) + 1, proxy.log  # + the /v2/ check
    print(f"\nfresh machine B, push cache=registry: {proxy.figures()} for {len(EXAMPLE)} "
          "images; 0 buildah bud, push or pull")

    # B edits a mid-tree template: that subtree is built, on its parent pulled by digest
    machine_b.edit("templates/nova-base/Dockerfile.j2", "{% endblock %}",
                   'RUN echo "nova from B" > /etc/nova/b\n{% endblock %}')
    machine_b.doit("push", "cache=registry")
    report = machine_b.report()
    built = {name for name, e in report["images"].items() if e["status"] == "built"}
    assert built == NOVA_SUBTREE
    pulls = calls(machine_b, "pull")
    assert len(pulls) == 1 and "@sha256:" in pulls[0][-1] and "openstack-base" in pulls[0][-1]
    pushed_by_b = {name for name, e in report["pushes"].items() if e["status"] == "pushed"}
    assert pushed_by_b == NOVA_SUBTREE
    assert len(calls(machine_b, "push")) == len(NOVA_SUBTREE)
    b_digests = {name: e["digest"] for name, e in report["pushes"].items()}

    # A, given B's edit, builds nothing: B's images are found by their keys
    machine_a.edit("templates/nova-base/Dockerfile.j2", "{% endblock %}",
                   'RUN echo "nova from B" > /etc/nova/b\n{% endblock %}')
    machine_a.doit("push", "cache=registry")
    assert calls(machine_a, "bud") == [] and calls(machine_a, "push") == []
    assert found(machine_a) == {name: "registry" if name in NOVA_SUBTREE else "local"
                                for name in EXAMPLE}
    assert {n: e["digest"] for n, e in machine_a.report()["pushes"].items()} == b_digests

    # doit resolve: what the registry serves, for deployment
    machine_a.doit("resolve")
    lock = json.loads((machine_a.root / "build" / "images.lock.json").read_text())["images"]
    assert set(lock) == EXAMPLE
    for name, entry in lock.items():
        tag = f"{registry.address}/kolla/{name}:latest"
        assert entry["tag"] == tag
        assert entry["reference"] == f"{registry.address}/kolla/{name}@{entry['digest']}"
        assert entry["digest"] == registry.inspect(f"kolla/{name}", "latest")["Digest"]
        assert entry["digest"] == b_digests[name]
        assert len(entry["key"]) == 64 and entry["id"].startswith("sha256:")


def test_a_missing_or_moved_user_tag_is_set_without_upload(machines: tuple[Tree, Tree],
                                                          registry: Registry) -> None:
    machine_a, machine_b = machines
    machine_a.doit("push")
    first = {name: e["digest"] for name, e in machine_a.report()["pushes"].items()}
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
                    f"docker://{registry.address}/kolla/base:latest",
                    f"docker://{registry.address}/kolla/cron:latest"], check=True,
                   capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
    machine_b.doit("push", "cache=registry")
    assert calls(machine_b, "bud") == calls(machine_b, "push") == calls(machine_b, "pull") == []
    pushes = machine_b.report()["pushes"]
    assert {n for n, e in pushes.items() if e["status"] == "pushed"} == {"cron"}
    assert pushes["cron"]["attempts"] == 1 and pushes["cron"]["digest"] == first["cron"]
    assert registry.digest("kolla/cron", "latest") == first["cron"]

    machine_b.settings(tag="v2")
    machine_b.doit("push", "cache=registry")
    assert calls(machine_b, "bud") == calls(machine_b, "push") == calls(machine_b, "pull") == []
    pushes = machine_b.report()["pushes"]
    assert {e["status"] for e in pushes.values()} == {"pushed"}
    assert {e["attempts"] for e in pushes.values()} == {1}  # one try each, no upload
    for name in EXAMPLE:
        assert registry.digest(f"kolla/{name}", "v2") == first[name]


def refusing_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"  # closed again: nothing listens


def test_a_registry_that_is_down_is_not_cached_and_the_build_goes_on(tree: Tree) -> None:
    tree.settings(registry=refusing_address(), tls_verify=False)
    result = tree.doit("build", "cache=registry")
    assert set(found(tree).values()) == {"built"}
    assert result.stderr.count("warning:") == 1, result.stderr
    assert "building instead" in result.stderr


def test_a_flaky_registry_never_skips_an_image_wrongly(machines: tuple[Tree, Tree],
                                                       registry: Registry) -> None:
    machine_a, machine_b = machines
    machine_a.doit("build:cron")  # base and cron pushed by A; the rest nobody has
    machine_a.doit("push:cron", "push:base")
    with FlakyProxy(registry, failure_rate=0.1, seed=11) as proxy:
        machine_b.settings(registry=proxy.address)
        machine_b.doit("build", "cache=registry")
    assert proxy.counters.failures > 0, proxy.figures()
    statuses = {name: (e["status"], e["found"])
                for name, e in machine_b.report()["images"].items()}
    for name, (status, where) in statuses.items():
        if name not in {"base", "cron"}:  # nobody pushed these: they must be built
            assert (status, where) == ("built", "built"), (name, proxy.figures())
    in_storage = machine_b.image_ids()
    for name in EXAMPLE - {"base", "cron"}:
        assert f"{proxy.address}/kolla/{name}:latest" in in_storage


def test_pin_takes_the_parent_at_that_digest(machines: tuple[Tree, Tree],
                                             registry: Registry) -> None:
    machine_a, machine_b = machines
    machine_a.doit("push:nova-base")
    digest = machine_a.report()["pushes"]["nova-base"]["digest"]
    machine_b.doit("push", "cache=registry", "images=^nova-api$", f"pin=nova-base@{digest}")
    report = machine_b.report()
    assert report["images"]["nova-base"]["found"] == "registry"
    assert report["images"]["nova-api"]["status"] == "built"
    pulls = calls(machine_b, "pull")
    assert [call[-1] for call in pulls] == [f"{registry.address}/kolla/nova-base@{digest}"]
    bad = machine_b.doit("build", "cache=registry", "pin=nova-base@sha256:" + "0" * 64,
                         check=False)
    assert bad.returncode != 0 and "no such image" in bad.stdout
    assert "Traceback" not in bad.stdout + bad.stderr


def test_skopeo_sees_the_key_tag_beside_the_user_tag(tree: Tree, registry: Registry) -> None:
    tree.settings(registry=registry.address, tls_verify=False)
    tree.doit("push:base")
    tags = registry.tags("kolla/base")
    assert "latest" in tags
    key_tags = [t for t in tags if t.startswith("ib-")]
    assert len(key_tags) == 1
    inspected = subprocess.run(["skopeo", "inspect", "--tls-verify=false",
                                f"docker://{registry.address}/kolla/base:{key_tags[0]}"],
                               check=True, capture_output=True, text=True).stdout
    assert "imagebake.key" not in (json.loads(inspected)["Labels"] or {})  # no label: no ID change
    raw = json.loads(subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false",
         f"docker://{registry.address}/kolla/base:{key_tags[0]}"],
        check=True, capture_output=True, text=True).stdout)
    assert raw["annotations"]["org.imagebake.key"].startswith(key_tags[0][3:])
    assert registry.digest("kolla/base", "latest") == registry.digest("kolla/base", key_tags[0])
