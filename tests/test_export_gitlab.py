"""`export format=gitlab`: the `.gitlab-ci.yml` of a job partition, its jobs' scripts run
by bash (imagebake stubbed), and `doit export` as a user runs it. The pipeline itself runs
on gitlab-ci-local in tests/test_gitlab_ci_local.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import Tree
from test_export import TARGET, TOOL, example, kolla  # noqa: F401 (fixtures)

from buildlib import export, export_gitlab, export_jobs
from buildlib.graph import Graph

NOT_JOBS = {"workflow", "default", "variables"}
# Records its arguments (one JSON line); `resolve` writes the lock file the test gives it.
STUB = """#!{python}
import json, os, shutil, sys
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if "resolve" in sys.argv:
    os.makedirs("build", exist_ok=True)
    shutil.copy(os.environ["STUB_LOCK"], "build/images.lock.json")
"""


def jobs_of(text: str) -> dict[str, dict]:
    document = yaml.safe_load(text)
    return {name: job for name, job in document.items() if name not in NOT_JOBS}


@pytest.mark.parametrize("max_jobs", [1, 8, 30, None])
def test_kolla_jobs_need_the_job_their_parents_are_in(kolla: Graph,  # noqa: F811
                                                      max_jobs: int | None) -> None:
    part = export_jobs.partition(kolla, dict.fromkeys(kolla.parents, 1.0), max_jobs, 30).chosen
    jobs = jobs_of(export_gitlab.gitlab(part, TOOL, TARGET, whole=True))
    assert set(jobs) == {job.name for job in part.jobs}  # no Kolla name is a keyword
    for job in part.jobs:
        written = jobs[job.name]
        assert written["needs"] == ([job.parent] if job.parent else [])
        push = written["script"][0]
        assert ('"pin=${IMAGEBAKE_PINS:?no digests from job' in push) == bool(job.pins)
        publishes = bool(part.outputs(job))
        assert ("artifacts" in written) == publishes
        if publishes:
            assert written["artifacts"] == {"reports": {"dotenv": "imagebake-pins.env"}}
    if max_jobs == 1:
        assert "images=" not in jobs[part.jobs[0].name]["script"][0]  # the whole tree


def test_a_job_named_as_a_gitlab_keyword_is_renamed() -> None:
    graph = Graph.build({"default": None, "pages": "default", "default-job": "default"})
    part = export_jobs.partition(graph, dict.fromkeys(graph.parents, 1.0), None, 30).chosen
    document = yaml.safe_load(export_gitlab.gitlab(part, TOOL, TARGET, whole=True))
    assert document["default"]["image"] == export_gitlab.GITLAB_IMAGE
    assert set(document) - NOT_JOBS == {"default-job-2", "pages-job", "default-job"}
    assert document["pages-job"]["needs"] == ["default-job-2"]
    assert document["default-job"]["needs"] == ["default-job-2"]


def test_a_dollar_in_a_path_is_not_expanded_by_gitlab() -> None:
    tool = export.Tool(directory="a$HOME", config="a$HOME/images.yaml",
                       lock="a$HOME/build/images.lock.json")
    part = export_jobs.partition(Graph.build({"base": None}), {"base": 1.0}, None, 30).chosen
    variables = yaml.safe_load(export_gitlab.gitlab(part, tool, TARGET, whole=True))["variables"]
    assert variables["IMAGEBAKE_CONFIG"] == "a$$HOME/images.yaml"  # GitLab's `$$` is `$`


def run_job(document: dict, name: str, workspace: Path, stubs: Path, env: dict[str, str]
            ) -> None:
    """The job's `script` run by bash in `workspace` as GitLab's shell would (its
    before_script, the install and login, left out; `.venv/bin` the stubs): the
    `variables:` with `$$` as `$`, then `env` (the dotenv variables of the job it needs)."""
    (workspace / ".venv").mkdir(parents=True)
    (workspace / ".venv" / "bin").symlink_to(stubs)
    variables = {key: (value["value"] if isinstance(value, dict) else value).replace("$$", "$")
                 for key, value in document["variables"].items()}  # (a prefilled one: its value)
    script = "\n".join(["set -eo pipefail", *document[name]["script"]])
    subprocess.run(["bash", "-c", script], cwd=workspace, check=True, timeout=60,
                   env={**os.environ, **variables, **env})


def stub_commands(folder: Path) -> Path:
    folder.mkdir()
    for name in ("imagebake", "python"):  # the venv's command, or its python -m
        (folder / name).write_text(STUB.format(python=sys.executable))
        (folder / name).chmod(0o755)
    return folder


def dotenv(path: Path) -> dict[str, str]:
    """A dotenv report as GitLab reads it: KEY=VALUE lines, names of letters, digits, `_`."""
    pairs = dict(line.split("=", 1) for line in path.read_text().splitlines())
    assert all(key.isidentifier() and key.isascii() for key in pairs), pairs
    return pairs


def test_x_y_and_x_dash_y_reach_their_child_jobs_apart(tmp_path: Path) -> None:
    """Two images whose names differ by `.` and `-`, in one job, each with a child in a
    job of its own: each child pins its own parent's digest."""
    part = export_jobs.Partition((
        export_jobs.Job("r", ("r", "x.y", "x-y"), None, ()),
        export_jobs.Job("a", ("a",), "r", (("a", "x.y"),)),
        export_jobs.Job("b", ("b",), "r", (("b", "x-y"),)),
    ), 0.0)
    document = yaml.safe_load(export_gitlab.gitlab(part, TOOL, TARGET, whole=False))
    stubs = stub_commands(tmp_path / "stubs")
    lock = tmp_path / "lock.json"
    lock.write_text(json.dumps({"images": {
        "r": {"digest": "sha256:" + "0" * 64}, "x.y": {"digest": "sha256:" + "1" * 64},
        "x-y": {"digest": "sha256:" + "2" * 64}}}))
    log = tmp_path / "log"
    env = {"STUB_LOG": str(log), "STUB_LOCK": str(lock)}

    run_job(document, "r", tmp_path / "r", stubs, env)
    published = dotenv(tmp_path / "r" / document["r"]["artifacts"]["reports"]["dotenv"])
    for child in ("a", "b"):
        run_job(document, child, tmp_path / child, stubs, {**env, **published})
    pins = [word.removeprefix("pin=") for line in log.read_text().splitlines()
            for word in json.loads(line) if word.startswith("pin=")]
    assert len(pins) == 2
    for word in pins:
        assert dict(pin.split("@") for pin in word.split(",")) == {
            "x.y": "sha256:" + "1" * 64, "x-y": "sha256:" + "2" * 64}


