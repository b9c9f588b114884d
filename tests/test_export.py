"""buildlib.export: jobs from the image graph, the GitHub Actions and Argo files (checked by
actionlint and hera), and `doit export` as a user runs it."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import (
    KOLLA_TREE,
    REPO,
    TOOL_FILES,
    Tree,
    actionlint,
    install_wrapper,
    repository_with_tool,
)
from gha_replay import Replay
from hera.workflows import Workflow

from buildlib import export, export_argo, export_gha, export_gitlab, export_jobs
from buildlib.graph import Graph

TOOL = export.Tool(directory=".", config="images.yaml", lock="build/images.lock.json")
TARGET = export.Target("registry.example:5000", tls_verify=True)
GHA_LIMIT = 500 * 1024  # bytes: GitHub's largest workflow file


@pytest.fixture(scope="module")
def kolla() -> Graph:
    return Graph.build(yaml.safe_load(KOLLA_TREE.read_text()))


def check_partition(graph: Graph, part: export_jobs.Partition, max_jobs: int | None) -> None:
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
    per_image = export_jobs.partition(graph, seconds, None, job_start=5)
    assert per_image.chosen.makespan == (5 + 10) + (5 + 100)  # a, then d
    assert per_image.single.makespan == 5 + 160
    # two jobs gain nothing: the second would wait for all of the first
    assert len(export_jobs.partition(graph, seconds, 2, job_start=5).chosen.jobs) == 1
    three = export_jobs.partition(graph, seconds, 3, job_start=5).chosen
    assert [job.images for job in three.jobs] == [("a",), ("b", "c"), ("d",)]
    assert three.makespan == (5 + 10) + (5 + 100)
    check_partition(graph, three, 3)


@pytest.mark.parametrize("max_jobs", [1, 2, 8, 30, 188, None])
def test_kolla_partitions(kolla: Graph, max_jobs: int | None) -> None:
    durations = {name: 60.0 for name in kolla.parents}
    estimates = export_jobs.partition(kolla, durations, max_jobs, 30)
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
    jobs = export_jobs.partition(graph, durations, 3, job_start=1).chosen.jobs
    assert ("leaf-3",) in [job.images for job in jobs]


@pytest.mark.parametrize("max_jobs", [1, 8, 30, None])
def test_kolla_gha_passes_actionlint(kolla: Graph, tmp_path: Path, max_jobs: int | None) -> None:
    part = export_jobs.partition(kolla, dict.fromkeys(kolla.parents, 60.0), max_jobs, 30).chosen
    text = export_gha.gha(part, TOOL, TARGET, whole=True)
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
    part = export_jobs.partition(kolla, dict.fromkeys(kolla.parents, 60.0), 8, 30).chosen
    workflow = yaml.safe_load(export_gha.gha(part, TOOL, TARGET, whole=True))
    child = next(name for name, job in workflow["jobs"].items() if "needs" in job)
    workflow["jobs"][child]["needs"] = "no-such-job"
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump(workflow, sort_keys=False))
    assert any("no-such-job" in finding for finding in actionlint(path))


def test_a_child_job_pins_its_parents_from_the_job_it_needs(kolla: Graph) -> None:
    part = export_jobs.partition(kolla, dict.fromkeys(kolla.parents, 60.0), None, 30).chosen
    jobs = yaml.safe_load(export_gha.gha(part, TOOL, TARGET, whole=True))["jobs"]
    build = jobs["nova-api"]["steps"][3]
    assert jobs["nova-api"]["needs"] == "nova-base"
    assert build["env"]["PINS"] == "nova-base@${{ needs.nova-base.outputs.nova_hbase }}"
    assert build["run"] == ('PYTHONPATH="$PWD/$IMAGEBAKE_DIR" .venv/bin/python -m buildlib.cli '
                            "-c \"$IMAGEBAKE_CONFIG\" push cache=registry "
                            "'images=^nova-api$' \"pin=$PINS\" \"no_cache=$IMAGEBAKE_NO_CACHE\"\n")
    assert jobs["nova-base"]["outputs"] == {
        "nova_hbase": "${{ steps.digests.outputs.nova_hbase }}"}
    assert "outputs" not in jobs["nova-api"]  # a leaf: nobody needs its digest


def test_a_signing_tree_exports_jobs_that_sign_and_verify(kolla: Graph, tmp_path: Path) -> None:
    """settings.sign: each push (and merge) gets the key and password from secrets named as
    cosign's workflows name them; settings.trust: each job then verifies what it pushed,
    with the public key in the repository."""
    part = export_jobs.partition(kolla, dict.fromkeys(kolla.parents, 60.0), 8, 30).chosen
    signing = export.Target("registry.example:5000", tls_verify=True, signs=True, verifies=True)
    text = export_gha.gha(part, TOOL, signing, whole=True)
    path = tmp_path / "images.yml"
    path.write_text(text)
    assert actionlint(path) == []
    for job in yaml.safe_load(text)["jobs"].values():
        names = [step.get("name", "") for step in job["steps"]]
        push = job["steps"][names.index(next(n for n in names if n.startswith("build and")))]
        assert {k: v for k, v in push["env"].items() if k.startswith("COSIGN")} == {
            "COSIGN_PRIVATE_KEY": "${{ secrets.COSIGN_PRIVATE_KEY }}",
            "COSIGN_PASSWORD": "${{ secrets.COSIGN_PASSWORD }}"}
        verify = job["steps"][job["steps"].index(push) + 1]
        assert verify["run"] == push["run"].replace("push", "verify").replace(
            ' "pin=$PINS"', "").replace(' "no_cache=$IMAGEBAKE_NO_CACHE"', "")
        assert "COSIGN_PRIVATE_KEY" not in verify["env"]  # the key only where it signs
    assert "COSIGN" not in export_gha.gha(part, TOOL, TARGET, whole=True)
    assert " verify" not in export_gha.gha(part, TOOL, TARGET, whole=True)

    multi = export_gha.gha(part, TOOL, signing, whole=True,
                           platforms=dict.fromkeys(kolla.parents, ("linux/amd64", "linux/arm64")))
    for name, job in yaml.safe_load(multi)["jobs"].items():
        signs = [step for step in job["steps"] if "COSIGN_PRIVATE_KEY" in step.get("env", {})]
        assert len(signs) == 1, name  # the platform's push, or the merge (signs the list)
        assert not any(" verify " in step.get("run", "") for step in job["steps"])

    for target, verifies in ((signing, True), (TARGET, False)):  # GitLab: project variables
        document = yaml.safe_load(export_gitlab.gitlab(part, TOOL, target, whole=True))
        for name, job in document.items():
            if name in export_gitlab.GITLAB_KEYWORDS:
                continue
            script = job["script"]
            [push] = [i for i, line in enumerate(script) if " push cache=registry" in line]
            after = script[push + 1] if push + 1 < len(script) else ""
            assert (" verify cache=registry" in after) is verifies, name
            if verifies:  # the same images
                assert after.split(" verify cache=registry")[1] == (
                    script[push].split(" push cache=registry")[1].split(' "')[0])

    document = yaml.safe_load(export_argo.argo(part, TOOL, signing, whole=True))
    for template in document["spec"]["templates"][1:]:
        secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in template["script"]["env"]
                   if e["name"].startswith("COSIGN")}
        assert secrets == {
            "COSIGN_PRIVATE_KEY": {"name": "imagebake-signing", "key": "cosign.key"},
            "COSIGN_PASSWORD": {"name": "imagebake-signing", "key": "cosign.password"}}
        lines = template["script"]["source"].splitlines()
        [push] = [line for line in lines if " push cache=registry" in line]
        assert lines[lines.index(push) + 1] == push.replace("push", "verify").replace(
            ' "pin=$PINS"', "").replace(' "no_cache=$IMAGEBAKE_NO_CACHE"', "")


def test_argo_offers_no_cache_as_a_workflow_parameter(kolla: Graph) -> None:
    """`argo submit -p no_cache=true` builds afresh, as GitHub's input and GitLab's
    variable do: each task's push reads the parameter through IMAGEBAKE_NO_CACHE."""
    part = export_jobs.partition(kolla, dict.fromkeys(kolla.parents, 60.0), 8, 30).chosen
    document = yaml.safe_load(export_argo.argo(part, TOOL, TARGET, whole=True))
    parameters = {p["name"]: p for p in document["spec"]["arguments"]["parameters"]}
    assert parameters["no_cache"]["value"] == "false"
    for template in document["spec"]["templates"][1:]:
        env = {e["name"]: e.get("value") for e in template["script"]["env"]}
        assert env["IMAGEBAKE_NO_CACHE"] == "{{workflow.parameters.no_cache}}"
        [push] = [line for line in template["script"]["source"].splitlines()
                  if " push cache=registry" in line]
        assert push.endswith(' "no_cache=$IMAGEBAKE_NO_CACHE"')


