"""Kolla's room is an expander the entry points pass to `project.load`: a tree without
`kolla:` never imports it, from doit's command line or from watch mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_tree

from buildlib import project

KOLLA_ROOMS = {"buildlib.kolla", "buildlib.kolla_sources"}


def imported(stderr: str) -> set[str]:
    """The modules a run with PYTHONPROFILEIMPORTTIME=1 imported (`import time:` lines)."""
    return {line.rpartition("|")[2].strip() for line in stderr.splitlines()
            if line.startswith("import time:")}


def test_a_run_over_a_tree_without_kolla_never_imports_kolla(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    result = tree.doit("status", env={"PYTHONPROFILEIMPORTTIME": "1"})
    modules = imported(result.stderr)
    assert {"buildlib.project", "buildlib.run", "buildlib.expanders"} <= modules
    assert not modules & KOLLA_ROOMS


def test_watch_reads_a_tree_without_kolla_without_importing_kolla(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    script = ("import json, sys; from pathlib import Path; from buildlib import watch; "
              f"print(len(watch.tree_inputs(Path({str(tree.config)!r})))); "
              "print(json.dumps(sorted(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True, timeout=120)
    count, modules = result.stdout.splitlines()
    assert int(count) > 1  # images.yaml and the templates
    assert not set(json.loads(modules)) & KOLLA_ROOMS


def test_a_kolla_tree_loaded_without_an_expander_says_what_to_pass(tmp_path: Path) -> None:
    config = tmp_path / "images.yaml"
    config.write_text("kolla: {}\n")
    with pytest.raises(ValueError, match="expand=expanders.kolla"):
        project.load(config)
