"""One image storage, many trees: a prune never takes a name that another run is using.

Every run that builds, pushes or cleans holds `imagebake-prune.lock` in the storage's own
folder (buildah's GraphRoot) shared, from its start to its end; a prune that removes
something takes it exclusively, and only when no other run holds it: else it stops at
once, naming the runs. A run that starts while a prune holds it waits for the prune.
So trees that share a storage and image names (and so key names) never lose a parent
mid-build to another tree's prune.

What it covers: imagebake runs on one machine whose buildah resolves to the same
GraphRoot (one `flock`; the kernel drops it when a process ends, even by `kill -9`). What
it does not: buildah run by hand or by other tools, the images of a tree that is not
running (another tree's prune may remove a key of theirs that its own record lists too:
their next build builds or finds it again), and storage on a network file system whose
locks do not reach other machines.
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

from buildlib.buildah import Buildah

LOCK_NAME = "imagebake-prune.lock"


class StorageLock:
    """A run's hold on its image storage's lock (one per run, in its `Services`): the lock
    file of each storage it touched, open for the life of the process."""

    def __init__(self, buildah: Buildah) -> None:
        self.buildah = buildah
        self._held: dict[Path, int] = {}  # graph root -> its lock file

    def share(self) -> None:
        """Hold the storage's lock shared for the rest of this process; wait while a prune
        holds it (saying so). Nothing when buildah cannot say where its storage is: the
        run's first look at storage will say why."""
        fd = self._open()
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for a prune of this image storage to end ({_holders(fd)})",
                  file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_SH)

    def exclusive(self) -> str | None:
        """Take the storage's lock exclusively for a prune; None when taken, else why not
        (the other runs that hold it). `release` gives it back."""
        fd = self._open()
        if fd is None:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            others = _holders(fd)
            fcntl.flock(fd, fcntl.LOCK_SH)  # a failed conversion drops this run's own hold
            return (f"another run is using this image storage ({_lock_path(fd)}): {others}; "
                    "a prune now could remove an image it builds on. Prune when it has ended")
        return None

    def release(self) -> None:
        """A prune is done: back to holding the storage shared, as the run did before."""
        fd = self._open()
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_SH)

    def _open(self) -> int | None:
        root = self.buildah.graph_root()
        if root is None:
            return None
        if root not in self._held:
            try:
                root.mkdir(parents=True, exist_ok=True)
                self._held[root] = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                print(f"warning: cannot lock image storage {root}: {err.strerror or err}; "
                      "the prunes of other trees are not held off", file=sys.stderr)
                return None
        return self._held[root]


def _lock_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def _holders(fd: int) -> str:
    """The other processes that hold the lock, as the kernel lists them (/proc/locks)."""
    stat = os.fstat(fd)
    pids = set()
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        fields = line.split()
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue  # a waiting request, or not a flock
        # by inode alone: on overlayfs, stat's device is not the one /proc/locks names
        if fields[5].rpartition(":")[2] == str(stat.st_ino) and fields[4] != str(os.getpid()):
            pids.add(int(fields[4]))
    return "; ".join(_describe(pid) for pid in sorted(pids)) or "a run that is starting"


def _describe(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return f"pid {pid}"
    return f"pid {pid}, `{' '.join(word.decode(errors='replace') for word in argv if word)}`"
