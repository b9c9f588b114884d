"""buildlib.tasks: project -> doit tasks; verdict.stale_image; bad input through `doit`."""

from __future__ import annotations

import dataclasses
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from doit.loader import generate_tasks

from buildlib import (
    buildah,
    clean,
    dockerfile,
    doit_seam,
    graph,
    keys,
    project,
    run,
    tasks,
    verdict,
)
from buildlib.plan import ForeignFolder, ImagePlan
from buildlib.run import services_of
from buildlib.settled import Settled
from buildlib.storage import Storage

REPO = Path(__file__).resolve().parents[1]
DODO = REPO / "dodo.py"
VENV_DOIT = REPO / ".venv" / "bin" / "doit"
DOIT = [str(VENV_DOIT)] if VENV_DOIT.exists() else [sys.executable, "-m", "doit"]


def copy_example(tmp_path: Path, **settings: Any) -> Path:
    """A copy of the example tree, with `settings` added to its images.yaml."""
    root = tmp_path / "example"
    root.mkdir()
    shutil.copytree(REPO / "templates", root / "templates")
    text = (REPO / "images.yaml").read_text()
    if settings:
        data = yaml.safe_load(text)
        data.setdefault("settings", {}).update(settings)
        text = yaml.safe_dump(data, sort_keys=False)
    (root / "images.yaml").write_text(text)
    return root / "images.yaml"


@pytest.fixture
def example(tmp_path: Path) -> project.Project:
    return project.load(copy_example(tmp_path))


def run_of(proj: project.Project, storage: Any = None) -> tasks.Run:
    """A run of every image; each image's parent settled as `sha256:id-of-<parent>`."""
    services = services_of(proj)
    run = tasks.Run(proj, graph.select(proj.graph, [], []),
                    storage or Storage(services.buildah), services)
    for name in proj.plans:
        run.settle(name, Settled(f"sha256:id-of-{name}", None))
    return run


def task_dicts(proj: project.Project, run: tasks.Run | None = None) -> dict[str, dict[str, Any]]:
    """`build:<image>` -> its task dict (the group task under `build`)."""
    found: dict[str, dict[str, Any]] = {}
    for task in tasks.build_tasks(run or run_of(proj, FakeStorage({}))):
        key = "build" if task.get("name") is None else f"build:{task['name']}"
        assert key not in found, f"two tasks named {key}"
        found[key] = task
    return found


def title_command(task: dict[str, Any]) -> list[str]:
    """The buildah argv shown in a build task's title."""
    title = task["title"](SimpleNamespace(meta={}))
    assert "buildah" in title
    return shlex.split(title[title.index("buildah"):])


def option_pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == flag]


# --- task dicts -----------------------------------------------------------------------------


def test_one_group_task_and_one_task_per_image(example: project.Project) -> None:
    found = task_dicts(example)
    assert set(found) == {"build"} | {f"build:{name}" for name in example.config.images}
    assert found["build"]["basename"] == "build"
    # as doit loads them: `doit build` depends on every image's task
    generated = generate_tasks("build", tasks.build_tasks(run_of(example)), "")
    loaded = {t.name: t for t in generated}
    assert set(loaded["build"].task_dep) == {f"build:{n}" for n in example.config.images}


def test_doc_names_the_reference(example: project.Project) -> None:
    for name, task in task_dicts(example).items():
        if name != "build":
            image = name.partition(":")[2]
            assert example.config.reference(image) in task["doc"]


def test_children_depend_on_their_parent(example: project.Project) -> None:
    found = task_dicts(example)
    for name, image in example.config.images.items():
        task = found[f"build:{name}"]
        assert task["task_dep"] == ([f"build:{image.parent}"] if image.parent else [])
        # no getargs: doit would make it a result_dep on the parent's whole saved values
        assert "getargs" not in task
    assert found["build:nova-api"]["task_dep"] == ["build:nova-base"]


