"""buildlib.export: jobs from the image graph, the GitHub Actions and Argo files (checked by
actionlint and hera), and `doit export` as a user runs it."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from conftest import KOLLA_TREE, Tree, actionlint, repository_with_tool
from hera.workflows import Workflow

from buildlib import export
from buildlib.graph import Graph

TOOL = export.Tool(directory=".", config="images.yaml", lock="build/images.lock.json")
TARGET = export.Target("registry.example:5000", tls_verify=True)
GHA_LIMIT = 500 * 1024  # bytes: GitHub's largest workflow file


@pytest.fixture(scope="module")
def kolla() -> Graph:
    if not KOLLA_TREE.exists():
        pytest.skip(f"{KOLLA_TREE} is not there")
    return Graph.build(yaml.safe_load(KOLLA_TREE.read_text()))


def check_partition(graph: Graph, part: export.Partition, max_jobs: int | None) -> None:
    """Every image in one job, after its parent: in the same job or the job it needs."""
    placed = [image for job in part.jobs for image in job.images]
    assert sorted(placed) == sorted(graph.parents)
    jobs = {job.name: job for job in part.jobs}
    for job in part.jobs:
        assert list(job.images) == [n for n in graph.order() if n in job.images]
        for image in job.images:
            parent = graph.parents[image]
            if parent is not None and parent not in job.images:
                assert parent in jobs[job.parent].images, (image, job)
                assert (image, parent) in job.pins
    if max_jobs is not None:
        assert len(part.jobs) <= max_jobs


def test_a_chain_and_a_fork_by_hand() -> None:
    graph = Graph.build({"a": None, "b": "a", "c": "b", "d": "a"})
    seconds = {"a": 10, "b": 20, "c": 30, "d": 100}
    per_image = export.partition(graph, seconds, None, job_start=5)
    assert per_image.chosen.makespan == (5 + 10) + (5 + 100)  # a, then d
    assert per_image.single.makespan == 5 + 160
    # two jobs gain nothing: the second would wait for all of the first
    assert len(export.partition(graph, seconds, 2, job_start=5).chosen.jobs) == 1
    three = export.partition(graph, seconds, 3, job_start=5).chosen
    assert [job.images for job in three.jobs] == [("a",), ("b", "c"), ("d",)]
    assert three.makespan == (5 + 10) + (5 + 100)
    check_partition(graph, three, 3)


@pytest.mark.parametrize("max_jobs", [1, 2, 8, 30, 188, None])
def test_kolla_partitions(kolla: Graph, max_jobs: int | None) -> None:
    durations = {name: 60.0 for name in kolla.parents}
    estimates = export.partition(kolla, durations, max_jobs, 30)
    check_partition(kolla, estimates.chosen, max_jobs)
    assert estimates.chosen.makespan <= estimates.single.makespan
    if max_jobs is None or max_jobs >= len(kolla.parents):
        assert estimates.chosen.makespan <= estimates.per_image.makespan
    if max_jobs and max_jobs >= 8:
        assert estimates.chosen.makespan < estimates.single.makespan / 3


def test_durations_of_the_last_run_steer_the_split() -> None:
    """The image that took long gets a job of its own."""
    graph = Graph.build({"root": None, **{f"leaf-{i}": "root" for i in range(6)}})
    durations = {name: 1.0 for name in graph.parents} | {"leaf-3": 100.0}
    jobs = export.partition(graph, durations, 3, job_start=1).chosen.jobs
    assert ("leaf-3",) in [job.images for job in jobs]


@pytest.mark.parametrize("max_jobs", [1, 8, 30, None])
def test_kolla_gha_passes_actionlint(kolla: Graph, tmp_path: Path, max_jobs: int | None) -> None:
    part = export.partition(kolla, dict.fromkeys(kolla.parents, 60.0), max_jobs, 30).chosen
    text = export.gha(part, TOOL, TARGET, whole=True)
    path = tmp_path / "images.yml"
    path.write_text(text)
    assert actionlint(path) == []
    assert len(text.encode()) < GHA_LIMIT
    workflow = yaml.safe_load(text)
    assert len(workflow["jobs"]) == len(part.jobs)
    for name, job in workflow["jobs"].items():
        parent = next(j.parent for j in part.jobs if j.name == name)
        assert job.get("needs") == parent


def test_actionlint_catches_a_broken_export(kolla: Graph, tmp_path: Path) -> None:
    part = export.partition(kolla, dict.fromkeys(kolla.parents, 60.0), 8, 30).chosen
    workflow = yaml.safe_load(export.gha(part, TOOL, TARGET, whole=True))
    child = next(name for name, job in workflow["jobs"].items() if "needs" in job)
    workflow["jobs"][child]["needs"] = "no-such-job"
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump(workflow, sort_keys=False))
    assert any("no-such-job" in finding for finding in actionlint(path))


def test_a_child_job_pins_its_parents_from_the_job_it_needs(kolla: Graph) -> None:
    part = export.partition(kolla, dict.fromkeys(kolla.parents, 60.0), None, 30).chosen
    jobs = yaml.safe_load(export.gha(part, TOOL, TARGET, whole=True))["jobs"]
    build = jobs["nova-api"]["steps"][3]
    assert jobs["nova-api"]["needs"] == "nova-base"
    assert build["env"]["PINS"] == "nova-base@${{ needs.nova-base.outputs.nova-base }}"
    assert build["run"] == (".venv/bin/imagebake -c images.yaml push cache=registry "
                            "'images=^nova-api$' \"pin=$PINS\"\n")
    assert jobs["nova-base"]["outputs"] == {
        "nova-base": "${{ steps.digests.outputs.nova-base }}"}
    assert "outputs" not in jobs["nova-api"]  # a leaf: nobody needs its digest


@pytest.mark.parametrize("max_jobs", [1, 8])
def test_kolla_argo_round_trips_through_hera(kolla: Graph, max_jobs: int | None) -> None:
    part = export.partition(kolla, dict.fromkeys(kolla.parents, 60.0), max_jobs, 30).chosen
    text = export.argo(part, TOOL, TARGET, whole=True)
    body = text.split("\n", 1)[1]  # after the header comment
    assert Workflow.from_yaml(body).to_yaml(width=1 << 16) == body
    document = yaml.safe_load(text)
    assert export.argo_problems(document) == []
    tasks = document["spec"]["templates"][0]["dag"]["tasks"]
    assert len(tasks) == len(part.jobs)


def test_argo_problems_are_found(kolla: Graph) -> None:
    part = export.partition(kolla, dict.fromkeys(kolla.parents, 60.0), 8, 30).chosen
    good = yaml.safe_load(export.argo(part, TOOL, TARGET, whole=True))
    tasks = lambda doc: doc["spec"]["templates"][0]["dag"]["tasks"]  # noqa: E731
    first, child = tasks(good)[0], next(t for t in tasks(good) if t.get("depends"))

    unknown = copy.deepcopy(good)
    next(t for t in tasks(unknown) if t["name"] == child["name"])["depends"] = "ghost"
    assert any("depends on ghost" in p for p in export.argo_problems(unknown))

    cycle = copy.deepcopy(good)
    next(t for t in tasks(cycle) if t["name"] == first["name"])["depends"] = child["name"]
    assert any("cycle" in p for p in export.argo_problems(cycle))

    stray = copy.deepcopy(good)
    other = next(t for t in tasks(stray) if t["name"] not in (first["name"], child["name"]))
    other.setdefault("arguments", {"parameters": []})["parameters"].append(
        {"name": "x", "value": f"{{{{tasks.{child['name']}.outputs.parameters.y}}}}"})
    assert any(f"refers to tasks.{child['name']}" in p for p in export.argo_problems(stray))


# -- doit export, as a user runs it ------------------------------------------------------------


@pytest.fixture
def example(tree: Tree) -> Tree:
    repository_with_tool(tree)
    return tree


def test_doit_export_writes_the_same_bytes_twice(example: Tree) -> None:
    first = example.doit("export", "format=gha")
    path = example.root / ".github" / "workflows" / "images.yml"
    text = path.read_bytes()
    assert "wrote .github/workflows/images.yml: 9 jobs for 9 images" in first.stdout
    assert "one job for everything" in first.stdout
    example.doit("export", "format=gha")
    assert path.read_bytes() == text
    assert actionlint(path) == []

    example.doit("export", "format=argo", "max_jobs=3")
    argo = example.root / "build" / "argo-workflow.yaml"
    assert export.argo_problems(yaml.safe_load(argo.read_text())) == []
    assert len(yaml.safe_load(argo.read_text())["spec"]["templates"]) == 1 + 3


def test_doit_export_selection_and_out(example: Tree) -> None:
    result = example.doit("export", "format=gha", "images=^nova-(base|api)$", "out=nova.yml")
    assert "4 jobs for 4 images" in result.stdout  # with the ancestors
    jobs = yaml.safe_load((example.root / "nova.yml").read_text())["jobs"]
    assert set(jobs) == {"base", "openstack-base", "nova-base", "nova-api"}


@pytest.mark.parametrize("variables, message", [
    (["format=jenkins"], "export needs format=gha or format=argo"),
    (["format=gha", "max_jobs=0"], "max_jobs='0' is not a number >= 1"),
    (["format=gha", "job_start=soon"], "job_start='soon' is not a number"),
])
def test_bad_export_variables(example: Tree, variables: list[str], message: str) -> None:
    result = example.doit("export", *variables, check=False)
    assert result.returncode == 1
    assert message in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_doit_export_takes_build_times_from_the_last_report(example: Tree) -> None:
    """An image that took long in the last run gets a job of its own; images found rather
    than built have no build time."""
    entries = {name: {"status": "built", "start": 100.0, "end": 101.0}
               for name in ("base", "openstack-base", "nova-base", "nova-conductor")}
    entries["nova-api"] = {"status": "built", "start": 100.0, "end": 1100.0}
    entries["cron"] = {"status": "up-to-date", "start": 100.0, "end": 100.1}
    (example.root / "build").mkdir(exist_ok=True)
    (example.root / "build" / "report.json").write_text(json.dumps({"images": entries}))
    result = example.doit("export", "format=gha", "max_jobs=3", "job_start=1")
    assert "build times of 5 images from the last report.json" in result.stdout
    jobs = yaml.safe_load((example.root / ".github/workflows/images.yml").read_text())["jobs"]
    assert jobs["nova-api"]["name"] == "nova-api"  # alone
    assert jobs["nova-api"]["needs"] == "base"


def test_multi_arch_images_export_as_one_job_only(example: Tree) -> None:
    """pin= and resolve take no manifest lists yet: a multi-arch tree is one job."""
    example.settings(platforms=["linux/amd64", "linux/arm64"])
    split = example.doit("export", "format=gha", check=False)
    said = split.stdout + split.stderr
    assert split.returncode != 0
    assert "multi-arch" in said and "max_jobs=1" in said
    whole = example.doit("export", "format=gha", "max_jobs=1")
    assert "1 job for 9 images" in whole.stdout
    assert actionlint(example.root / ".github" / "workflows" / "images.yml") == []
