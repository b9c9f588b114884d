"""RUN steps that really run: a nova-shaped pair on a real Debian base (tests/debian_base.py).
nova-base's shape is a base image that pip-installs pbr projects (every OpenStack project is
versioned by pbr) from its sources, and a child that uses them; here `alpha` comes from a
`git:` source and `beta` from a `local:` checkout, both tagged 1.2.3, and the child records
what pip installed. pbr reads the version from the project's git history (or an sdist's
PKG-INFO): a source archive without either does not install at all."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import REAL_BUILDAH, Tree, install_wrapper, unmount_under
from debian_base import debian_tarball, load_base  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.real, pytest.mark.integration, pytest.mark.slow]

BASE = "localhost/imagebake-test/debian:bookworm"
TAG = "1.2.3"
INSTALL = ("RUN pip install --quiet --no-build-isolation --no-index --break-system-packages "
           "/alpha-source/*/ /beta-source/*/")
VERSIONS = ("import importlib.metadata as m; "
            "print(m.version('alpha'), m.version('beta'))")
TEMPLATES = {
    "demo-base": f"FROM {BASE}\nADD alpha-archive /alpha-source\n"
                 f"ADD beta-archive /beta-source\n{INSTALL}\n",
    "demo-api": f'FROM {{{{ parent_image }}}}\nRUN python3 -c "{VERSIONS}" > /versions\n',
    "demo-conductor": "FROM {{ parent_image }}\nRUN python3 -c 'import alpha, beta'\n",
    "cron": f"FROM {BASE}\nRUN echo '* * * * * true' > /etc/demo-crontab\n",
    "demo-extra": "FROM {{ parent_image }}\nADD extra-archive /extra-source\n",
}


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory,
            debian_tarball: Path) -> Iterator[Path]:  # noqa: F811
    """One buildah storage for the module's tests, the Debian base loaded once (about
    20 s); each test builds under a namespace of its own."""
    if REAL_BUILDAH is None:
        pytest.fail("buildah is not installed: run `make test-real`, which installs it")
    folder = tmp_path_factory.mktemp("debian-storage")
    tree = Tree(folder, folder / "storage")
    load_base(debian_tarball, tree.global_args, BASE)
    yield tree.storage
    unmount_under(folder)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c",
                           "user.email=t@example.com", *args],
                          check=True, capture_output=True, text=True).stdout


def pbr_project(folder: Path, name: str) -> Path:
    """A tiny pbr project in a git repository, its one commit tagged 1.2.3."""
    (folder / name).mkdir(parents=True)
    (folder / "setup.py").write_text("import setuptools\n"
                                     "setuptools.setup(setup_requires=['pbr'], pbr=True)\n")
    (folder / "setup.cfg").write_text(f"[metadata]\nname = {name}\nsummary = demo\n\n"
                                      f"[files]\npackages = {name}\n")
    (folder / name / "__init__.py").write_text(f"NAME = {name!r}\n")
    git(folder, "init", "-q", "-b", "master")
    git(folder, "add", "-A")
    git(folder, "commit", "-q", "-m", "first")
    git(folder, "tag", "-a", TAG, "-m", TAG)
    return folder


def commit(repo: Path, name: str, text: str) -> None:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", f"edit {name}")


def demo_tree(root: Path, storage: Path, namespace: str, images: dict[str, dict]) -> Tree:
    """A tree of the TEMPLATES named in `images` (their entries as images.yaml's), built
    into the module's storage under `namespace`."""
    root.mkdir()
    tree = Tree(root, storage)
    install_wrapper(tree)
    for name in images:
        (root / "templates" / name).mkdir(parents=True)
        (root / "templates" / name / "Dockerfile.j2").write_text(TEMPLATES[name])
    data = {"settings": {"registry": "localhost:5000", "namespace": namespace, "tag": "t1",
                         "isolation": "chroot", "buildah_args": tree.global_args,
                         "timestamp": 1700000000},
            "images": images}
    tree.config.write_text(yaml.safe_dump(data, sort_keys=False))
    return tree


def pair(tmp_path: Path) -> dict[str, dict]:
    """nova's shape: demo-base installs alpha (git:) and beta (a local: checkout, a
    clone of beta's upstream, so that `git fetch` has somewhere to fetch from)."""
    alpha = pbr_project(tmp_path / "alpha", "alpha")
    upstream = pbr_project(tmp_path / "beta-upstream", "beta")
    subprocess.run(["git", "clone", "-q", str(upstream), str(tmp_path / "beta")], check=True)
    return {"demo-base": {"sources": {"alpha": {"git": str(alpha), "ref": "master"},
                                      "beta": {"local": str(tmp_path / "beta")}}},
            "demo-api": {"parent": "demo-base"}}


def built(tree: Tree) -> set[str]:
    return {name for name, status in tree.statuses().items() if status == "built"}


def run_in(tree: Tree, reference: str, *argv: str) -> str:
    """What a command prints inside the image (`buildah run` in a container of it)."""
    container = tree.buildah("from", "--quiet", reference).strip()
    try:
        return tree.buildah("run", "--isolation", "chroot", container, "--", *argv)
    finally:
        tree.buildah("rm", container)


def installed_versions(tree: Tree, reference: str) -> list[str]:
    """What importlib.metadata says inside the image."""
    return run_in(tree, reference, "python3", "-c", VERSIONS).split()


def test_pbr_projects_install_with_their_tags_version(tmp_path: Path, storage: Path) -> None:
    tree = demo_tree(tmp_path / "tree", storage, "pair", pair(tmp_path))
    api = "localhost:5000/pair/demo-api:t1"
    tree.doit("build", timeout=900)
    assert built(tree) == {"demo-base", "demo-api"}
    assert installed_versions(tree, api) == [TAG, TAG]
    assert run_in(tree, api, "cat", "/versions").split() == [TAG, TAG]  # the child's RUN saw

    # read-only git commands, a touch, housekeeping: nothing to rebuild
    beta = tmp_path / "beta"
    (beta / "setup.py").touch()
    for repo in (tmp_path / "alpha", beta):
        git(repo, "status")
        git(repo, "gc", "-q")
    git(beta, "fetch", "-q")
    tree.doit("build", timeout=900)
    assert built(tree) == set()

    # a new commit on alpha's ref: the pair is rebuilt, and pbr gives the next dev version
    commit(tmp_path / "alpha", "alpha/__init__.py", "NAME = 'alpha, next'\n")
    tree.doit("build", timeout=900)
    assert built(tree) == {"demo-base", "demo-api"}
    alpha, beta_version = installed_versions(tree, api)
    assert alpha.startswith("1.2.4.dev1"), alpha
    assert beta_version == TAG

    # an edit of beta's tracked file: rebuilt, beta's version moves as pbr says
    commit(beta, "beta/__init__.py", "NAME = 'beta, next'\n")
    tree.doit("build", timeout=900)
    assert built(tree) == {"demo-base", "demo-api"}
    assert installed_versions(tree, api)[1].startswith("1.2.4.dev1")


def test_an_unreachable_source_fails_only_its_image(tmp_path: Path, storage: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/extra.tar.gz"
    images = {**pair(tmp_path),
              "demo-conductor": {"parent": "demo-base"},
              "cron": {},
              "demo-extra": {"parent": "demo-base", "sources": {"extra": {"url": url}}}}
    tree = demo_tree(tmp_path / "tree", storage, "five", images)
    result = tree.doit("build", check=False, timeout=900)
    assert result.returncode != 0
    statuses = tree.statuses()
    assert statuses == {"demo-base": "built", "demo-api": "built", "demo-conductor": "built",
                        "cron": "built", "demo-extra": "failed"}
    assert url in tree.report()["images"]["demo-extra"]["error"]
    assert url in result.stdout + result.stderr


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
