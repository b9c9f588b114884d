"""Kolla's real tree: every Dockerfile `imagebake render` writes equals what `kolla-build
--template-only` of the same kolla release writes (the `kolla` extra: `pip install .[kolla]`),
for the release this venv holds and an older one installed into a venv of its own."""

from __future__ import annotations

import datetime
import fcntl
import functools
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from conftest import DODO, DOIT, REPO

from buildlib import expanders, project
from buildlib.errors import InputError

# a Kolla tree's project, as the entry points load it
load_kolla = functools.partial(project.load, expand=expanders.kolla)

BIN = Path(sys.executable).parent
REGISTRY, NAMESPACE, TAG = "localhost:5000", "kolla", "t1"
OLDER = "21.3.0"  # installs its templates under <prefix>/share/kolla, passes build_date
OLDER_VENV = REPO / "build" / f"kolla{OLDER.split('.')[0]}-venv"
OVERRIDES = {
    # kolla's documented shape: blocks and <image>_<list>_append/_remove/_override lists
    "overrides-a.j2": """\
        {% extends parent_template %}

        {% set nova_api_packages_append = ['vim-tiny', 'tmux'] %}
        {% set base_rocky_packages_remove = ['tar'] %}
        {% set neutron_server_packages_override = ['only-this'] %}

        {% block labels %}
        LABEL maintainer="imagebake tests" name="{{ image_name }}" release="{{ openstack_release }}"
        {% endblock %}
        """,
    # a second file: kolla-build drops its `extends` line and appends it to the first
    "overrides-b.j2": """\
        {% extends parent_template %}

        {% block nova_api_footer %}
        RUN echo "extra step for {{ image_name }} on {{ base_distro }}"
        {% endblock %}
        """,
}
BUILD_DATE = re.compile(r'build-date="(\d{8})"')
# The default run compares one variant per release; `pytest --kolla-all` all eight.
OTHERS = [pytest.mark.slow, pytest.mark.kolla_all]
VARIANTS = [pytest.param(("current", "rocky", True), marks=pytest.mark.slow),
            pytest.param(("current", "debian", True), marks=OTHERS),
            pytest.param(("current", "rocky", False), marks=OTHERS),
            pytest.param(("current", "debian", False), marks=OTHERS),
            pytest.param((OLDER, "debian", True), marks=pytest.mark.slow),
            pytest.param((OLDER, "rocky", True), marks=OTHERS),
            pytest.param((OLDER, "rocky", False), marks=OTHERS),
            pytest.param((OLDER, "debian", False), marks=OTHERS)]


def variant_id(variant: tuple[str, str, bool]) -> str:
    release, distro, overrides = variant
    return f"{release}-{distro}-{'overrides' if overrides else 'plain'}"


