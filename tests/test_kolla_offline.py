"""Kolla's real tree built offline from Kolla's own configuration: a stub rocky base (busybox
and bash, every RUN step tolerated while FROM, COPY, ADD and USER stay real), Kolla's
source tarballs served on loopback HTTP through `tarballs_base`, no `sources:` in
images.yaml. Kept to base, openstack-base and nova-* (13 images) to stay a few minutes."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import REAL_BUILDAH, Tree, install_wrapper, unmount_under
from test_kolla_sources import Served, members, tarball, tarballs  # noqa: F401

from buildlib import expanders, project

# a Kolla tree's project, as the entry points load it
load_kolla = functools.partial(project.load, expand=expanders.kolla)

BASH_STATIC = Path("/bin/bash-static")
BUSYBOX = Path("/bin/busybox")
SELECTION = "images=^nova-"  # nova-* and their ancestors: base, openstack-base
# /bin/sh of the stub: runs the step with bash, a missing command counts as done, and the
# step passes whatever it returned
SHELL = """#!/bin/bash
command_not_found_handle() { return 0; }
if [ "$1" = "-c" ]; then shift; ( eval "$1" ); else /bin/bash "$@"; fi
exit 0
"""
# useradd and groupadd that really write the files `USER <name>` reads
GROUPADD = """#!/bin/bash
while [ $# -gt 1 ]; do case "$1" in --gid|-g) gid=$2; shift 2;; *) shift;; esac; done
echo "$1:x:${gid:-1000}:" >> /etc/group
"""
USERADD = """#!/bin/bash
while [ $# -gt 1 ]; do
  case "$1" in --uid|-u) uid=$2; shift 2;; --gid|-g) gid=$2; shift 2;;
    --shell|-s|--home|-d) shift 2;; *) shift;; esac
done
echo "$1:x:${uid:-1000}:${gid:-1000}::/var/lib/$1:/sbin/nologin" >> /etc/passwd
echo "$1:!::0:99999:7:::" >> /etc/shadow
"""
OS_RELEASE = ('NAME="Rocky Linux"\nVERSION="10.0 (Red Quartz)"\nID="rocky"\nVERSION_ID="10.0"\n'
              'PRETTY_NAME="Rocky Linux 10.0 (Red Quartz)"\n')


def stub_rootfs(folder: Path) -> None:
    """busybox's applets as links, bash-static, the shell above, the user tools above,
    no-op dnf/rpm/pip, and an /etc/os-release that says Rocky Linux 10."""
    for sub in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "root", "var/lib"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy(BUSYBOX, folder / "bin" / "busybox")
    shutil.copy(BASH_STATIC, folder / "bin" / "bash")
    applets = subprocess.run([str(BUSYBOX), "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        link = folder / applet
        if link.name not in ("sh", "bash", "busybox") and not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/bin/busybox")
    scripts = {"bin/sh": SHELL, "usr/sbin/groupadd": GROUPADD, "usr/sbin/useradd": USERADD,
               **{f"usr/bin/{tool}": "#!/bin/bash\nexit 0\n" for tool in (
                   "dnf", "rpm", "pip", "pip3", "usermod", "chsh")}}
    for name, text in scripts.items():
        path = folder / name
        if path.is_symlink():
            path.unlink()
        path.write_text(text)
        path.chmod(0o755)
    (folder / "etc" / "os-release").write_text(OS_RELEASE)
    (folder / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (folder / "etc" / "group").write_text("root:x:0:\n")
    (folder / "etc" / "shadow").write_text("root:!::0:99999:7:::\n")


def build_stub_base(tree: Tree, reference: str, work: Path) -> None:
    stub_rootfs(work / "rootfs")
    (work / "Containerfile").write_text("FROM scratch\nCOPY rootfs/ /\n")
    tree.buildah("bud", "--quiet", "--isolation", "chroot", "-t", reference,
                 "-f", str(work / "Containerfile"), str(work))


def serve_kolla_tarballs(path: Path, served: Served) -> int:
    """A small tarball at every URL under tarballs_base a build of the selection fetches,
    its top folder named as Kolla's are (`nova-<version>/`)."""
    made = 0
    for name, plan in load_kolla(path).plans.items():
        if name not in ("base", "openstack-base") and not name.startswith("nova-"):
            continue
        for urls in plan.context.fetches.values():
            for url in urls.split(", "):
                assert url.startswith(served.url), url  # only tarballs_base here
                name = url.rpartition("/")[2].removesuffix(".tar.gz")
                tarball(served.root / url[len(served.url) + 1:], f"{name}-1.0",
                        {"setup.py": f"# {name}\n", "PKG-INFO": f"Name: {name}\n"})
                made += 1
    return made


