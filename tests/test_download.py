"""`url:` sources from a loopback HTTP server started here, which may send one byte at a
time: a download has one deadline and a size limit; list, status and the other commands
that build nothing download nothing; Ctrl-C while a build loads exits 130 in one line."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from conftest import Tree

from buildlib import project, sources

TRICKLE_SECONDS = 30  # the slow server stops by itself after this long
TRICKLE_STEP = 0.5  # ... sending one byte this often meanwhile
BIG_BYTES = 64 * 1024


class Handler(BaseHTTPRequestHandler):
    server: Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.server.asked.set()
        self.server.paths.append(self.path)
        try:
            if self.path == "/slow.tar":
                self._trickle()
            elif self.path in ("/big.tar", "/big-unsized.tar"):
                self._big(sized=self.path == "/big.tar")
            elif self.path == "/short.tar":  # says 10240 bytes, sends 5120, closes
                self.send_response(200)
                self.send_header("Content-Length", "10240")
                self.end_headers()
                self.wfile.write(b"s" * 5120)
                self.wfile.flush()
                self.close_connection = True
            elif self.path == "/served.tar":  # what the test serves now
                self.send_response(200)
                self.send_header("Content-Length", str(len(self.server.served)))
                self.end_headers()
                self.wfile.write(self.server.served)
            else:
                self.send_error(404)
        except OSError:  # the client gave up
            pass

    def _trickle(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(10 ** 6))
        self.end_headers()
        ends = time.monotonic() + TRICKLE_SECONDS
        while time.monotonic() < ends and not self.server.stop.wait(TRICKLE_STEP):
            self.wfile.write(b"x")
            self.wfile.flush()

    def _big(self, sized: bool) -> None:
        self.send_response(200)
        if sized:
            self.send_header("Content-Length", str(BIG_BYTES))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"y" * BIG_BYTES)

    def log_message(self, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.stop, self.asked = threading.Event(), threading.Event()
        self.served = b""
        self.paths: list[str] = []  # asked for, in order

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


@pytest.fixture
def server() -> Iterator[Server]:
    served = Server()
    threading.Thread(target=served.serve_forever, daemon=True).start()
    yield served
    served.stop.set()
    served.shutdown()
    served.server_close()


def tree_with_url(tmp_path: Path, url: str, sha256: str | None = None) -> Path:
    for name, text in {"base": "FROM scratch\n",
                       "app": "FROM {{ parent_image }}\nADD app-archive /app\n"}.items():
        template = tmp_path / "templates" / name / "Dockerfile.j2"
        template.parent.mkdir(parents=True, exist_ok=True)
        template.write_text(text)
    declare_sha256(tmp_path / "images.yaml", url, sha256)
    return tmp_path / "images.yaml"


def declare_sha256(config: Path, url: str, sha256: str | None) -> None:
    source = {"url": url, **({"sha256": sha256} if sha256 else {})}
    config.write_text(yaml.safe_dump({"images": {
        "base": None, "app": {"parent": "base", "sources": {"app": source}}}}))


def failure_of(config: Path) -> str:
    """Why the app's source failed (a failed source fails its image, not the load)."""
    context = project.load(config, fetch=True).plans["app"].context
    assert "app-archive" not in context.files
    return context.failures["app-archive"]


def left_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_download_has_one_deadline_however_often_bytes_come(
        tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "FETCH_DEADLINE", 1.5)
    config = tree_with_url(tmp_path, server.url("/slow.tar"))
    failure = failure_of(config)
    assert "cannot download" in failure and "not done within 1.5 s" in failure
    assert left_in(tmp_path / "build" / "sources") == []  # nothing half-written


@pytest.mark.parametrize("path, said", [("/big.tar", f"it is {BIG_BYTES} bytes"),
                                        ("/big-unsized.tar", "more than the limit")])
def test_a_download_has_a_size_limit(tmp_path: Path, server: Server, path: str, said: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "MAX_DOWNLOAD_BYTES", 4096)
    config = tree_with_url(tmp_path, server.url(path))
    failure = failure_of(config)
    assert said in failure and "4096" in failure
    assert left_in(tmp_path / "build" / "sources") == []


