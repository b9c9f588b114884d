"""Kolla's sources from Kolla's own configuration: its SOURCES defaults through
`tarballs_base` (served on loopback HTTP), kolla-build.conf sections of type url, git and
local, `enabled` and `sha256`, made into `<image>-archive`, `plugins-archive` and
`additions-archive` as kolla-build makes them; fetched only for what a run builds."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from buildlib import expanders, kolla_sources, project, watch
from buildlib.errors import InputError

# a Kolla tree's project, as the entry points load it
load_kolla = functools.partial(project.load, expand=expanders.kolla)

NOVA = ("nova-base", "nova-base-plugin-blazar")


class Served:
    """A folder served over loopback HTTP, and the paths it was asked for."""

    def __init__(self, root: Path) -> None:
        self.root, self.asked = root, []
        served = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                served.asked.append(self.path)

        handler = functools.partial(Handler, directory=str(root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def tarballs(tmp_path: Path) -> Iterator[Served]:
    served = Served(tmp_path / "tarballs")
    yield served
    served.server.shutdown()
    served.server.server_close()


def tarball(path: Path, top: str, files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mtime, info.mode = len(data), 1700000000, 0o644
            tar.addfile(info, io.BytesIO(data))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def tree(root: Path, conf: str = "", overrides: list[str] | None = None,
         **options: object) -> Path:
    (root / "kolla-build.conf").write_text(conf)
    data = {"settings": {"tag": "t1"},
            "kolla": {"base": "rocky", "config_file": "kolla-build.conf", "options": options,
                      "template_overrides": overrides or []}}
    (root / "images.yaml").write_text(yaml.safe_dump(data))
    return root / "images.yaml"


def branch(path: Path) -> str:
    return load_kolla(path).config.vars["openstack_branch"]


def members(archive: Path) -> list[tuple[str, int, int, str]]:
    with tarfile.open(archive) as tar:
        return [(m.name, m.uid, m.mtime, m.uname) for m in tar.getmembers()]


def test_tarballs_base_sources_are_fetched_only_for_the_images_a_run_builds(
        tmp_path: Path, tarballs: Served) -> None:
    path = tree(tmp_path, tarballs_base=tarballs.url)
    release = branch(path)
    nova = tarball(tarballs.root / f"openstack/nova/nova-{release}.tar.gz",
                   "nova-31.0.0", {"setup.py": "# nova\n"})
    tarball(tarballs.root / f"openstack/blazar-nova/blazar-nova-{release}.tar.gz",
            "blazar-nova-4.0.0", {"setup.py": "# blazar-nova\n"})

    plans = load_kolla(path).plans  # a read-only command: nothing fetched
    assert tarballs.asked == []
    assert plans["nova-base"].context.fetches == {
        "nova-base-archive": f"{tarballs.url}/openstack/nova/nova-{release}.tar.gz",
        "plugins-archive": f"{tarballs.url}/openstack/blazar-nova/blazar-nova-{release}.tar.gz"}
    assert plans["nova-base"].context.missing_sources() == []

    with kolla_sources.fetching({"nova-base"}):
        plans = load_kolla(path).plans
    context = plans["nova-base"].context
    assert context.fetches == {}
    assert context.files["nova-base-archive"].read_bytes() == nova
    # kolla-build's plugins-archive: each plugin unpacked under plugins/, that folder
    # archived as root, mtime 0
    assert members(context.files["plugins-archive"]) == [
        ("plugins", 0, 0, "root"), ("plugins/blazar-nova-4.0.0", 0, 0, "root"),
        ("plugins/blazar-nova-4.0.0/setup.py", 0, 0, "root")]
    assert "openstack-base-archive" in plans["openstack-base"].context.fetches  # not asked
    assert sorted(tarballs.asked) == sorted([
        f"/openstack/nova/nova-{release}.tar.gz",
        f"/openstack/blazar-nova/blazar-nova-{release}.tar.gz"])

    tarballs.asked.clear()
    with kolla_sources.fetching({"nova-base"}):  # downloaded once: no request
        again = load_kolla(path).plans["nova-base"].context
    assert tarballs.asked == []
    assert again.files == context.files


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c",
                           "user.email=t@example.com", *args],
                          check=True, capture_output=True, text=True).stdout


def test_kolla_build_conf_sections_local_git_disabled_and_additions(tmp_path: Path) -> None:
    checkout = tmp_path / "src" / "nova"
    checkout.mkdir(parents=True)
    (checkout / "setup.py").write_text("# my nova\n")
    plugin = tmp_path / "src" / "my-plugin"
    plugin.mkdir()
    git(plugin, "init", "-q", "-b", "main")
    (plugin / "setup.py").write_text("# plugin\n")
    git(plugin, "add", "setup.py")
    git(plugin, "commit", "-q", "-m", "one")
    extra = tmp_path / "src" / "extra"
    extra.mkdir()
    (extra / "notes.txt").write_text("extra\n")
    (tmp_path / "additions.j2").write_text(  # no template reads additions-archive: ours does
        "{% extends parent_template %}\n{% block nova_base_footer %}\n"
        "ADD additions-archive /additions\n{% endblock %}\n")
    path = tree(tmp_path, overrides=["additions.j2"], conf=f"""\