@pytest.mark.parametrize("max_jobs", [1, 8])
def test_kolla_argo_round_trips_through_hera(kolla: Graph, max_jobs: int | None) -> None:
    part = export_jobs.partition(kolla, dict.fromkeys(kolla.parents, 60.0), max_jobs, 30).chosen
    text = export_argo.argo(part, TOOL, TARGET, whole=True)
    body = text.split("\n", 1)[1]  # after the header comment
    assert Workflow.from_yaml(body).to_yaml(width=1 << 16) == body
    document = yaml.safe_load(text)
    assert export_argo.argo_problems(document) == []
    tasks = document["spec"]["templates"][0]["dag"]["tasks"]
    assert len(tasks) == len(part.jobs)


def test_argo_problems_are_found(kolla: Graph) -> None:
    part = export_jobs.partition(kolla, dict.fromkeys(kolla.parents, 60.0), 8, 30).chosen
    good = yaml.safe_load(export_argo.argo(part, TOOL, TARGET, whole=True))
    tasks = lambda doc: doc["spec"]["templates"][0]["dag"]["tasks"]  # noqa: E731
    first, child = tasks(good)[0], next(t for t in tasks(good) if t.get("depends"))

    unknown = copy.deepcopy(good)
    next(t for t in tasks(unknown) if t["name"] == child["name"])["depends"] = "ghost"
    assert any("depends on ghost" in p for p in export_argo.argo_problems(unknown))

    cycle = copy.deepcopy(good)
    next(t for t in tasks(cycle) if t["name"] == first["name"])["depends"] = child["name"]
    assert any("cycle" in p for p in export_argo.argo_problems(cycle))

    stray = copy.deepcopy(good)
    other = next(t for t in tasks(stray) if t["name"] not in (first["name"], child["name"]))
    other.setdefault("arguments", {"parameters": []})["parameters"].append(
        {"name": "x", "value": f"{{{{tasks.{child['name']}.outputs.parameters.y}}}}"})
    assert any(f"refers to tasks.{child['name']}" in p for p in export_argo.argo_problems(stray))


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
    assert export_argo.argo_problems(yaml.safe_load(argo.read_text())) == []
    assert len(yaml.safe_load(argo.read_text())["spec"]["templates"]) == 1 + 3