def test_download_writes_the_file_whole_and_says_its_digest(tmp_path: Path,
                                                            server: Server) -> None:
    import hashlib

    target = tmp_path / "big.tar"
    digest = sources.download(server.url("/big-unsized.tar"), target, deadline=30)
    assert target.read_bytes() == b"y" * BIG_BYTES
    assert digest == hashlib.sha256(b"y" * BIG_BYTES).hexdigest()
    assert left_in(tmp_path) == ["big.tar"]


def slow_source(tree: Tree, server: Server) -> None:
    tree.edit("templates/cron/Dockerfile.j2", "{% block footer %}",
              "{% block footer %}\nADD cron-archive /cron-source")
    tree.edit_yaml(lambda d: d["images"]["cron"].update(
        sources={"cron": {"url": server.url("/slow.tar")}}))


@pytest.mark.integration
def test_commands_that_build_nothing_download_nothing(tree: Tree, server: Server) -> None:
    slow_source(tree, server)
    checkout = tree.root / "checkout"  # and archive no local folder
    checkout.mkdir()
    (checkout / "file").write_text("data\n")
    tree.edit("templates/multipathd/Dockerfile.j2", "{% block footer %}",
              "{% block footer %}\nADD m-archive /m-source")
    tree.edit_yaml(lambda d: d["images"]["multipathd"].update(
        sources={"m": {"local": "checkout"}}))
    listed = tree.doit("list", timeout=60)
    assert "build" in listed.stdout
    status = tree.doit("status", timeout=60)
    row = next(line for line in status.stdout.splitlines() if line.startswith("cron "))
    assert f"would fetch {server.url('/slow.tar')}, then build if it changed" in row
    assert "2 would first fetch or archive a source" in status.stdout
    tree.doit("graph", timeout=60)
    assert not server.asked.is_set()
    row = next(line for line in status.stdout.splitlines() if line.startswith("multipathd "))
    assert f"would archive {checkout}, then build if it changed" in row
    assert not (tree.root / "build" / "sources").exists()


@contextlib.contextmanager
def sigint_not_ignored() -> Iterator[None]:
    """A child started here gets SIGINT as a terminal's Ctrl-C finds it, not ignored: a
    test run started as a background job of a script ignores SIGINT, and so would every
    process it starts (the ignoring is inherited; a Python handler is not)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def signal_masks(pid: int) -> str:
    """A process's blocked, ignored and caught signals, as the kernel shows them."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return ", ".join(line for line in status if line.startswith(("SigBlk", "SigIgn", "SigCgt")))


@pytest.mark.integration
@pytest.mark.parametrize("sent, said", [
    (signal.SIGINT, "interrupted while loading the tree; nothing was built"),
    (signal.SIGTERM, "terminated while loading the tree (SIGTERM); nothing was built")])
