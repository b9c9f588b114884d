"""The files of a local source folder, as a build uses them: which ones (what git would
take in a checkout, else all but what `.dockerignore` excludes), their manifest (read
again only when a file's size, times or inode change: `StatCache`), and the archive
made of them, streamed to disk."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import threading
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from buildlib.errors import InputError

if TYPE_CHECKING:
    import tarfile

CHUNK_BYTES = 1024 * 1024
IGNORE_FILES = (".dockerignore", ".containerignore")  # a context's: buildah always reads them


def context_file_digest(path: Path) -> str:
    """sha256 of a context file's mode and bytes (of an empty folder: its mode, and a mark
    no file has), as a key names it."""
    mode = os.stat(path).st_mode
    folder = stat.S_ISDIR(mode)
    h = hashlib.sha256(f"{'d' if folder else ''}{mode & 0o7777:o}\0".encode())
    if not folder:
        with path.open("rb") as file:  # (a source's archive may be gigabytes)
            while chunk := file.read(CHUNK_BYTES):
                h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Entry:
    """One member of an archive: a path on disk (file, folder or link), or a file made
    when the archive is written (`made`), whose content `identity` determines."""

    name: str  # inside the archive
    path: Path | None = None
    identity: str = ""
    made: Callable[[], bytes] | None = None


def folder_entries(root: Path, top: str) -> list[Entry]:
    """The folder's members under `top/`, sorted: in a git checkout the files git would
    take (`git ls-files -co --exclude-standard`: tracked, and untracked not ignored; no
    `.git`), elsewhere every file that the folder's `.dockerignore` does not exclude."""
    listed = _git_files(root)
    relative = listed if listed is not None else _walked(root)
    names = {".": root}
    for rel in relative:
        if not os.path.lexists(root / rel):  # (tracked, deleted in the checkout)
            continue
        parts = rel.split("/")
        for i in range(1, len(parts)):
            names.setdefault("/".join(parts[:i]), root.joinpath(*parts[:i]))
        names[rel] = root / rel
    return [Entry(top if rel == "." else f"{top}/{rel}", path)
            for rel, path in sorted(names.items())]


def folder_digest(root: Path, stats: StatCache | None = None) -> str:
    """The sha256 of all of a folder (or a file), each member's name, kind, mode and content
    (no ignore file counts): what a named build context or a volume hands buildah. With
    `stats`, a file whose size, times and inode are as it recorded is not read again."""
    members = []
    for folder, dirs, files in os.walk(root):
        rel_folder = os.path.relpath(folder, root)
        members += [os.path.normpath(os.path.join(rel_folder, name)) for name in dirs + files]
    entries = [Entry(rel, root / rel) for rel in [".", *sorted(members)]]
    if stats is None:
        return StatCache(Path(os.devnull)).manifest(entries, read=True) or ""
    digest = stats.manifest(entries, read=True) or ""
    stats.save()
    return digest


def _git_files(root: Path) -> list[str] | None:
    """What git would take from the folder, if it is in a git checkout; else None."""
    try:
        inside = subprocess.run(["git", "-C", str(root), "rev-parse", "--is-inside-work-tree"],
                                capture_output=True, text=True)
    except FileNotFoundError:
        return None
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        return None
    listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "-co",
                             "--exclude-standard", "--", "."],
                            check=True, capture_output=True).stdout
    files = sorted({os.fsdecode(p).rstrip("/") for p in listed.split(b"\0") if p})
    return files or None  # (a folder git ignores whole is taken as a plain folder)


def _walked(root: Path) -> list[str]:
    ignored, prunes = _dockerignore(root)
    found = []
    for folder, dirs, files in os.walk(root):
        rel_folder = os.path.relpath(folder, root)
        prefix = "" if rel_folder == "." else f"{rel_folder}/"
        for name in list(dirs):
            rel = prefix + name
            if ignored(rel) and prunes:
                dirs.remove(name)
            elif not ignored(rel):
                found.append(rel)
        found += [prefix + name for name in files if not ignored(prefix + name)]
    return found


def _dockerignore(root: Path) -> tuple[Callable[[str], bool], bool]:
    """Whether `.dockerignore` (or `.containerignore`) excludes a path, as buildah reads
    it (a pattern that matches a folder excludes what is in it; `!` takes back; the last
    match decides); and whether an excluded folder may be skipped whole (no `!`)."""
    patterns: list[tuple[bool, re.Pattern[str]]] = []
    for file_name in IGNORE_FILES:
        if (root / file_name).is_file():
            for line in (root / file_name).read_text(errors="replace").splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                negate = line.startswith("!")
                pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
                if pattern != ".":
                    patterns.append((negate, _pattern(pattern)))
            break

    def ignored(rel: str) -> bool:
        parts = rel.split("/")
        above = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        result = False
        for negate, regex in patterns:
            if any(regex.fullmatch(a) for a in above):
                result = not negate
        return result

    return ignored, not any(negate for negate, _ in patterns)


def _pattern(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\*\*/?|\*|\?|\[[^\]]*\])", pattern)
    return re.compile("".join(
        "(.*/)?" if part == "**/" else ".*" if part == "**" else "[^/]*" if part == "*"
        else "[^/]" if part == "?" else part if part.startswith("[") and len(part) > 2
        else re.escape(part) for part in parts))


