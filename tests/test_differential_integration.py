"""buildah is the oracle: after every edit of one input, the image imagebake's incremental
build gives (a user's `doit build`, in the storage its earlier builds left) must hold what
a clean `buildah bud --no-cache` of the same inputs in a fresh storage holds: the same
files (mode and bytes), the same config (Env, Cmd, Entrypoint, Labels, User, WorkingDir),
and, buildah being reproducible here (OCI, `--timestamp 0`, no identity label, one build
at a time), the same image ID. (buildah 1.28 is not reproducible for builds that run at
once on one storage: a step one build takes from the cache may be an image another build
has just committed under a temporary name, `<hex>-tmp`, and the step's history names it
so. Seen here with `jobs: 8`; the files and config still agree.)

The oracle reads the inputs itself, as the README says a build reads them: images.yaml,
the template's folder (every file of it) with `{{ parent_image }}` as the only template
text, `files:`, `sources:` (archived as kolla-build does), args, labels (the last step
the README describes) and volumes. It
takes one thing from imagebake's report: the key of an image's parent, which spells the
child's FROM name (buildah writes that name into the child's history, so the ID depends
on it).

The fixed corpus (CASES) runs in the default suite, in one tree: each case is an image
(or a few) whose inputs are edited once per round, all cases' edits in the same round.
Trees made from a seed (`random.Random(seed)`) follow; the seeds beyond the first are
marked `real`."""

from __future__ import annotations

import functools
import http.server
import random
import shutil
import subprocess
import tarfile
import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import rootfs
import yaml
from conftest import Tree, make_tree, unmount_under

pytestmark = pytest.mark.integration

BB = "localhost/bb:1"  # every root's base: busybox
BUILD = ["--layers", "--format", "oci", "--identity-label=false", "--timestamp", "0",
         "--isolation", "chroot", "--pull=never"]
PARENT = "{{ parent_image }}"
KEY_NAME = "localhost/imagebake/{name}:ib-{key}"  # what a child's FROM names


@dataclass
class Case:
    """One image of the corpus: its template folder's files (the Dockerfile under
    "Dockerfile"), its images.yaml entry, and its edits (one per round, each of one input;
    `None`: no edit that round)."""

    name: str
    files: dict[str, str]
    entry: dict[str, Any] = field(default_factory=dict)
    edits: list[Callable[[World], str] | None] = field(default_factory=list)
    refusal: str | None = None  # an error that says this, instead of an image, is right


@dataclass
class External:
    """An image outside the tree (a base, a `COPY --from` image), built by plain buildah
    in imagebake's storage and copied into the oracle's."""

    name: str
    files: dict[str, str]
    fmt: str = "oci"


class World:
    """What the inputs are now: the tree, the external images, the served files."""

    def __init__(self, tree: Tree, tmp: Path) -> None:
        self.tree, self.tmp = tree, tmp
        tree.settings(jobs=1)  # one build at a time: see the module's docstring
        self.externals: dict[str, External] = {}
        self.served = tmp / "served"
        self.served.mkdir()
        handler = functools.partial(_QuietHandler, directory=str(self.served))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.external(External(BB, {"Dockerfile": "FROM scratch\nCOPY busybox /bin/busybox\n"
                                    'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'}))

    def folder(self, case: str) -> Path:
        return self.tree.root / "templates" / case

    def write(self, case: str, inner: str, text: str) -> str:
        path = self.folder(case) / inner
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return f"{case}: wrote {inner}: {text!r}"

    def entry(self, case: str, change: Callable[[dict[str, Any]], None], what: str) -> str:
        self.tree.edit_yaml(lambda data: change(data["images"][case]))
        return f"{case}: images.yaml {what}"

    def external(self, image: External) -> str:
        self.externals[image.name] = image
        build_external(self.tree.global_args, image, self.tmp / "external")
        return f"external image {image.name} rebuilt: {image.files}"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def build_external(global_args: list[str], image: External, scratch: Path) -> None:
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    for inner, text in image.files.items():
        (scratch / inner).write_text(text)
    if image.name == BB:
        shutil.copy2("/bin/busybox", scratch / "busybox")
    options = [o if o != "oci" else image.fmt for o in BUILD]
    subprocess.run(["buildah", *global_args, "bud", *options, "--no-cache", "--tag",
                    image.name, str(scratch)], check=True, capture_output=True)