@pytest.fixture(scope="session")
def kolla_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The override files, an empty kolla-build.conf and a jinja cache shared by the variants."""
    root = tmp_path_factory.mktemp("kolla")
    for name, text in OVERRIDES.items():
        (root / name).write_text(textwrap.dedent(text), encoding="utf-8")
    (root / "empty.conf").write_text("", encoding="utf-8")
    return root


def older_kolla_bin() -> Path:
    """The bin/ of a venv with kolla 21.3.0 and this checkout (made once, then kept in
    build/); the test is skipped when pip cannot install it (no package index)."""
    OLDER_VENV.parent.mkdir(parents=True, exist_ok=True)
    with OLDER_VENV.with_suffix(".lock").open("w") as lock:  # one maker at a time (xdist)
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _older_kolla_venv()


def _older_kolla_venv() -> Path:
    python = OLDER_VENV / "bin" / "python"
    check = [str(python), "-c", "import kolla, buildlib, importlib.metadata as m; "
             f"assert m.version('kolla') == {OLDER!r}"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python.parent
    made = subprocess.run([sys.executable, "-m", "venv", "--clear", str(OLDER_VENV)],
                          capture_output=True, text=True)
    if made.returncode == 0:
        made = subprocess.run([str(python), "-m", "pip", "install", "-q", f"kolla=={OLDER}",
                               "docker>=7,<8", "-e", str(REPO)],
                              capture_output=True, text=True, timeout=900)
    if made.returncode != 0:
        pytest.skip(f"cannot install kolla {OLDER} into {OLDER_VENV} (no package index?): "
                    + made.stderr.strip()[-300:])
    return python.parent


@pytest.fixture(scope="session")
def releases() -> dict[str, Path]:
    """Release -> the bin/ folder of a venv holding it (and imagebake), made on first use."""
    found: dict[str, Path] = {}

    class Bins(dict):
        def __missing__(self, release: str) -> Path:
            found[release] = BIN if release == "current" else older_kolla_bin()
            return found[release]
    return Bins()


def start_kolla_build(root: Path, bin_dir: Path, variant: tuple[str, str, bool]
                      ) -> tuple[subprocess.Popen, Path]:
    """kolla-build --template-only (about 10 s, more on a busy machine), every image
    rendered (--enable-unbuildable), no kolla-build.conf of this machine read."""
    _, distro, overrides = variant
    work = root / f"kolla-build-{variant_id(variant)}"
    argv = [str(bin_dir / "kolla-build"), "--config-file", str(root / "empty.conf"),
            "--template-only", "--enable-unbuildable", "--work-dir", str(work),
            "--base", distro, "--tag", TAG, "--registry", REGISTRY, "--namespace", NAMESPACE]
    if overrides:
        for name in OVERRIDES:
            argv += ["--template-override", str(root / name)]
    with (root / f"{work.name}.log").open("w") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT), work


def kolla_build_output(process: subprocess.Popen, work: Path) -> dict[str, str]:
    """Image name (its folder's name) -> the Dockerfile kolla-build wrote."""
    try:
        returncode = process.wait(timeout=600)
    finally:
        process.kill()
    assert returncode == 0, (work.parent / f"{work.name}.log").read_text()
    return {path.parent.name: path.read_text(encoding="utf-8")
            for path in (work / "docker").rglob("Dockerfile")}


def imagebake_render(bin_dir: Path, path: Path) -> dict[str, str]:
    """`imagebake render` in the tree's folder: image name -> the Dockerfile it wrote."""
    result = subprocess.run([str(bin_dir / "imagebake"), "render"], cwd=path.parent,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    build = path.parent / "build"
    return {dockerfile.parent.name: dockerfile.read_text(encoding="utf-8")
            for dockerfile in build.glob("*/Dockerfile")}


def kolla_images_yaml(root: Path, distro: str, overrides: bool, folder: Path | None = None,
                      **kolla: object) -> Path:
    folder = folder or root / f"imagebake-{distro}-{overrides}"
    folder.mkdir(exist_ok=True)
    source = {"base": distro, **kolla}
    if overrides:
        source["template_overrides"] = [str(root / name) for name in OVERRIDES]
    data = {"settings": {"registry": REGISTRY, "namespace": NAMESPACE, "tag": TAG},
            "kolla": source}
    path = folder / "images.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def with_build_date(texts: dict[str, str], date: str) -> dict[str, str]:
    return {name: BUILD_DATE.sub(f'build-date="{date}"', text) for name, text in texts.items()}


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_every_dockerfile_equals_kolla_builds(kolla_tree: Path, releases: dict[str, Path],
                                             variant: tuple[str, str, bool]) -> None:
    release, distro, overrides = variant
    bin_dir = releases[release]
    kolla_build = start_kolla_build(kolla_tree, bin_dir, variant)
    timestamp = int(time.time()) - 3 * 86400  # any day: its UTC date is the build-date
    path = kolla_images_yaml(kolla_tree, distro, overrides, kolla_tree / variant_id(variant),
                             enable_unbuildable=True)
    data = yaml.safe_load(path.read_text())
    data["settings"]["timestamp"] = timestamp
    path.write_text(yaml.safe_dump(data))
    ours = imagebake_render(bin_dir, path)
    theirs = kolla_build_output(*kolla_build)
    assert len(theirs) > 180
    assert sorted(ours) == sorted(theirs)
    # kolla-build writes today's date where a release passes `build_date`; imagebake the
    # UTC date of the build timestamp, every time
    date = datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y%m%d")
    written = {d for text in ours.values() for d in BUILD_DATE.findall(text)}
    assert written == ({date} if release == OLDER and not overrides else set())
    theirs = with_build_date(theirs, date)
    differing = [name for name in ours if ours[name] != theirs[name]]
    assert differing == []
    if overrides:  # the override files took effect, in both
        assert "vim-tiny tmux" in theirs["nova-api"]
        assert f'extra step for nova-api on {distro}"' in theirs["nova-api"]
        assert 'maintainer="imagebake tests"' in theirs["cron"]


def test_parents_come_from_the_from_lines(kolla_tree: Path) -> None:
    proj = load_kolla(kolla_images_yaml(kolla_tree, "debian", False))
    parents = proj.graph.parents
    assert proj.graph.roots() == ["base"]
    assert parents["openstack-base"] == "base"
    assert parents["nova-api"] == "nova-base"
    assert parents["nova-base"] == "openstack-base"
    for name, plan in proj.plans.items():
        if parents[name]:
            assert plan.context.dockerfile.startswith(
                f"FROM {REGISTRY}/{NAMESPACE}/{parents[name]}:{TAG}\n")
    assert proj.plans["base"].context.dockerfile.startswith("FROM debian:")
    # the folder beside each template is its build context, as for kolla-build
    assert "start.sh" in proj.plans["base"].context.files


def test_kolla_profiles_and_unbuildable_images(kolla_tree: Path) -> None:
    rocky = load_kolla(kolla_images_yaml(kolla_tree, "rocky", False)).config
    assert "nova-" in rocky.profiles["main"]
    assert "^ovsdpdk$" in rocky.settings.excludes
    enabled = load_kolla(kolla_images_yaml(kolla_tree, "rocky", False,
                                             enable_unbuildable=True)).config
    assert "^ovsdpdk$" not in enabled.settings.excludes


def test_kolla_options_reach_the_templates(kolla_tree: Path) -> None:
    path = kolla_images_yaml(kolla_tree, "debian", False,
                             options={"maintainer": "Team X", "openstack_release": "2025.1"})
    plans = load_kolla(path).plans
    assert 'maintainer="Team X"' in plans["cron"].context.dockerfile
    assert "git_branch=stable/2025.1 " in plans["bifrost-base"].context.dockerfile


def test_a_kolla_build_conf_is_read_and_options_win(kolla_tree: Path) -> None:
    conf = kolla_tree / "kolla-build.conf"
    conf.write_text("[DEFAULT]\nmaintainer = From Conf\nopenstack_release = 2024.2\n")
    path = kolla_images_yaml(kolla_tree, "debian", False, config_file=str(conf),
                             options={"openstack_release": "2025.1"})
    plans = load_kolla(path).plans
    assert 'maintainer="From Conf"' in plans["cron"].context.dockerfile
    assert "git_branch=stable/2025.1 " in plans["bifrost-base"].context.dockerfile


# --- errors ---------------------------------------------------------------------------------


def load_error(path: Path) -> InputError:
    with pytest.raises(InputError) as info:
        load_kolla(path)
    assert str(path.resolve()) in str(info.value)
    assert info.value.fix
    return info.value


def test_a_setting_is_not_a_kolla_option(kolla_tree: Path) -> None:
    error = load_error(kolla_images_yaml(kolla_tree, "debian", False, options={"tag": "x"}))
    assert "settings.tag" in error.fix


def test_an_unknown_kolla_option(kolla_tree: Path) -> None:
    error = load_error(kolla_images_yaml(kolla_tree, "debian", False,
                                         options={"maintainr": "x"}))
    assert "kolla.options.maintainr" in error.problem


def test_an_unknown_base(kolla_tree: Path) -> None:
    error = load_error(kolla_images_yaml(kolla_tree, "debian", False, base="gentoo"))
    assert "gentoo" in error.problem
    assert "rocky" in error.fix


def test_a_from_line_that_misses_its_parent_says_which_setting(kolla_tree: Path) -> None:
    override = kolla_tree / "hard-coded-from.j2"
    override.write_text("{% extends parent_template %}\n"
                        "{% set tag = 'old' if image_name == 'nova-api' else tag %}\n")
    path = kolla_images_yaml(kolla_tree, "debian", False, template_overrides=[str(override)])
    error = load_error(path)
    assert error.image == "nova-api"
    assert f"'{REGISTRY}/{NAMESPACE}/nova-base:old'" in error.problem
    assert "settings.tag" in error.fix


def test_a_kolla_image_takes_no_parent_from_images_yaml(kolla_tree: Path) -> None:
    path = kolla_images_yaml(kolla_tree, "debian", False)
    data = yaml.safe_load(path.read_text())
    data["images"] = {"nova-api": {"parent": "base", "labels": {"tier": "api"}}}
    path.write_text(yaml.safe_dump(data))
    error = load_error(path)
    assert error.image == "nova-api"
    assert "FROM line" in error.problem


def test_images_yaml_refines_a_kolla_image(kolla_tree: Path) -> None:
    path = kolla_images_yaml(kolla_tree, "debian", False)
    data = yaml.safe_load(path.read_text())
    data["settings"]["labels"] = {"org.opencontainers.image.vendor": "us", "tier": "any",
                                  "org.opencontainers.image.licenses": "ours"}
    data["images"] = {"nova-api": {"labels": {"tier": "api"}, "args": {"WORKERS": 4}}}
    path.write_text(yaml.safe_dump(data))
    plans = load_kolla(path).plans
    assert plans["nova-api"].labels["org.opencontainers.image.vendor"] == "us"
    assert plans["nova-api"].labels["tier"] == "api"
    assert plans["cron"].labels["tier"] == "any"
    assert plans["cron"].labels["org.opencontainers.image.licenses"] == "ours"
    assert plans["nova-api"].args["WORKERS"] == "4"


def test_kolla_build_labels_and_build_args(kolla_tree: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    path = kolla_images_yaml(kolla_tree, "debian", False, options={
        "maintainer": "Team X", "pip_index_url": "http://pypi.example/simple",
        "build_args": "SPECIAL:1,https_proxy:http://from-conf:8080"})
    data = yaml.safe_load(path.read_text())
    data["settings"]["timestamp"] = 1700000000  # 2023-11-14T22:13:20Z
    data["images"] = {"nova-api": {"args": {"SPECIAL": 2}}}
    path.write_text(yaml.safe_dump(data))
    plans = load_kolla(path).plans
    assert plans["nova-api"].labels == {
        "build-date": "20231114",
        "org.opencontainers.image.title": "nova-api",
        "org.opencontainers.image.description": "OpenStack Kolla nova-api image",
        "org.opencontainers.image.version": TAG,
        "org.opencontainers.image.created": "2023-11-14T22:13:20Z",
        "org.opencontainers.image.authors": "Team X",
        "org.opencontainers.image.url": "https://opendev.org/openstack/kolla",
        "org.opencontainers.image.licenses": "Apache-2.0"}
    # kolla's build_args first, then the proxies of the environment it has not set, then
    # the pip index; images.yaml's own win
    assert plans["cron"].args == {"SPECIAL": "1", "https_proxy": "http://from-conf:8080",
                                  "PIP_INDEX_URL": "http://pypi.example/simple"}
    assert plans["nova-api"].args["SPECIAL"] == "2"
    assert "ARG PIP_INDEX_URL\n" in plans["nova-api"].context.dockerfile


# --- doit status on the whole tree ----------------------------------------------------------


def doit_status(kolla_tree: Path, path: Path, *args: str) -> subprocess.CompletedProcess:
    data = yaml.safe_load(path.read_text())
    storage = kolla_tree / "storage"
    data["settings"]["buildah_args"] = ["--root", str(storage / "root"),
                                        "--runroot", str(storage / "run")]
    path.write_text(yaml.safe_dump(data))
    return subprocess.run([str(DOIT), "-f", str(DODO), f"config={path}", "status", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.integration
def test_status_lists_every_image_and_says_what_a_build_would_fetch(kolla_tree: Path) -> None:
    path = kolla_images_yaml(kolla_tree, "rocky", False)
    result = doit_status(kolla_tree, path)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in result.stdout.splitlines()
            if line and not line.startswith(("IMAGE", " "))}
    graph = load_kolla(path).graph
    for name, parent in graph.parents.items():
        assert rows[name][0] == (parent or "-"), name
    assert rows["cron"][1] == "would build: parent 'base' would be rebuilt"
    # kolla's SOURCES defaults, through tarballs_base, never downloaded by a dry run
    branch = load_kolla(path).config.vars["openstack_branch"]
    assert rows["openstack-base"][1] == (
        "would fetch https://tarballs.opendev.org/openstack/requirements/"
        f"requirements-{branch}.tar.gz, then build if it changed")
    assert rows["nova-base"][1].startswith("would fetch https://tarballs.opendev"
                                           f".org/openstack/nova/nova-{branch}.tar.gz, ")
    assert rows["nova-api"][1] == "parent 'nova-base' would fetch a source first"
    assert rows["ovsdpdk"][1] == "excluded"  # unbuildable on rocky
    downloads = path.parent / "build" / "sources"  # kolla/: empty plugins archives only
    assert [p.name for p in downloads.iterdir()] in ([], ["kolla"])
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.integration
def test_status_passes_with_git_sources_and_follows_their_commits(kolla_tree: Path,
                                                                 tmp_path: Path) -> None:
    repos = {}
    for service in ("openstack-base", "nova-base", "glance-base"):
        repos[service] = tmp_path / service
        repos[service].mkdir()
        git(repos[service], "init", "-q", "-b", "master")
        commit(repos[service], "setup.py", f"# {service}\n")
    (tmp_path / "plugins").mkdir()
    path = kolla_images_yaml(kolla_tree, "rocky", False)
    data = yaml.safe_load(path.read_text())
    plugins = {"local": str(tmp_path / "plugins")}  # kolla-build's plugins-archive, empty
    data["images"] = {name: {"sources": {name: {"git": str(repo), "ref": "master"},
                                         "plugins": plugins}}
                      for name, repo in repos.items()}
    path.write_text(yaml.safe_dump(data))
    result = doit_status(kolla_tree, path, "images=^nova-api$,^glance-api$")
    assert result.returncode == 0, result.stdout + result.stderr
    # status archives nothing: the three images with git sources would archive them first
    assert ("1 of 6 selected images would build; 5 would first fetch or archive a source"
            in result.stdout)

    before = {n: p.sources.key for n, p in load_kolla(path, fetch=True).plans.items()}
    commit(repos["nova-base"], "setup.py", "# nova, next commit\n")
    after = {n: p.sources.key for n, p in load_kolla(path, fetch=True).plans.items()}
    assert {name for name in after if after[name] != before[name]} == {"nova-base"}


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com",
                    *args], check=True, capture_output=True)


def commit(repo: Path, name: str, text: str) -> None:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", f"edit {name}")
