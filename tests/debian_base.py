"""A real Debian base for tests whose RUN steps must really run: bookworm made from Debian's
packages by mmdebstrap (minbase with pip, pbr, setuptools and git; or another suite), through
apt's own configuration and so its mirror, the only one this machine reaches. The tarball
is made once and kept under the checkout's build/ (as build/kolla21-venv is); a test loads
it into its own buildah storage."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REAL_BUILDAH, REPO

SUITE = "bookworm"
PACKAGES = ("python3-pip", "python3-pbr", "python3-setuptools", "git")
CACHE = REPO / "build" / "debian-base"
MAKE_TIMEOUT = 1200  # seconds: about a minute on an idle machine, far more under load


def mmdebstrap_argv(suite: str, packages: tuple[str, ...]) -> list[str]:
    return ["mmdebstrap", "--variant=minbase",
            *([f"--include={','.join(packages)}"] if packages else []), suite]


def base_tarball(suite: str = SUITE, packages: tuple[str, ...] = PACKAGES) -> Path:
    """The root file system of Debian `suite` (minbase and `packages`) as a tarball, made
    by mmdebstrap on first use (one process at a time makes it: a lock under build/),
    then reused. Its name follows what makes it: another suite or package list is another
    file."""
    if shutil.which("mmdebstrap") is None:
        pytest.fail("mmdebstrap is not installed: run `make test-real`, which installs it")
    argv = mmdebstrap_argv(suite, packages)
    made_by = hashlib.sha256(" ".join(argv).encode()).hexdigest()[:12]
    tarball = CACHE / f"{suite}-minbase-{made_by}.tar"
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tarball.exists():
            _make(argv, tarball)
    return tarball


def _make(argv: list[str], target: Path) -> None:
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    log = target.with_suffix(".log")
    with log.open("w") as out:
        made = subprocess.run([*argv, str(partial)], stdout=out,
                              stderr=subprocess.STDOUT, timeout=MAKE_TIMEOUT)
    if made.returncode != 0:
        partial.unlink(missing_ok=True)
        pytest.fail(f"mmdebstrap failed (exit {made.returncode}); its log: {log}\n"
                    + log.read_text()[-2000:])
    partial.rename(target)


def load_base(tarball: Path, global_args: list[str], reference: str) -> str:
    """The base tarball committed as an image named `reference` into the storage that
    buildah's `global_args` (--root, --runroot...) name (about 20 s); its image ID."""
    assert REAL_BUILDAH is not None, "buildah is not installed: run `make test-real`"

    def buildah(*args: str) -> str:
        return subprocess.run([REAL_BUILDAH, *global_args, *args], check=True,
                              capture_output=True, text=True).stdout.strip()

    container = buildah("from", "--quiet", "scratch")
    try:
        buildah("add", "--quiet", container, str(tarball), "/")
        buildah("config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                "/sbin:/bin", "--cmd", "/bin/bash", container)
        return buildah("commit", "--quiet", "--timestamp", "0", "--identity-label=false",
                       container, reference)
    finally:
        buildah("rm", container)


@pytest.fixture(scope="session")
def debian_tarball() -> Path:
    """The real Debian base's tarball (made once, kept under build/debian-base/)."""
    return base_tarball()
