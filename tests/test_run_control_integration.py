"""Run control with real buildah: failures, timeouts, interrupts, selection, what users declare."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Tree

pytestmark = pytest.mark.integration

EXAMPLE = {"base", "openstack-base", "nova-base", "nova-api", "nova-conductor", "neutron-base",
           "neutron-dhcp-agent", "multipathd", "cron"}
NOVA = {"nova-base", "nova-api", "nova-conductor"}


def with_status(tree: Tree, status: str) -> set[str]:
    return {name for name, s in tree.statuses().items() if s == status}


def add_leaf_template(tree: Tree) -> None:
    """templates/leaf: FROM the parent, then `RUN sleep {{ seconds }}`."""
    folder = tree.root / "templates" / "leaf"
    folder.mkdir(exist_ok=True)
    (folder / "Dockerfile.j2").write_text("FROM {{ parent_image }}\nRUN sleep {{ seconds }}\n")


def leaf(parent: str, seconds: float, **more: object) -> dict:
    return {"parent": parent, "template": "leaf/Dockerfile.j2", "vars": {"seconds": seconds},
            **more}


def processes_matching(text: str) -> list[str]:
    found = subprocess.run(["pgrep", "-af", text], capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if "pgrep" not in line]


def test_failure_blocks_its_subtree_and_the_summary_names_it(tree: Tree) -> None:
    tree.edit("templates/nova-base/Dockerfile.j2", "{% endblock %}",
              "RUN echo nova-base cannot build && exit 1\n{% endblock %}")
    result = tree.doit("build", check=False)
    assert result.returncode != 0
    assert with_status(tree, "failed") == {"nova-base"}
    assert with_status(tree, "blocked") == {"nova-api", "nova-conductor"}
    assert with_status(tree, "built") == EXAMPLE - NOVA
    report = tree.report()["images"]
    assert report["nova-api"]["error"] == "not run: nova-base failed"
    summary = result.stdout[result.stdout.index("builds: "):]
    assert summary.startswith("builds: 6 built, 1 failed, 2 blocked\n")
    assert "FAILED build nova-base: exit code 1" in summary
    assert "   | nova-base cannot build" in summary
    assert "   log: build/nova-base/nova-base-build.log" in summary
    assert "   blocked by it: build nova-api, build nova-conductor" in summary


def test_fail_fast_stops_at_the_first_failure(tree: Tree) -> None:
    tree.edit("templates/openstack-base/Dockerfile.j2", "{% endblock %}",
              "RUN exit 1\n{% endblock %}")
    tree.doit("-n", "1", "build", "fail_fast=1", check=False)
    assert with_status(tree, "failed") == {"openstack-base"}
    assert not {"multipathd", "cron"} & with_status(tree, "built")
    tree.doit("-n", "1", "build", check=False)  # keep going is the default
    assert {"multipathd", "cron"} <= with_status(tree, "built")


def test_timeout_kills_the_build_and_everything_it_started(tree: Tree) -> None:
    add_leaf_template(tree)
    tree.edit_yaml(lambda d: d["images"].update({
        "hangs": leaf("base", 87, timeout=2),
        "after-hangs": leaf("hangs", 0),
    }))
    start = time.monotonic()
    result = tree.doit("build", check=False)
    assert result.returncode != 0
    assert time.monotonic() - start < 60
    report = tree.report()["images"]
    assert report["hangs"]["status"] == "failed"
    assert report["hangs"]["error"] == "timed out after 2 s"
    assert report["after-hangs"]["status"] == "blocked"
    assert with_status(tree, "built") == EXAMPLE
    assert "FAILED build hangs: timed out after 2 s" in result.stdout
    assert processes_matching("sleep 87$") == []
    assert [p for p in processes_matching("buildah") if str(tree.storage) in p] == []


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_stops_builds_and_the_rerun_builds_only_what_was_left(
        tree: Tree, sig: signal.Signals, status: int) -> None:
    add_leaf_template(tree)
    tree.edit_yaml(lambda d: d.__setitem__("images", {
        "base": d["images"]["base"],
        "quick": leaf("base", 0),
        "slow-1": leaf("base", 93),
        "slow-2": leaf("base", 94),
        "after-slow": leaf("slow-1", 0),
    }))
    proc = subprocess.Popen(tree.argv("-n", "4", "build"), cwd=tree.root, env=tree.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    quick_done = tree.root / "build" / "quick" / "image-id"
    deadline = time.monotonic() + 120
    while (len(processes_matching("sleep 9[34]$")) < 2 or not quick_done.exists()) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(processes_matching("sleep 9[34]$")) >= 2, "the slow builds never started"
    assert quick_done.exists(), "the quick build never finished"
    time.sleep(1)  # for doit to record it
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == status, out + err
    assert "Traceback" not in out + err
    assert processes_matching("sleep 9[34]$") == []
    report = tree.report()["images"]
    assert {report[n]["status"] for n in ("base", "quick")} == {"built"}
    assert {report[n]["error"] for n in ("slow-1", "slow-2")} == {"interrupted"}

    # short, and unlike `quick` (same inputs would find quick's image by its key)
    tree.edit_yaml(lambda d: d["images"]["slow-1"]["vars"].update(seconds=1))
    tree.edit_yaml(lambda d: d["images"]["slow-2"]["vars"].update(seconds=2))
    tree.doit("build")
    assert with_status(tree, "up-to-date") == {"base", "quick"}
    assert with_status(tree, "built") == {"slow-1", "slow-2", "after-slow"}


def test_select_by_regex_profile_and_exclude(tree: Tree) -> None:
    tree.edit_yaml(lambda d: d.__setitem__("profiles", {"infra": ["^cron$", "multipath"]}))
    tree.doit("build", "images=^nova-a")
    assert with_status(tree, "built") == {"base", "openstack-base", "nova-base", "nova-api"}
    assert with_status(tree, "excluded") == EXAMPLE - {"base", "openstack-base", "nova-base",
                                                       "nova-api"}
    tree.doit("build", "profile=infra")
    assert with_status(tree, "built") == {"cron", "multipathd"}
    assert with_status(tree, "up-to-date") == {"base"}
    tree.doit("build", "exclude=nova-base")
    assert with_status(tree, "excluded") == NOVA
    assert with_status(tree, "built") == {"neutron-base", "neutron-dhcp-agent"}
    tree.settings(excludes=["neutron"])
    tree.doit("build")
    assert with_status(tree, "excluded") == {"neutron-base", "neutron-dhcp-agent"}
    assert with_status(tree, "built") == {"nova-conductor"}
    unknown = tree.doit("build", "profile=nope", check=False)
    assert unknown.returncode == 1 and "profile 'nope' is not declared" in unknown.stderr


def test_skip_parents_builds_on_the_parent_in_storage(tree: Tree) -> None:
    missing = tree.doit("build", "images=^nova-api$", "skip_parents=1", check=False)
    assert missing.returncode != 0
    assert tree.statuses()["nova-api"] == "failed"
    assert "its parent image localhost:5000/kolla/nova-base:latest is not in local storage" \
        in tree.report()["images"]["nova-api"]["error"]

    tree.doit("build")
    tree.edit("templates/openstack-base/Dockerfile.j2", "{% endblock %}",
              "RUN touch /stale-parent\n{% endblock %}")
    tree.edit("templates/nova-api/start.sh", "exec", "echo again; exec")
    tree.doit("build", "images=^nova-api$", "skip_parents=1")
    assert with_status(tree, "built") == {"nova-api"}
    assert "nova-base" in with_status(tree, "excluded")
    tree.doit("build")  # without skip_parents the stale parent line rebuilds
    assert with_status(tree, "built") >= {"openstack-base", "nova-base", "nova-api"}


def test_status_is_a_dry_run(tree: Tree) -> None:
    tree.doit("build")
    tree.edit("templates/neutron-base/neutron.conf", "debug = false", "debug = true")
    status = tree.doit("status")
    assert [call for call in tree.buildah_calls() if "bud" in call] == []
    rows = {line.split()[0]: line for line in status.stdout.splitlines()}
    assert "would build: context file changed: neutron.conf" in rows["neutron-base"]
    assert "would build: parent 'neutron-base' would be rebuilt" in rows["neutron-dhcp-agent"]
    assert rows["cron"].split()[1:] == ["base", "up-to-date"]
    assert "2 of 9 selected images would build" in status.stdout
    tree.doit("build")
    assert with_status(tree, "built") == {"neutron-base", "neutron-dhcp-agent"}


def test_progress_lines_and_verbose_output(tree: Tree) -> None:
    quiet = tree.doit("build", "images=^base$")
    assert "[1/1] built base in " in quiet.stdout
    assert " left" not in quiet.stdout and "estimated" not in quiet.stdout  # no last run
    assert "STEP 1/" not in quiet.stdout  # buildah's output goes to the log only
    assert "STEP 1/" in (tree.root / "build/base/base-build.log").read_text()
    tree.edit("templates/base/set_configs.sh", "configuring", "setting up")
    loud = tree.doit("build", "images=^cron$", "verbose=1")
    assert "STEP 1/" in loud.stdout
    # the last run's durations give an estimate: base's, and the median for cron
    assert re.search(r"^\[1/2\] built base in [0-9.]+ s; about 0:0\d left$", loud.stdout, re.M)
    assert re.search(r"^took [0-9.]+ s \(estimated [0-9.]+ s at the start\)", loud.stdout,
                     re.M)
    assert tree.report()["estimated"] > 0


def test_progress_on_a_terminal_updates_one_status_line(tree: Tree) -> None:
    add_leaf_template(tree)
    tree.edit_yaml(lambda d: d.__setitem__("images", {"base": d["images"]["base"],
                                                       "waits": leaf("base", 3)}))
    # A pseudo-terminal as doit's stdout, as a user's shell would give it.
    controller, terminal = os.openpty()
    proc = subprocess.Popen(tree.argv("build"), cwd=tree.root, stdin=terminal, stdout=terminal,
                            stderr=terminal, env={**tree.env, "COLUMNS": "200", "TERM": "xterm"})
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the terminal's other end is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    assert proc.wait(timeout=120) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "running: waits " in screen and "elapsed" in screen
    assert "\x1b[" in screen  # the status line is redrawn in place
    assert "[2/2] built waits in " in screen


def test_args_labels_volumes_and_oci_format_reach_the_image(tree: Tree) -> None:
    shared = tree.root / "shared-data"
    shared.mkdir()
    (shared / "motd").write_text("from a volume\n")
    folder = tree.root / "templates" / "declared"
    folder.mkdir()
    (folder / "Dockerfile.j2").write_text(
        "FROM {{ parent_image }}\nARG GREETING\n"
        "RUN echo \"$GREETING\" > /greeting && cp /mnt/shared/motd /motd\n")
    tree.settings(format="oci")
    tree.edit_yaml(lambda d: d["images"].update({"declared": {
        "parent": "base", "template": "declared/Dockerfile.j2",
        "args": {"GREETING": "hello from an arg"}, "labels": {"tier": "api", "beta": True},
        "volumes": [f"{shared}:/mnt/shared:ro"]}}))
    tree.doit("build", "images=^declared$")
    reference = "localhost:5000/kolla/declared:latest"
    inspected = tree.inspect(reference)
    assert inspected["ImageAnnotations"] is not None or inspected["Manifest"]
    assert json.loads(inspected["Manifest"])["mediaType"] == \
        "application/vnd.oci.image.manifest.v1+json"
    labels = inspected["OCIv1"]["config"]["Labels"]
    assert labels["tier"] == "api" and labels["beta"] == "true"
    container = tree.buildah("from", reference).strip()
    try:
        root = Path(tree.buildah("mount", container).strip())
        assert (root / "greeting").read_text() == "hello from an arg\n"
        assert (root / "motd").read_text() == "from a volume\n"
        assert not (root / "mnt/shared/motd").exists()  # mounted while building only
    finally:
        tree.buildah("rm", container)


@pytest.mark.slow
def test_eight_concurrent_builds_on_one_storage_do_not_trip_over_locks(tree: Tree) -> None:
    folder = tree.root / "templates" / "leaf"
    folder.mkdir()
    (folder / "Dockerfile.j2").write_text(
        "FROM {{ parent_image }}\nARG ROUND LEAF\nRUN echo $ROUND $LEAF > /leaf\n")
    # each its own inputs (args the Dockerfile reads): leaves of equal inputs would be one
    # image, built once
    wide = {f"leaf-{i:02d}": leaf("base", 0, args={"ROUND": 0, "LEAF": i}) for i in range(16)}
    tree.edit_yaml(lambda d: d.__setitem__("images", {"base": d["images"]["base"], **wide}))
    for round_number in range(1, 4):
        result = tree.doit("-n", "8", "build", check=False)
        assert result.returncode == 0, result.stdout[-3000:]
        assert with_status(tree, "built") == set(wide) | ({"base"} if round_number == 1
                                                         else set())
        tree.edit_yaml(lambda d, n=round_number: [image["args"].update(ROUND=n)
                                                  for name, image in d["images"].items()
                                                  if name != "base"])