# --- the oracle ---------------------------------------------------------------------------

def storage_args(storage: Path) -> list[str]:
    return ["--root", str(storage / "root"), "--runroot", str(storage / "run"),
            "--storage-driver", "overlay"]


def oracle_build(world: World, keys: dict[str, str], storage: Path) -> dict[str, str]:
    """Each image built by `buildah bud --no-cache` in a fresh storage, in images.yaml's
    order (parents first), as images.yaml and the template folders say now. Returns
    name -> image ID (or the error buildah gave)."""
    global_args = storage_args(storage)
    fresh = f"containers-storage:[overlay@{storage / 'root'}+{storage / 'run'}]"
    for name in world.externals:  # as they are, as a registry would give them
        subprocess.run(["buildah", *world.tree.global_args, "push", name, fresh + name],
                       check=True, capture_output=True)
    data = yaml.safe_load(world.tree.config.read_text())
    settings = data.get("settings") or {}
    built = {}
    for name, entry in data["images"].items():
        entry = entry or {}
        context = storage / "contexts" / name
        shutil.copytree(world.folder(name), context, ignore=shutil.ignore_patterns("*.j2"))
        text = (world.folder(name) / "Dockerfile.j2").read_text()
        parent = entry.get("parent")
        if parent:
            text = text.replace(PARENT, KEY_NAME.format(name=parent, key=keys[parent][:32]))
        labels = {**settings.get("labels", {}), **entry.get("labels", {})}
        # as the README says: a last step, the labels (`LABEL "k"="v" ...`, sorted) or
        last = ("LABEL " + " ".join(f'"{k}"="{v}"' for k, v in sorted(labels.items()))
                if labels else "ARG IMAGEBAKE_END")  # (without labels)
        text = with_last_step(text, last, entry.get("target"))
        dockerfile = storage / "dockerfiles" / name  # not in the context: no COPY sees it
        dockerfile.parent.mkdir(parents=True, exist_ok=True)
        dockerfile.write_text(text + "\n")
        for inner, source in (entry.get("files") or {}).items():
            shutil.copy2(world.tree.root / source, context / inner)
        for source_name, source in (entry.get("sources") or {}).items():
            oracle_archive(world, source_name, source, context / f"{source_name}-archive")
        argv = ["buildah", *global_args, "bud", *BUILD, "--no-cache", "--file",
                str(dockerfile)]
        args = {**settings.get("args", {}), **entry.get("args", {})}
        argv += [a for k, v in sorted(args.items()) for a in ("--build-arg", f"{k}={v}")]
        argv += [a for volume in entry.get("volumes", []) for a in ("--volume", volume)]
        argv += ["--target", entry["target"]] if entry.get("target") else []
        argv += [a for context_name, folder in (entry.get("contexts") or {}).items()
                 for a in ("--build-context", f"{context_name}={world.tree.root / folder}")]
        result = oracle_bud([*argv, str(context)])
        built[name] = (f"sha256:{result.stdout.strip().splitlines()[-1]}"
                       if result.returncode == 0
                       else f"oracle failed: {result.stderr.strip()[-400:]}")
        # a child's FROM names its parent by the key imagebake gave it: name it so here
        if result.returncode == 0 and name in keys:
            subprocess.run(["buildah", *global_args, "tag", built[name],
                            KEY_NAME.format(name=name, key=keys[name][:32])], check=True)
    return built


def with_last_step(text: str, last: str, target: str | None) -> str:
    """The text with its last step at the end of the target stage (before the FROM that
    follows `FROM ... AS <target>`), else at the end."""
    lines = text.splitlines(keepends=True)
    froms = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
    ends = [after for at, after in zip(froms, froms[1:], strict=False)
            if target and lines[at].rstrip().endswith(f" AS {target}")]
    if ends:
        return "".join([*lines[:ends[0]], f"{last}\n", *lines[ends[0]:]])
    return text + last