def test_a_child_is_up_to_date_on_its_parents_id_only(example: project.Project) -> None:
    """The child's check reads its parent's image ID, and nothing else of the parent's
    result: a parent rebuilt to the same ID (other times, another log) leaves it current."""
    plan = example.plans["nova-api"]
    storage = FakeStorage({"sha256:api": names(plan, "sha256:base-1")})
    run = run_of(example, storage)
    run.settle("nova-base", Settled("sha256:base-1", None, start=1.0, end=2.0))
    check = tasks.ImageUpToDate(run, "nova-api")
    recorded = plan.sources.on_parent("sha256:base-1")
    saved = {"id": "sha256:api", "key": recorded.key, "record": recorded.as_dict()}
    assert check(SimpleNamespace(meta={}), saved) is True
    run.settle("nova-base", Settled("sha256:base-1", None, start=7.0, end=9.0, cpu_seconds=3.0))
    assert check(SimpleNamespace(meta={}), saved) is True
    run.settle("nova-base", Settled("sha256:base-2", None, start=1.0, end=2.0))
    task = SimpleNamespace(meta={})
    assert check(task, saved) is False
    assert task.meta["verdict"].why == "parent 'nova-base' changed: sha256:base-1 -> sha256:base-2"


def test_title_shows_the_buildah_command(example: project.Project) -> None:
    found = task_dicts(example)
    for name in example.config.images:
        plan = example.plans[name]
        argv = title_command(found[f"build:{name}"])
        assert name in found[f"build:{name}"]["title"](SimpleNamespace(meta={}))
        assert argv[:2] == ["buildah", "bud"]
        assert argv[2:5] == ["--format", "oci", "--layers"]
        assert "--identity-label=false" in argv
        assert option_pairs(argv, "--timestamp") == ["0"]
        key = plan.sources.on_parent(f"sha256:id-of-{plan.parent}" if plan.parent else None).key
        # first a name made of the key alone: buildah writes it into the children's history
        assert option_pairs(argv, "--tag") == [f"localhost/imagebake/{name}:ib-{key[:32]}",
                                               example.config.reference(name)]
        assert plan.key_reference(key) == f"localhost:5000/kolla/{name}:ib-{key[:32]}"
        assert option_pairs(argv, "--label") == []  # the key is no label: it would change the ID
        assert option_pairs(argv, "--isolation") == ["chroot"]  # the example sets it
        # no build pulls: it is built on its parent as this run has it, or on its base as
        # storage holds it (the example's root is FROM scratch)
        assert "--pull=never" in argv
        assert option_pairs(argv, "--build-arg") == [f"IMAGEBAKE_OWNER={example.owner}",
                                                     f"IMAGEBAKE_BUILD={plan.iidfile}"]
        assert argv[-3:] == ["-f", str(plan.dockerfile), str(plan.context_dir)]
        assert plan.dockerfile.parent == example.build_dir / name


def test_the_title_of_a_fresh_build_shows_it_without_the_layer_cache(
        example: project.Project) -> None:
    """no_cache=1: the title's command is the one the build runs (`--no-cache`), and an
    image that storage holds by its key is built again, not found."""
    plan = example.plans["base"]
    key = plan.sources.key
    storage = FakeStorage({"sha256:built": names(plan, None)})
    for fresh, shown in ((frozenset(), "found base in local storage by its key"),
                         (frozenset({"base"}), "--no-cache")):
        run = dataclasses.replace(run_of(example, storage), fresh=fresh)
        title = task_dicts(example, run)["build:base"]["title"](SimpleNamespace(meta={}))
        assert shown in title and keys.key_tag(key) in title, title


def test_title_with_global_args_args_labels_volumes(tmp_path: Path) -> None:
    (tmp_path / "templates/base").mkdir(parents=True)
    (tmp_path / "templates/base/Dockerfile.j2").write_text("FROM scratch\n")
    config = tmp_path / "images.yaml"
    config.write_text(textwrap.dedent("""\
        settings:
          registry: ""
          namespace: team
          format: oci
          buildah_args: [--root, /tmp/my root, --storage-driver, vfs]
        images:
          base:
            args: {VERSION: 2, MODE: fast}
            labels: {team: infra}
            volumes: [/cache:/var/cache, /src:/src:ro]
        """))
    proj = project.load(config)
    argv = title_command(task_dicts(proj)["build:base"])
    assert argv[:6] == ["buildah", "--root", "/tmp/my root", "--storage-driver", "vfs", "bud"]
    assert argv[6:9] == ["--format", "oci", "--layers"]
    plan = proj.plans["base"]
    assert option_pairs(argv, "--tag")[1] == "team/base:latest"
    assert "--isolation" not in argv
    assert option_pairs(argv, "--build-arg") == ["MODE=fast", "VERSION=2",
                                                 f"IMAGEBAKE_OWNER={proj.owner}",
                                                 f"IMAGEBAKE_BUILD={plan.iidfile}"]
    assert option_pairs(argv, "--label") == []  # in the Dockerfile: see dockerfile.as_built
    assert plan.labels == {"team": "infra"}
    assert option_pairs(argv, "--volume") == ["/cache:/var/cache", "/src:/src:ro"]
    assert argv[-3:] == ["-f", str(plan.dockerfile), str(plan.context_dir)]


