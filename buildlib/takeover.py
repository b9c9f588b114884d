"""A run takes over its tree: `{build_dir}/.lock` (an `flock`, which the kernel releases
when the process ends, even by `kill -9`; a second run on the same tree stops at once,
naming the first), doit's state set aside when it cannot be read, and what a killed run
left behind cleaned up."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import shlex
import sqlite3
import sys
from pathlib import Path

from buildlib import buildah, processes, project
from buildlib.invocation import Invocation
from buildlib.services import Services

LOCK_FILE = ".lock"
UNFINISHED_MARK = ".running"  # a building run's; left behind only by a run that was killed


class RunError(Exception):
    """This run cannot start: another holds the tree, or build_dir cannot be written."""


def _end_building_run(unfinished: Path, stop: processes.StopControl) -> None:
    """A run that killed no build leaves nothing behind: the next run need not look."""
    if not stop.killed_any:
        unfinished.unlink(missing_ok=True)


def take_over(proj: project.Project, services: Services, invocation: Invocation) -> int:
    """Lock build_dir for this run (the lock's open file, kept open for the process's
    life); set aside unreadable state; clean up after a killed run."""
    build_dir = proj.build_dir
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
        lock = lock_build_dir(build_dir, invocation)
        services.storage_lock.share()  # another tree's prune waits for this run
        unfinished = build_dir / UNFINISHED_MARK
        if unfinished.exists():
            _clean_up_after_killed_run(proj, services.buildah)
        if invocation.builds:
            unfinished.write_text(f"{os.getpid()}\n")
            # os._exit skips it: the mark is kept
            atexit.register(_end_building_run, unfinished, services.stop)
        set_aside_unreadable_state(proj.state_file)
        return lock
    except OSError as err:
        raise RunError(f"cannot write in {build_dir}: {err.strerror or err}; free some "
                       "space there or choose a writable settings.build_dir") from None


def lock_build_dir(build_dir: Path, invocation: Invocation) -> int:
    """Take `{build_dir}/.lock` for this process, or raise RunError naming its holder;
    return its open file, which holds the lock until it is closed or the process ends."""
    path = build_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise RunError(f"another run is using {build_dir}: {holder}; wait for it to end "
                       "(one run per tree at a time)") from None
    os.ftruncate(fd, 0)
    record = {"pid": os.getpid(), "command": shlex.join([invocation.program, *invocation.words])}
    os.write(fd, (json.dumps(record) + "\n").encode())
    return fd


def _read_holder(fd: int) -> str:
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {record['pid']}, `{record['command']}`"
    except (ValueError, KeyError, OSError):
        return "a run that is starting"


def set_aside_unreadable_state(state_file: Path) -> Path | None:
    """Rename doit's state file when sqlite or doit could not read it, with one warning,
    so that the run goes on as if nothing had been built; return the new name."""
    problem = _state_problem(state_file)
    if problem is None:
        return None
    aside = state_file.with_name(state_file.name + ".unreadable")
    state_file.replace(aside)
    print(f"warning: {state_file} is unreadable ({problem}); set aside as {aside.name}. "
          "What earlier runs recorded is lost, so images are checked as never built.",
          file=sys.stderr)
    return aside


def _state_problem(state_file: Path) -> str | None:
    if not state_file.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{state_file}?mode=ro", uri=True)) as db:
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                return check
            tables = {row[0] for row in db.execute("select name from sqlite_master")}
            if "doit" in tables:
                for (data,) in db.execute("select task_data from doit"):
                    json.loads(data)
    except (sqlite3.DatabaseError, ValueError) as err:
        return str(err)
    return None


def _clean_up_after_killed_run(proj: project.Project, buildah_: buildah.Buildah) -> None:
    """The last building run here did not end (kill -9): stop the builds it left running
    and remove their working containers. Only builds of this tree carry its owner mark, and
    no other run of this tree is alive while we hold the lock."""
    stopped = buildah.kill_orphans(proj.owner)
    removed = buildah_.remove_containers_of(proj.owner)
    if stopped or removed:
        print(f"cleaned up after a killed run: stopped {stopped} buildah process group(s), "
              f"removed {removed} working container(s)", file=sys.stderr)