def test_a_signal_while_a_build_downloads_ends_it_in_one_line(
        tree: Tree, server: Server, sent: signal.Signals, said: str) -> None:
    slow_source(tree, server)
    with sigint_not_ignored():
        build = subprocess.Popen(tree.argv("build"), cwd=tree.root,
                                 env={**tree.env, "PYTHONFAULTHANDLER": "1"},  # SIGABRT: stacks
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.asked.wait(30), "the build never asked for its source"
        masks = signal_masks(build.pid)
        build.send_signal(sent)
        out, err = build.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # where it is instead: every thread's stack
        build.send_signal(signal.SIGABRT)
        out, err = build.communicate(timeout=30)
        pytest.fail(f"the build went on after {sent.name} ({masks}):\n{err}")
    finally:
        if build.poll() is None:
            build.kill()
    assert build.returncode == 128 + sent
    assert err.strip() == said
    assert "Traceback" not in out + err
    assert left_in(tree.root / "build" / "sources") == []


def test_a_new_declared_sha256_is_checked_and_fetched_again(tmp_path: Path,
                                                           server: Server) -> None:
    """The cache holds what a URL served under a declared sha256: a new declaration is
    never answered by the old tarball (issue 28: the build kept the OLD tarball)."""
    import hashlib

    url = server.url("/served.tar")
    server.served = b"version 1\n"
    config = tree_with_url(tmp_path, url, hashlib.sha256(b"version 1\n").hexdigest().upper())
    archive = project.load(config, fetch=True).plans["app"].context.files["app-archive"]
    assert archive.read_bytes() == b"version 1\n"  # (an upper-case sha256 is the same)

    server.served = b"version 2\n"
    declare_sha256(config, url, hashlib.sha256(b"version 2\n").hexdigest())
    context = project.load(config).plans["app"].context  # a dry run: not here yet
    assert context.fetches == {"app-archive": url}
    context = project.load(config, fetch=True).plans["app"].context
    assert context.files["app-archive"].read_bytes() == b"version 2\n"

    declare_sha256(config, url, "deadbeef" * 8)  # served: version 2
    failure = failure_of(config)
    assert f"{url}: has sha256 {hashlib.sha256(b'version 2' + bytes([10])).hexdigest()}" \
        in failure
    assert "not the declared " + "deadbeef" * 8 in failure
    assert not any(p.name.endswith(".download") for p in (tmp_path / "build/sources").iterdir())


def test_a_download_cut_off_is_an_error_never_an_archive(tmp_path: Path,
                                                        server: Server) -> None:
    config = tree_with_url(tmp_path, server.url("/short.tar"))
    assert "cannot download it: cut off: 5120 of its 10240 bytes came" in failure_of(config)
    assert left_in(tmp_path / "build" / "sources") == []
    assert "cut off" in failure_of(config)  # asked again: nothing was kept


def test_a_relative_file_url_is_read_from_the_folder_of_images_yaml(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    tree = tmp_path / "tree"
    config = tree_with_url(tree, "file:v.tar")
    (tree / "v.tar").write_bytes(b"the tree's\n")
    declare_sha256(config, "file:v.tar", hashlib.sha256(b"the tree's\n").hexdigest())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "v.tar").write_bytes(b"another\n")
    monkeypatch.chdir(elsewhere)
    context = project.load(config, fetch=True).plans["app"].context
    assert context.files["app-archive"] == tree / "v.tar"
    assert context.file_digests()["app-archive"] == project.load(
        config).plans["app"].context.file_digests()["app-archive"]
    declare_sha256(config, "file:v.tar", hashlib.sha256(b"another\n").hexdigest())
    assert "has sha256" in failure_of(config)  # checked against the tree's file too


@pytest.mark.integration
def test_a_source_that_cannot_be_fetched_fails_only_the_images_that_need_it(
        tree: Tree, server: Server) -> None:
    missing = server.url("/missing.tar")
    tree.edit("templates/nova-base/Dockerfile.j2", "{% block install %}",
              "{% block install %}\nADD nova-base-archive /nova-base-source")
    tree.edit_yaml(lambda d: d["images"]["nova-base"].update(
        sources={"nova-base": {"url": missing}}))
    tree.edit_yaml(lambda d: d["images"]["multipathd"].update(  # excluded: never asked
        sources={"gone": {"url": server.url("/excluded.tar")}}))
    (tree.root / "folder").mkdir()  # and cron's source, a link to a folder, builds
    (tree.root / "folder" / "file").write_text("linked\n")
    (tree.root / "link").symlink_to(tree.root / "folder")
    tree.edit("templates/cron/Dockerfile.j2", "{% block footer %}",
              "{% block footer %}\nADD linked-archive /linked")
    tree.edit_yaml(lambda d: d["images"]["cron"].update(
        sources={"linked": {"local": "link"}}))
    result = tree.doit("build", "exclude=multipathd", check=False, timeout=600)
    assert result.returncode != 0
    statuses = tree.statuses()
    assert statuses.pop("nova-base") == "failed"
    assert statuses.pop("nova-api") == statuses.pop("nova-conductor") == "blocked"
    assert statuses.pop("multipathd") == "excluded"
    assert set(statuses.values()) == {"built"}, statuses
    assert server.paths == ["/missing.tar"]
    error = tree.report()["images"]["nova-base"]["error"]
    assert f"source nova-base: {missing}: cannot download it: HTTP Error 404" in error
    assert f"FAILED build nova-base: cannot build nova-base: source nova-base: {missing}" \
        in result.stdout + result.stderr
    container = tree.buildah("from", "localhost:5000/kolla/cron:latest").strip()
    assert tree.buildah("run", "--isolation", "chroot", container, "cat",
                        "/linked/link/file") == "linked\n"