def test_boolean_build_arg_and_label_are_yaml_spelled(tmp_path: Path) -> None:
    (tmp_path / "templates/base").mkdir(parents=True)
    (tmp_path / "templates/base/Dockerfile.j2").write_text("FROM scratch\n")
    config = tmp_path / "images.yaml"
    config.write_text("images:\n  base: {args: {DEBUG: true}, labels: {beta: false}}\n")
    proj = project.load(config)
    argv = title_command(task_dicts(proj)["build:base"])
    assert option_pairs(argv, "--build-arg") == ["DEBUG=true", f"IMAGEBAKE_OWNER={proj.owner}",
                                                 f"IMAGEBAKE_BUILD={proj.plans['base'].iidfile}"]
    assert proj.plans["base"].labels == {"beta": "false"}


def test_build_action_runs_the_command_in_the_title(example: project.Project,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The action runs exactly the argv its title prints and saves what a child needs."""
    ran: list[list[str]] = []

    def fake_run(argv: list[str], log: Path, timeout: float, **_: Any) -> None:
        ran.append(list(argv))
        Path(argv[argv.index("--iidfile") + 1]).write_text("0123abcd")

    monkeypatch.setattr(buildah, "run_logged", fake_run)
    run = run_of(example, FakeStorage({}))
    task = task_dicts(example, run)["build:nova-api"]
    function, args = task["actions"][0]
    shown = title_command(task)  # as doit shows it: before the action runs
    # doit asks the up-to-date check first, which leaves the image's verdict for the action
    found = verdict.judge(run, "nova-api", None)
    values = function(*args, task=SimpleNamespace(meta={"verdict": found}))
    assert ran == [shown]
    plan = example.plans["nova-api"]
    assert values["id"] == "sha256:0123abcd"
    assert values["record"]["parent_id"] == "sha256:id-of-nova-base"
    assert values["key"] == plan.sources.on_parent("sha256:id-of-nova-base").key
    assert values["found"] == "built"
    assert run.images["nova-api"].as_values() == values  # what its children and push read
    assert plan.dockerfile.read_text() == dockerfile.as_built(plan.context.dockerfile, plan.labels)
    assert (plan.context_dir / "start.sh").exists()


def test_doit_config(tmp_path: Path) -> None:
    proj = project.load(copy_example(tmp_path, jobs=3))
    cfg = tasks.doit_config(run_of(proj))
    assert cfg["num_process"] == 3
    assert cfg["par_type"] == "thread"
    assert Path(cfg["dep_file"]).parent == proj.build_dir
    assert proj.build_dir == (tmp_path / "example" / "build").resolve()
    assert cfg["default_tasks"] == ["build"]


def test_doit_config_default_jobs(example: project.Project) -> None:
    assert tasks.doit_config(run_of(example))["num_process"] == 8


# --- is a build still good? -----------------------------------------------------------------


class FakeStorage(Storage):
    """Local storage as listed: image ID -> its names (no buildah)."""

    def __init__(self, images: dict[str, set[str]]) -> None:
        super().__init__(None)  # type: ignore[arg-type]
        self._images = images


@pytest.fixture
def nova_api(example: project.Project) -> ImagePlan:
    return example.plans["nova-api"]


def saved_for(plan: ImagePlan, parent_id: str | None = "sha256:parent",
              **changes: Any) -> Settled | None:
    record = plan.sources.on_parent(parent_id)
    return Settled.from_values({"id": "sha256:built", "key": record.key,
                                "record": record.as_dict(), "image": plan.reference, **changes})


def current(plan: ImagePlan, parent_id: str | None = "sha256:parent") -> keys.Record:
    return plan.sources.on_parent(parent_id)


def names(plan: ImagePlan, parent_id: str | None = "sha256:parent") -> set[str]:
    """The names a build gives an image: its reference and its key's tag."""
    return set(plan.local_names(current(plan, parent_id).key))


def test_the_estimate_expects_the_images_a_fresh_run_forces(example: project.Project) -> None:
    """Storage holds every image under its current key: nothing is expected to build, but
    with no_cache=1 what it forces (the ETA counts them)."""
    storage = FakeStorage({f"sha256:{name}": names(plan, plan.parent and f"sha256:{plan.parent}")
                           for name, plan in example.plans.items()})
    run = run_of(example, storage)
    assert run.likely_builds() == set()
    forced = frozenset({"nova-base", "cron"})
    assert dataclasses.replace(run, fresh=forced).likely_builds() == forced


def test_up_to_date(nova_api: ImagePlan) -> None:
    storage = FakeStorage({"sha256:built": names(nova_api)})
    assert verdict.stale_image(nova_api, saved_for(nova_api), current(nova_api),
                                storage) is None


def test_root_up_to_date(example: project.Project) -> None:
    base = example.plans["base"]
    storage = FakeStorage({"sha256:built": names(base, None)})
    assert verdict.stale_image(base, saved_for(base, None), current(base, None),
                                storage) is None


@pytest.mark.parametrize(("saved", "parent_id", "in_storage", "says"), [
    ({"id": None}, "sha256:parent", True, "never built"),
    ({"key": "0" * 64, "record": {"version": keys.KEY_VERSION, "dockerfile": "0"}},
     "sha256:parent", True, "rendered Dockerfile changed"),
    ({}, "sha256:new-parent", True, "parent 'nova-base' changed: sha256:parent -> "
                                    "sha256:new-parent"),
    ({"key": "0" * 64, "record": {"version": 0}}, "sha256:parent", True, "key version"),
    ({}, "sha256:parent", False, "no longer in local storage"),
], ids=["never-built", "inputs-changed", "parent-rebuilt", "old-key-version", "image-gone"])
def test_stale(nova_api: ImagePlan, saved: dict[str, Any], parent_id: str | None,
               in_storage: bool, says: str) -> None:
    storage = FakeStorage({"sha256:built": names(nova_api)} if in_storage else {})
    reason = verdict.stale_image(nova_api, saved_for(nova_api, **saved),
                                  current(nova_api, parent_id), storage)
    assert reason is not None
    assert says in reason


def test_stale_when_no_values_were_saved(nova_api: ImagePlan) -> None:
    storage = FakeStorage({"sha256:built": names(nova_api)})
    assert verdict.stale_image(nova_api, None, current(nova_api), storage) == "never built"


def test_stale_when_the_id_now_has_another_name(nova_api: ImagePlan) -> None:
    key_name, reference = nova_api.local_names(current(nova_api).key)
    storage = FakeStorage({"sha256:built": {key_name, "localhost:5000/kolla/other:latest"}})
    reason = verdict.stale_image(nova_api, saved_for(nova_api), current(nova_api), storage)
    assert reason == f"image sha256:built is not tagged {reference}"
    storage = FakeStorage({"sha256:built": {reference}})  # its key's name taken off
    reason = verdict.stale_image(nova_api, saved_for(nova_api), current(nova_api), storage)
    assert reason == f"image sha256:built is not tagged {key_name}"


def test_storage_finds_an_image_by_its_key_in_any_repository(
        nova_api: ImagePlan) -> None:
    key = current(nova_api).key
    storage = FakeStorage({"sha256:old": {"elsewhere:5000/team/nova-api:" + keys.key_tag(key)},
                           "sha256:other": {nova_api.reference}})
    assert storage.with_key(key) == "sha256:old"
    assert storage.with_key(current(nova_api, "sha256:another-parent").key) is None


SMALL_TREE = {
    "settings": {"isolation": "chroot"},
    "images": {"base": None, "nova-api": {"parent": "base", "vars": {"port": 8774}}},
}


@pytest.mark.parametrize(("change", "rebuilds"), [
    ({"args": {"X": 1}}, False),  # no ARG reads it: buildah says "not consumed"
    ({"args": {"HTTP_PROXY": "http://proxy:3128"}}, True),  # every RUN step reads it
    ({"labels": {"team": "infra"}}, True),
    ({"volumes": ["/cache:/cache"]}, True),
    ({"vars": {"port": 9999}}, True),  # changes the rendered Dockerfile
    ({"settings": {"format": "docker"}}, True),
    ({"settings": {"timestamp": 1700000000}}, True),
    ({"settings": {"isolation": "oci"}}, False),  # how RUN is confined, not what it makes
    ({"settings": {"tag": "v2"}}, False),  # where the image goes: a re-tag
    ({"settings": {"registry": "quay.io"}}, False),
    ({"settings": {"namespace": "team"}}, False),
    ({"settings": {"prefix": "centos-"}}, False),
    ({"settings": {"buildah_args": ["--root", "/srv/images"]}}, False),
    ({"settings": {"jobs": 2}}, False),
    ({"settings": {"push_retries": 3}}, False),
    ({"settings": {"build_timeout": 60}}, False),
], ids=lambda v: str(v) if not isinstance(v, bool) else None)
def test_content_key(tmp_path: Path, change: dict[str, Any], rebuilds: bool) -> None:
    (tmp_path / "templates/base").mkdir(parents=True)
    (tmp_path / "templates/base/Dockerfile.j2").write_text("FROM scratch\n")
    (tmp_path / "templates/nova-api").mkdir()
    (tmp_path / "templates/nova-api/Dockerfile.j2").write_text(
        "FROM {{ parent_image }}\nEXPOSE {{ port }}\n")
    config = tmp_path / "images.yaml"
    config.write_text(yaml.safe_dump(SMALL_TREE))
    before = project.load(config).plans["nova-api"].sources.on_parent("sha256:p").key
    data = yaml.safe_load(config.read_text())
    if "settings" in change:
        data["settings"].update(change["settings"])
    else:
        data["images"]["nova-api"].update(change)
    config.write_text(yaml.safe_dump(data))
    after = project.load(config).plans["nova-api"].sources.on_parent("sha256:p").key
    assert (after != before) == rebuilds


def test_key_changes_say_what_changed(nova_api: ImagePlan) -> None:
    old = dataclasses.replace(current(nova_api), args={"WORKERS": "2"},
                              files={**current(nova_api).files, "start.sh": "0"})
    assert keys.changes(old.as_dict(), current(nova_api), "nova-base") == (
        "context file changed: start.sh; build arg changed: -WORKERS=2")
    assert keys.changes(None, current(nova_api), "nova-base") == "never built"


def test_storage_lists_images_once() -> None:
    class CountingBuildah:
        calls = 0

        def images(self) -> dict[str, set[str]]:
            self.calls += 1
            return {"sha256:a": {"x:latest"}}

    fake = CountingBuildah()
    listed = Storage(fake)  # type: ignore[arg-type]
    assert listed.has("sha256:a", "x:latest")
    assert not listed.has("sha256:a", "y:latest")
    assert not listed.has("sha256:b", "x:latest")
    assert fake.calls == 1


# --- bad input through doit -----------------------------------------------------------------


def run_doit(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [*DOIT, "-f", str(DODO), f"config={tmp_path / 'images.yaml'}", *args]
    return subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


BROKEN = {
    "unknown-key": ("images:\n  base:\n  nova: {parnt: base}\n", {}, "nova", "parnt"),
    "missing-parent": ("images:\n  nova: {parent: base}\n", {}, "nova", "'base'"),
    "undefined-var": ("images:\n  base:\n", {"base/Dockerfile.j2": "FROM scratch\nRUN {{ x }}\n"},
                      "base", "Dockerfile.j2:2"),
    "runtime-error": ("images:\n  base:\n", {"base/Dockerfile.j2": "FROM scratch\n{{ 1 // 0 }}\n"},
                      "base", "Dockerfile.j2:2"),
}


@pytest.mark.parametrize("case", [
    "unknown-key", "missing-parent", "undefined-var",
    "runtime-error",
])
def test_bad_input_through_doit(tmp_path: Path, case: str) -> None:
    images_yaml, templates, image, detail = BROKEN[case]
    for relative, text in templates.items():
        (tmp_path / "templates" / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "templates" / relative).write_text(text)
    (tmp_path / "images.yaml").write_text(images_yaml)
    result = run_doit(tmp_path, "list")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("error:") == 1, result.stderr
    assert result.stderr.startswith("error: ")
    assert str(tmp_path / "images.yaml") in result.stderr
    assert f"image '{image}'" in result.stderr
    assert detail in result.stderr
    assert "fix:" in result.stderr
    assert not (tmp_path / "build").exists()


def test_good_input_through_doit(tmp_path: Path) -> None:
    config = copy_example(tmp_path)
    argv = [*DOIT, "-f", str(DODO), f"config={config}", "list", "--all"]
    result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.split()[:1] == ["build:nova-api"]
               and "localhost:5000/kolla/nova-api:latest" in line for line in lines)
    listed = {line.split()[0] for line in lines if line.startswith("build")}
    assert listed == {"build"} | {f"build:{name}" for name in project.load(config).plans}


@pytest.mark.parametrize(("argv", "runs"), [
    (["build"], True), (["-n", "8", "build"], True), ([], True), (["config=x", "push"], True),
    (["list", "--all"], False), (["info", "build:base"], False), (["clean"], False),
    (["forget", "build:base"], False), (["-f", "dodo.py", "config=x", "list"], False),
    (["--file=dodo.py", "info", "build:base"], False), (["-f", "dodo.py", "build"], True),
    (["-f", "dodo.py", "-n", "4", "build"], True),
])
def test_only_a_run_prefetches_the_storage_listing(argv: list[str], runs: bool) -> None:
    assert run.parse_argv(argv).runs_tasks is runs


@pytest.mark.parametrize(("build_dir", "command", "problem"), [
    ("..", "clean", "not a folder inside the tree's folder"),  # would delete ../proj: the tree
    ("templates", "build", "holds template folder 'templates'"),
])
def test_build_dir_outside_the_tree_or_holding_it_stops_every_command(
        tmp_path: Path, build_dir: str, command: str, problem: str) -> None:
    tree = tmp_path / "proj"
    (tree / "templates/proj").mkdir(parents=True)
    (tree / "templates/proj/Dockerfile.j2").write_text("FROM scratch\n")
    (tree / "images.yaml").write_text(f"settings: {{build_dir: {build_dir!r}}}\n"
                                      "images:\n  proj:\n")
    result = run_doit(tree, command)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and problem in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]
    assert sorted(p.name for p in tree.iterdir()) == ["images.yaml", "templates"]


