"""The kolla-build.conf options that put files into build contexts (`apt_sources_list`,
`apt_preferences`, `patches_path`, `docker_dir`): each context `imagebake render` writes
holds what kolla-build's working dir holds for that image after `kolla-build
--template-only` with the same options, byte for byte."""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from test_kolla import (  # noqa: F401 (releases: a fixture)
    NAMESPACE,
    OLDER,
    REGISTRY,
    TAG,
    imagebake_render,
    load_error,
    releases,
    with_build_date,
)

from buildlib import expanders, project

# a Kolla tree's project, as the entry points load it
load_kolla = functools.partial(project.load, expand=expanders.kolla)

# an image of docker_dir's own, a replaced template, an added file, a replaced file
DOCKER_DIR = {
    "demo-extra/Dockerfile.j2": "FROM {{ namespace }}/{{ image_prefix }}base:{{ tag }}\n"
                                "COPY extra.sh /usr/local/bin/extra.sh\n",
    "demo-extra/extra.sh": "#!/bin/sh\necho extra\n",
    "cron/Dockerfile.j2": "FROM {{ namespace }}/{{ image_prefix }}base:{{ tag }}\n"
                          "COPY extend_start.sh /usr/local/bin/kolla_extend_start\n"
                          "COPY mine.conf /etc/mine.conf\n",
    "cron/mine.conf": "mine = 1\n",
    "base/start.sh": "#!/bin/bash\necho 'my start'\n",
}
PATCHES = {
    "nova-api/series": "# mine\nfix-a.patch\nmissing.patch\n\nfix-b.patch\n",
    "nova-api/fix-a.patch": "--- a\n+++ b\n",
    "nova-api/fix-b.patch": "--- c\n+++ d\n",
    "nova-api/unlisted.patch": "--- e\n+++ f\n",
    "glance-api/README": "a folder without a series: an empty patches/ all the same\n",
}


