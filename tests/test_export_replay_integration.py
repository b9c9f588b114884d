"""The exported GitHub Actions workflow, replayed job by job (tests/gha_replay.py) against a
real registry on loopback: every job on a fresh runner of its own, the registry the only
thing jobs share.

How the replay maps what cannot run here, and nothing else: the `actions/checkout@v5`
step becomes `git clone` of the tree's repository into the job's empty workspace (what
the action does), and the `install imagebake` step (apt-get with sudo, pip from PyPI)
becomes a `.venv` link to this test run's virtualenv, which has this package installed
(from the same source as the clone). Each runner gets its own buildah storage through
CONTAINERS_STORAGE_CONF, as a fresh runner has its own default storage. Every other step
(`buildah login`, `imagebake push`, `imagebake resolve`, the digests written to
$GITHUB_OUTPUT)
runs as written in the file.

Real runner software runs the file unmodified in tests/test_export_act_real.py (act, in
`make test-real`): the example tree three times, install step included. These replays stay
in the default suite for what act cannot show: GitHub's order of jobs (each starts as soon
as the jobs it needs are done, while act starts a level of the tree only when the whole
previous level is done) and a runner per job that shares nothing with the others but the
registry (act's host mode runs every job on one host); and they run in seconds, without act.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, Tree, repository_with_tool, unmount_under
from gha_replay import JobResult, Replay
from registry import Registry
from test_export import tree_in

pytestmark = pytest.mark.integration

sys.path.insert(0, str(REPO / "bench"))
from trees import kolla_parents, mid_level_image, write_tree  # noqa: E402

VENV = Path(sys.executable).parent.parent
EXAMPLE = {"base", "openstack-base", "nova-base", "nova-api", "nova-conductor", "neutron-base",
           "neutron-dhcp-agent", "multipathd", "cron"}
STORAGE_CONF = """\
[storage]
driver = "overlay"
graphroot = "{runner}/storage/root"
runroot = "{runner}/storage/run"
"""


def runner_env(runner: Path) -> dict[str, str]:
    conf = runner / "storage.conf"
    runner.mkdir(parents=True, exist_ok=True)
    conf.write_text(STORAGE_CONF.format(runner=runner))
    return {"CONTAINERS_STORAGE_CONF": str(conf)}


def checkout(repository: Path):
    def clone(workspace: Path) -> None:
        subprocess.run(["git", "clone", "-q", str(repository), str(workspace)], check=True)
    return clone


def link_venv(workspace: Path) -> None:
    (workspace / ".venv").symlink_to(VENV)


@pytest.fixture
def runs(tmp_path: Path):
    """Replays of a tree's exported workflow, each in runner directories of its own."""
    count = 0

    def replay(tree: Tree, registry: Registry, workflow: Path,
               inputs: dict[str, str] | None = None) -> dict[str, JobResult]:
        """`workflow` of the repository holding `tree`, with the registry's credentials as
        the secrets (none for a registry without auth); `inputs`: a workflow_dispatch's
        (none: a push's run)."""
        nonlocal count
        count += 1
        root = tmp_path / f"replay-{count}"
        secrets = {"REGISTRY_USERNAME": registry.user, "REGISTRY_PASSWORD": registry.password}
        jobs = Replay.of(workflow, root, parallel=4, runner_env=runner_env,
                         secrets={k: v for k, v in secrets.items() if v is not None},
                         inputs=inputs or {},
                         setup={"actions/checkout@v5": checkout(repository(tree)),
                                "install imagebake": link_venv}).run()
        failed = [job for job in jobs.values() if job.status != "success"]
        assert not failed, "\n\n".join(f"== job {job.name}: {job.status}\n{job.text}"
                                       for job in failed)
        wall = max(j.finished for j in jobs.values()) - min(j.started for j in jobs.values())
        folder = tree.root.relative_to(repository(tree)).as_posix()
        print(f"replay {count} of {workflow.name}: {len(jobs)} jobs, "
              f"{sum(built(jobs, folder).values())} builds, "
              f"{sum(pushed(jobs, folder).values())} pushes, "
              f"{wall:.0f} s")  # for the record: `pytest -s`
        return jobs

    yield replay
    unmount_under(tmp_path)  # the runners' storage and the resolving clone's