def built(tree: Tree) -> set[str]:
    return {name for name, status in tree.statuses().items() if status == "built"}


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.real
def test_kolla_nova_subtree_builds_offline_from_kollas_configuration(
        tmp_path: Path, tarballs: Served) -> None:  # noqa: F811
    if REAL_BUILDAH is None or not BASH_STATIC.exists() or not BUSYBOX.exists():
        pytest.skip("needs buildah, busybox-static and bash-static (apt-get install them)")
    root = tmp_path / "tree"
    root.mkdir()
    tree = Tree(root, tmp_path / "storage")
    install_wrapper(tree)
    conf = root / "kolla-build.conf"
    conf.write_text("")
    data = {"settings": {"tag": "t1", "isolation": "chroot", "buildah_args": tree.global_args,
                         "timestamp": 1700000000},
            "kolla": {"base": "rocky", "config_file": "kolla-build.conf",
                      "options": {"tarballs_base": tarballs.url}}}
    tree.config.write_text(yaml.safe_dump(data))
    try:
        run_the_subtree(tree, tarballs, conf, tmp_path)
    finally:
        unmount_under(tmp_path)


def run_the_subtree(tree: Tree, tarballs: Served,  # noqa: F811
                    conf: Path, tmp_path: Path) -> None:
    proj = load_kolla(tree.config)
    assert serve_kolla_tarballs(tree.config, tarballs) == 3  # requirements, nova, blazar-nova
    base_from = proj.plans["base"].context.dockerfile.split("\n", 1)[0].split()[1]
    build_stub_base(tree, base_from, tmp_path / "stub")
    checkout = tmp_path / "src" / "nova"  # a nova developer's checkout, the rest from Kolla
    checkout.mkdir(parents=True)
    (checkout / "setup.py").write_text("# my nova\n")
    conf.write_text(f"[nova-base]\ntype = local\nlocation = {checkout}\n")

    status = tree.doit("status", SELECTION)  # reads only: fetches nothing
    assert "would fetch" in status.stdout and tarballs.asked == []
    started = time.monotonic()
    tree.doit("-n", "2", "build", SELECTION, timeout=1200)
    took = {"first build": time.monotonic() - started}
    first = tree.statuses()
    excluded = {n for n, s in first.items() if s == "excluded"}
    assert {n for n, s in first.items() if s != "excluded"} == built(tree)
    assert len(built(tree)) == 13 and {"base", "openstack-base", "nova-base"} <= built(tree)
    assert len(tarballs.asked) == 2  # requirements and blazar-nova, once each

    # kolla-build's labels, and nova-base's context as kolla-build makes it
    labels = tree.inspect(proj.plans["nova-api"].reference)["OCIv1"]["config"]["Labels"]
    assert labels["org.opencontainers.image.title"] == "nova-api"
    assert labels["org.opencontainers.image.version"] == "t1"
    assert labels["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"
    assert labels["build-date"] == "20231114"
    context = tree.root / "build" / "nova-base" / "context"
    branch = proj.config.vars["openstack_branch"]
    assert [m[0] for m in members(context / "plugins-archive")] == [
        "plugins", f"plugins/blazar-nova-{branch}-1.0",
        f"plugins/blazar-nova-{branch}-1.0/PKG-INFO",
        f"plugins/blazar-nova-{branch}-1.0/setup.py"]
    with tarfile.open(context / "nova-base-archive") as tar:
        assert tar.extractfile("nova/setup.py").read() == b"# my nova\n"

    started = time.monotonic()
    tree.doit("build", SELECTION)  # a no-op: nothing built, nothing fetched again
    took["no-op"] = time.monotonic() - started
    assert built(tree) == set()
    assert not [call for call in tree.buildah_calls() if "bud" in call]

    (checkout / "setup.py").write_text("# my nova, edited\n")  # the developer loop
    started = time.monotonic()
    tree.doit("-n", "2", "build", SELECTION, timeout=900)
    took["nova edit"] = time.monotonic() - started
    nova_subtree = {"nova-base"} | {n for n, p in proj.graph.parents.items()
                                    if p == "nova-base" and n not in excluded}
    assert built(tree) == nova_subtree
    tree.doit("build", SELECTION)
    assert built(tree) == set()
    assert len(tarballs.asked) == 2
    print(json.dumps({"seconds": {k: round(v, 1) for k, v in took.items()},
                      "rebuilt by the nova edit": sorted(nova_subtree)}))
