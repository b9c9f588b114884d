"""An image's `sources:` as kolla-build makes them: each archived into the build context as
`<name>-archive` (a local folder, a git repository at a ref, or a tarball URL).

Archives are written byte for byte the same for the same content (sorted entries, owner
root, mtime 0), so the context's digest, and with it the image's key, follows the content
and never a checkout's or download's time. Every archive's file name says what selects its
content (a download's URL and declared sha256, a commit, a folder's manifest), so a
changed declaration is never answered by an old archive.

Only a run that builds an image makes its sources (`fetching`): other commands use the
archives already here and say what a build would fetch or archive (`NotMade`). A source
that cannot be fetched, or is not what it declares, fails the images that need it
(`SourceFailed`), not the run.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import subprocess
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from buildlib import pbr_version
from buildlib.config import Config, Source
from buildlib.errors import InputError
from buildlib.tree_files import Entry, StatCache, folder_entries, write_tar

FETCH_DEADLINE = 600.0  # seconds for one whole download
READ_TIMEOUT = 60.0  # seconds a download may go without a byte (within the deadline)
MAX_DOWNLOAD_BYTES = 4 * 1024**3  # bytes one download may write
CHUNK_BYTES = 1024 * 1024
ARCHIVE_VERB = "archive "  # a NotMade that a build archives (others it fetches)

_fetching: contextvars.ContextVar[Collection[str] | bool] = contextvars.ContextVar(
    "fetching", default=False)


@contextlib.contextmanager
def fetching(allowed: Collection[str] | bool) -> Iterator[None]:
    """Whether loads in this block may make sources (download, clone, archive): True, or
    for these images (a run that builds them); otherwise a source whose archive is not
    here yet is one that a build would fetch or archive."""
    token = _fetching.set(allowed)
    try:
        yield
    finally:
        _fetching.reset(token)


def may_fetch(image: str) -> bool:
    allowed = _fetching.get()
    return allowed if isinstance(allowed, bool) else image in allowed


class NotMade(Exception):
    """A source whose archive is not here, which this run does not make: `where` says
    what a build does first (a URL it fetches, or `archive <folder>`)."""

    def __init__(self, where: str) -> None:
        super().__init__(where)
        self.where = where


class SourceFailed(Exception):
    """A source that cannot be fetched, or is not what it declares: it fails the images
    that need it. `where` names it (its URL, repository or folder)."""

    def __init__(self, where: str, error: str) -> None:
        super().__init__(f"{where}: {error}")
        self.where, self.error = where, error


@dataclass(frozen=True)
class Made:
    """What an image's sources put into its context."""

    files: dict[str, Path] = field(default_factory=dict)  # context name -> archive on disk
    fetches: dict[str, str] = field(default_factory=dict)  # context name -> what a build does
    failures: dict[str, str] = field(default_factory=dict)  # context name -> why it failed
    digests: dict[str, str] = field(default_factory=dict)  # context name -> its key digest


def archives(config: Config, image: str) -> Made:
    """Every source of the image, archived (as far as this run may make them), with each
    archive's digest as the key takes it (read again only when the archive changed)."""
    made = Made()
    for name, source in config.images[image].sources.items():
        inner = f"{name}-archive"
        try:
            made.files[inner] = archive(config, image, name, source)
        except NotMade as err:
            made.fetches[inner] = err.where
        except SourceFailed as err:
            made.failures[inner] = f"source {name}: {err}"
    stats = _stat_cache(config)
    for inner, path in made.files.items():
        info = os.stat(path)
        mode = f"{info.st_mode & 0o7777:o}\0".encode()  # (as render.Context.file_digests)
        made.digests[inner] = stats.digest(path, info, read=True, prefix=mode) or ""
    if may_fetch(image):
        stats.save()
    return made


def _stat_cache(config: Config) -> StatCache:
    return StatCache.of(config.build_dir / "sources" / "stat-cache.json")


def doing(fetches: Mapping[str, str]) -> str:
    """What a build does first for these sources, in words: "fetch URL, archive DIR"."""
    return ", ".join(w if w.startswith(ARCHIVE_VERB) else f"fetch {w}" for w in fetches.values())


