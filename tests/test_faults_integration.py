"""Faults a hostile user found (issue 9), with real buildah and a real registry on loopback:
pulls during a child's build, two runs at once, kill -9, repeated signals, unreadable or
full state, huge output."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Tree
from registry import Registry

pytestmark = pytest.mark.integration


def leaf(parent: str, seconds: float) -> dict:
    return {"parent": parent, "template": "leaf/Dockerfile.j2", "vars": {"seconds": seconds}}


def only(tree: Tree, **images: dict) -> None:
    """The example's base plus `images`, each `RUN sleep {{ seconds }}` on its parent."""
    folder = tree.root / "templates" / "leaf"
    folder.mkdir(exist_ok=True)
    (folder / "Dockerfile.j2").write_text("FROM {{ parent_image }}\nRUN sleep {{ seconds }}\n")
    tree.edit_yaml(lambda d: d.__setitem__("images", {"base": d["images"]["base"], **images}))


def unique_seconds() -> int:
    """A sleep no other test on this machine runs: its processes are found by it."""
    return random.randint(10_000, 99_999)


def statuses(tree: Tree) -> dict[str, str]:
    return tree.statuses()


def processes_matching(text: str) -> list[str]:
    found = subprocess.run(["pgrep", "-af", text], capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if "pgrep" not in line]


def buildah_processes(tree: Tree) -> list[str]:
    return [p for p in processes_matching("buildah") if str(tree.storage) in p]


def wait_for(condition, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.2)


def has_file(tree: Tree, reference: str, path: str) -> bool:
    container = tree.buildah("from", reference).strip()
    try:
        return (Path(tree.buildah("mount", container).strip()) / path).exists()
    finally:
        tree.buildah("rm", container)


