"""Two trees with the same image names on one storage: a prune of one never runs while the
other's run builds (it stops at once, naming that run), and a run that starts while a
prune holds the storage waits for it."""

from __future__ import annotations

import fcntl
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

import pytest
from conftest import Tree, make_tree, unmount_under

pytestmark = pytest.mark.integration

LOCK = "imagebake-prune.lock"


def two_images(tree: Tree) -> None:
    tree.edit_yaml(lambda data: data.update(images={"base": data["images"]["base"],
                                                   "cron": data["images"]["cron"]}))


def edit_base(tree: Tree, generation: int) -> None:
    with (tree.root / "templates" / "base" / "set_configs.sh").open("a") as script:
        script.write(f"# edit {generation}\n")


def tree_on(tmp_path: Path, storage_of: Tree) -> Tree:
    """Another copy of the example tree whose buildah uses `storage_of`'s storage."""
    tmp_path.mkdir()
    other = make_tree(tmp_path)
    other.storage = storage_of.storage
    other.settings(buildah_args=other.global_args)
    return other


def with_a_slow_leaf_then_a_child(tree: Tree, seconds: int) -> None:
    """`a-slow` (RUN sleep) and `b-child`, both on base: with -n 1 and no durations known,
    the names decide the order, so b-child's build starts FROM base after a-slow's."""
    folder = tree.root / "templates" / "leaf"
    folder.mkdir()
    (folder / "Dockerfile.j2").write_text("FROM {{ parent_image }}\nRUN sleep {{ seconds }}\n")
    tree.edit_yaml(lambda data: data["images"].update({
        name: {"parent": "base", "template": "leaf/Dockerfile.j2", "vars": {"seconds": wait}}
        for name, wait in (("a-slow", seconds), ("b-child", 0))}))


def key_names(tree: Tree) -> set[str]:
    return {name for name in tree.image_ids() if name.startswith("localhost/imagebake/")}


@pytest.fixture
def a_with_old_keys(tree: Tree) -> Tree:
    """Tree A built twice: base and cron each have an old key that A's prune removes."""
    two_images(tree)
    tree.doit("build")
    edit_base(tree, 1)
    tree.doit("build")
    return tree


def test_a_prune_stops_while_another_trees_run_builds_on_the_storage(
        a_with_old_keys: Tree, tmp_path: Path) -> None:
    a = a_with_old_keys
    b = tree_on(tmp_path / "b", a)  # the same names; its base and cron are A's old keys
    two_images(b)
    with_a_slow_leaf_then_a_child(b, 23)
    building = subprocess.Popen(b.argv("-n", "1", "build", "dispatch=critical-path"),
                                cwd=b.root, env=b.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while b"sleep\x0023\x00" not in _cmdlines() and time.monotonic() < deadline:
            time.sleep(0.2)  # B is in its slow build, its base (A's old key) in use
        before = key_names(a)
        refused = a.doit("prune", check=False)
        assert building.poll() is None, "B ended before A's prune: the test proves nothing"
    finally:
        out, err = building.communicate(timeout=300)
    said = refused.stdout + refused.stderr
    assert refused.returncode == 1, said
    assert "another run is using this image storage" in said
    assert f"pid {building.pid}, `" in said
    assert f"config={b.config} -n 1 build dispatch=critical-path`" in said
    assert "Traceback" not in said
    assert key_names(a) >= before  # A removed nothing
    # without the lock, A's prune untagged base's old key name here and b-child's build,
    # FROM that name, failed with `image not known` (and cron's tag with it)
    assert building.returncode == 0, out + err
    assert b.statuses() == {"base": "up-to-date", "cron": "up-to-date", "a-slow": "built",
                            "b-child": "built"}

    pruned = a.doit("prune")  # B has ended: A's prune goes ahead
    # (B's images of A's old keys stay: B's run tagged them with the names both trees use)
    assert "untagged 2 names" in pruned.stdout, pruned.stdout


def test_a_run_waits_while_a_prune_holds_the_storage(tree: Tree) -> None:
    two_images(tree)
    tree.doit("build")  # the storage exists, with its lock file
    lock = tree.storage / "root" / LOCK
    assert lock.exists()
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a prune holds it
        edit_base(tree, 1)
        output = tree.root.parent / "waiting.out"
        with output.open("w") as printed:
            waiting = subprocess.Popen(tree.argv("build"), cwd=tree.root, env=tree.env,
                                       stdout=printed, stderr=subprocess.PIPE, text=True)
        said = Said(waiting, "waiting for a prune of this image storage to end")
        assert said.seen.wait(120), "the run never said it waits for the prune"
        time.sleep(1)  # the run stays where it is: nothing of the build starts
        still = waiting.poll()
        assert not (tree.root / "build" / "base" / "image-id.new").exists()
    finally:
        os.close(fd)  # the "prune" ends
    waiting.wait(timeout=300)
    out, err = output.read_text(), said.all()
    assert still is None, "the run did not wait for the prune"
    assert f"waiting for a prune of this image storage to end (pid {os.getpid()}" in err
    assert waiting.returncode == 0, out + err
    assert tree.statuses() == {"base": "built", "cron": "built"}


class Said:
    """A process's stderr, read as it comes: `seen` is set once a line holds `words` (so a
    test waits for what the process says, not a fixed time that a busy machine outlasts)."""

    def __init__(self, process: subprocess.Popen, words: str) -> None:
        self.lines: list[str] = []
        self.seen = threading.Event()
        self.reader = threading.Thread(target=self._read, args=(process.stderr, words),
                                       daemon=True)
        self.reader.start()

    def _read(self, stream: IO[str], words: str) -> None:
        for line in stream:
            self.lines.append(line)
            if words in line:
                self.seen.set()

    def all(self) -> str:
        """All it said, once it has ended."""
        self.reader.join(timeout=60)
        return "".join(self.lines)


def _cmdlines() -> bytes:
    found = b""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found += (entry / "cmdline").read_bytes() + b"\n"
            except OSError:
                continue
    return found


@pytest.fixture(autouse=True)
def _unmount_b(tmp_path: Path) -> None:
    yield
    unmount_under(tmp_path / "b")


def test_keep_keys_skips_its_prune_while_another_run_holds_the_storage(tree: Tree) -> None:
    two_images(tree)
    tree.settings(keep_keys=0)
    tree.doit("build")
    fd = os.open(tree.storage / "root" / LOCK, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # as another tree's building run
        edit_base(tree, 1)
        result = tree.doit("build")
        skipped = set(key_names(tree))
    finally:
        os.close(fd)
    assert "pruning old keys (settings.keep_keys: 0)" in result.stdout
    assert "another run is using this image storage" in result.stderr
    assert f"pid {os.getpid()}" in result.stderr
    assert len(skipped) == 4  # the old keys stay, the build is fine
    assert tree.statuses() == {"base": "built", "cron": "built"}
    tree.doit("prune")  # nothing else holds it now
    assert len(key_names(tree)) == 2
