"""The `imagebake` command: installed by `pip install .` into a fresh venv, it builds the
tree in its working directory; `-c FILE` names another."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import REPO, Tree

from buildlib import cli, run


@pytest.mark.parametrize(("argv", "expected"), [
    (["-c", "x/images.yaml", "build"], ["config=x/images.yaml", "build"]),
    (["-n", "8", "--config", "y.yaml", "push"], ["-n", "8", "config=y.yaml", "push"]),
    (["--config=z.yaml", "status"], ["config=z.yaml", "status"]),
    (["info", "build:nova-api"], ["info", "build:nova-api"]),
    (["-c", "a.yaml", "build", "--config", "b.yaml", "-c", "c.yaml,d.yaml"],
     ["config=a.yaml,b.yaml,c.yaml,d.yaml", "build"]),
    (["build", "--set", "nova-*.args.WORKERS=8", "--set=settings.tag=a=b"],
     ["build", "set.nova-*.args.WORKERS=8", "set.settings.tag=a=b"]),
])
def test_config_option_becomes_doits_config_variable(argv: list[str],
                                                     expected: list[str]) -> None:
    assert cli.config_as_variable(argv) == expected
    assert run.parse_argv(expected, cli.PROGRAM).tasks == run.parse_argv(expected).tasks


def fresh_install(where: Path) -> Path:
    """`pip install .` of this repository's package into a new venv; its dependencies are
    the test venv's (no downloads but the build backend). Returns the venv's bin folder."""
    source = where / "source"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source)
    shutil.copytree(REPO / "buildlib", source / "buildlib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python",
                    "install", "-q", "--no-deps", source], check=True, timeout=300)
    site = subprocess.run([venv / "bin" / "python", "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "test-venv-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


@pytest.mark.integration
def test_installed_command_builds_the_tree_in_its_folder_then_has_nothing_to_do(
        tree: Tree, tmp_path: Path) -> None:
    bin_dir = fresh_install(tmp_path / "install")
    where = subprocess.run([bin_dir / "python", "-c", "import buildlib; print(buildlib.__file__)"],
                           check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    assert where.startswith(str(tmp_path / "install" / "venv"))

    def imagebake(*args: str, cwd: Path = tree.root) -> subprocess.CompletedProcess:
        tree.calls_log.unlink(missing_ok=True)
        return subprocess.run([bin_dir / "imagebake", *args], cwd=cwd, env=tree.env,
                              capture_output=True, text=True, timeout=300, check=True)

    first = imagebake("-n", "4", "build")
    assert set(tree.statuses().values()) == {"built"}, first.stdout
    assert len(tree.statuses()) == 9
    assert (tree.root / "build" / "nova-api" / "nova-api-build.log").exists()

    imagebake("build")
    assert set(tree.statuses().values()) == {"up-to-date"}
    assert not [call for call in tree.buildah_calls() if "bud" in call]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    status = imagebake("-c", "../tree/images.yaml", "status", cwd=elsewhere)
    assert "0 of 9 selected images would build" in status.stdout
    listed = imagebake("list", cwd=tree.root).stdout
    assert {"build", "push", "status"} <= {line.split()[0] for line in listed.splitlines()}
    assert not (elsewhere / "build").exists()
