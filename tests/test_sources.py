"""An image's `sources:` archived into its build context as `<name>-archive`: local git
repositories, folders and file:// tarballs only (no network)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from buildlib import project
from buildlib.errors import InputError

TEMPLATES = {
    "templates/base/Dockerfile.j2": "FROM scratch\n",
    "templates/app/Dockerfile.j2": "FROM {{ parent_image }}\nADD app-archive /app-source\n",
    "templates/app-api/Dockerfile.j2": "FROM {{ parent_image }}\n",
    "templates/other/Dockerfile.j2": "FROM {{ parent_image }}\n",
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c",
                           "user.email=t@example.com", *args],
                          check=True, capture_output=True, text=True).stdout


def commit(repo: Path, name: str, text: str) -> None:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", f"edit {name}")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "app-repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    commit(path, "README", "first\n")
    return path


def make_tree(tmp_path: Path, source: dict) -> Path:
    for relative, text in TEMPLATES.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    data = {"images": {"base": None, "app": {"parent": "base", "sources": {"app": source}},
                       "app-api": {"parent": "app"}, "other": {"parent": "base"}}}
    config = tmp_path / "images.yaml"
    config.write_text(yaml.safe_dump(data))
    return config


def digests(config: Path) -> dict[str, str]:
    return {name: plan.sources.key for name, plan in project.load(config, fetch=True).plans.items()}


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else b"") for m in tar}


def test_git_source_at_a_ref(tmp_path: Path, repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "stable/1")
    commit(repo, "README", "stable\n")
    git(repo, "checkout", "-q", "main")
    config = make_tree(tmp_path, {"git": str(repo), "ref": "stable/1"})
    context = project.load(config, fetch=True).plans["app"].context
    assert context.missing_sources() == []
    archive = context.files["app-archive"]
    assert members(archive)["app-archive-stable-1/README"] == b"stable\n"


def test_a_new_commit_changes_exactly_the_image_that_uses_it(tmp_path: Path,
                                                              repo: Path) -> None:
    config = make_tree(tmp_path, {"git": str(repo), "ref": "main"})
    before = digests(config)
    assert digests(config) == before  # the same commit: the same archive, byte for byte
    commit(repo, "README", "second\n")
    after = digests(config)
    assert {name for name in after if after[name] != before[name]} == {"app"}


def test_local_folder_follows_content_not_mtime(tmp_path: Path) -> None:
    folder = tmp_path / "checkout"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "file.txt").write_text("one\n")
    config = make_tree(tmp_path, {"local": str(folder)})
    before = digests(config)
    archive = project.load(config, fetch=True).plans["app"].context.files["app-archive"]
    assert members(archive)["checkout/sub/file.txt"] == b"one\n"
    os.utime(folder / "sub" / "file.txt", (1, 1))
    assert digests(config) == before
    (folder / "sub" / "file.txt").write_text("two\n")
    assert digests(config)["app"] != before["app"]


def test_file_url_tarball(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = b"released\n"
        info = tarfile.TarInfo("app-1.0/VERSION")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    tarball = tmp_path / "app-1.0.tar.gz"
    tarball.write_bytes(buffer.getvalue())
    sha256 = hashlib.sha256(buffer.getvalue()).hexdigest()
    config = make_tree(tmp_path, {"url": tarball.as_uri(), "sha256": sha256})
    context = project.load(config, fetch=True).plans["app"].context
    assert context.files["app-archive"].read_bytes() == buffer.getvalue()
    config = make_tree(tmp_path, {"url": tarball.as_uri(), "sha256": "0" * 64})
    failures = project.load(config, fetch=True).plans["app"].context.failures
    assert failures["app-archive"].startswith(f"source app: {tarball.as_uri()}: has sha256 "
                                              f"{sha256}, not the declared {'0' * 64}")


@pytest.mark.parametrize("source, problem", [
    ({"git": "no-such-repo"}, "git repository"),
    ({"git": "REPO", "ref": "no-such-branch"}, "has no ref 'no-such-branch'"),
    ({"local": "no-such-folder"}, "does not exist"),
    ({"local": ".", "url": "file:///x.tar"}, "local and url given"),
    ({"ref": "main"}, "nothing given"),
    ({"url": "file:///x.tar", "sha256": "deadbeef"}, "'deadbeef' is not a sha256"),
    ({"local": "."}, "sources.app.local: TREE holds build_dir"),
    ({"git": "TREE"}, "TREE is not in a git repository"),
    ({"git": "REPO/untracked"}, "git tracks no file in REPO/untracked"),
], ids=["no-repo", "no-ref", "no-folder", "two-kinds", "none", "sha256", "holds-build-dir",
        "no-git", "untracked"])
def test_source_errors(tmp_path: Path, repo: Path, source: dict, problem: str) -> None:
    (repo / "untracked").mkdir()
    (repo / "untracked" / "new.py").write_text("# not added\n")

    def named(text: str) -> str:
        return text.replace("REPO", str(repo)).replace("TREE", str(tmp_path))

    config = make_tree(tmp_path, {k: named(v) for k, v in source.items()})
    with pytest.raises(InputError) as info:
        project.load(config, fetch=True)
    message = str(info.value)
    assert named(problem) in message
    assert "sources.app" in message
    assert info.value.image == "app" and info.value.fix


def test_without_the_source_the_context_lacks_the_archive(tmp_path: Path) -> None:
    config = make_tree(tmp_path, {"local": "."})
    data = yaml.safe_load(config.read_text())
    del data["images"]["app"]["sources"]
    config.write_text(yaml.safe_dump(data))
    assert project.load(config, fetch=True).plans["app"].context.missing_sources() == [
        "ADD 'app-archive'"]


@pytest.mark.integration
def test_a_new_commit_rebuilds_exactly_its_images(tree, tmp_path: Path, repo: Path) -> None:
    """The example tree with nova's source from a git repository, built with buildah."""
    tree.edit("templates/nova-base/Dockerfile.j2", "{% block install %}",
              "{% block install %}\nADD nova-base-archive /nova-base-source")
    tree.edit_yaml(lambda d: d["images"]["nova-base"].update(
        sources={"nova-base": {"git": str(repo), "ref": "main"}}))
    tree.doit("build", "images=nova")  # base, openstack-base and the nova images
    commit(repo, "nova.py", textwrap.dedent("print('new')\n"))
    status = tree.doit("status", "images=nova").stdout
    assert "3 would first fetch or archive a source" in status  # (status archives nothing)
    assert f"would archive {repo} at main, then build if it changed" in status
    tree.doit("build", "images=nova")
    assert {n for n, s in tree.statuses().items() if s == "built"} == {
        "nova-base", "nova-api", "nova-conductor"}
    listing = tree.buildah("run", "--isolation", "chroot",
                           tree.buildah("from", "localhost:5000/kolla/nova-api:latest").strip(),
                           "ls", "/nova-base-source/nova-base-archive-main")
    assert "nova.py" in listing


