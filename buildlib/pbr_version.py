"""What pbr needs to install a project from an archive without its `.git`: the PKG-INFO
of an sdist, whose `Version:` is the version pbr computes from git for that commit.

pbr finds a project's version in PKG-INFO first (`packaging._get_version_from_pkg_metadata`,
when its `Name:` is setup.cfg's `[metadata] name`), else from git. kolla-build keeps the
clone's `.git` in its archive instead; that `.git` changes with every `git gc` or
`git fetch` (packs, the index, FETCH_HEAD), so the archive, and the image's key, would
change with no change to the project. The PKG-INFO is the same bytes for the same commit
and tags. The version is pbr's own computation (`_get_version_from_git`, run on a shared
clone whose HEAD is that commit), so it is what pbr itself would say in the checkout.
"""

from __future__ import annotations

import configparser
import functools
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

PBR_TIMEOUT = 120  # seconds for pbr to compute one version

# pbr's version from git, for the commit HEAD names in the current folder (a git dir)
_PBR_CODE = """\
import sys
from pbr import packaging
print(packaging._get_version_from_git(sys.argv[1] or None))
"""


@dataclass(frozen=True)
class PbrProject:
    """A pbr project at a commit: what its version follows (cheap to read), and its
    PKG-INFO (pbr asked only when an archive is made)."""

    name: str
    pre_version: str  # setup.cfg's `[metadata] version`, if any
    git_dir: str
    commit: str
    tags: str  # the repository's tags and what they name

    @property
    def identity(self) -> str:
        """Everything its version follows, in one string."""
        return json.dumps([self.name, self.pre_version, self.commit, self.tags])

    def pkg_info(self) -> str:
        version = _version(self.git_dir, self.commit, self.tags, self.pre_version)
        return f"Metadata-Version: 1.1\nName: {self.name}\nVersion: {version}\n"


def project_at(repository: str | Path, commit: str) -> PbrProject | None:
    """The pbr project in the folder `repository` (of a git repository) at `commit`, or
    None when the folder holds none there (no setup.cfg naming it, or no setup.py /
    pyproject.toml that uses pbr)."""
    folder = subprocess.run(["git", "-C", str(repository), "rev-parse", "--show-prefix"],
                            capture_output=True, text=True).stdout.strip()  # ("" when bare)

    def shown(name: str) -> str | None:
        done = subprocess.run(["git", "-C", str(repository), "show", f"{commit}:{folder}{name}"],
                              capture_output=True, text=True, errors="replace")
        return done.stdout if done.returncode == 0 else None

    return _project(str(repository), commit, shown("setup.cfg"),
                    (shown("setup.py") or "") + (shown("pyproject.toml") or ""))


def project_of_checkout(root: Path) -> PbrProject | None:
    """The pbr project of a checkout's folder as it is: its setup.cfg, at the commit HEAD
    names (None outside a git checkout, or when it holds no pbr project)."""
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "--quiet",
                           "HEAD^{commit}"], capture_output=True, text=True)
    if head.returncode != 0 or not (root / "setup.cfg").is_file():
        return None

    def read(name: str) -> str:
        return (root / name).read_text(errors="replace") if (root / name).is_file() else ""

    return _project(str(root), head.stdout.strip(), read("setup.cfg"),
                    read("setup.py") + read("pyproject.toml"))


def _project(repository: str, commit: str, setup_cfg: str | None,
             build: str) -> PbrProject | None:
    if not setup_cfg or "pbr" not in build:
        return None
    parser = configparser.RawConfigParser()
    try:
        parser.read_string(setup_cfg)
    except configparser.Error:
        return None
    name = parser.get("metadata", "name", fallback="").strip()
    if not name:
        return None
    return PbrProject(name, parser.get("metadata", "version", fallback="").strip(),
                      _common_dir(repository), commit, _tags(repository))


def _common_dir(repository: str) -> str:
    return subprocess.run(["git", "-C", repository, "rev-parse", "--path-format=absolute",
                           "--git-common-dir"], check=True, capture_output=True,
                          text=True).stdout.strip()


def _tags(repository: str) -> str:
    """The repository's tags and what they name (pbr's version follows them)."""
    return subprocess.run(["git", "-C", repository, "for-each-ref", "--format=%(objectname) "
                           "%(*objectname) %(refname)", "refs/tags"],
                          check=True, capture_output=True, text=True).stdout


@functools.lru_cache(maxsize=256)
def _version(git_dir: str, commit: str, tags: str, pre_version: str) -> str:
    """pbr's version of `commit` with these `tags` (once per process for each)."""
    del tags  # (part of the cache's key only)
    with tempfile.TemporaryDirectory(prefix="imagebake-pbr-") as tmp:
        clone = Path(tmp) / "clone.git"
        subprocess.run(["git", "clone", "--quiet", "--bare", "--shared", git_dir, str(clone)],
                       check=True, capture_output=True)
        subprocess.run(["git", "-C", str(clone), "update-ref", "--no-deref", "HEAD", commit],
                       check=True, capture_output=True)
        done = subprocess.run([sys.executable, "-c", _PBR_CODE, pre_version], cwd=clone,
                              capture_output=True, text=True, timeout=PBR_TIMEOUT)
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()
        raise PbrError(f"pbr cannot compute the version of {commit[:12]}: "
                       f"{said[-1] if said else f'exit status {done.returncode}'}")
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


class PbrError(Exception):
    """pbr could not compute a pbr project's version (pbr missing, a tag it cannot read)."""