def write_files(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture
def options_tree(tmp_path: Path) -> Path:
    """A kolla-build.conf that uses the four options, and images.yaml reading it."""
    write_files(tmp_path / "extra-docker", DOCKER_DIR)
    write_files(tmp_path / "patches", PATCHES)
    (tmp_path / "my-sources.list").write_text("deb http://mirror.example/debian bookworm main\n")
    (tmp_path / "my-preferences").write_text("Package: *\nPin: origin mirror.example\n"
                                             "Pin-Priority: 900\n")
    (tmp_path / "kolla-build.conf").write_text(
        f"[DEFAULT]\napt_sources_list = {tmp_path / 'my-sources.list'}\n"
        f"apt_preferences = {tmp_path / 'my-preferences'}\n"
        f"patches_path = {tmp_path / 'patches'}\ndocker_dir = {tmp_path / 'extra-docker'}\n")
    data = {"settings": {"registry": REGISTRY, "namespace": NAMESPACE, "tag": TAG},
            "kolla": {"base": "debian", "config_file": "kolla-build.conf"}}
    (tmp_path / "tree").mkdir()
    path = tmp_path / "tree" / "images.yaml"
    (tmp_path / "tree" / "kolla-build.conf").write_text(
        (tmp_path / "kolla-build.conf").read_text())
    path.write_text(yaml.safe_dump(data))
    return path


def context_listing(folder: Path) -> dict[str, bytes | None]:
    """Each file (its bytes) and empty folder (None) of a context, but templates, the
    Dockerfile, and source archives (kolla-build --template-only fetches none)."""
    listing: dict[str, bytes | None] = {}
    for path in sorted(folder.rglob("*")):
        inner = str(path.relative_to(folder))
        if path.name.endswith(".j2") or path.name.endswith("-archive") \
                or inner == "Dockerfile" or "__pycache__" in path.parts:
            continue
        if path.is_file():
            listing[inner] = path.read_bytes()
        elif not any(path.iterdir()):
            listing[inner] = None
    return listing


def kolla_build_contexts(bin_dir: Path, conf: Path, work: Path) -> dict[str, Path]:
    """kolla-build --template-only with that configuration: image -> its folder."""
    argv = [str(bin_dir / "kolla-build"), "--config-file", str(conf), "--template-only",
            "--work-dir", str(work), "--base", "debian", "--tag", TAG,
            "--registry", REGISTRY, "--namespace", NAMESPACE]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return {path.parent.name: path.parent for path in (work / "docker").rglob("Dockerfile")}


@pytest.mark.slow
@pytest.mark.parametrize("release", ["current", OLDER])
def test_contexts_hold_what_kolla_builds_working_dir_holds(
        options_tree: Path, releases: dict[str, Path], release: str) -> None:  # noqa: F811
    bin_dir = releases[release]
    theirs = kolla_build_contexts(bin_dir, options_tree.parent / "kolla-build.conf",
                                  options_tree.parent.parent / "kolla-work")
    # kolla-build writes today's date where a release passes build_date (21): not compared
    ours = with_build_date(imagebake_render(bin_dir, options_tree), "00000000")
    assert "demo-extra" in ours and sorted(ours) == sorted(theirs)
    build = options_tree.parent / "build"
    differing = [name for name in ours
                 if context_listing(build / name / "context") != context_listing(theirs[name])
                 or ours[name] != with_build_date(
                     {name: (theirs[name] / "Dockerfile").read_text()}, "00000000")[name]]
    assert differing == []
    base = context_listing(build / "base" / "context")
    assert base["sources.list"].startswith(b"deb http://mirror.example/")
    assert base["apt_preferences"].startswith(b"Package: *")
    assert base["start.sh"] == b"#!/bin/bash\necho 'my start'\n"
    nova_api = context_listing(build / "nova-api" / "context")
    assert {k: v for k, v in nova_api.items() if k.startswith("patches")} == {
        "patches/series": PATCHES["nova-api/series"].encode(),
        "patches/fix-a.patch": b"--- a\n+++ b\n", "patches/fix-b.patch": b"--- c\n+++ d\n"}
    assert context_listing(build / "glance-api" / "context")["patches"] is None
    cron = context_listing(build / "cron" / "context")
    assert cron["mine.conf"] == b"mine = 1\n" and "extend_start.sh" in cron
    assert "COPY patches /patches\n" in ours["nova-api"]


def test_options_change_the_key_of_the_images_they_change(options_tree: Path) -> None:
    def own_keys() -> dict[str, str]:  # each image's own inputs (its parent's ID aside)
        return {name: plan.sources.key
                for name, plan in load_kolla(options_tree).plans.items()}

    def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
        return {name for name in after if after[name] != before[name]}

    first = own_keys()
    patches = options_tree.parent.parent / "patches"
    (patches / "nova-api" / "fix-a.patch").write_text("--- a\n+++ b, edited\n")
    (patches / "nova-api" / "unlisted.patch").write_text("not in the series: no change\n")
    second = own_keys()
    assert changed(first, second) == {"nova-api"}
    (options_tree.parent.parent / "my-sources.list").write_text("deb http://other/ x main\n")
    third = own_keys()
    assert changed(second, third) == {"base"}  # and so its descendants, by its new ID
    (options_tree.parent.parent / "extra-docker" / "cron" / "mine.conf").write_text("2\n")
    assert changed(third, own_keys()) == {"cron"}


@pytest.mark.parametrize("option", ["apt_sources_list", "apt_preferences", "patches_path",
                                    "docker_dir"])
def test_an_option_naming_a_missing_path_is_an_error(options_tree: Path, option: str) -> None:
    data = yaml.safe_load(options_tree.read_text())
    data["kolla"]["options"] = {option: "no/such/path"}
    options_tree.write_text(yaml.safe_dump(data))
    error = load_error(options_tree)
    assert f"kolla option {option}:" in error.problem
    assert str(options_tree.parent / "no/such/path") in error.problem


def test_the_options_are_no_longer_warnings(options_tree: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    load_kolla(options_tree)
    assert "warning" not in capsys.readouterr().err




def test_the_kolla_docs_say_of_every_option_whether_it_is_followed(tmp_path: Path) -> None:
    from oslo_config import cfg

    from buildlib import config_load, kolla_options

    path = tmp_path / "images.yaml"
    path.write_text(yaml.safe_dump({"kolla": {"base": "debian"}}))
    conf = kolla_options.parsed(config_load.load(path))
    options = {name for name in conf if not isinstance(conf[name], cfg.ConfigOpts.GroupAttr)}
    page = (Path(__file__).resolve().parents[1] / "docs" / "kolla.md").read_text()
    table = page[page.index("| Option | Followed | How |"):]
    table = table[:table.index("\n\n")]
    listed = {word for row in table.splitlines()
              for word in re.findall(r"`([a-z_]+)`", row.split(" | ")[0])}
    assert len(options) > 60
    assert options - listed == set()