def two_images_with(tmp_path: Path, first: dict, second: dict) -> Path:
    """Two children of base, each with its own source named `src`."""
    for name in ("base", "svc-a", "svc-b"):
        template = tmp_path / "templates" / name / "Dockerfile.j2"
        template.parent.mkdir(parents=True, exist_ok=True)
        template.write_text("FROM scratch\n" if name == "base" else
                            "FROM {{ parent_image }}\nADD src-archive /src\n")
    data = {"images": {"base": None,
                       "svc-a": {"parent": "base", "sources": {"src": first}},
                       "svc-b": {"parent": "base", "sources": {"src": second}}}}
    config = tmp_path / "images.yaml"
    config.write_text(yaml.safe_dump(data))
    return config


def test_two_folders_of_one_repository_at_one_commit_are_two_archives(tmp_path: Path,
                                                                       repo: Path) -> None:
    for service in ("svc-a", "svc-b"):
        (repo / service).mkdir()
        commit(repo, f"{service}/{service}.py", f"print('{service}')\n")
    config = two_images_with(tmp_path, {"git": str(repo / "svc-a")},
                             {"git": str(repo / "svc-b")})
    plans = project.load(config, fetch=True).plans
    assert set(members(plans["svc-a"].context.files["src-archive"])) - {"src-archive-HEAD"} == {
        "src-archive-HEAD/svc-a.py"}
    assert set(members(plans["svc-b"].context.files["src-archive"])) - {"src-archive-HEAD"} == {
        "src-archive-HEAD/svc-b.py"}
    assert plans["svc-a"].sources.key != plans["svc-b"].sources.key


