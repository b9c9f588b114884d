"""Watch mode on a small tree (base, cron, multipathd): a burst of saves is one build of
exactly the stale subtree; a template error is shown and the watcher goes on; a fix
builds; SIGINT during a build ends it all, nothing left running."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Tree

from buildlib import watch

pytestmark = pytest.mark.integration
SLEEP = "737.25"  # a sleep no other test runs: its process is this test's RUN step


def small_tree(tree: Tree) -> None:
    tree.edit_yaml(lambda d: d.__setitem__(
        "images", {name: d["images"][name] for name in ("base", "cron", "multipathd")}))


class Watcher:
    def __init__(self, tree: Tree) -> None:
        self.log = tree.root.parent / "watch.log"
        self.out = self.log.open("w")
        self.proc = subprocess.Popen(tree.argv("watch"), cwd=tree.root, env=tree.env,
                                     stdout=self.out, stderr=subprocess.STDOUT)
        self.seen = 0

    def text(self) -> str:
        return self.log.read_text()

    def wait_for(self, pattern: str, timeout: float = 90) -> str:
        """The output from the last wait up to a line matching `pattern`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            found = re.search(pattern, text[self.seen:], re.M)
            if found:
                new = text[self.seen:self.seen + found.end()]
                self.seen += found.end()
                return new
            assert self.proc.poll() is None, f"watcher ended:\n{text}"
            time.sleep(0.2)
        raise AssertionError(f"no {pattern!r} in:\n{self.text()}")


def built(output: str) -> list[str]:
    return re.findall(r"^\[\d+/\d+\] built (\S+)", output, re.M)


def test_watch_rebuilds_the_stale_subtree_once_per_burst_survives_errors_and_stops(
        tree: Tree) -> None:
    small_tree(tree)
    watcher = Watcher(tree)
    try:
        first = watcher.wait_for(r"watching \d+ files")
        assert sorted(built(first)) == ["base", "cron", "multipathd"]

        for save in range(3):  # an editor saving three times in quick succession
            tree.edit("templates/cron/Dockerfile.j2",
                      "{% block footer %}", f"{{% block footer %}}\nLABEL save={save}")
            time.sleep(0.1)
        burst = watcher.wait_for(r"watching for changes")
        assert len(re.findall(r"^\[watch\] \S+ building: ", burst, re.M)) == 1
        assert built(burst) == ["cron"]

        tree.edit("templates/macros.j2", "{% macro", "{% macro (")  # pulled in by import
        broken = watcher.wait_for(r"waiting for the next change")
        assert "template syntax error in" in broken and "macros.j2" in broken
        assert built(broken) == []

        tree.edit("templates/macros.j2", "{% macro (", "{% macro")
        tree.edit("templates/layout.j2", "{% block install %}",  # extended by every child
                  "LABEL layout=changed\n{% block install %}")
        fixed = watcher.wait_for(r"watching for changes")
        assert sorted(built(fixed)) == ["cron", "multipathd"]

        tree.edit("templates/cron/Dockerfile.j2", "{% block footer %}",
                  f"{{% block footer %}}\nRUN sleep {SLEEP}")
        watcher.wait_for(r"building cron")
        time.sleep(1)
        watcher.proc.send_signal(signal.SIGINT)
        assert watcher.proc.wait(timeout=60) == 130
    finally:
        if watcher.proc.poll() is None:
            watcher.proc.kill()
        watcher.out.close()
    assert "[watch]" in watcher.text() and watcher.text().rstrip().endswith("stopped")
    left = subprocess.run(["pgrep", "-f", f"sleep {SLEEP}"], capture_output=True, text=True)
    assert left.stdout == "", "the RUN step is still running"
    assert not any(f"--root {tree.storage}" in _cmdline(pid) for pid in _pids())


def test_a_template_folder_renamed_away_is_a_broken_tree_until_it_is_back(
        tree: Tree) -> None:
    small_tree(tree)
    watcher = Watcher(tree)
    folder, aside = tree.root / "templates" / "cron", tree.root / "templates" / "cron.old"
    try:
        watcher.wait_for(r"watching \d+ files")
        folder.rename(aside)  # no watched file changes: its folder goes
        broken = watcher.wait_for(r"waiting for the next change", timeout=30)
        assert "error:" in broken and "cron" in broken and built(broken) == []
        aside.rename(folder)
        tree.edit("templates/cron/Dockerfile.j2",
                  "{% block footer %}", "{% block footer %}\nLABEL back=1")
        fixed = watcher.wait_for(r"watching for changes", timeout=60)
        assert built(fixed) == ["cron"]
    finally:
        watcher.proc.send_signal(signal.SIGINT)
        try:
            watcher.proc.wait(timeout=60)
        finally:
            if watcher.proc.poll() is None:
                watcher.proc.kill()
            watcher.out.close()


def _pids() -> list[str]:
    return [name for name in os.listdir("/proc") if name.isdigit()]


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_inputs_are_the_templates_pulled_in_and_the_context_files(tree: Tree) -> None:
    small_tree(tree)
    inputs = watch.tree_inputs(tree.config)
    relative = {str(path.relative_to(tree.root)) for path in inputs
                if path.is_relative_to(tree.root)}
    assert relative == {"images.yaml", "templates/layout.j2", "templates/macros.j2",
                        *(f"templates/{name}/{file}" for name, files in (
                            ("base", ["Dockerfile.j2", "set_configs.sh"]),
                            ("cron", ["Dockerfile.j2", "start.sh"]),
                            ("multipathd", ["Dockerfile.j2", "start.sh"])) for file in files)}
    assert Path("/bin/busybox") in inputs  # base's `files:`
    assert watch.folders_to_watch(tree.root, inputs) == sorted([Path("/bin"), tree.root])


def test_inputs_take_in_what_named_contexts_and_read_only_volumes_hold(tree: Tree) -> None:
    small_tree(tree)
    for folder in ("extra", "wheels", "cache"):
        (tree.root / folder / "in").mkdir(parents=True)
        (tree.root / folder / "in" / "f").write_text("one")
    tree.edit_yaml(lambda d: d["images"]["cron"].update(
        contexts={"extra": str(tree.root / "extra")},
        volumes=[f"{tree.root / 'wheels'}:/w:ro", f"{tree.root / 'cache'}:/c"]))
    inputs = watch.tree_inputs(tree.config)
    assert {tree.root / "extra/in/f", tree.root / "wheels/in/f"} <= inputs
    assert tree.root / "cache/in/f" not in inputs  # a writable volume: a cache the build writes