def oracle_archive(world: World, name: str, source: dict[str, str], target: Path) -> None:
    """`<name>-archive` as the README says kolla-build makes it: a folder as a tar under
    its own name (sorted, owner root, mtime 0, so that its bytes follow its content), a
    git repository's ref by `git archive` under `<name>-archive-<ref>/`, a tarball as it
    is."""
    if "local" in source:
        folder = world.tree.root / source["local"]
        with tarfile.open(target, "w", format=tarfile.GNU_FORMAT) as tar:
            for path in [folder, *sorted(folder.rglob("*"))]:
                info = tar.gettarinfo(path, f"{folder.name}/{path.relative_to(folder)}"
                                      .removesuffix("/."))
                info.uid = info.gid = info.mtime = 0
                info.uname = info.gname = "root"
                if path.is_file():
                    with path.open("rb") as data:
                        tar.addfile(info, data)
                else:
                    tar.addfile(info)
    elif "git" in source:
        ref = source["ref"]
        data = subprocess.run(["git", "-C", str(world.tree.root / source["git"]), "archive",
                               "--format=tar", f"--prefix={name}-archive-{ref}/", ref],
                              check=True, capture_output=True).stdout
        target.write_bytes(data)
    else:
        shutil.copy2(source["url"].removeprefix("file://"), target)


# What buildah 1.28's chroot isolation sometimes says when a RUN step cannot start under
# load (runc's cloned-binary memfd): the environment failed, not the build.
TRANSIENT = "sealing memfd copy: Device or resource busy"


def oracle_bud(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """The oracle's clean build, tried once more when buildah could not start a RUN step
    (TRANSIENT): the same inputs and flags, so nothing it compares changes."""
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0 and TRANSIENT in result.stderr:
        result = subprocess.run(argv, capture_output=True, text=True)
    return result


def differences(world: World, ours: dict[str, Any], oracle_args: list[str],
                theirs: str) -> list[str]:
    """How imagebake's image differs from the oracle's: ID, files, config."""
    if ours.get("status") not in ("built", "up-to-date"):
        return [f"imagebake: {ours.get('status')}: {ours.get('error')}"]
    if theirs.startswith("oracle failed"):
        return [theirs]
    found = []
    if ours["id"] != theirs:
        found.append(f"image ID {ours['id'][:19]} (imagebake) != {theirs[:19]} (buildah): "
                     + rootfs.why_ids_differ(world.tree.global_args, ours["id"],
                                             oracle_args, theirs))
    mine = rootfs.files(world.tree.global_args, ours["id"])
    other = rootfs.files(oracle_args, theirs)
    for path in sorted(mine.keys() | other.keys()):
        if mine.get(path) != other.get(path):
            found.append(f"{path}: {mine.get(path)} (imagebake) != {other.get(path)} (buildah)")
    mine_config = rootfs.config(world.tree.global_args, ours["id"])
    other_config = rootfs.config(oracle_args, theirs)
    found += [f"config {name}: {mine_config[name]} (imagebake) != {other_config[name]} "
              f"(buildah)" for name in rootfs.CONFIG_FIELDS
              if mine_config[name] != other_config[name]]
    return found


def run_rounds(world: World, cases: list[Case], rounds: int) -> dict[str, list[str]]:
    """Build the cases' tree, then edit and build again `rounds` times; after each build,
    every image against the oracle. Returns case -> what differed in which round (after
    which edit of its own), empty when every round agreed."""
    tree = world.tree
    for case in cases:
        for inner, text in case.files.items():
            world.write(case.name, "Dockerfile.j2" if inner == "Dockerfile" else inner, text)
    tree.edit_yaml(lambda data: data.update(images={c.name: c.entry for c in cases}))
    found: dict[str, list[str]] = {case.name: [] for case in cases}
    edited = dict.fromkeys(found, "none")
    for number in range(rounds + 1):
        for case in cases if number else []:
            edit = case.edits[number - 1] if len(case.edits) >= number else None
            edited[case.name] = edit(world) if edit is not None else "none"
        run = tree.doit("build", check=False, timeout=900)
        said = run.stdout + run.stderr
        if not (tree.root / "build" / "report.json").exists():  # refused as a whole
            assert all(case.refusal and case.refusal in said for case in cases), said
            return found
        report = tree.report()["images"]
        keys = {name: entry["key"] for name, entry in report.items() if entry.get("key")}
        storage = world.tmp / f"oracle-{number}"
        theirs = oracle_build(world, keys, storage)
        for case in cases:
            ours = report.get(case.name, {})
            if case.refusal and ours.get("status") == "failed" and case.refusal in (
                    (ours.get("error") or "") + said):
                continue
            said = differences(world, ours, storage_args(storage), theirs[case.name])
            if said:
                found[case.name].append(f"round {number} (its edit: {edited[case.name]}): "
                                        + "; ".join(said[:8]))
        subprocess.run(["buildah", *storage_args(storage), "rm", "--all"],
                       capture_output=True)
        unmount_under(storage)
        shutil.rmtree(storage, ignore_errors=True)
    return found


# --- the fixed corpus ---------------------------------------------------------------------

def root(text: str) -> str:
    return f"FROM {BB}\n" + textwrap.dedent(text)


def child(text: str) -> str:
    return f"FROM {PARENT}\n" + textwrap.dedent(text)


def write(case: str, inner: str, text: str) -> Callable[[World], str]:
    return lambda world: world.write(case, inner, text)


def ext(name: str, content: str, fmt: str = "oci", extra: str = "") -> External:
    return External(name, {"Dockerfile": f"FROM {BB}\nCOPY x /x\n{extra}", "x": content}, fmt)


def rebuild(image: External) -> Callable[[World], str]:
    return lambda world: world.external(image)


def git_commit(world: World, folder: str, text: str) -> str:
    repo = world.tree.root / folder
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    if not repo.exists():
        repo.mkdir()
        subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "README").write_text(text)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", text], check=True)
    return f"git repository {folder}: committed README {text!r}"