[nova-base]
type = local
location = {checkout}

[nova-base-plugin-blazar]
enabled = false

[nova-base-plugin-mine]
type = git
location = {plugin}
reference = main

[nova-base-additions-extra]
type = local
location = {extra}
""")
    assert load_kolla(path).plans["nova-base"].context.fetches == {  # a dry run: no archive
        "nova-base-archive": f"archive {checkout}",
        "plugins-archive": f"archive {plugin} at main",
        "additions-archive": f"archive {extra}"}
    context = load_kolla(path, fetch={"nova-base"}).plans["nova-base"].context
    assert context.fetches == {}
    assert [m[0] for m in members(context.files["nova-base-archive"])] == [
        "nova", "nova/setup.py"]  # a local folder under its own name
    assert [m[0] for m in members(context.files["plugins-archive"])] == [
        "plugins", "plugins/nova-base-plugin-mine-archive-main",
        "plugins/nova-base-plugin-mine-archive-main/setup.py"]
    assert [m[0] for m in members(context.files["additions-archive"])] == [
        "additions", "additions/extra", "additions/extra/notes.txt"]
    assert context.follows == (checkout, extra)  # `imagebake watch` follows these
    assert {checkout / "setup.py", extra / "notes.txt"} <= watch.tree_inputs(path)

    # editing the checkout changes nova-base's key, and no other image's own inputs
    before = {name: plan.sources.key for name, plan in load_kolla(path, True).plans.items()}
    (checkout / "setup.py").write_text("# my nova, edited\n")
    after = {name: plan.sources.key for name, plan in load_kolla(path, True).plans.items()}
    assert [name for name in after if after[name] != before[name]] == ["nova-base"]


def test_a_sha256_pin_is_checked(tmp_path: Path, tarballs: Served) -> None:
    data = tarball(tarballs.root / "etcd.tar.gz", "etcd-v3", {"etcd": "binary\n"})
    good = hashlib.sha256(data).hexdigest()
    conf = """\
[etcd]
type = url
location = {url}/etcd.tar.gz
sha256 = amd64:{digest},arm64:{digest}
"""
    path = tree(tmp_path, conf.format(url=tarballs.url, digest=good))
    with kolla_sources.fetching({"etcd"}):
        assert load_kolla(path).plans["etcd"].context.files["etcd-archive"].read_bytes() \
            == data
    (tmp_path / "build").rename(tmp_path / "build-before")
    path = tree(tmp_path, conf.format(url=tarballs.url, digest="0" * 64))
    with kolla_sources.fetching({"etcd"}):  # it fails etcd's build, not the run
        failures = load_kolla(path).plans["etcd"].context.failures
    assert failures == {"etcd-archive": f"kolla source [etcd] (url {tarballs.url}/etcd.tar.gz)"
                        f": has sha256 {good}, not the declared {'0' * 64} (correct `sha256:` "
                        "if the new tarball is the one you want)"}


def test_what_imagebake_does_not_use_is_a_warning_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tree(tmp_path, """\
[DEFAULT]
engine = podman
maintainr = typo

[nova-base]
type = url
refrence = main