def archive(config: Config, image: str, name: str, source: Source) -> Path:
    """One source archived as `archives` archives it (Kolla's sources come this way)."""
    folder = config.build_dir / "sources"
    if source.git is not None:
        return _git_archive(config, image, name, source, folder)
    if source.local is not None:
        return _local_archive(config, image, name, source, folder)
    return _url_archive(config, image, name, source, folder)


def _git_archive(config: Config, image: str, name: str, source: Source, folder: Path) -> Path:
    """`git archive` of the commit the ref names now, under `<name>-archive-<ref>/` (as
    kolla-build's clone directory is named); of the folder `git:` names, which may be a
    subfolder of its repository. A pbr project gets the PKG-INFO of an sdist with the
    version pbr computes for that commit (pbr needs it, or a `.git`, to install; a
    PKG-INFO is the same bytes for the same commit, a `.git` is not). Made once per
    content: the archive's file name holds everything that selects what is in it
    (folder, ref, commit, prefix, version)."""
    ref = source.ref
    _check_tracked(config, image, name, _location(config, source.git))
    repository, commit = git_commit(config, image, name, source)
    prefix = f"{name}-archive-{ref.replace('/', '-')}/"
    pbr = pbr_version.project_at(repository, commit)
    # `git -C <subfolder> archive` archives that subfolder only: the folder is part of it
    selects = [os.path.realpath(repository), ref, commit, prefix, pbr.identity if pbr else ""]
    target = folder / f"{name}-{commit[:12]}-{_digest_of(selects)}.tar"
    if target.exists():
        return target
    if not may_fetch(image):
        raise NotMade(f"{ARCHIVE_VERB}{repository} at {ref}")
    argv = ["git", "-C", repository, "archive", "--format=tar", f"--prefix={prefix}"]
    if pbr:  # (git archive's own way to add a file: the archive stays one stream)
        argv += [f"--add-virtual-file={prefix}PKG-INFO:{_pkg_info(config, image, name, pbr)}"]
    folder.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    try:
        with partial.open("wb") as out:
            subprocess.run([*argv, commit], check=True, stdout=out, stderr=subprocess.PIPE)
        partial.replace(target)
    except subprocess.CalledProcessError as err:
        raise InputError(config.path, f"sources.{name}: git archive of {repository} at {ref} "
                         f"failed: {err.stderr.decode(errors='replace').strip()}", image=image,
                         fix="check the repository (`git fsck`)") from None
    finally:
        partial.unlink(missing_ok=True)
    return target


def git_commit(config: Config, image: str, name: str, source: Source) -> tuple[str, str]:
    """The repository a `git:` source names, and the commit its ref names now: what its
    archive holds (and so the key of the image)."""
    repository = _location(config, source.git)
    return repository, _git(config, image, name, repository, "rev-parse", "--verify",
                            "--quiet", f"{source.ref}^{{commit}}").strip()


def _check_tracked(config: Config, image: str, name: str, repository: str) -> None:
    """A `git:` folder that is no repository, or one git does not track, is named so."""
    if not Path(repository).is_dir():
        raise InputError(config.path, f"sources.{name}: git repository {repository} not found",
                         image=image, fix="correct `git:` (a local path or clone)")
    inside = subprocess.run(["git", "-C", repository, "rev-parse", "--is-inside-work-tree",
                             "--is-bare-repository"], capture_output=True, text=True)
    if inside.returncode != 0:
        raise InputError(config.path, f"sources.{name}: {repository} is not in a git "
                         "repository", image=image, fix="point `git:` at a git checkout or "
                         "clone, or use `local:` for a plain folder")
    in_work_tree = inside.stdout.split()[0] == "true"
    if in_work_tree and not subprocess.run(["git", "-C", repository, "ls-files", "--", "."],
                                           capture_output=True, text=True).stdout:
        raise InputError(config.path, f"sources.{name}: git tracks no file in {repository}",
                         image=image, fix="commit its files (`git add`, `git commit`), or use "
                         "`local:` for a folder git does not track")