def tarball(world: World, name: str, text: str) -> str:
    folder = world.tmp / "tarball-src" / "data"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "d").write_text(text)
    with tarfile.open(world.tmp / name, "w") as tar:
        tar.add(folder, arcname="data")
    return f"tarball {name}: d = {text!r}"


def cases_of(world: World) -> list[Case]:
    """The issue's nine cases and more features, each with its single-input edits."""
    world.external(ext("localhost/ext:1", "ext one"))
    world.external(ext("localhost/defbase:1", "defbase one"))
    world.external(ext("localhost/realbase:1", "realbase one"))
    world.external(ext("localhost/onb:1", "onb", "docker", "ONBUILD COPY secret /secret\n"))
    (world.tmp / "volume").mkdir()
    (world.tmp / "volume" / "v").write_text("volume one")
    git_commit(world, "repo", "commit one")
    tarball(world, "d.tar", "tarball one")
    local = world.tree.root / "plug"
    local.mkdir()
    (local / "p").write_text("local one")
    (world.tree.root / "extra").mkdir()
    (world.tree.root / "extra" / "n").write_text("named one")
    return [
        # buildah's cache does not look at what a RUN mounts
        Case("bind", {"Dockerfile": root("RUN --mount=type=bind,source=s,target=/m cp /m /f\n"),
                      "s": "one"},
             edits=[write("bind", "s", "two"), write("bind", "s", "three")]),
        Case("bind-stage", {"Dockerfile": root(f"""\
            COPY s /s
            FROM {BB}
            RUN --mount=type=bind,from=0,source=/s,target=/m cp /m /f
            """), "s": "one"}, edits=[write("bind-stage", "s", "two")]),
        # images the build reads besides its base
        Case("bind-image", {"Dockerfile": root(
            "RUN --mount=type=bind,from=localhost/ext:1,source=/x,target=/m cp /m /f\n")},
             edits=[rebuild(ext("localhost/ext:1", "ext two"))]),
        Case("copy-image", {"Dockerfile": root("COPY --from=localhost/ext:1 /x /f\n")}),
        Case("stage-image", {"Dockerfile": root("""\
            FROM localhost/ext:1 AS x
            FROM localhost/bb:1
            COPY --from=x /x /f
            """)}),
        Case("from-arg", {"Dockerfile": "ARG BASE=localhost/defbase:1\nFROM ${BASE}\n"
                                        "RUN cp /x /f\n"},
             entry={"args": {"BASE": "localhost/realbase:1"}},
             edits=[rebuild(ext("localhost/realbase:1", "realbase two"))]),
        # what the Dockerfile says, read as buildah reads it
        Case("escape", {"Dockerfile": "# escape=`\n" + root("""\
            RUN echo run > /run-step \\
            COPY secret /secret
            """), "secret": "one"}, edits=[write("escape", "secret", "two")]),
        Case("onbuild", {"Dockerfile": "FROM localhost/onb:1\nRUN true\n", "secret": "one"},
             edits=[write("onbuild", "secret", "two")]),
        # more features: each must agree, edited or not
        Case("multi-stage", {"Dockerfile": root(f"""\
            COPY a /a
            RUN cat /a /a > /b
            FROM {BB}
            COPY --from=0 /b /b
            COPY c /c
            """), "a": "a1", "c": "c1"},
             edits=[write("multi-stage", "a", "a2"), write("multi-stage", "c", "c2")]),
        Case("substitution", {"Dockerfile": root("""\
            ARG F=a
            ARG DIR=/opt
            ENV E=${F}-env WHERE=$DIR
            COPY ${F} ${WHERE}/
            WORKDIR ${WHERE}
            RUN echo "$E" > e
            USER 1000:1000
            ENTRYPOINT ["/bin/sh", "-c"]
            CMD ["cat ${WHERE}/e"]
            """), "a": "a1", "b": "b1"}, entry={"args": {"F": "a"}},
             edits=[write("substitution", "a", "a2"),
                    lambda w: w.entry("substitution", lambda e: e.update(args={"F": "b"}),
                                      "args F=b")]),
        Case("globs", {"Dockerfile": root("COPY d/*.txt d/[ab]?.md /d/\n"),
                       "d/1.txt": "1", "d/a1.md": "a", "d/c1.md": "c"},
             edits=[write("globs", "d/2.txt", "2"), write("globs", "d/c1.md", "c2")]),
        Case("ignore", {"Dockerfile": root("COPY . /c\n"), "a": "a", "b": "b",
                        ".dockerignore": "b\n"},
             edits=[write("ignore", "b", "b2"), write("ignore", ".dockerignore", "a\n")]),
        Case("labels-args", {"Dockerfile": root("ARG A=0\nRUN echo $A > /a\nLABEL l=$A\n")},
             entry={"args": {"A": "1"}, "labels": {"tier": "x"}},
             edits=[lambda w: w.entry("labels-args", lambda e: e.update(
                 labels={"tier": "y"}), "labels tier=y"),
                 lambda w: w.entry("labels-args", lambda e: e.update(args={"A": "2"}),
                                   "args A=2")]),
        Case("comment-only", {"Dockerfile": root("# a comment\nCOPY s /s\n"), "s": "s",
                              "unread": "u"},
             edits=[write("comment-only", "Dockerfile.j2", root("# other\nCOPY s /s\n")),
                    write("comment-only", "unread", "u2")]),
        Case("copy-deleted", {"Dockerfile": root("COPY s /s\nRUN rm /s\n"), "s": "one"},
             edits=[write("copy-deleted", "s", "two")]),
        Case("parent", {"Dockerfile": root("COPY p /p\nENV FROM_PARENT=1\n"), "p": "p1"},
             edits=[write("parent", "p", "p2")]),
        Case("child", {"Dockerfile": child("COPY c /c\nRUN cat /p /c > /f\n"), "c": "c1"},
             entry={"parent": "parent"}, edits=[None, write("child", "c", "c2")]),
        Case("volume", {"Dockerfile": root("LABEL v=1\nRUN cp /v/v /f\n")},
             entry={"volumes": [f"{world.tmp / 'volume'}:/v:ro"]},
             edits=[lambda w: (w.tmp / "volume" / "v").write_text("volume two")
                    and "volume v: two"]),
        # sources: a file:// tarball, a local folder, a git repository
        Case("srcs", {"Dockerfile": root("""\
            ADD data-archive /data/
            ADD plug-archive /plug/
            ADD repo-archive /repo/
            """)},
             entry={"sources": {"data": {"url": f"file://{world.tmp / 'd.tar'}"},
                                "plug": {"local": "plug"},
                                "repo": {"git": "repo", "ref": "main"}}},
             edits=[lambda w: tarball(w, "d.tar", "tarball two"),
                    lambda w: (w.tree.root / "plug" / "p").write_text("local two")
                    and "local plug/p: two"]),
        Case("srcs-git", {"Dockerfile": root("ADD repo-archive /repo/\n")},
             entry={"sources": {"repo": {"git": "repo", "ref": "main"}}},
             edits=[lambda w: git_commit(w, "repo", "commit two")]),
        # images.yaml's target: (the stage built, and the stages it reads) and contexts:
        Case("target", {"Dockerfile": root(f"""\
            COPY a /a
            FROM {BB} AS tools
            COPY --from=0 /a /a
            COPY t /t
            FROM {BB} AS last
            COPY l /l
            """), "a": "a1", "t": "t1", "l": "l1"},
             entry={"target": "tools", "labels": {"stage": "tools"}},
             edits=[write("target", "a", "a2"),
                    lambda w: w.entry("target", lambda e: e.update(target="last"),
                                      "target: last")]),
        Case("named-context", {"Dockerfile": root(
            "COPY --from=extra n /n\n"
            "RUN --mount=type=bind,from=extra,source=n,target=/m cp /m /f\n")},
             entry={"contexts": {"extra": "extra"}},
             edits=[lambda w: (w.tree.root / "extra" / "n").write_text("named two")
                    and "extra/n: named two"]),
    ]