[no-such-image]
type = local
""", threads=4)
    load_kolla(path)
    err = capsys.readouterr().err
    conf = tmp_path / "kolla-build.conf"
    assert f"warning: {conf}: [DEFAULT] engine: imagebake does not use it" in err
    assert f"warning: {conf}: [DEFAULT] maintainr: kolla-build has no such option" in err
    assert f"warning: {conf}: [nova-base] refrence: not a source option" in err
    assert f"warning: {conf}: [no-such-image] type: names no image" in err
    assert "warning: images.yaml kolla.options: [DEFAULT] threads: use `-n N`" in err
    assert "[nova-base] type" not in err


def test_a_bad_source_section_is_one_error_naming_it(tmp_path: Path) -> None:
    path = tree(tmp_path, "[nova-base]\ntype = svn\nlocation = /x\n")
    with pytest.raises(InputError) as info:
        load_kolla(path)
    assert "'svn'" in info.value.problem and "kolla-build.conf" in info.value.fix
    path = tree(tmp_path, f"[nova-base]\ntype = local\nlocation = {tmp_path / 'gone'}\n")
    with pytest.raises(InputError) as info:
        load_kolla(path)
    assert info.value.image == "nova-base"
    assert f"kolla source [nova-base] (local {tmp_path / 'gone'})" in info.value.problem
    assert "`location` in [nova-base]" in info.value.fix


def test_a_run_fetches_for_the_images_its_tasks_build() -> None:
    from conftest import REPO

    from buildlib import graph, run

    proj = project.load(REPO / "images.yaml")
    everything = graph.select(proj.graph, [], [])

    def building(*argv: str) -> set[str]:
        return run._building(proj, everything, run.parse_argv(list(argv)))

    assert building("build:nova-api") == {"nova-api", "nova-base", "openstack-base", "base"}
    assert building("push:cron", "build:cron") == {"cron", "base"}
    assert building("build") == building() == building("build:cron", "push") \
        == set(proj.graph.parents)


def test_a_remote_git_source_is_mirrored_and_followed_by_building_runs(tmp_path: Path) -> None:
    upstream = tmp_path / "upstream" / "gnocchi"
    upstream.mkdir(parents=True)
    git(upstream, "init", "-q", "-b", "main")
    (upstream / "setup.py").write_text("# gnocchi 1\n")
    git(upstream, "add", "setup.py")
    git(upstream, "commit", "-q", "-m", "one")
    path = tree(tmp_path, f"[gnocchi-base]\ntype = git\nlocation = file://{upstream}\n"
                          "reference = main\n")

    assert load_kolla(path).plans["gnocchi-base"].context.fetches == {
        "gnocchi-base-archive": f"file://{upstream}"}  # a dry run clones nothing
    with kolla_sources.fetching({"gnocchi-base"}):
        first = load_kolla(path).plans["gnocchi-base"].context.files["gnocchi-base-archive"]
    with tarfile.open(first) as tar:  # as kolla-build names its clone
        assert tar.extractfile("gnocchi-base-archive-main/setup.py").read() == b"# gnocchi 1\n"

    (upstream / "setup.py").write_text("# gnocchi 2\n")
    git(upstream, "commit", "-q", "-am", "two")
    stale = load_kolla(path).plans["gnocchi-base"].context.files["gnocchi-base-archive"]
    assert stale == first  # a dry run uses the mirror as it is
    with kolla_sources.fetching({"gnocchi-base"}):
        second = load_kolla(path).plans["gnocchi-base"].context.files["gnocchi-base-archive"]
    with tarfile.open(second) as tar:
        assert tar.extractfile("gnocchi-base-archive-main/setup.py").read() == b"# gnocchi 2\n"


def test_a_file_tarballs_base_is_read_where_it_is_and_missing_only_for_what_is_built(
        tmp_path: Path) -> None:
    folder = tmp_path / "tarballs"
    path = tree(tmp_path, tarballs_base=f"file://{folder}")
    release = branch(path)
    nova = tarball(folder / f"openstack/nova/nova-{release}.tar.gz", "nova-1", {"a": "b"})
    plans = load_kolla(path).plans
    assert plans["nova-base"].context.files["nova-base-archive"].read_bytes() == nova
    assert plans["aodh-base"].context.fetches == {  # not there: only a build of it fails
        "aodh-base-archive": f"file://{folder}/openstack/aodh/aodh-{release}.tar.gz"}
    with kolla_sources.fetching({"aodh-base"}):
        failures = load_kolla(path).plans["aodh-base"].context.failures
    assert "does not exist" in failures["aodh-base-archive"]


def test_a_git_source_of_a_pbr_project_carries_pbr_s_version(tmp_path: Path) -> None:
    """kolla-build.conf `type = git`, cloned: the archive needs no `.git` for pbr."""
    from test_sources import pbr_project, pbr_version_of

    upstream = pbr_project(tmp_path / "upstream" / "gnocchi")
    path = tree(tmp_path, f"[gnocchi-base]\ntype = git\nlocation = file://{upstream}\n"
                          "reference = 1.2.3\n")
    with kolla_sources.fetching({"gnocchi-base"}):
        plans = load_kolla(path).plans
    archive = plans["gnocchi-base"].context.files["gnocchi-base-archive"]
    assert pbr_version_of(archive, tmp_path) == "1.2.3"
