"""An image's `sources:` as kolla-build makes them: each archived into the build context as
`<name>-archive` (a local folder, a git repository at a ref, or a tarball URL).

Archives are written byte for byte the same for the same content (sorted entries, owner
root, mtime 0; `git archive` of the commit), so the context's digest, and with it the
image's key, follows the content and never a checkout's or download's time.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from buildlib.config import Config, Source
from buildlib.errors import InputError

if TYPE_CHECKING:  # imported by the images that have such sources
    import tarfile

FETCH_TIMEOUT = 120  # seconds for one download


def archives(config: Config, image: str) -> dict[str, Path]:
    """`<name>-archive` -> the archive on disk, for every source of the image."""
    folder = config.build_dir / "sources"
    return {f"{name}-archive": _archive(config, image, name, source, folder)
            for name, source in config.images[image].sources.items()}


def archive(config: Config, image: str, name: str, source: Source) -> Path:
    """One source archived as `archives` archives it (Kolla's sources come this way)."""
    return _archive(config, image, name, source, config.build_dir / "sources")


def _archive(config: Config, image: str, name: str, source: Source, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if source.git is not None:
        return _git_archive(config, image, name, source, folder)
    if source.local is not None:
        return _local_archive(config, image, name, source, folder)
    return _url_archive(config, image, name, source, folder)


def _git_archive(config: Config, image: str, name: str, source: Source, folder: Path) -> Path:
    """`git archive` of the commit the ref names now, under `<name>-archive-<ref>/` (as
    kolla-build's clone directory is named); one archive per commit, made once."""
    repository = _location(config, source.git)
    ref = source.ref
    commit = _git(config, image, name, repository, "rev-parse", "--verify", "--quiet",
                  f"{ref}^{{commit}}").strip()
    target = folder / f"{name}-{commit}.tar"
    if not target.exists():
        prefix = f"{name}-archive-{ref.replace('/', '-')}/"
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


def _url_archive(config: Config, image: str, name: str, source: Source, folder: Path) -> Path:
    """A tarball by URL: a file:// URL is read at every run; others are downloaded once
    (delete {build_dir}/sources to fetch them again) and checked against `sha256:`."""
    import urllib.error
    import urllib.parse
    import urllib.request

    url = source.url or ""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        path = Path(urllib.request.url2pathname(parsed.path))
        if not path.is_file():
            raise InputError(config.path, f"sources.{name}: {url} does not exist",
                             image=image, fix="correct `url:`")
        _check_sha256(config, image, name, source, path.read_bytes())
        return path
    target = folder / f"{name}-{hashlib.sha256(url.encode()).hexdigest()[:16]}.tar"
    if not target.exists():
        try:
            with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response:
                data = response.read()
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise InputError(config.path, f"sources.{name}: cannot download {url}: {err}",
                             image=image, fix="check the URL and the network") from None
        _check_sha256(config, image, name, source, data)
        _write_atomically(target, data)
    return target


def _check_sha256(config: Config, image: str, name: str, source: Source, data: bytes) -> None:
    digest = hashlib.sha256(data).hexdigest()
    if source.sha256 and source.sha256 != digest:
        raise InputError(config.path, f"sources.{name}: {source.url} has sha256 {digest}, "
                         f"not {source.sha256}", image=image,
                         fix="correct `sha256:` if the new tarball is the one you want")


def _location(config: Config, value: str) -> str:
    return str(config.source_path(os.path.expanduser(value)))


def _write_atomically(target: Path, data: bytes) -> None:
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(data)
    shutil.move(partial, target)
