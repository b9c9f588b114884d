"""An image's `sources:` as kolla-build makes them: each archived into the build context as
`<name>-archive` (a local folder, a git repository at a ref, or a tarball URL).

Archives are written byte for byte the same for the same content (sorted entries, owner
root, mtime 0; `git archive` of the commit), so the context's digest, and with it the
image's key, follows the content and never a checkout's or download's time.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from buildlib.config import Config, Source
from buildlib.errors import InputError

if TYPE_CHECKING:  # imported by the images that have such sources
    import tarfile

FETCH_DEADLINE = 600.0  # seconds for one whole download
READ_TIMEOUT = 60.0  # seconds a download may go without a byte (within the deadline)
MAX_DOWNLOAD_BYTES = 4 * 1024**3  # bytes one download may write
CHUNK_BYTES = 1024 * 1024


def archives(config: Config, image: str, fetch: bool = True) -> dict[str, Path]:
    """`<name>-archive` -> the archive on disk, for every source of the image. Without
    `fetch`, a tarball not downloaded yet is left out (`unfetched` names it)."""
    folder = config.build_dir / "sources"
    found = {f"{name}-archive": _archive(config, image, name, source, folder, fetch)
             for name, source in config.images[image].sources.items()}
    return {inner: path for inner, path in found.items() if path is not None}


def unfetched(config: Config, image: str) -> list[str]:
    """The URLs of the image's http(s) tarballs that are not downloaded yet."""
    folder = config.build_dir / "sources"
    return [source.url for name, source in config.images[image].sources.items()
            if source.url and not source.url.startswith("file:")
            and not _url_target(folder, name, source.url).exists()]


def archive(config: Config, image: str, name: str, source: Source) -> Path:
    """One source archived as `archives` archives it (Kolla's sources come this way)."""
    found = _archive(config, image, name, source, config.build_dir / "sources", True)
    assert found is not None  # (fetched)
    return found


def _archive(config: Config, image: str, name: str, source: Source, folder: Path,
             fetch: bool) -> Path | None:
    folder.mkdir(parents=True, exist_ok=True)
    if source.git is not None:
        return _git_archive(config, image, name, source, folder)
    if source.local is not None:
        return _local_archive(config, image, name, source, folder)
    return _url_archive(config, image, name, source, folder, fetch)


def _git_archive(config: Config, image: str, name: str, source: Source, folder: Path) -> Path:
    """`git archive` of the commit the ref names now, under `<name>-archive-<ref>/` (as
    kolla-build's clone directory is named); of the folder `git:` names, which may be a
    subfolder of its repository. Made once per content: the archive's file name holds
    everything that selects what is in it (folder, ref, commit, prefix)."""
    repository = _location(config, source.git)
    ref = source.ref
    commit = _git(config, image, name, repository, "rev-parse", "--verify", "--quiet",
                  f"{ref}^{{commit}}").strip()
    prefix = f"{name}-archive-{ref.replace('/', '-')}/"
    # `git -C <subfolder> archive` archives that subfolder only: the folder is part of it
    selects = [os.path.realpath(repository), ref, commit, prefix]
    target = folder / f"{name}-{commit[:12]}-{_digest_of(selects)}.tar"
    if not target.exists():
        data = _git(config, image, name, repository, "archive", "--format=tar",
                    f"--prefix={prefix}", commit, text=False)
        _write_atomically(target, data)
    return target


def _git(config: Config, image: str, name: str, repository: str, *args: str,
         text: bool = True) -> str | bytes:
    argv = ["git", "-C", repository, *args] if Path(repository).is_dir() else None
    if argv is None:
        raise InputError(config.path, f"sources.{name}: git repository {repository} not found",
                         image=image, fix="correct `git:` (a local path or clone)")
    try:
        return subprocess.run(argv, check=True, capture_output=True, text=text).stdout
    except FileNotFoundError:
        raise InputError(config.path, f"sources.{name}: git is not installed", image=image,
                         fix="install git (`apt-get install git`)") from None
    except subprocess.CalledProcessError as err:
        said = (err.stderr if text else err.stderr.decode(errors="replace")).strip()
        raise InputError(config.path, f"sources.{name}: {repository} has no ref "
                         f"{args[-1].removesuffix('^{commit}')!r}" + (f" ({said})" if said else ""),
                         image=image, fix="correct `ref:` (a branch, tag or commit)") from None