class StatCache:
    """Each file's sha256 by its path, size, mtime, ctime and inode, kept in one JSON file:
    a file none of these changed is not read again."""

    _loaded: ClassVar[dict[Path, StatCache]] = {}

    def __init__(self, file: Path) -> None:
        self.file = file
        try:
            self.digests: dict[str, list] = json.loads(file.read_text())
        except (OSError, ValueError):
            self.digests = {}
        self.changed = False
        self._lock = threading.Lock()  # (images are keyed in doit's threads)

    @classmethod
    def of(cls, file: Path) -> StatCache:
        """The cache kept in `file`, read once per process."""
        if file not in cls._loaded:
            cls._loaded[file] = cls(file)
        return cls._loaded[file]

    def digest(self, path: Path, info: os.stat_result, read: bool,
               prefix: bytes = b"") -> str | None:
        """The file's sha256 (of `prefix` and its bytes); None when it must be read for it
        and `read` is False."""
        signature = [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino]
        name = f"{path}\0{prefix.hex()}" if prefix else str(path)
        known = self.digests.get(name)
        if known and known[:4] == signature:
            return known[4]
        if not read:
            return None
        digest = hashlib.sha256(prefix)
        with path.open("rb") as file:
            while chunk := file.read(CHUNK_BYTES):
                digest.update(chunk)
        with self._lock:
            self.digests[name] = [*signature, digest.hexdigest()]
            self.changed = True
        return digest.hexdigest()

    def manifest(self, entries: Iterable[Entry], read: bool) -> str | None:
        """The sha256 of every member's name, kind, mode and content (a link's target);
        None when a file changed and `read` is False."""
        rows: list[list[str | int]] = []
        for entry in entries:
            if entry.path is None:
                rows.append([entry.name, "made", entry.identity])
                continue
            info = os.lstat(entry.path)
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISLNK(info.st_mode):
                rows.append([entry.name, "link", os.readlink(entry.path)])
            elif stat.S_ISDIR(info.st_mode):
                rows.append([entry.name, "dir", mode])
            elif stat.S_ISREG(info.st_mode):
                digest = self.digest(entry.path, info, read)
                if digest is None:
                    return None
                rows.append([entry.name, "file", mode, digest])
        return hashlib.sha256(json.dumps(rows).encode()).hexdigest()

    def save(self) -> None:
        """Write the cache, without the files that are gone."""
        with self._lock:
            if not self.changed:
                return
            self.digests = {name: known for name, known in self.digests.items()
                            if os.path.lexists(name.partition("\0")[0])}
            self.file.parent.mkdir(parents=True, exist_ok=True)
            partial = self.file.with_name(f"{self.file.name}.partial-{os.getpid()}")
            partial.write_text(json.dumps(self.digests))
            partial.replace(self.file)
            self.changed = False


def write_tar(target: Path, entries: Iterable[Entry]) -> None:
    """The entries as a tar at `target`, file by file (never all in memory): owner root,
    mtime 0, so the same content makes the same bytes; written whole or not at all."""
    import io
    import tarfile

    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    try:
        with tarfile.open(partial, "w", format=tarfile.GNU_FORMAT) as tar:
            for entry in entries:
                if entry.path is None:
                    data = entry.made() if entry.made else b""
                    info = tarfile.TarInfo(entry.name)
                    info.size, info.mode = len(data), 0o644
                    tar.addfile(normalized(info), io.BytesIO(data))
                    continue
                info = normalized(tar.gettarinfo(entry.path, arcname=entry.name))
                if info.isreg():
                    with entry.path.open("rb") as file:
                        tar.addfile(info, file)
                else:
                    tar.addfile(info)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    return info


def holds(folder: Path, path: Path) -> bool:
    """Whether `path` is `folder` or inside it (both resolved)."""
    return path == folder or folder in path.parents


def files_under(folder: Path, declared: Container[str] = (), *, config_path: Path,
                image: str) -> dict[str, Path]:
    """Every file under `folder` by its path there, but the `declared` ones. Links are
    followed when they stay inside `folder` (a linked folder's files appear under the
    link's name); a link that leaves it, dangles or loops is an input error: declare what
    it names under `files:` (the error names `config_path` and `image`)."""
    top = folder.resolve()
    found: dict[str, Path] = {}

    def visit(directory: Path, real: Path, prefix: str, seen: frozenset[Path]) -> None:
        with os.scandir(directory) as scan:  # each entry's type comes with its name
            entries = sorted(scan, key=lambda entry: entry.name)
        for entry in entries:
            inner = f"{prefix}{entry.name}"
            if inner in declared:  # `files:` gives it
                continue
            path = directory / entry.name
            if entry.is_symlink():
                target = _link_target(config_path, image, folder, path)
                if not holds(top, target):
                    raise InputError(config_path, f"{path} links to {target}, outside "
                                     f"{folder}", image=image, fix=f"declare it under "
                                     f"`files:` (`{inner}: {target}`), or copy it here")
                is_dir, is_file, target_real = target.is_dir(), target.is_file(), target
            else:
                is_dir, is_file = entry.is_dir(), entry.is_file()
                target, target_real = path, real / entry.name
            if is_dir:
                if target_real in seen:
                    raise InputError(config_path, f"{path} links to a folder that holds "
                                     "it: the context would never end", image=image,
                                     fix="remove the link")
                visit(target, target_real, f"{inner}/", seen | {target_real})
            elif is_file:
                found[inner] = path

    visit(folder, top, "", frozenset({top}))
    return found


def _link_target(config_path: Path, image: str, folder: Path, link: Path) -> Path:
    try:
        target = link.resolve(strict=True)
    except (OSError, RuntimeError):  # dangling, or a loop of links
        raise InputError(config_path, f"{link} is a broken link (to {os.readlink(link)})",
                         image=image, fix=f"remove it or make it name a file in {folder}"
                         ) from None
    return target