def test_doit_export_selection_and_out(example: Tree) -> None:
    result = example.doit("export", "format=gha", "images=^nova-(base|api)$", "out=nova.yml")
    assert "4 jobs for 4 images" in result.stdout  # with the ancestors
    jobs = yaml.safe_load((example.root / "nova.yml").read_text())["jobs"]
    assert set(jobs) == {"base", "openstack-base", "nova-base", "nova-api"}


@pytest.mark.parametrize("variables, message", [
    (["format=jenkins"], "export needs format=gha, format=gitlab or format=argo"),
    (["format=gha", "max_jobs=0"], "max_jobs='0' is not a number >= 1"),
    (["format=gha", "job_start=soon"], "job_start='soon' is not a number"),
    (["format=gha", "job_start=nan"], "job_start='nan' is not a number"),
    (["format=gha", "job_start=inf"], "job_start='inf' is not a number"),
    (["format=gha", "max_jobs=2.5"], "max_jobs='2.5' is not a number >= 1"),
    (["format=gha", "out=templates"], "out='templates' is a folder"),
    (["format=gha", "runs_on=self-hosted,,linux"], "is not a list of runner labels"),
    (["format=gha", "runs_on=a b"], "is not a list of runner labels"),
    (["format=gha", "storage=relative/path"], "storage='relative/path' is not runner, job"),
    (["format=gha", "runners=linux/s390x=big"], "'linux/s390x' is none of the tree's"),
])
def test_bad_export_variables(example: Tree, variables: list[str], message: str) -> None:
    result = example.doit("export", *variables, check=False)
    assert result.returncode == 1
    assert message in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "wrote" not in result.stdout
    assert not (example.root / ".github").exists()


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


