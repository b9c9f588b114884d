"""images.override.yaml and --set with real buildah: each changes a build arg, the built
image shows it, and a run without them goes back to the image (and key) of the files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import Tree, repository_with_tool

pytestmark = pytest.mark.integration

ECHO = 'FROM {{ parent_image }}\nARG WORKERS=1\nRUN echo "workers=$WORKERS" > /workers.txt\n'
REFERENCE = "localhost:5000/kolla/echo:latest"


def add_echo_image(tree: Tree) -> None:
    (tree.root / "templates" / "echo").mkdir()
    (tree.root / "templates" / "echo" / "Dockerfile.j2").write_text(ECHO)
    tree.edit_yaml(lambda data: data["images"].update(
        {"echo": {"parent": "base", "args": {"WORKERS": 2}}}))


def imagebake(tree: Tree, *args: str) -> subprocess.CompletedProcess:
    """The `imagebake` command in the tree's folder (no -c: images.override.yaml counts)."""
    result = subprocess.run([sys.executable, "-m", "buildlib.cli", *args], cwd=tree.root,
                            env=tree.env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def written(tree: Tree) -> str:
    """/workers.txt in the image tagged REFERENCE."""
    container = tree.buildah("from", "--pull=never", REFERENCE).strip()
    try:
        return (Path(tree.buildah("mount", container).strip()) / "workers.txt").read_text()
    finally:
        tree.buildah("rm", container)


def echo(tree: Tree) -> tuple[str, str]:
    entry = tree.report()["images"]["echo"]
    return entry["status"], entry["key"]


def test_an_override_file_and_set_each_change_an_arg_and_a_plain_run_goes_back(
        tree: Tree) -> None:
    add_echo_image(tree)
    imagebake(tree, "build", "images=^echo$")
    assert written(tree) == "workers=2\n"
    status, from_file = echo(tree)
    assert status == "built"

    (tree.root / "images.override.yaml").write_text("images:\n  echo:\n    args: {WORKERS: 4}\n")
    imagebake(tree, "build", "images=^echo$")
    assert written(tree) == "workers=4\n"
    status, from_override = echo(tree)
    assert status == "built" and from_override != from_file
    assert tree.statuses()["base"] == "up-to-date"

    imagebake(tree, "build", "--set", "echo.args.WORKERS=8", "images=^echo$")
    assert written(tree) == "workers=8\n"
    assert echo(tree)[0] == "built"

    # the doit form: config= files in order, set.PATH=VALUE
    tree.doit("build", "images=^echo$",
              f"config={tree.config},{tree.root / 'images.override.yaml'}",
              "set.e*.args.WORKERS=16")
    assert written(tree) == "workers=16\n"

    imagebake(tree, "build", "images=^echo$")  # no --set: the override's image again
    assert written(tree) == "workers=4\n"
    status, key = echo(tree)
    assert key == from_override and status != "built"
    printed = imagebake(tree, "config", "--set", "echo.args.WORKERS=32").stdout
    assert "# --set echo.args.WORKERS=32\n" in printed
    assert "    args:\n      WORKERS: 32\n" in printed


def test_an_exported_workflow_merges_the_same_files_and_refuses_a_set(tree: Tree) -> None:
    repository_with_tool(tree)
    override = tree.root / "images.override.yaml"
    override.write_text("settings: {tag: ci}\n")
    tree.doit("export", "format=gha", f"config={tree.config},{override}")
    workflow = yaml.safe_load((tree.root / ".github" / "workflows" / "images.yml").read_text())
    assert workflow["env"]["IMAGEBAKE_CONFIG"] == "images.yaml,images.override.yaml"
    refused = tree.doit("export", "format=gha", "set.settings.tag=mine", check=False)
    assert refused.returncode == 1
    assert "--set 'settings.tag=mine' is for this run only" in refused.stdout


def test_watch_follows_the_override_file_and_what_it_adds(tree: Tree) -> None:
    from buildlib import config, watch

    add_echo_image(tree)
    (tree.root / "extra.txt").write_text("x\n")
    override = tree.root / "images.override.yaml"
    override.write_text("images:\n  echo:\n    files: {extra.txt: extra.txt}\n")
    inputs = watch.tree_inputs(config.Sources.default(tree.root))
    assert {tree.config, override, tree.root / "extra.txt"} <= inputs
    assert tree.root / "extra.txt" not in watch.tree_inputs(tree.config)  # images.yaml alone