def test_a_folder_the_tool_did_not_make_is_neither_rewritten_nor_cleaned(
        tmp_path: Path) -> None:
    storage = ["--root", str(tmp_path / "root"), "--runroot", str(tmp_path / "run")]
    example = project.load(copy_example(tmp_path, buildah_args=storage))
    plan = example.plans["nova-api"]
    (plan.context_dir).mkdir(parents=True)
    (plan.context_dir / "keep.txt").write_text("mine\n")
    (plan.workdir / "notes.txt").write_text("mine too\n")
    with pytest.raises(ForeignFolder, match=r"holds files imagebake did not make "
                       r"\(notes.txt\)"):
        plan.own_workdir()
    assert not plan.owns_workdir()
    clean.clean_image(run_of(example, FakeStorage({})), "nova-api")  # `doit clean` leaves it be
    assert (plan.context_dir / "keep.txt").read_text() == "mine\n"
    (plan.workdir / "notes.txt").unlink()  # what an earlier version made is taken over
    plan.own_workdir()
    assert plan.owns_workdir()


def test_task_dicts_install_no_dispatcher(tmp_path: Path) -> None:
    """Only a loaded run installs the critical-path queue (`run.load_run`): tasks made in
    a test leave doit's own order to the next test."""
    proj = project.load(copy_example(tmp_path, jobs=1))  # jobs <= cores: critical-path
    tasks.namespace(run_of(proj))
    assert not doit_seam.ready_queue_installed()


def test_a_build_loads_the_rooms_of_no_other_command() -> None:
    """dodo.py's tasks import only what a build runs: a no-op build pays for no push,
    signature, status, resolve, verify, merge, keygen, clean, preview or watch room (each
    command imports its own when it runs)."""
    check = ("import sys; import buildlib.tasks; "
             "print(' '.join(sorted(m for m in sys.modules if m.startswith('buildlib.'))))")
    loaded = set(subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                                check=True).stdout.split())
    others = {f"buildlib.{room}" for room in (
        "pushing", "publish", "push_signing", "provenance", "signatures", "signing", "status",
        "resolve", "verify", "merge", "keygen", "clean", "preview", "watch", "ci_export")}
    assert "buildlib.building" in loaded
    assert not loaded & others