# The corpus's images, in its order (the names parametrize the test before it is built).
CORPUS = ("bind", "bind-stage", "bind-image", "copy-image", "stage-image", "from-arg",
          "escape", "onbuild", "multi-stage", "substitution", "globs", "ignore",
          "labels-args", "comment-only", "copy-deleted", "parent", "child", "volume",
          "srcs", "srcs-git", "target", "named-context")
@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[str]]]:
    """The corpus built, edited and built twice, each build against the oracle."""
    tmp = tmp_path_factory.mktemp("differential")
    world = World(make_tree(tmp), _made(tmp / "world"))
    try:
        cases = cases_of(world)
        assert tuple(case.name for case in cases) == CORPUS
        yield run_rounds(world, cases, rounds=2)
    finally:
        world.server.shutdown()
        unmount_under(tmp)


def _made(folder: Path) -> Path:
    folder.mkdir()
    return folder


@pytest.mark.real  # about 90 s; seed 0 below stays in the default suite
@pytest.mark.parametrize("case", CORPUS)
def test_the_corpus_agrees_with_a_clean_buildah_build(corpus_run: dict[str, list[str]],
                                                       case: str) -> None:
    assert not corpus_run[case], f"{case}:\n  " + "\n  ".join(corpus_run[case])


def test_an_add_of_a_url_is_keyed_by_its_content_or_refused(tmp_path: Path) -> None:
    """The served content changes: the image follows it, or no image is built and the
    error points at `sources:`."""
    world = World(make_tree(tmp_path), _made(tmp_path / "world"))
    (world.served / "u").write_text("served one")
    case = Case("add-url", {"Dockerfile": root(f"ADD {world.url}/u /f\n")},
                edits=[lambda w: (w.served / "u").write_text("served two") and "u: two"],
                refusal="sources:")
    try:
        found = run_rounds(world, [case], rounds=1)
    finally:
        world.server.shutdown()
        unmount_under(tmp_path)
    assert not found["add-url"], "\n".join(found["add-url"])