def prepare(tree: Tree, registry: Registry, namespace: str) -> None:
    tree.settings(registry=registry.address, namespace=namespace, tls_verify=False,
                  buildah_args=[])  # a runner's own default storage
    if not (repository(tree) / ".git").exists():
        repository_with_tool(tree)


def repository(tree: Tree) -> Path:
    """The git repository holding the tree: its own folder, or the one above (`tree_in`)."""
    return tree.root if (tree.root / ".git").exists() else tree.root.parent


def export(tree: Tree, *variables: str) -> Path:
    tree.doit("export", "format=gha", *variables)
    workflow = repository(tree) / ".github" / "workflows" / "images.yml"
    commit(tree, "the exported workflow")
    return workflow


def commit(tree: Tree, message: str) -> None:
    git = ["git", "-C", str(tree.root), "-c", "user.name=test", "-c", "user.email=t@test"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", message], check=True)


def reports(jobs: dict[str, JobResult], folder: str = ".") -> dict[str, dict[str, Any]]:
    """Each job's report.json (the tool's own account of what the job did), of the tree in
    `folder` of the repository."""
    return {name: json.loads((job.workspace / folder / "build" / "report.json").read_text())
            for name, job in jobs.items()}


def built(jobs: dict[str, JobResult], folder: str = ".") -> Counter:
    """How many times each image was built (with buildah bud) over all jobs."""
    return Counter(image for report in reports(jobs, folder).values()
                   for image, entry in report["images"].items() if entry["status"] == "built")


def pushed(jobs: dict[str, JobResult], folder: str = ".") -> Counter:
    return Counter(image for report in reports(jobs, folder).values()
                   for image, entry in (report.get("pushes") or {}).items()
                   if entry["status"] == "pushed")


def resolved(tree: Tree, registry: Registry, tmp_path: Path) -> dict[str, dict[str, str]]:
    """`doit resolve` from a fresh clone with empty storage: what the registry holds."""
    clone = tmp_path / "resolve-clone"
    subprocess.run(["git", "clone", "-q", str(tree.root), str(clone)], check=True)
    auth = registry.write_authfile(tmp_path / "resolve-auth.json")
    env = {**tree.env, **runner_env(tmp_path / "resolve-runner"),
           "REGISTRY_AUTH_FILE": str(auth)}
    result = subprocess.run([str(Path(sys.executable).parent / "doit"), "-f",
                             str(clone / "dodo.py"), f"config={clone / 'images.yaml'}",
                             "resolve"], cwd=clone, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    lock = json.loads((clone / "build" / "images.lock.json").read_text())["images"]
    shutil.rmtree(clone)
    return lock


def assert_registry_matches(registry: Registry, namespace: str, lock: dict, names: set[str]):
    assert set(lock) == names
    for name in names:
        assert registry.digest(f"{namespace}/{name}", "latest") == lock[name]["digest"], name


def test_a_tree_in_a_folder_with_a_space_replays(auth_registry: Registry, runs,
                                                 tmp_path: Path) -> None:
    """`-c my images/images.yaml` was two words: the workflow's paths are data now."""
    tree = tree_in(tmp_path / "repo" / "my images", tmp_path / "storage")
    prepare(tree, auth_registry, "spaced")
    workflow = export(tree, "images=^(base|openstack-base)$")
    assert workflow == tmp_path / "repo" / ".github" / "workflows" / "images.yml"
    jobs = runs(tree, auth_registry, workflow)
    assert set(jobs) == {"base", "openstack-base"}  # the child pinned to the parent's digest
    assert built(jobs, "my images") == Counter(["base", "openstack-base"])
    for name in ("base", "openstack-base"):
        assert auth_registry.digest(f"spaced/{name}", "latest") is not None, name


def test_a_run_by_hand_with_no_cache_builds_afresh(registry: Registry, runs,
                                                  tree: Tree) -> None:
    """The workflow_dispatch input no_cache: every job builds its images again, though
    the registry holds them under their keys; a push's run builds nothing."""
    prepare(tree, registry, "fresh")
    workflow = export(tree, "images=^(base|openstack-base)$")
    assert built(runs(tree, registry, workflow)) == Counter(["base", "openstack-base"])
    assert built(runs(tree, registry, workflow)) == Counter()
    jobs = runs(tree, registry, workflow, inputs={"no_cache": "true"})
    assert built(jobs) == Counter(["base", "openstack-base"])
    log = (jobs["base"].workspace / "build" / "base" / "base-build.log").read_text()
    assert log.startswith("# building base: forced fresh build (no_cache=1)"), log[:200]


def test_settings_authfile_left_out_of_the_checkout(tree: Tree, auth_registry: Registry,
                                                    runs) -> None:
    """The authfile the tree names is not checked in: the job's login stands in for it."""
    prepare(tree, auth_registry, "authfile")
    (tree.root / "secrets").mkdir()
    auth_registry.write_authfile(tree.root / "secrets" / "auth.json")
    with (tree.root / ".gitignore").open("a") as ignore:
        ignore.write("secrets/\n")
    tree.settings(authfile="secrets/auth.json")
    jobs = runs(tree, auth_registry, export(tree, "images=^base$"))
    assert not (jobs["base"].workspace / "secrets").exists()
    assert pushed(jobs) == Counter(["base"])
    assert auth_registry.digest("authfile/base", "latest") is not None


def test_a_registry_without_auth_needs_no_secrets(tree: Tree, registry: Registry,
                                                  runs) -> None:
    """No REGISTRY_USERNAME secret: the job does not log in (`buildah login` without
    credentials failed: 'Must provide --username') and pushes."""
    prepare(tree, registry, "open")
    jobs = runs(tree, registry, export(tree, "images=^base$"))
    assert "no REGISTRY_USERNAME given" in jobs["base"].text
    assert pushed(jobs) == Counter(["base"])
    assert registry.digest("open/base", "latest") is not None


@pytest.mark.slow
@pytest.mark.parametrize(("images", "jobs"), [
    pytest.param(10, 3, id="10-in-3-jobs"),
    pytest.param(40, 8, id="40-in-8-jobs", marks=pytest.mark.real),  # 33 s: make test-real
])
def test_kolla_shaped_tree_in_jobs(auth_registry: Registry, runs, tmp_path: Path,
                                   images: int, jobs: int) -> None:
    parents = kolla_parents()
    order = [name for name in _dfs(parents)][:images]  # a prefix of a DFS holds its ancestors
    shape = {name: parents[name] for name in order}
    bench = write_tree(tmp_path / "tree", shape, dict.fromkeys(shape, 0), tmp_path / "unused")
    tree = Tree(bench.root, tmp_path / "unused")
    tree.wrapper_dir.mkdir()
    prepare(tree, auth_registry, "bench")
    workflow = export(tree, f"max_jobs={jobs}")
    assert len(yaml.safe_load(workflow.read_text())["jobs"]) == jobs

    first = runs(tree, auth_registry, workflow)
    assert built(first) == Counter(list(shape))  # each image once over the 8 jobs
    lock = resolved(tree, auth_registry, tmp_path)
    assert_registry_matches(auth_registry, "bench", lock, set(shape))

    second = runs(tree, auth_registry, workflow)
    assert built(second) == Counter()
    assert resolved(tree, auth_registry, tmp_path) == lock

    edited = bench.edit_image(mid_level_image(shape))  # its Dockerfile changes
    commit(tree, "edit one mid-tree image")
    third = runs(tree, auth_registry, workflow)
    assert built(third) == Counter(edited)
    changed = resolved(tree, auth_registry, tmp_path)
    assert {n for n in shape if changed[n]["digest"] != lock[n]["digest"]} == edited


def _dfs(parents: dict[str, str | None]) -> list[str]:
    kids: dict[str, list[str]] = {name: [] for name in parents}
    for name, parent in parents.items():
        if parent is not None:
            kids[parent].append(name)
    found, stack = [], [name for name, parent in parents.items() if parent is None]
    while stack:
        name = stack.pop()
        found.append(name)
        stack.extend(reversed(kids[name]))
    return found