def _git(config: Config, image: str, name: str, repository: str, *args: str) -> str:
    try:
        return subprocess.run(["git", "-C", repository, *args], check=True,
                              capture_output=True, text=True).stdout
    except FileNotFoundError:
        raise InputError(config.path, f"sources.{name}: git is not installed", image=image,
                         fix="install git (`apt-get install git`)") from None
    except subprocess.CalledProcessError as err:
        said = err.stderr.strip()
        raise InputError(config.path, f"sources.{name}: {repository} has no ref "
                         f"{args[-1].removesuffix('^{commit}')!r}" + (f" ({said})" if said else ""),
                         image=image, fix="correct `ref:` (a branch, tag or commit)") from None


def _local_archive(config: Config, image: str, name: str, source: Source,
                   folder: Path) -> Path:
    """A folder as a tar under its own name (a file is taken as it is): in a git checkout,
    the files git would take (tracked, and untracked ones not ignored) and what pbr
    needs for its version; elsewhere every file but what its `.dockerignore` excludes.
    Written, streamed to disk, only when its manifest (each file's path, mode and digest,
    read again only when its size, mtime or inode changed) is new."""
    path = Path(_location(config, source.local))
    if not path.exists():
        raise InputError(config.path, f"sources.{name}: {path} does not exist", image=image,
                         fix="correct `local:` (relative to the directory of images.yaml)")
    if path.is_file():
        return path
    making = may_fetch(image)
    stats = _stat_cache(config)
    root = path.resolve()  # a link to a folder: the folder's files, under the link's name
    entries = folder_entries(root, path.name)
    pbr = pbr_version.project_of_checkout(root)
    if pbr:
        entries = _with_pkg_info(entries, path.name, pbr.identity,
                                 lambda: _pkg_info(config, image, name, pbr).encode())
    manifest = stats.manifest(entries, read=making)
    target = folder / image / name / f"{(manifest or '')[:16]}.tar"
    if manifest is not None and target.exists():
        return target
    if not making:
        raise NotMade(f"{ARCHIVE_VERB}{path}")
    target.parent.mkdir(parents=True, exist_ok=True)
    write_tar(target, entries)
    for old in target.parent.glob("*.tar"):  # (this source's earlier contents)
        if old != target:
            old.unlink(missing_ok=True)
    stats.save()
    return target


def _pkg_info(config: Config, image: str, name: str, pbr: pbr_version.PbrProject) -> str:
    try:
        return pbr.pkg_info()
    except pbr_version.PbrError as err:
        raise InputError(config.path, f"sources.{name}: {err}", image=image,
                         fix="install pbr (`pip install pbr`), or tag the repository with "
                         "versions pbr reads (e.g. 1.2.3)") from None


def _with_pkg_info(entries: list[Entry], top: str, identity: str,
                   made: Callable[[], bytes]) -> list[Entry]:
    """The entries with pbr's PKG-INFO (unless the folder has one), made when written."""
    inner = f"{top}/PKG-INFO"
    if any(e.name == inner for e in entries):
        return entries
    return sorted([*entries, Entry(inner, identity=identity, made=made)], key=lambda e: e.name)


def _url_archive(config: Config, image: str, name: str, source: Source,
                 folder: Path) -> Path:
    """A tarball by URL, checked against `sha256:`: a file: URL (relative to the directory
    of images.yaml) is read where it is at every run; others are downloaded once per URL
    and declared sha256, when the run may fetch (delete {build_dir}/sources to fetch them
    again)."""
    url = source.url or ""
    declared = (source.sha256 or "").lower()
    path = file_url_path(config, url)
    if path is not None:
        if not path.is_file():
            if not may_fetch(image):  # (only a build of the image fails for it)
                raise NotMade(url)
            raise SourceFailed(url, f"{path} does not exist")
        _check_sha256(url, declared, _file_digest(path))
        return path
    target = url_target(config, name, url, declared)
    if target.exists():
        return target
    if not may_fetch(image):
        raise NotMade(url)
    folder.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(target.name + ".download")
    try:
        digest = download(url, scratch)
    except DownloadError as err:
        raise SourceFailed(url, f"cannot download it: {err}") from None
    try:
        _check_sha256(url, declared, digest)
    except SourceFailed:
        scratch.unlink(missing_ok=True)
        raise
    scratch.replace(target)
    return target


def file_url_path(config: Config, url: str) -> Path | None:
    """The file a `file:` URL names (a relative one from the directory of images.yaml),
    None for any other URL."""
    import urllib.parse
    import urllib.request

    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "file":
        return None
    return config.root / urllib.request.url2pathname(parsed.path)


