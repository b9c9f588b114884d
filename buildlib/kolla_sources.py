"""Kolla's sources as kolla-build reads and makes them: `<image>-archive` from the image's
section of kolla's configuration (kolla's SOURCES defaults, `tarballs_base`, a
kolla-build.conf section `type = url | git | local`, `location`, `reference`, `enabled`,
`sha256`), and `plugins-archive` / `additions-archive` from its `<image>-plugin-*` and
`<image>-additions-*` sections: each source unpacked under `plugins/` (`additions/`), the
folder archived under that name, as kolla-build's `make_an_archive` does.

kolla's own code reads the sections (`KollaWorker.build_image_list`); one source is fetched
and archived by `buildlib.sources` (a tarball downloaded once, a git commit by `git
archive`, a local folder under its own name). Archives are made only for what a
Dockerfile ADDs or COPYs, written byte for byte the same for the same content, so the
image's key follows the content. A download or clone happens only for the images a run builds
(`fetching`); others use what is already here and say what a build would fetch.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from buildlib import sources
from buildlib.config import Config, Source
from buildlib.errors import InputError

if TYPE_CHECKING:
    import tarfile

COMBINED = ("plugins", "additions")  # kolla-build's archives of several sources
GIT_TIMEOUT = 600  # seconds for one clone or fetch of a remote git source
FIXES = {
    "url": "correct `location` (or `sha256`) in [{name}] of kolla-build.conf, or "
           "tarballs_base (kolla.options or [DEFAULT]); or check the network",
    "git": "correct `location` or `reference` in [{name}] of kolla-build.conf",
    "local": "correct `location` in [{name}] of kolla-build.conf: an existing folder or "
             "file (a relative path starts at the directory of images.yaml)",
}
fetching = sources.fetching  # (a run that builds these images makes their sources)


@dataclass(frozen=True)
class Sourced:
    """What Kolla's sources put into one image's context."""

    files: dict[str, Path] = field(default_factory=dict)  # context name -> archive on disk
    fetches: dict[str, str] = field(default_factory=dict)  # context name -> what a build fetches
    folders: tuple[Path, ...] = ()  # the local source folders they are made of
    failures: dict[str, str] = field(default_factory=dict)  # context name -> why it failed


def sourced(config: Config, image: Any, wanted: set[str], debian_arch: str) -> Sourced:
    """The archives of kolla's Image `image` that its Dockerfile reads (`wanted`)."""
    files: dict[str, Path] = {}
    fetches: dict[str, str] = {}
    failures: dict[str, str] = {}
    folders: list[Path] = []
    main = f"{image.name}-archive"
    parts: dict[str, list[dict[str, Any]]] = {}
    if main in wanted and image.source and image.source.get("enabled"):
        parts[main] = [image.source]
    for kind in COMBINED:
        if f"{kind}-archive" in wanted:
            parts[f"{kind}-archive"] = sorted(  # kolla takes them in no fixed order
                (s for s in getattr(image, kind) if s.get("enabled")), key=lambda s: s["name"])
    for inner, entries in parts.items():
        folders += [Path(s["source"]).expanduser() for s in entries if s["type"] == "local"]
        archives, not_here, failed = [], [], []
        for entry in entries:
            try:
                archives.append(_archive(config, image.name, entry, debian_arch))
            except sources.NotMade as err:
                not_here.append(err.where)
            except sources.SourceFailed as err:
                failed.append(f"kolla source [{entry['name']}] ({entry['type']} "
                              f"{err.where}): {err.error}")
        if failed:
            failures[inner] = "; ".join(failed)
            continue
        if not_here:
            fetches[inner] = ", ".join(not_here)
            continue
        kind = inner.removesuffix("-archive")
        files[inner] = archives[0] if inner == main else \
            _combined(config, image.name, kind, archives)
    return Sourced(files, fetches, tuple(folders), failures)