def _local_archive(config: Config, image: str, name: str, source: Source,
                   folder: Path) -> Path:
    """A folder as a tar under its own name (a file is taken as it is), rewritten only
    when its bytes change."""
    path = Path(_location(config, source.local))
    if not path.exists():
        raise InputError(config.path, f"sources.{name}: {path} does not exist", image=image,
                         fix="correct `local:` (relative to the directory of images.yaml)")
    if path.is_file():
        return path
    target = folder / image / f"{name}-archive"
    data = _tar_of(path)
    if not (target.exists() and target.read_bytes() == data):
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(target, data)
    return target


def _tar_of(folder: Path) -> bytes:
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(folder, arcname=folder.name, recursive=False, filter=_normalized)
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=f"{folder.name}/{path.relative_to(folder)}",
                    recursive=False, filter=_normalized)
    return buffer.getvalue()


def _normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    return info


def _url_archive(config: Config, image: str, name: str, source: Source, folder: Path,
                 fetch: bool) -> Path | None:
    """A tarball by URL: a file:// URL is read at every run; others are downloaded once,
    when `fetch` (delete {build_dir}/sources to fetch them again), and checked against
    `sha256:`; None when not downloaded yet and not `fetch`."""
    import urllib.parse
    import urllib.request

    url = source.url or ""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        path = Path(urllib.request.url2pathname(parsed.path))
        if not path.is_file():
            raise InputError(config.path, f"sources.{name}: {url} does not exist",
                             image=image, fix="correct `url:`")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        _check_sha256(config, image, name, source, digest)
        return path
    target = _url_target(folder, name, url)
    if target.exists() or not fetch:
        return target if target.exists() else None
    scratch = target.with_name(target.name + ".download")
    try:
        digest = download(url, scratch)
    except DownloadError as err:
        raise InputError(config.path, f"sources.{name}: cannot download {url}: {err}",
                         image=image, fix="check the URL and the network") from None
    try:
        _check_sha256(config, image, name, source, digest)
    except InputError:
        scratch.unlink(missing_ok=True)
        raise
    scratch.replace(target)
    return target


def _url_target(folder: Path, name: str, url: str) -> Path:
    return folder / f"{name}-{hashlib.sha256(url.encode()).hexdigest()[:16]}.tar"


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
    # made here, so that the `finally` below always removes it, even when the process
    # ends (Ctrl-C) while the thread still writes to it
    job = _Download(url, partial.open("wb"), max_bytes, min(deadline, READ_TIMEOUT))
    threading.Thread(target=job.run, daemon=True, name=f"download {url}").start()
    try:
        if not job.done.wait(deadline):
            raise DownloadError(f"not done within {deadline:g} s (the server sends too "
                                "slowly, or stopped)")
        if job.error:
            raise DownloadError(job.error)
        partial.replace(target)
        return job.digest.hexdigest()
    finally:  # given up, failed or interrupted (Ctrl-C): the thread stops at its next read
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


def _check_sha256(config: Config, image: str, name: str, source: Source,
                  actual: str) -> None:
    if source.sha256 and source.sha256 != actual:
        raise InputError(config.path, f"sources.{name}: {source.url} has sha256 {actual}, "
                         f"not {source.sha256}", image=image,
                         fix="correct `sha256:` if the new tarball is the one you want")


def _digest_of(values: list[str]) -> str:
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()[:16]


def _location(config: Config, value: str) -> str:
    return str(config.source_path(os.path.expanduser(value)))


def _write_atomically(target: Path, data: bytes) -> None:
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(data)
    shutil.move(partial, target)