def test_multi_arch_images_export_per_platform(example: Tree) -> None:
    """A multi-arch tree: each job once per platform, on that platform's runner, and a
    merge job per image (tests/test_export_act_real.py runs one)."""
    example.settings(platforms=["linux/amd64", "linux/arm64"])
    split = example.doit("export", "format=gha")
    assert "9 jobs for 9 images" in split.stdout, split.stdout
    workflow = example.root / ".github" / "workflows" / "images.yml"
    assert actionlint(workflow) == []
    jobs = yaml.safe_load(workflow.read_text())["jobs"]
    assert len(jobs) == 9 * 3
    assert jobs["nova-api-linux-arm64"]["runs-on"] == "ubuntu-24.04-arm"
    assert jobs["nova-api-linux-arm64"]["needs"] == "nova-base-linux-arm64"
    assert jobs["merge-nova-api"]["needs"] == ["nova-api-linux-amd64", "nova-api-linux-arm64"]


def test_a_job_of_images_of_different_platforms_is_refused() -> None:
    part = export_jobs.Partition((export_jobs.Job("a", ("a", "b"), None, ()),), 0.0)
    with pytest.raises(ValueError, match="holds images of different platforms"):
        export_gha.gha(part, TOOL, TARGET, whole=True,
                   platforms={"a": ("linux/amd64", "linux/arm64"), "b": ("linux/arm64",)})


# -- names that are data, not shell -------------------------------------------------------------

HOSTILE = "t $(touch PWNED)"  # a folder name
HOSTILE_BUILD_DIR = "b;touch PWNED_B;#"
PLANTED = {"PWNED", "PWNED_B"}
# Records its name and arguments (one JSON line) instead of doing anything.
STUB = """#!{python}
import json, os, sys
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
"""
STUBBED = ("sudo", "apt-get", "python3", "buildah")


def tree_in(folder: Path, storage: Path) -> Tree:
    """The example tree and imagebake in `folder`, inside a git repository one level up
    (so a workflow names the folder in every path)."""
    folder.mkdir(parents=True)
    shutil.copy(REPO / "images.yaml", folder / "images.yaml")
    shutil.copytree(REPO / "templates", folder / "templates", symlinks=True)
    tree = Tree(folder, storage)
    tree.settings(isolation="chroot", buildah_args=tree.global_args)
    install_wrapper(tree)
    for name in TOOL_FILES:
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, folder / name)
    tree.dodo = folder / "dodo.py"
    (folder.parent / ".gitignore").write_text("build/\nwrapper-bin/\nbuildah-calls.log\n")
    git = ["git", "-C", str(folder.parent), "-c", "user.name=test", "-c", "user.email=t@test"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(folder.parent)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "the tree"], check=True)
    return tree


def stubs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in (*STUBBED, "python", "pip"):
        (folder / name).write_text(STUB.format(python=sys.executable))
        (folder / name).chmod(0o755)
    return folder


def stub_cache(folder: Path, bin_dir: Path) -> Path:
    """A runner's cache (IMAGEBAKE_CACHE) holding the virtualenv that the install step
    links, made already: its bin/ holds the stubs."""
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:16]
    venv = folder / f"venv-{key}"
    venv.mkdir(parents=True)
    (venv / "bin").symlink_to(bin_dir)
    (venv / "ready").touch()
    return folder


