"""The example tree built with real buildah in private storage, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Tree

from buildlib import buildah, storage_format

pytestmark = pytest.mark.integration

EXAMPLE = {"base", "openstack-base", "nova-base", "nova-api", "nova-conductor", "neutron-base",
           "neutron-dhcp-agent", "multipathd", "cron"}
NOVA_SUBTREE = {"nova-base", "nova-api", "nova-conductor"}


def why(tree: Tree, name: str) -> str:
    """The reason the last build of `name` gives on the first line of its log."""
    return (tree.root / "build" / name / f"{name}-build.log").read_text().splitlines()[0]


def built(tree: Tree) -> set[str]:
    return {name for name, status in tree.statuses().items() if status == "built"}


def ids(tree: Tree) -> dict[str, str]:
    return {name: entry["id"] for name, entry in tree.report()["images"].items()}


def test_full_build_then_noop(tree: Tree) -> None:
    first = tree.doit("build")
    report = tree.report()
    assert tree.statuses() == dict.fromkeys(EXAMPLE, "built")
    assert report["command"] == "build" and report["jobs"] == 8
    assert report["started"] <= report["finished"]
    in_storage = tree.image_ids()
    for name, entry in report["images"].items():
        assert in_storage[entry["image"]] == entry["id"]
        assert entry["start"] < entry["end"]
        log = tree.root / entry["log"]
        assert log == tree.root / "build" / name / f"{name}-build.log"
        note, command = log.read_text().splitlines()[:2]
        assert note == f"# building {name}: never built"
        assert command.startswith("$ buildah --root ")
        assert f"building {name}: buildah --root" in first.stdout
    # each build ran exactly the command it printed, and a child only after its parent
    buds = [call for call in tree.buildah_calls() if "bud" in call]
    assert len(buds) == len(EXAMPLE)
    nova_api = report["images"]["nova-api"]
    assert report["images"]["nova-base"]["end"] <= nova_api["start"]
    config = tree.inspect(nova_api["image"])["Docker"]["config"]
    assert "8774/tcp" in config["ExposedPorts"] and config["User"] == "kolla"

    second = tree.doit("build")
    assert tree.statuses() == dict.fromkeys(EXAMPLE, "up-to-date")
    assert ids(tree) == {name: e["id"] for name, e in report["images"].items()}
    assert tree.buildah_calls() == []  # storage's own list of images is read, no process
    assert "building" not in second.stdout
    tree.doit("list")
    assert tree.buildah_calls() == []  # only a run lists local images


def test_local_images_are_read_from_storage_as_buildah_lists_them(tree: Tree) -> None:
    tree.doit("build")
    note = json.loads((tree.root / "build" / ".image-store.json").read_text())
    store = Path(note["store"])
    assert store == tree.storage / "root" / "overlay-images" / "images.json"
    engine = buildah.Buildah(tuple(tree.global_args))

    def named(images: dict[str, set[str]]) -> dict[str, set[str]]:
        return {image_id: names for image_id, names in images.items() if names}

    assert named(storage_format.read_image_store(store) or {}) == named(engine.list_images())
    removed = ids(tree)["cron"]
    tree.buildah("rmi", "--force", removed)
    after = storage_format.read_image_store(store) or {}
    assert removed not in after and named(after) == named(engine.list_images())


def test_template_edit_rebuilds_exactly_that_subtree(tree: Tree) -> None:
    tree.doit("build")
    before = ids(tree)
    tree.edit("templates/nova-base/Dockerfile.j2", "{% endblock %}",
              'RUN echo "nova tuned" > /etc/nova/tuned\n{% endblock %}')
    tree.doit("build")
    assert built(tree) == NOVA_SUBTREE
    after = ids(tree)
    for name in EXAMPLE:
        assert (after[name] != before[name]) == (name in NOVA_SUBTREE), name
    assert why(tree, "nova-base") == ("# building nova-base: rendered Dockerfile changed "
                                      "(template or vars)")
    assert why(tree, "nova-api").startswith(
        f"# building nova-api: parent 'nova-base' changed: {before['nova-base']} -> ")
    assert tree.image_ids()["localhost:5000/kolla/nova-api:latest"] == after["nova-api"]


@pytest.mark.parametrize(("change", "rebuilt", "reason"), [
    ("context file", {"nova-api"}, "context file changed: start.sh"),
    ("build arg", {"nova-conductor"}, "build arg changed: +HTTP_PROXY=http://proxy:3128"),
    ("image var", {"nova-api"}, "rendered Dockerfile changed (template or vars)"),
    ("global var", EXAMPLE, "rendered Dockerfile changed (template or vars)"),
    ("label", {"cron"}, "label changed: +tier=infra"),
])
def test_each_kind_of_input_change_rebuilds_its_subtree(tree: Tree, change: str,
                                                        rebuilt: set[str], reason: str) -> None:
    tree.doit("build")
    if change == "context file":
        tree.edit("templates/nova-api/start.sh", "exec", "echo starting; exec")
    elif change == "build arg":
        # (a proxy: buildah gives every RUN step; an arg no ARG reads changes nothing)
        tree.edit_yaml(lambda d: d["images"]["nova-conductor"].update(
            args={"HTTP_PROXY": "http://proxy:3128", "UNREAD": 1}))
    elif change == "image var":
        tree.edit_yaml(lambda d: d["images"]["nova-api"]["vars"].update(port=8775))
    elif change == "global var":
        tree.edit_yaml(lambda d: d["vars"].update(maintainer="someone else"))
    elif change == "label":
        tree.edit_yaml(lambda d: d["images"].__setitem__("cron", {"parent": "base",
                                                                   "labels": {"tier": "infra"}}))
    tree.doit("build")
    assert built(tree) == rebuilt
    assert set(tree.statuses()) == EXAMPLE
    first = min(rebuilt, key=lambda name: tree.report()["images"][name]["start"])
    assert why(tree, first) == f"# building {first}: {reason}"
    info = tree.doit("info", f"build:{first}").stdout
    assert "status     : up-to-date" in info  # and after the build, no reason is left


def test_image_removed_from_storage_is_rebuilt(tree: Tree) -> None:
    tree.doit("build")
    before = ids(tree)
    tree.buildah("rmi", "--force", before["nova-api"])
    status = tree.doit("status").stdout
    assert (f"would build: image {before['nova-api']} (localhost:5000/kolla/nova-api:latest) "
            "is no longer in local storage") in status
    assert "1 of 9 selected images would build" in status
    tree.doit("build")
    assert built(tree) == {"nova-api"}
    assert why(tree, "nova-api") == (f"# building nova-api: image {before['nova-api']} "
                                     "(localhost:5000/kolla/nova-api:latest) is no longer in "
                                     "local storage")
    assert ids(tree) == before  # reproducible: the same inputs give the same ID


def test_untagged_image_is_tagged_again_not_rebuilt(tree: Tree) -> None:
    tree.doit("build")
    before = ids(tree)
    tree.buildah("rmi", "localhost:5000/kolla/cron:latest")  # one of its two names
    tree.doit("build")
    assert [call for call in tree.buildah_calls() if "bud" in call] == []
    assert tree.statuses()["cron"] == "up-to-date"
    assert tree.image_ids()["localhost:5000/kolla/cron:latest"] == before["cron"]


def test_one_image_builds_its_stale_ancestors_only(tree: Tree) -> None:
    tree.doit("build:nova-api")
    assert tree.statuses() == dict.fromkeys({"base", "openstack-base", "nova-base", "nova-api"},
                                            "built")
    tree.doit("build:nova-conductor")
    assert tree.statuses() == {"base": "up-to-date", "openstack-base": "up-to-date",
                               "nova-base": "up-to-date", "nova-conductor": "built"}


def test_failed_build_fails_its_image_blocks_its_subtree_and_reruns(tree: Tree) -> None:
    tree.edit("templates/nova-base/Dockerfile.j2", "{% endblock %}",
              "RUN echo nova-base is broken && exit 3\n{% endblock %}")
    result = tree.doit("build", check=False)
    assert result.returncode != 0
    report = tree.report()["images"]
    assert report["nova-base"]["status"] == "failed"
    assert "exit code" in report["nova-base"]["error"]
    assert {report[n]["status"] for n in ("nova-api", "nova-conductor")} == {"blocked"}
    assert built(tree) == EXAMPLE - NOVA_SUBTREE
    log = "build/nova-base/nova-base-build.log"
    assert report["nova-base"]["log"] == log and log in result.stdout
    assert "nova-base is broken" in result.stdout  # the log's last lines
    assert "Traceback" not in result.stdout + result.stderr

    tree.edit("templates/nova-base/Dockerfile.j2", " && exit 3", "")
    tree.doit("build")
    assert built(tree) == NOVA_SUBTREE


def test_child_starts_when_its_parent_is_done_not_its_level(tree: Tree) -> None:
    """A slow image does not hold back the grandchildren of its fast sibling."""
    (tree.root / "templates" / "leaf").mkdir()
    (tree.root / "templates" / "leaf" / "Dockerfile.j2").write_text(
        "FROM {{ parent_image }}\nRUN sleep {{ seconds }}\n")
    tree.edit_yaml(lambda d: d.__setitem__("images", {
        "base": d["images"]["base"],
        "slow": {"parent": "base", "template": "leaf/Dockerfile.j2", "vars": {"seconds": 6}},
        "fast": {"parent": "base", "template": "leaf/Dockerfile.j2", "vars": {"seconds": 0}},
        "fast-child": {"parent": "fast", "template": "leaf/Dockerfile.j2",
                       "vars": {"seconds": 0}},
    }))
    tree.doit("-n", "4", "build")
    report = tree.report()["images"]
    assert set(built(tree)) == {"base", "slow", "fast", "fast-child"}
    assert report["fast-child"]["start"] < report["slow"]["end"]
    assert tree.report()["jobs"] == 4


def test_bad_input_builds_nothing(tree: Tree) -> None:
    tree.edit_yaml(lambda d: d["images"]["nova-api"].update(parent="nova-bsae"))
    result = tree.doit("build", check=False)
    assert result.returncode == 1
    assert "nova-api" in result.stderr and "nova-bsae" in result.stderr
    assert str(tree.config) in result.stderr and "fix:" in result.stderr
    assert "Traceback" not in result.stderr
    assert tree.buildah_calls() == []
    assert not (tree.root / "build" / "report.json").exists()


def test_an_image_whose_context_lacks_a_copied_file_fails_before_buildah(tree: Tree) -> None:
    tree.edit("templates/cron/Dockerfile.j2", "{% block footer %}",
              "{% block footer %}\nCOPY crontab /etc/crontab")
    status = tree.doit("status", check=False)
    assert status.returncode == 1
    assert "would fail: its build context lacks COPY 'crontab'" in status.stdout
    result = tree.doit("build:cron", check=False)
    assert result.returncode != 0
    assert tree.statuses() == {"base": "built", "cron": "failed"}
    assert "its build context lacks COPY 'crontab'" in tree.report()["images"]["cron"]["error"]
    assert not any("bud" in call and "cron" in " ".join(call) for call in tree.buildah_calls())


def test_clean_removes_the_names_it_made_and_leaves_a_users_tag(tree: Tree) -> None:
    tree.doit("build", "images=^cron$")  # base and cron
    images = tree.report()["images"]
    cron, base = images["cron"], images["base"]
    tree.buildah("tag", cron["image"], "myorg/release:1.0")
    tree.doit("clean")
    left = tree.image_ids()
    # the user's image under the user's name only; base, which no one else named, is gone
    assert left == {"localhost/myorg/release:1.0": cron["id"]}
    assert base["id"] not in json.dumps(json.loads(tree.buildah("images", "--json",
                                                                "--no-trunc")))


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mounts") as mounts:
        return [line.split()[1] for line in mounts
                if line.split()[1].startswith(f"{path.resolve()}/")]


def test_a_failed_or_timed_out_build_removes_its_working_container(tree: Tree) -> None:
    tree.edit("templates/cron/Dockerfile.j2", "{% block footer %}",
              "{% block footer %}\nRUN echo cron is broken && exit 3")
    tree.edit("templates/multipathd/Dockerfile.j2", "{% endblock %}",
              "RUN sleep 60\n{% endblock %}")
    tree.edit_yaml(lambda d: d["images"]["multipathd"].update(timeout=3))
    assert tree.doit("build", "images=^(cron|multipathd)$", check=False).returncode != 0
    assert {n: s for n, s in tree.statuses().items() if s != "excluded"} == {
        "base": "built", "cron": "failed", "multipathd": "failed"}
    assert json.loads(tree.buildah("containers", "--json") or "[]") in ([], None)
    assert not [m for m in mounts_under(tree.storage) if "/merged" in m]
    # buildah's own reason in the report, not only its exit status
    error = tree.report()["images"]["cron"]["error"]
    assert error.startswith("exit code ") and "Error: building at STEP" in error
    assert tree.report()["images"]["multipathd"]["error"] == "timed out after 3 s"