def url_target(config: Config, name: str, url: str, sha256: str | None) -> Path:
    """Where a download of this URL, declared with this sha256, is kept."""
    digest = _digest_of([url, (sha256 or "").lower()])
    return config.build_dir / "sources" / f"{name}-{digest}.tar"


class DownloadError(Exception):
    """A download that failed, ran past its deadline or grew past its size limit."""


def download(url: str, target: Path, *, deadline: float | None = None,
             max_bytes: int | None = None) -> str:
    """Download `url` (http, https) to `target` in at most `deadline` seconds all told and
    `max_bytes` bytes (default FETCH_DEADLINE, MAX_DOWNLOAD_BYTES), or raise DownloadError:
    `target` is written whole or not at all. Returns the sha256 (hex) of what it wrote.

    The download runs in a thread of its own, given up at the deadline: a read there
    waits at most READ_TIMEOUT for a byte, so a server that trickles bytes cannot hold
    the run, and the thread ends by itself soon after."""
    import threading

    deadline = FETCH_DEADLINE if deadline is None else deadline
    max_bytes = MAX_DOWNLOAD_BYTES if max_bytes is None else max_bytes
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}-{threading.get_ident()}")
    job: _Download | None = None
    # made inside the `try`, so that the `finally` below always removes it, even when the
    # process ends (Ctrl-C, SIGTERM) while the thread starts or still writes to it (the
    # thread may ask the server before `start` returns here)
    try:
        job = _Download(url, partial.open("wb"), max_bytes, min(deadline, READ_TIMEOUT))
        threading.Thread(target=job.run, daemon=True, name=f"download {url}").start()
        if not job.done.wait(deadline):
            raise DownloadError(f"not done within {deadline:g} s (the server sends too "
                                "slowly, or stopped)")
        if job.error:
            raise DownloadError(job.error)
        partial.replace(target)
        return job.digest.hexdigest()
    finally:  # given up, failed or interrupted: the thread stops at its next read
        if job is not None:
            job.cancelled = True
        partial.unlink(missing_ok=True)


class _Download:
    """One download to a file in a worker thread; `done` is set when it ends either way."""

    def __init__(self, url: str, out: BinaryIO, max_bytes: int, read_timeout: float) -> None:
        import threading

        self.url, self.out, self.max_bytes = url, out, max_bytes
        self.read_timeout = read_timeout
        self.done = threading.Event()
        self.cancelled = False
        self.error = ""
        self.digest = hashlib.sha256()

    def run(self) -> None:
        import http.client
        import urllib.error

        try:
            self._fetch()
        except DownloadError as err:
            self.error = str(err)
        except http.client.IncompleteRead as err:
            self.error = f"the server closed the connection after {len(err.partial)} bytes"
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
            self.error = str(err) or type(err).__name__
        finally:  # (the caller removes the file unless it is whole)
            self.out.close()
            self.done.set()

    def _fetch(self) -> None:
        import urllib.request

        size = 0
        out = self.out
        with urllib.request.urlopen(self.url, timeout=self.read_timeout) as response:
            length = response.headers.get("Content-Length") or ""
            if length.isdigit() and int(length) > self.max_bytes:
                raise DownloadError(f"it is {int(length)} bytes, more than the limit of "
                                    f"{self.max_bytes}")
            while chunk := response.read1(CHUNK_BYTES):
                if self.cancelled:
                    raise DownloadError("given up")
                size += len(chunk)
                if size > self.max_bytes:
                    raise DownloadError(f"more than the limit of {self.max_bytes} bytes")
                self.digest.update(chunk)
                out.write(chunk)
        if length.isdigit() and size != int(length):
            raise DownloadError(f"cut off: {size} of its {int(length)} bytes came (the "
                                "server closed the connection early)")


def _check_sha256(url: str, declared: str, actual: str) -> None:
    if declared and declared != actual:
        raise SourceFailed(url, f"has sha256 {actual}, not the declared {declared} (correct "
                           "`sha256:` if the new tarball is the one you want)")


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _digest_of(values: list[str]) -> str:
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()[:16]


def _location(config: Config, value: str) -> str:
    return str(config.source_path(os.path.expanduser(value)))