def test_two_refs_at_one_commit_are_archived_under_their_own_names(tmp_path: Path,
                                                                   repo: Path) -> None:
    git(repo, "tag", "v1")  # main and v1 name one commit
    config = two_images_with(tmp_path, {"git": str(repo), "ref": "main"},
                             {"git": str(repo), "ref": "v1"})
    plans = project.load(config, fetch=True).plans
    assert "src-archive-main/README" in members(plans["svc-a"].context.files["src-archive"])
    assert "src-archive-v1/README" in members(plans["svc-b"].context.files["src-archive"])


def pbr_project(path: Path) -> Path:
    """A project versioned by pbr, tagged 1.2.3, as OpenStack's are."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "setup.cfg").write_text("[metadata]\nname = demo\n\n[files]\npackages = demo\n")
    (path / "setup.py").write_text("import setuptools\n"
                                   "setuptools.setup(setup_requires=['pbr'], pbr=True)\n")
    (path / "demo").mkdir()
    (path / "demo" / "__init__.py").write_text("")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "one")
    git(path, "tag", "-a", "1.2.3", "-m", "1.2.3")
    return path


def pbr_version_of(archive: Path, tmp_path: Path, without: str = "") -> str:
    """The version pbr (this venv's, with its setuptools) finds in the unpacked archive,
    as `pip install --no-build-isolation .` asks it: no network, no PBR_VERSION; or the
    end of its error."""
    import sys

    unpacked = tmp_path / "unpacked"
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="tar")
    (top,) = unpacked.iterdir()
    if without:
        (top / without).unlink()
    env = {k: v for k, v in os.environ.items() if k not in ("PBR_VERSION", "OSLO_PACKAGE_VERSION")}
    done = subprocess.run([sys.executable, "setup.py", "-q", "--version"], cwd=top, env=env,
                          capture_output=True, text=True)
    shutil.rmtree(unpacked)
    return done.stdout.strip().splitlines()[-1] if done.returncode == 0 else \
        done.stderr.strip().splitlines()[-1]


def test_a_git_source_of_a_pbr_project_installs_with_the_tag_s_version(tmp_path: Path) -> None:
    upstream = pbr_project(tmp_path / "upstream")
    checkout = tmp_path / "demo"
    subprocess.run(["git", "clone", "-q", str(upstream), str(checkout)], check=True)
    config = make_tree(tmp_path, {"git": str(checkout), "ref": "1.2.3"})
    archive = project.load(config, fetch=True).plans["app"].context.files["app-archive"]
    assert members(archive)["app-archive-1.2.3/PKG-INFO"] == \
        b"Metadata-Version: 1.1\nName: demo\nVersion: 1.2.3\n"
    assert not any("/.git" in name for name in members(archive))
    assert pbr_version_of(archive, tmp_path) == "1.2.3"
    assert "Versioning for this project requires" in pbr_version_of(  # what it was before
        archive, tmp_path, without="PKG-INFO")

    before = digests(config)  # a gc or a fetch that moves nothing rebuilds nothing
    git(checkout, "gc", "-q", "--aggressive", "--prune=now")
    git(checkout, "fetch", "-q", "origin")
    git(checkout, "status")
    assert digests(config) == before
    assert members(project.load(config, fetch=True).plans["app"].context.files[
        "app-archive"]) == members(archive)

    commit(upstream, "demo/more.py", "# more\n")  # a new commit, fetched: main moves
    config = make_tree(tmp_path, {"git": str(checkout), "ref": "origin/main"})
    main_before = digests(config)
    git(checkout, "fetch", "-q", "origin")
    after = digests(config)
    assert {name for name in after if after[name] != main_before[name]} == {"app"}
    archive = project.load(config, fetch=True).plans["app"].context.files["app-archive"]
    assert b"Version: 1.2.4.dev1\n" in members(archive)["app-archive-origin-main/PKG-INFO"]


def test_a_local_checkout_is_archived_as_git_would_take_it(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    checkout = pbr_project(tmp_path / "upstream")
    (checkout / ".gitignore").write_text(".tox/\n")
    (checkout / ".tox").mkdir()
    (checkout / ".tox" / "huge").write_text("a virtualenv\n")
    (checkout / "new.py").write_text("# untracked, not ignored\n")
    config = make_tree(tmp_path, {"local": str(checkout)})
    archive = project.load(config, fetch=True).plans["app"].context.files["app-archive"]
    assert sorted(members(archive)) == [
        "upstream", "upstream/.gitignore", "upstream/PKG-INFO", "upstream/demo",
        "upstream/demo/__init__.py", "upstream/new.py", "upstream/setup.cfg",
        "upstream/setup.py"]
    assert members(archive)["upstream/PKG-INFO"].endswith(b"Version: 1.2.3\n")
    assert pbr_version_of(archive, tmp_path) == "1.2.3"

    context = project.load(config).plans["app"].context  # the archive's digest, as hashed
    assert context.digests["app-archive"] == replace(context, digests={}).file_digests()[
        "app-archive"]
    before = digests(config)
    opened: list[Path] = []
    real_open = Path.open
    monkeypatch.setattr(Path, "open", lambda self, *a, **k: (opened.append(self),
                                                             real_open(self, *a, **k))[1])
    os.utime(checkout / "setup.py")  # touch, then what git status, gc, fetch write
    git(checkout, "status")
    git(checkout, "gc", "-q", "--prune=now")
    git(checkout, "fetch", "-q", str(checkout))
    opened.clear()
    assert digests(config) == before
    read = {p.relative_to(checkout) for p in opened if checkout in p.parents}
    assert Path("setup.py") in read  # touched: read again (pbr reads setup.cfg too)
    assert not read & {Path("demo/__init__.py"), Path("new.py"), Path(".gitignore")}
    assert archive not in opened  # nor the archive, to key it

    (checkout / "demo" / "__init__.py").write_text("VALUE = 2\n")  # an edit of a tracked file
    after = digests(config)
    assert {name for name in after if after[name] != before[name]} == {"app"}


def test_a_plain_folder_follows_its_dockerignore_and_a_link_to_it_is_a_folder(
        tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    (folder / ".tox" / "lib").mkdir(parents=True)
    (folder / ".tox" / "lib" / "big").write_text("ignored\n")
    (folder / "src").mkdir()
    (folder / "src" / "a.py").write_text("a\n")
    (folder / "src" / "a.pyc").write_text("compiled\n")
    (folder / "src" / "keep.pyc").write_text("kept\n")
    (folder / ".dockerignore").write_text("# comment\n.tox\n**/*.pyc\n!src/keep.pyc\n")
    (tmp_path / "link").symlink_to(folder)
    config = make_tree(tmp_path, {"local": "link"})
    archive = project.load(config, fetch=True).plans["app"].context.files["app-archive"]
    with tarfile.open(archive) as tar:
        assert [(m.name, m.isdir()) for m in tar] == [
            ("link", True), ("link/.dockerignore", False), ("link/src", True),
            ("link/src/a.py", False), ("link/src/keep.pyc", False)]


def test_commands_that_build_nothing_archive_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "checkout"
    folder.mkdir()
    with (folder / "big").open("wb") as big:  # 1 GiB (sparse: no disk)
        big.truncate(1024 ** 3)
    config = make_tree(tmp_path, {"local": str(folder)})
    context = project.load(config).plans["app"].context  # as list, status, graph load it
    assert context.fetches == {"app-archive": f"archive {folder}"}
    assert not (tmp_path / "build" / "sources").exists()


def test_a_files_entry_and_a_source_archive_with_one_context_path_is_an_error(
        tmp_path: Path) -> None:
    (tmp_path / "other.tar").write_text("x\n")
    config = make_tree(tmp_path, {"url": "file:other.tar"})
    data = yaml.safe_load(config.read_text())
    data["images"]["app"]["files"] = {"app-archive": "other.tar"}
    config.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError) as info:
        project.load(config)
    assert "'app-archive' is both a file of the context and the archive of source 'app'" \
        in info.value.problem
    assert info.value.image == "app"