# --- trees made from a seed ---------------------------------------------------------------

WORDS = ("alpha", "beta", "gamma", "delta", "omega")


def generated_cases(rng: random.Random, images: int, rounds: int) -> list[Case]:
    """`images` images (each a root on busybox or a child of an earlier one) of random
    steps over their own files, args and labels, each with `rounds` random single-input
    edits (or none)."""
    cases: list[Case] = []
    for number in range(images):
        name = f"g{number}"
        parent = rng.choice([None, *[c.name for c in cases]])
        files = {f"f{i}": rng.choice(WORDS) for i in range(3)}
        files.update({"d/x.txt": rng.choice(WORDS), "unread": rng.choice(WORDS)})
        entry: dict[str, Any] = {"parent": parent} if parent else {}
        steps = [_step(rng, i, entry) for i in range(rng.randint(2, 5))]
        files["Dockerfile"] = (f"FROM {PARENT if parent else BB}\nRUN mkdir -p /g/d\n"
                               + "".join(steps))
        cases.append(Case(name, files, entry))
    for case in cases:
        case.edits = [rng.choice([None, *_edits(case)]) for _ in range(rounds)]
    return cases


def _step(rng: random.Random, i: int, entry: dict[str, Any]) -> str:
    """One Dockerfile step reading one input."""
    kind = rng.choice(("copy", "bind", "echo", "env", "arg", "label", "glob", "workdir"))
    word = rng.choice(WORDS)
    if kind == "arg":
        entry.setdefault("args", {})[f"A{i}"] = word
        return f"ARG A{i}\nRUN echo $A{i} >> /g/log\n"
    if kind == "label":
        entry.setdefault("labels", {})[f"l{i}"] = word
        return f"RUN echo {word} >> /g/log\n"
    return {"copy": f"COPY f{i % 3} /g/f{i}\n",
            "bind": f"RUN --mount=type=bind,source=f{i % 3},target=/m cat /m >> /g/log\n",
            "echo": f"RUN echo {word} >> /g/log\n",
            "env": f"ENV E{i}={word}\n",
            "glob": "COPY d/*.txt /g/d/\n",
            "workdir": f"WORKDIR /w{i}\n"}[kind]


