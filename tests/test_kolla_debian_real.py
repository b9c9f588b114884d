"""Kolla's own debian chain, its RUN steps really run: kolla's `base` and two of its children
(cron, memcached) built from kolla's templates on a real Debian trixie root made by
mmdebstrap (kolla 23's base checks for trixie), loaded under the name base's FROM wants.

This machine reaches Debian's mirror (and PyPI) and nothing else, so kolla's base cannot
run whole: `extrepo enable openstack_<release>` downloads extrepo's index from
extrepo-team.pages.debian.net, and the keys it fetches come from keyserver.ubuntu.com,
download.docker.com, fluentd, grafana, mariadb, opensearch and proxysql. Kolla's own
template override file (kolla.template_overrides) takes those out, as a user behind a
mirror would: the key lists emptied through kolla's `_override` lists, extrepo shadowed
for the build by a script that says it skipped. Every other RUN step of the three images
is kolla's, against Debian's archive."""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import REAL_BUILDAH, Tree, install_wrapper, unmount_under
from debian_base import base_tarball, load_base

from buildlib import expanders, project

# a Kolla tree's project, as the entry points load it
load_kolla = functools.partial(project.load, expand=expanders.kolla)

pytestmark = [pytest.mark.real, pytest.mark.integration, pytest.mark.slow]

SELECTION = "images=^(cron|memcached)$"  # and their parent, base
OFFLINE = """\
{% extends parent_template %}

{% set base_apt_keys_override = [] %}
{% set base_remote_apt_keys_override = [] %}

{% block base_debian_after_sources_list %}
RUN printf '#!/bin/sh\\necho "extrepo $* skipped: its index is out of reach"\\n' \\
        > /usr/local/bin/extrepo \\
    && chmod 755 /usr/local/bin/extrepo
{% endblock %}

{% block base_footer %}
RUN rm /usr/local/bin/extrepo
{% endblock %}
"""


@pytest.fixture
def kolla_tree(tmp_path: Path) -> Iterator[Tree]:
    if REAL_BUILDAH is None:
        pytest.fail("buildah is not installed: run `make test-real`, which installs it")
    root = tmp_path / "tree"
    root.mkdir()
    tree = Tree(root, tmp_path / "storage")
    install_wrapper(tree)
    (root / "offline.j2").write_text(OFFLINE)
    data = {"settings": {"registry": "localhost:5000", "namespace": "kolla", "tag": "t1",
                         "isolation": "chroot", "buildah_args": tree.global_args,
                         "timestamp": 1700000000},
            "kolla": {"base": "debian", "template_overrides": ["offline.j2"]}}
    tree.config.write_text(yaml.safe_dump(data))
    yield tree
    unmount_under(tmp_path)


def run_in(tree: Tree, reference: str, *argv: str) -> subprocess.CompletedProcess:
    container = tree.buildah("from", "--quiet", reference).strip()
    try:
        return subprocess.run([REAL_BUILDAH, *tree.global_args, "run", "--isolation",
                               "chroot", container, "--", *argv],
                              capture_output=True, text=True)
    finally:
        tree.buildah("rm", container)


def test_kollas_base_cron_and_memcached_build_on_real_debian(kolla_tree: Tree) -> None:
    tree = kolla_tree
    plans = load_kolla(tree.config).plans
    distro = plans["base"].context.dockerfile.split("\n", 1)[0].split()[1]
    assert distro == "debian:trixie"
    load_base(base_tarball("trixie", ()), tree.global_args, f"docker.io/library/{distro}")
    tree.doit("build", SELECTION, timeout=3000)
    assert {n: s for n, s in tree.statuses().items() if s != "excluded"} == {
        "base": "built", "cron": "built", "memcached": "built"}
    log = (tree.root / "build" / "base" / "base-build.log").read_text()
    assert "extrepo enable openstack_" in log and "skipped: its index is out of reach" in log

    # what kolla's RUN steps made, seen inside the images
    cron, memcached = plans["cron"].reference, plans["memcached"].reference
    installed = run_in(tree, cron, "dpkg-query", "-W", "-f", "${Status}", "cron")
    assert installed.stdout == "install ok installed", installed.stderr
    users = run_in(tree, cron, "id", "-u", "nova")
    assert users.stdout.strip() == "42436"  # base's useradd of every kolla user
    assert run_in(tree, cron, "test", "-x", "/usr/local/bin/kolla_start").returncode == 0
    assert run_in(tree, cron, "test", "-e", "/usr/local/bin/extrepo").returncode == 1
    version = run_in(tree, memcached, "memcached", "--version")
    assert version.stdout.startswith("memcached "), version.stderr
    config = tree.inspect(memcached)["OCIv1"]["config"]
    assert config["User"] == "memcached"
    assert config["Entrypoint"] == ["dumb-init", "--single-child", "--"]

    tree.doit("build", SELECTION)  # a no-op
    assert {s for s in tree.statuses().values()} <= {"up-to-date", "excluded"}