def clone(repository: Path):
    """The checkout step of a replay: the repository cloned into the workspace."""
    def checkout(workspace: Path) -> None:
        subprocess.run(["git", "clone", "-q", str(repository), str(workspace)], check=True)
    return checkout


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_hostile_paths_reach_the_shell_as_data(tmp_path: Path) -> None:
    """A tree in a folder named `t $(touch PWNED)` with `build_dir: 'b;touch PWNED_B;#'`:
    every `run:` step of the exported workflow, and every Argo script, executed by bash
    (with apt-get, buildah, python3 and imagebake stubbed), creates nothing and hands
    each path to the command as one word."""
    tree = tree_in(tmp_path / "repo" / HOSTILE, tmp_path / "storage")
    tree.settings(build_dir=HOSTILE_BUILD_DIR)
    tree.doit("export", "format=gha", "max_jobs=3")
    tree.doit("export", "format=argo", "max_jobs=3")
    workflow = tmp_path / "repo" / ".github" / "workflows" / "images.yml"
    assert actionlint(workflow) == []
    bin_dir = stubs(tmp_path / "stubs")
    path = f"{bin_dir}:{os.environ['PATH']}"
    cache = stub_cache(tmp_path / "cache", bin_dir)
    jobs = Replay.of(workflow, tmp_path / "runners",
                     runner_env=lambda runner: {"PATH": path, "STUB_LOG": str(runner / "log"),
                                                "IMAGEBAKE_CACHE": str(cache)},
                     setup={"actions/checkout@v5": clone(tmp_path / "repo")}).run()
    argo = yaml.safe_load((tree.root / HOSTILE_BUILD_DIR / "argo-workflow.yaml").read_text())
    for template in argo["spec"]["templates"][1:]:
        run_argo_script(template["script"], tmp_path / "pods" / template["name"], path,
                        clone(tmp_path / "repo"), cache)
    assert not [found for found in tmp_path.rglob("*") if found.name in PLANTED]
    for pod in (tmp_path / "pods").iterdir():
        assert (pod / "exit").read_text().startswith("0\n"), (pod / "exit").read_text()
    assert {job.status for job in jobs.values()} == {"success"}, \
        "\n".join(job.text for job in jobs.values())
    said = [call for log in tmp_path.rglob("log") for call in calls(log)]
    config, lock = f"{HOSTILE}/images.yaml", f"{HOSTILE}/{HOSTILE_BUILD_DIR}/images.lock.json"
    assert {tuple(call[:6]) for call in said if call[0] == "python"} == {
        ("python", "-m", "buildlib.cli", "-c", config, "push"),
        ("python", "-m", "buildlib.cli", "-c", config, "resolve")}
    assert any(call[:3] == ["python3", "-", lock] for call in said)


def run_argo_script(script: dict, pod: Path, path: str, checkout, cache: Path) -> None:
    """An Argo script template's source run by bash as its pod would: in the checkout,
    with the template's environment (its secrets unset: none given)."""
    checkout(pod / "src")
    env = {item["name"]: item["value"] for item in script["env"] if "value" in item}
    env.update(PATH=path, STUB_LOG=str(pod / "log"), IMAGEBAKE_CACHE=str(cache),
               REGISTRY_AUTH_FILE=str(pod / "registry-auth.json"))
    source = script["source"].replace("/tmp/digests", str(pod / "digests"))  # the pod's /tmp
    done = subprocess.run(["bash", "-c", source], cwd=pod / "src", env=env,
                          capture_output=True, text=True, timeout=60)
    (pod / "exit").write_text(f"{done.returncode}\n{done.stdout}{done.stderr}")


@pytest.mark.parametrize("folder, fmt, said", [
    ("t${{ github.token }}", "gha", "holds `{{`"),
    ("t{{workflow.name}}", "argo", "holds `{{`"),
    ("t\nx", "gha", "holds the control character '\\n'"),
])
def test_paths_no_quoting_makes_safe_are_refused(tmp_path: Path, folder: str, fmt: str,
                                                 said: str) -> None:
    tree = tree_in(tmp_path / "repo" / folder, tmp_path / "storage")
    result = tree.doit("export", f"format={fmt}", check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert said in output and "cannot write it into a workflow" in output, output
    assert str(tree.config) in output and "fix:" in output and "Traceback" not in output
    assert not (tmp_path / "repo" / ".github").exists()
    assert not (tree.root / "build" / "argo-workflow.yaml").exists()


def test_unsafe_names_what_no_quoting_makes_safe() -> None:
    """Image names too: Kolla's are its folders' names, not checked against the grammar."""
    assert export.unsafe(TOOL, TARGET, ["nova-api", "a.b_c"]) is None
    assert export.unsafe(TOOL, TARGET, ["nova", "x${{ secrets.A }}"]) == (
        "the image name 'x${{ secrets.A }}' holds `{{` (an expression GitHub Actions and "
        "Argo would evaluate)")
    assert "control character '\\t'" in export.unsafe(TOOL, TARGET, ["a\tb"])


# -- output names --------------------------------------------------------------------------------

SIMILAR = ("x.y", "x-y", "x_y")  # one identifier each before: `x-y`


def similar_names_in_one_job() -> export_jobs.Partition:
    """`a` and x.y, x-y, x_y in one job; each of their children in a job of its own."""
    head = export_jobs.Job("a", ("a", *SIMILAR), None, ())
    kids = [export_jobs.Job(f"kid{n}", (f"kid{n}",), "a", ((f"kid{n}", name),))
            for n, name in enumerate(SIMILAR)]
    return export_jobs.Partition((head, *kids), 0.0)


def test_output_names_are_one_to_one() -> None:
    names = [export.output_name(name) for name in (*SIMILAR, "x__y", "x_hy", "1x", "_1x")]
    assert len(set(names)) == len(names)
    assert export.output_name("nova-base") == "nova_hbase"
    assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) for name in names)