def _edits(case: Case) -> list[Callable[[World], str]]:
    """Every single-input edit of one generated image."""
    name, found = case.name, []
    for inner in ("f0", "f1", "f2", "unread", "d/x.txt", "d/new.txt"):
        found.append(functools.partial(World.write, case=name, inner=inner,
                                       text=f"{inner} edited"))
    for field_name in ("args", "labels"):
        for key in case.entry.get(field_name, {}):
            found.append(functools.partial(_set, name=name, field_name=field_name, key=key))
    found.append(functools.partial(World.write, case=name, inner="Dockerfile.j2",
                                   text=case.files["Dockerfile"] + "RUN echo added >> /g/log\n"))
    return found


def _set(world: World, name: str, field_name: str, key: str) -> str:
    return world.entry(name, lambda entry: entry[field_name].update({key: "edited"}),
                       f"{field_name} {key}=edited")


SEEDS = [pytest.param(seed, marks=[pytest.mark.real] if seed else [])
         for seed in range(6)]


@pytest.mark.parametrize("seed", SEEDS)
def test_trees_from_a_seed_agree_with_a_clean_buildah_build(tmp_path: Path,
                                                             seed: int) -> None:
    world = World(make_tree(tmp_path), _made(tmp_path / "world"))
    try:
        cases = generated_cases(random.Random(seed), images=3 if seed == 0 else 5,
                                rounds=2 if seed == 0 else 4)
        found = run_rounds(world, cases, rounds=len(cases[0].edits))
    finally:
        world.server.shutdown()
        unmount_under(tmp_path)
    wrong = {name: said for name, said in found.items() if said}
    assert not wrong, f"seed {seed}:\n" + "\n".join(
        f"{case.name} {case.entry}:\n{textwrap.indent(case.files['Dockerfile'], '    ')}"
        f"  " + "\n  ".join(wrong.get(case.name, ["agreed"])) for case in cases)