def test_a_child_job_without_its_parents_digests_stops(tmp_path: Path) -> None:
    part = export_jobs.partition(Graph.build({"r": None, "a": "r"}), {"r": 1.0, "a": 1.0}, None,
                            30).chosen
    document = yaml.safe_load(export_gitlab.gitlab(part, TOOL, TARGET, whole=False))
    with pytest.raises(subprocess.CalledProcessError):
        run_job(document, "a", tmp_path / "a", tmp_path, {})


def test_doit_export_writes_gitlab_ci_yml_at_the_root(example: Tree) -> None:  # noqa: F811
    first = example.doit("export", "format=gitlab", "max_jobs=3", "runs_on=buildah,linux")
    path = example.root / ".gitlab-ci.yml"
    assert "wrote .gitlab-ci.yml: 3 jobs for 9 images" in first.stdout, first.stdout
    text = path.read_bytes()
    example.doit("export", "format=gitlab", "max_jobs=3", "runs_on=buildah,linux")
    assert path.read_bytes() == text
    document = yaml.safe_load(text)
    assert document["default"]["tags"] == ["buildah", "linux"]
    assert len(set(document) - NOT_JOBS) == 3


def test_multi_arch_jobs_per_platform_and_a_merge(tmp_path: Path) -> None:
    """A two-platform root and child in jobs of their own: a job per platform (arm64's
    tagged for GitLab.com's arm64 runners), the child's needing its parent's job of that
    platform and pinning that platform's list, and a merge job per job given every
    platform's lists."""
    platforms = ("linux/amd64", "linux/arm64")
    graph = Graph.build({"root": None, "child": "root"})
    part = export_jobs.partition(graph, {"root": 1.0, "child": 1.0}, None, 30).chosen
    document = yaml.safe_load(export_gitlab.gitlab(part, TOOL, TARGET, whole=False,
                                            platforms=dict.fromkeys(graph.parents, platforms)))
    assert set(document) - NOT_JOBS == {
        "root-linux-amd64", "root-linux-arm64", "merge-root",
        "child-linux-amd64", "child-linux-arm64", "merge-child"}
    assert document["root-linux-arm64"]["tags"] == ["saas-linux-small-arm64"]
    assert "tags" not in document["root-linux-amd64"]  # any runner (GitLab.com's: amd64)
    assert document["child-linux-arm64"]["needs"] == ["root-linux-arm64"]
    assert document["merge-child"]["needs"] == ["child-linux-amd64", "child-linux-arm64"]

    stubs = stub_commands(tmp_path / "stubs")
    log = tmp_path / "log"
    published = {}
    for number, platform in enumerate(platforms, start=1):
        job = f"root-{platform.replace('/', '-')}"
        lock = tmp_path / f"lock-{number}.json"
        lock.write_text(json.dumps({"images": {"root": {"digest": f"sha256:{number}"},
                                               "child": {"digest": f"sha256:c{number}"}}}))
        run_job(document, job, tmp_path / job, stubs, {"STUB_LOG": str(log),
                                                      "STUB_LOCK": str(lock)})
        published[job] = dotenv(tmp_path / job / "imagebake-pins.env")
    env = {"STUB_LOG": str(log), "STUB_LOCK": str(tmp_path / "lock-1.json")}
    run_job(document, "child-linux-arm64", tmp_path / "child-arm64", stubs,
            {**env, **published["root-linux-arm64"]})
    run_job(document, "merge-root", tmp_path / "merge-root", stubs,
            {**env, **published["root-linux-amd64"], **published["root-linux-arm64"]})
    words = [word for line in log.read_text().splitlines() for word in json.loads(line)
             if word.startswith(("pin=", "parts="))]
    assert words == ["pin=root@sha256:2", "parts=root@sha256:1,root@sha256:2"]