def test_similar_names_in_one_job_reach_the_right_child_on_gha(tmp_path: Path) -> None:
    """The digests step of the head job, run by bash on a lock file, writes outputs that
    each child's pin reads back as its own parent's digest."""
    part = similar_names_in_one_job()
    path = tmp_path / "workflow.yml"
    path.write_text(export_gha.gha(part, TOOL, TARGET, whole=False))
    assert actionlint(path) == []
    jobs = yaml.safe_load(path.read_text())["jobs"]
    digests = {name: "sha256:" + f"{n}" * 64 for n, name in enumerate(SIMILAR)}
    outputs = run_digests_step(jobs["a"]["steps"][-1]["run"], digests, tmp_path)
    for n, name in enumerate(SIMILAR):
        pins = jobs[f"kid{n}"]["steps"][3]["env"]["PINS"]
        wanted = re.fullmatch(r"(.*)@\$\{\{ needs\.a\.outputs\.(\w+) \}\}", pins)
        assert wanted and wanted.group(1) == name
        step_output = re.fullmatch(r"\$\{\{ steps\.digests\.outputs\.(\w+) \}\}",
                                   jobs["a"]["outputs"][wanted.group(2)])
        assert outputs[step_output.group(1)] == digests[name], name


def test_similar_names_in_one_job_reach_the_right_child_on_argo() -> None:
    document = yaml.safe_load(export_argo.argo(similar_names_in_one_job(), TOOL, TARGET,
                                          whole=False).split("\n", 1)[1])
    assert export_argo.argo_problems(document) == []
    templates = {t["name"]: t for t in document["spec"]["templates"]}
    produced = {p["name"]: p["valueFrom"]["path"] for p in templates["a"]["outputs"]["parameters"]}
    assert len(set(produced.values())) == len(SIMILAR)
    tasks = {t["name"]: t for t in templates["images"]["dag"]["tasks"]}
    for n, name in enumerate(SIMILAR):
        value = tasks[f"kid{n}"]["arguments"]["parameters"][0]["value"]
        wanted = re.fullmatch(r"(.*)@\{\{tasks\.a\.outputs\.parameters\.(\w+)\}\}", value)
        assert wanted and wanted.group(1) == name
        assert produced[wanted.group(2)] == f"/tmp/digests/{export.output_name(name)}"


def run_digests_step(script: str, digests: dict[str, str], workspace: Path) -> dict[str, str]:
    """A `publish the digests` step run by bash, its `resolve` a no-op, on a lock file
    holding `digests`: the outputs it writes."""
    (workspace / ".venv" / "bin").mkdir(parents=True)
    (workspace / ".venv" / "bin" / "python").symlink_to(shutil.which("true"))
    lock = workspace / "images.lock.json"
    lock.write_text(json.dumps({"images": {k: {"digest": v} for k, v in digests.items()}}))
    output = workspace / "output"
    subprocess.run(["bash", "-e", "-c", script], cwd=workspace, check=True, timeout=60,
                   env={**os.environ, "IMAGEBAKE_LOCK": str(lock), "IMAGEBAKE_DIR": ".",
                        "GITHUB_OUTPUT": str(output)})
    return dict(line.split("=", 1) for line in output.read_text().splitlines())
