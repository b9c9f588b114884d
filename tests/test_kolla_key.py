"""Kolla's real tree and the exact key: a file in Kolla's `base` folder that the rocky base
never copies changes no image's key, so nothing would be rebuilt (offline: rendering only)."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import pytest

from buildlib import expanders, project

# a Kolla tree's project, as the entry points load it
load_kolla = functools.partial(project.load, expand=expanders.kolla)

kolla = pytest.importorskip("kolla")


def kolla_docker_copy(tmp_path: Path) -> Path:
    """A copy of the installed kolla's `docker/` folder, ours to edit."""
    installed = Path(kolla.__file__).parent / "docker"
    if not installed.is_dir():
        pytest.skip(f"this kolla release keeps no templates in {installed}")
    return Path(shutil.copytree(installed, tmp_path / "docker",
                                ignore=shutil.ignore_patterns("__pycache__")))


def own_keys(config: Path) -> dict[str, str]:
    """Each image's key on a fixed parent: what changes when the image's own inputs do."""
    proj = load_kolla(config)
    return {name: plan.record_on("sha256:parent").key for name, plan in proj.plans.items()}


def test_an_unread_file_in_kollas_base_folder_changes_no_key(tmp_path: Path) -> None:
    docker = kolla_docker_copy(tmp_path)
    config = tmp_path / "images.yaml"
    config.write_text(f"kolla: {{base: rocky, docker: {docker}}}\n")
    before = own_keys(config)
    assert len(before) > 150

    for unread in ("sources.list", "apt_preferences.debian", "ubuntu.sources"):
        (docker / "base" / unread).write_text("edited for another distro\n")
    (docker / "base" / "new-file-for-debian").write_text("added\n")
    assert own_keys(config) == before

    (docker / "base" / "dnf.conf").write_text("[main]\nedited\n")  # rocky's base copies it
    changed = {name for name, key in own_keys(config).items() if key != before[name]}
    assert changed == {"base"}
