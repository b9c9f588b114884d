"""The content key with real buildah: reproducible IDs across storage roots, rebuild
cut-off, images found by their key when doit's state is lost, re-tag without rebuild."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Tree, make_tree, unmount_under
from test_build_integration import EXAMPLE, built, ids

pytestmark = pytest.mark.integration


def buds(tree: Tree) -> list[list[str]]:
    return [call for call in tree.buildah_calls() if "bud" in call]


def test_same_inputs_same_ids_on_two_machines_and_after_a_wipe(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    machine_a = make_tree(tmp_path / "a")
    machine_b = make_tree(tmp_path / "b")
    machine_b.settings(tag="v2")  # where an image goes is no part of what it is
    try:
        machine_a.doit("build")
        machine_b.doit("build")
        assert ids(machine_a) == ids(machine_b)
        assert set(ids(machine_a)) == EXAMPLE
        names = machine_b.image_ids()
        for name, image_id in ids(machine_b).items():
            key = machine_b.report()["images"][name]["key"]
            assert names[f"localhost/imagebake/{name}:ib-{key[:32]}"] == image_id
            assert names[f"localhost:5000/kolla/{name}:v2"] == image_id
        first = ids(machine_b)

        machine_b.doit("forget")
        machine_b.buildah("rmi", "--all", "--force")
        machine_b.doit("build")
        assert built(machine_b) == EXAMPLE
        assert ids(machine_b) == first
    finally:
        unmount_under(tmp_path)


def test_lost_state_finds_images_by_key_and_a_new_tag_retags(tree: Tree) -> None:
    tree.doit("build")
    before = ids(tree)

    for path in (tree.root / "build").iterdir():  # rm -rf build/, as a user would
        subprocess.run(["rm", "-rf", str(path)], check=True)
    tree.doit("build")
    assert buds(tree) == []
    report = tree.report()["images"]
    assert {(e["status"], e["found"]) for e in report.values()} == {("up-to-date", "local")}
    assert ids(tree) == before

    tree.settings(tag="v2")
    tree.doit("build")
    assert buds(tree) == []
    assert tree.statuses() == dict.fromkeys(EXAMPLE, "up-to-date")
    in_storage = tree.image_ids()
    for name, image_id in before.items():
        assert in_storage[f"localhost:5000/kolla/{name}:v2"] == image_id
    tree.doit("build")
    assert buds(tree) == [] and len(tree.buildah_calls()) <= 1  # and state records it


def test_parent_rebuilt_to_the_same_id_leaves_its_children_up_to_date(tree: Tree) -> None:
    tree.doit("build")
    before = ids(tree)
    tree.buildah("rmi", "--force", before["openstack-base"])
    tree.doit("build")
    assert built(tree) == {"openstack-base"}
    assert ids(tree) == before
    statuses = tree.statuses()
    assert {statuses[n] for n in ("nova-base", "nova-api", "neutron-base")} == {"up-to-date"}


def wait_for(condition, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


def test_a_context_file_edited_during_the_build_is_not_lost(tree: Tree) -> None:
    """The image holds the file as it was copied; a later run compares with that."""
    tree.edit("templates/nova-api/Dockerfile.j2", "{% endblock %}",
              "RUN sleep 4\n{% endblock %}")
    log = tree.root / "build" / "nova-api" / "nova-api-build.log"
    run = subprocess.Popen(tree.argv("build"), cwd=tree.root, env=tree.env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: log.exists() and "RUN sleep 4" in log.read_text())
        tree.edit("templates/nova-api/start.sh", "exec", "echo edited while building; exec")
        assert run.wait(timeout=120) == 0
    finally:
        run.kill()
    tree.doit("build")
    assert built(tree) == {"nova-api"}
    assert (tree.root / "build/nova-api/nova-api-build.log").read_text().startswith(
        "# building nova-api: context file changed: start.sh")
    tree.doit("build")
    assert built(tree) == set()


def test_images_finished_before_a_kill_9_are_kept(tree: Tree) -> None:
    tree.edit("templates/nova-api/Dockerfile.j2", "{% endblock %}",
              "RUN sleep 8\n{% endblock %}")
    log = tree.root / "build" / "nova-api" / "nova-api-build.log"
    run = subprocess.Popen(tree.argv("-n", "2", "build"), cwd=tree.root, env=tree.env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    wait_for(lambda: log.exists() and "RUN sleep 8" in log.read_text())
    finished = {name for name, image_id in tree.image_ids().items() if ":latest" in name}
    run.send_signal(signal.SIGKILL)
    run.wait()
    # buildah runs in sessions of its own: wait for the orphaned builds to end
    wait_for(lambda: subprocess.run(["pgrep", "-f", str(tree.storage)],
                                    capture_output=True).returncode != 0)
    tree.doit("build")
    rebuilt = {call[-1].split("/")[-2] for call in buds(tree)}
    assert finished, "no image had finished before the kill"
    for reference in finished:
        assert reference.split("/")[-1].split(":")[0] not in rebuilt
    statuses = tree.statuses()
    assert statuses["base"] == "up-to-date" and statuses["nova-api"] in {"built", "up-to-date"}
    assert set(statuses.values()) <= {"built", "up-to-date"}


def test_storage_that_cannot_be_listed_is_one_clear_error(tree: Tree) -> None:
    args = tree.global_args
    tree.settings(buildah_args=args[:-1] + ["nosuchdriver"])
    result = tree.doit("build", check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.count("error:") == 1
    assert "cannot read local image storage" in result.stderr
    assert "Error: failed to GetDriver graph nosuchdriver" in result.stderr  # buildah's words
    assert str(tree.config) in result.stderr and "fix:" in result.stderr
    assert buds(tree) == []


def test_two_images_of_the_same_inputs_are_built_once(tree: Tree) -> None:
    twin = tree.root / "templates" / "twin"
    twin.mkdir()
    (twin / "Dockerfile.j2").write_text("FROM {{ parent_image }}\nRUN echo same > /same\n")
    tree.edit_yaml(lambda d: d.__setitem__("images", {
        "base": d["images"]["base"],
        "twin-a": {"parent": "base", "template": "twin/Dockerfile.j2"},
        "twin-b": {"parent": "base", "template": "twin/Dockerfile.j2"}}))
    tree.doit("-n", "2", "build")
    assert len(buds(tree)) == 2  # base, and one of the twins
    report = tree.report()["images"]
    assert report["twin-a"]["id"] == report["twin-b"]["id"]
    assert {report["twin-a"]["status"], report["twin-b"]["status"]} == {"built", "up-to-date"}
    in_storage = tree.image_ids()
    assert in_storage["localhost:5000/kolla/twin-a:latest"] == report["twin-a"]["id"]
    assert in_storage["localhost:5000/kolla/twin-b:latest"] == report["twin-a"]["id"]