def _archive(config: Config, image: str, entry: dict[str, Any], debian_arch: str) -> Path:
    """One kolla source (`build_image_list`'s dict: type, source, name, reference,
    enabled, sha256) archived as kolla-build's `process_source` archives it."""
    name, kind, location = entry["name"], entry["type"], entry["source"]
    if kind == "url":
        pinned = (entry.get("sha256") or {}).get(debian_arch)
        source = Source(url=location, sha256=pinned)
    elif kind == "git":
        source = Source(git=_git_repository(config, image, name, location), ref=entry["reference"])
    elif kind == "local":
        source = Source(local=os.path.expanduser(location))
    else:
        raise InputError(config.path, f"kolla source [{name}]: type {kind!r} is not url, git "
                         "or local", image=image, fix=f"correct `type` in [{name}]")
    try:
        return sources.archive(config, image, name, source)
    except InputError as err:
        problem = err.problem.removeprefix(f"sources.{name}: ")
        raise InputError(config.path, f"kolla source [{name}] ({kind} {location}): {problem}",
                         image=image, fix=FIXES[kind].format(name=name)) from None


def _git_repository(config: Config, image: str, name: str, location: str) -> str:
    """A local repository as it is; a remote one mirrored under {build_dir}/sources/git
    (cloned once, fetched again by each run that builds the image), as kolla-build clones it."""
    if Path(os.path.expanduser(location)).is_dir():
        return os.path.expanduser(location)
    mirror = config.build_dir / "sources" / "git" / \
        f"{hashlib.sha256(location.encode()).hexdigest()[:16]}.git"
    if not sources.may_fetch(image):
        if mirror.is_dir():
            return str(mirror)
        raise sources.NotMade(location)
    if mirror.is_dir():
        argv = ["git", "-C", str(mirror), "fetch", "--quiet", "--prune", "--tags", "origin"]
    else:
        mirror.parent.mkdir(parents=True, exist_ok=True)
        argv = ["git", "clone", "--quiet", "--mirror", location, str(mirror)]
    try:
        subprocess.run(argv, check=True, capture_output=True, text=True, timeout=GIT_TIMEOUT,
                       env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except (OSError, subprocess.SubprocessError) as err:
        said = getattr(err, "stderr", None) or str(err)
        raise sources.SourceFailed(location, f"cannot clone or fetch it: {said.strip()}") \
            from None
    return str(mirror)


def _combined(config: Config, image: str, kind: str, archives: list[Path]) -> Path:
    """kolla-build's `<kind>-archive`: each archive unpacked under `<kind>/`, that folder
    archived under its name (an empty folder when there are none). Made once per set of
    archives' contents."""
    digest = hashlib.sha256(kind.encode())
    for archive in archives:
        digest.update(b"\0" + hashlib.sha256(archive.read_bytes()).digest())
    folder = config.build_dir / "sources" / "kolla" / image
    target = folder / f"{kind}-{digest.hexdigest()[:16]}.tar"
    if target.exists():
        return target
    data = _unpacked_and_archived(config, image, kind, archives)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{kind}-*.tar"):
        old.unlink()
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(data)
    partial.replace(target)
    return target


def _unpacked_and_archived(config: Config, image: str, kind: str, archives: list[Path]) -> bytes:
    import tarfile

    with tempfile.TemporaryDirectory(prefix="imagebake-kolla-") as tmp:
        items = Path(tmp) / kind
        items.mkdir(mode=0o755)
        items.chmod(0o755)
        for archive in archives:
            if not tarfile.is_tarfile(archive):
                raise InputError(config.path, f"kolla: {archive.name} for {image}'s "
                                 f"{kind}-archive is not a tar archive", image=image,
                                 fix="point the source at a tarball, folder or repository")
            try:
                with tarfile.open(archive) as tar:
                    tar.extractall(items, filter="tar")
            except (tarfile.TarError, OSError) as err:
                raise InputError(config.path, f"kolla: cannot unpack {archive.name} into "
                                 f"{image}'s {kind}-archive: {err}", image=image,
                                 fix="point the source at a tarball whose paths stay inside "
                                 "it") from None
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(items, arcname=kind, filter=_normalized)
        return buffer.getvalue()


def _normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """kolla-build's `normalize_tarinfo`: owner root, mtime 0, writable by its owner."""
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    info.mode |= 0o200
    return info