def start(tree: Tree, *args: str) -> subprocess.Popen:
    """doit in its own process group, as a shell starts a job."""
    return subprocess.Popen(tree.argv(*args), cwd=tree.root, env=tree.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def test_a_child_is_built_on_exactly_its_parent_never_on_a_pull(tree: Tree,
                                                                 registry: Registry) -> None:
    only(tree, child=leaf("base", 0), grandchild=leaf("child", 0))
    chain = {"base", "child", "grandchild"}
    # A registry that accepts connections and never answers: a child's FROM must not ask it.
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        tree.settings(registry=f"127.0.0.1:{silent.getsockname()[1]}", tls_verify=False)
        tree.doit("build", timeout=240)
        assert set(statuses(tree).values()) == {"built"}
    finally:
        silent.close()

    tree.settings(registry=registry.address)
    tree.doit("push")
    tree.edit("templates/base/Dockerfile.j2", 'CMD ["/bin/sh"]',
              'RUN echo edited > /edited\nCMD ["/bin/sh"]')
    tree.doit("build")  # the registry still serves the old base
    assert statuses(tree) == dict.fromkeys(chain, "built")
    for name in chain:
        assert has_file(tree, f"{registry.address}/kolla/{name}:latest", "edited"), name
    tree.doit("push")
    pushed = {name: tree.inspect(f"{registry.address}/kolla/{name}:latest")["FromImageID"]
              for name in chain}
    assert registry.digest("kolla/base", "latest") == tree.report()["pushes"]["base"]["digest"]
    tree.doit("build")
    assert statuses(tree) == dict.fromkeys(chain, "up-to-date")
    assert len(set(pushed.values())) == 3


def test_one_run_per_tree_and_the_next_cleans_up_after_a_killed_one(tree: Tree) -> None:
    seconds = unique_seconds()
    only(tree, slow=leaf("base", seconds))
    first = start(tree, "build")
    wait_for(lambda: processes_matching(f"sleep {seconds}"), "the slow build")
    second = tree.doit("build", check=False)
    assert second.returncode == 1 and "Traceback" not in second.stderr
    assert second.stderr.startswith(f"error: another run is using {tree.root / 'build'}: "
                                    f"pid {first.pid}, `doit -f "), second.stderr
    assert tree.calls_log.exists() is False  # the second run started no buildah at all

    os.killpg(first.pid, signal.SIGKILL)  # doit and its threads; buildah has its own session
    first.communicate()
    assert processes_matching(f"sleep {seconds}"), "the killed run's build goes on by itself"
    others = tree.buildah("from", "localhost:5000/kolla/base:latest").strip()  # not ours

    tree.edit_yaml(lambda d: d["images"]["slow"]["vars"].update(seconds=0))
    result = tree.doit("build")
    assert "cleaned up after a killed run: stopped 1 buildah process group(s), removed " \
        in result.stderr
    assert processes_matching(f"sleep {seconds}") == []
    assert statuses(tree)["slow"] == "built"  # base too until finished builds survive a kill
    containers = json.loads(tree.buildah("containers", "--json") or "[]")
    assert [c["containername"] for c in containers] == [others]
    assert buildah_processes(tree) == []
    assert [line for line in Path("/proc/self/mounts").read_text().splitlines()
            if str(tree.storage) in line and "/merged" in line] == []


def test_repeated_signals_end_the_run_and_leave_nothing_running(tree: Tree) -> None:
    seconds = unique_seconds()
    only(tree, **{"slow-1": leaf("base", seconds), "slow-2": leaf("base", seconds + 1)})
    sleeping = f"^sleep ({seconds}|{seconds + 1})$"  # the RUN processes themselves
    for signals, status in (([signal.SIGTERM, signal.SIGTERM], 143), ([signal.SIGINT] * 8, 130)):
        proc = start(tree, "-n", "2", "build")
        wait_for(lambda: len(processes_matching(sleeping)) == 2, "both slow builds")
        for sig in signals:
            proc.send_signal(sig)
            time.sleep(0.02)
        out, err = proc.communicate(timeout=60)  # hung forever before
        assert proc.returncode == status, out + err
        assert "Traceback" not in out + err
        assert f"interrupted ({signals[0].name}): stopped the running builds" in out
        assert processes_matching(sleeping) == []
        assert buildah_processes(tree) == []
        report = tree.report()["images"]
        assert {report[n]["error"] for n in ("slow-1", "slow-2")} == {"interrupted"}


def test_unreadable_state_is_set_aside_and_the_run_goes_on(tree: Tree) -> None:
    only(tree)
    tree.doit("build")
    state = tree.root / "build" / ".doit.db"
    state.write_bytes(state.read_bytes()[:100] + b"\xff" * 3000)
    result = tree.doit("build")
    assert "Traceback" not in result.stderr
    assert result.stderr.count("warning: ") == 1
    assert "is unreadable" in result.stderr and "set aside as .doit.db.unreadable" in result.stderr
    assert statuses(tree)["base"] in {"built", "up-to-date"}
    assert tree.doit("build").stderr == ""  # the new state reads fine


@contextlib.contextmanager
def small_build_dir(tree: Tree, size: str) -> Iterator[Path]:
    """The tree's build dir on a tmpfs of `size` (skips the test where none can be
    mounted)."""
    build = tree.root / "build"
    build.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(build)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield build
    finally:
        subprocess.run(["umount", "-l", str(build)], check=False)


def fill(folder: Path, leave: int = 0) -> None:
    """Write a file in `folder` until its disk is full to the last byte, then give back
    `leave` bytes."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 4096)
    os.truncate(filler, max(filler.stat().st_size - leave, 0))


def test_a_full_build_dir_is_one_clear_error_with_the_summary(tree: Tree) -> None:
    with small_build_dir(tree, "1m") as build:
        only(tree)  # base's context holds busybox: 2 MB
        result = tree.doit("build", check=False)
        assert result.returncode != 0 and "Traceback" not in result.stdout + result.stderr
        assert "FAILED build base: [Errno 28] No space left on device" in result.stdout
        assert statuses(tree) == {"base": "failed"}
        assert not (build / "base" / "context").exists()  # the partial copy is gone

        fill(build)  # to the last byte
        result = tree.doit("build", check=False)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert result.stderr == (f"error: cannot write in {build}: No space left on device; "
                                 "free some space there or choose a writable "
                                 "settings.build_dir\n")


def test_a_disk_full_when_doit_saves_its_state_loses_nothing_built(tree: Tree) -> None:
    with small_build_dir(tree, "8m") as build:
        tree.doit("build")
        tree.edit("images.yaml", "kolla_uid: 42400", "kolla_uid: 42401")  # every image
        fill(build, leave=12 * 1024)  # room for the Dockerfiles, not for doit's state
        result = tree.doit("build", check=False)
        assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
        assert "builds: 9 built" in result.stdout  # the summary still comes
        assert result.stderr.startswith(f"error: {build}/.doit.db: doit could not save this "
                                        "run's state: database or disk is full\n")
        assert "the next run finds it instead of building it again" in result.stderr

        (build / "filler").unlink()
        again = tree.doit("build")
        assert "builds: 9 up-to-date" in again.stdout
        assert not [call for call in tree.buildah_calls() if "bud" in call], "built again"


def test_huge_output_is_read_from_the_end_and_capped(tree: Tree) -> None:
    folder = tree.root / "templates" / "loud"
    folder.mkdir()
    (folder / "Dockerfile.j2").write_text(
        "FROM {{ parent_image }}\n"
        "RUN head -c 30000000 /dev/zero | tr '\\0' x; echo; echo the end; exit 1\n")
    tree.edit_yaml(lambda d: d.__setitem__("images", {
        "base": d["images"]["base"], "loud": {"parent": "base", "template": "loud/Dockerfile.j2"}}))
    result = tree.doit("build", "verbose=1", check=False)
    log = tree.root / "build" / "loud" / "loud-build.log"
    assert log.stat().st_size > 30_000_000  # the log keeps everything
    assert "FAILED build loud: exit code 1" in result.stdout
    assert "   | the end" in result.stdout
    assert len(result.stdout) < 100_000  # a 30 MB line, shown on the terminal and the summary
    assert max(len(line) for line in result.stdout.splitlines()) <= 2000 + len(" [...]")
