"""Process and signal control: run a command with its output in a log, kill its whole
process group on a timeout or a stop request, and read back the end of a log. Knows no
command in particular (buildah.py says what to run)."""

from __future__ import annotations

import codecs
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

KILL_GRACE_SECONDS = 10
POLL_SECONDS = 0.25  # how often a wait for processes to go looks again
WAIT_STEP_SECONDS = 0.05  # a running command looks this often (at most) for its end or a stop
TAIL_BYTES = 64 * 1024  # at most this much of a log's end is ever read back
ECHO_LINE_CHARS = 2000  # verbose=1 shows at most this much of each output line


class StopControl:
    """Whether a run was asked to stop (by which signal, how often), and whether it killed
    a process group (which may leave containers). Each run owns one (`Services.stop`), which
    its signal handlers set: plain assignments only, no locks."""

    def __init__(self) -> None:
        self.signal = 0
        self.count = 0
        self.killed_any = False

    def request(self, signum: int) -> None:
        """Ask every running command to stop (SIGTERM, then SIGKILL after a grace period,
        or at once on a second request)."""
        self.signal = self.signal or signum
        self.count += 1

    def handle(self, signum: int, frame: Any) -> None:
        """A signal handler: only records the signal (no locks, no waiting), so that a
        second signal cannot hang."""
        self.request(signum)


def exit_as(status: int | None) -> None:
    """End this process with `status` (None: go on). Above 128 (stopped by a signal):
    at once, past doit's KeyboardInterrupt traceback, once doit has saved what finished."""
    if status is None:
        return
    if status > 128:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


class CommandError(Exception):
    """A command exited non-zero or ran out of time; `log` holds its output (`output`:
    at most the last TAIL_BYTES of this run's part)."""

    def __init__(self, reason: str, log: Path | None = None, output: str = "",
                 timed_out: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.log, self.output, self.timed_out = reason, log, output, timed_out


class Interrupted(CommandError):
    """The run was asked to stop (SIGINT/SIGTERM): not started, or killed."""


def command_line(argv: Sequence[str]) -> str:
    return shlex.join(argv)


def run_logged(argv: Sequence[str], log: Path, timeout: float, *, stop: StopControl,
               append: bool = False, note: str = "", echo: bool = False) -> float:
    """Run argv with stdout and stderr in `log` (after `# note` and the command line),
    and on our stdout too when `echo`; kill its whole process group on timeout or when
    the run is asked to stop (`stop`). A failure raises CommandError carrying this run's output.
    Returns the CPU seconds the command took (with every process it waited for)."""
    if stop.signal:
        raise Interrupted("interrupted", log)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a" if append else "w", encoding="utf-8") as out:
        if note:
            out.write(f"# {note}\n")
        out.write(f"$ {command_line(argv)}\n")
        out.flush()
        start = out.tell()
        # Own session, so that a timeout kills the command and every process it started.
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE if echo else out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        tee = threading.Thread(target=_tee, args=(proc.stdout, out), daemon=True)
        if echo:
            tee.start()
        try:
            code, cpu_seconds = _wait(proc, timeout, stop)
        except BaseException:
            _kill_group(proc, stop)
            raise
        finally:
            if echo:
                tee.join(timeout=KILL_GRACE_SECONDS)
    if code == "interrupted":
        raise Interrupted("interrupted", log, read_tail(log, start))
    if code == "timed out":
        raise CommandError(f"timed out after {timeout:g} s", log, read_tail(log, start),
                           timed_out=True)
    if code != 0:
        raise CommandError(f"exit code {code}", log, read_tail(log, start))
    return cpu_seconds


def _wait(proc: subprocess.Popen, timeout: float, stop: StopControl
          ) -> tuple[int | str, float]:
    """proc's exit code and the CPU seconds it and the processes it waited for used; or
    kill its group and say why ("timed out", "interrupted")."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        if stop.signal:
            _kill_group(proc, stop)
            return "interrupted", 0.0
        left = deadline - time.monotonic()
        if left <= 0:
            _kill_group(proc, stop)
            return "timed out", 0.0
        # os.wait4, not proc.wait: only it tells how much CPU the build took
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_utime + usage.ru_stime
        time.sleep(min(delay, left))
        delay = min(delay * 2, WAIT_STEP_SECONDS)


def _kill_group(proc: subprocess.Popen, stop: StopControl) -> None:
    """SIGTERM the group, SIGKILL it after the grace period (at once on a second stop
    request), and reap the command."""
    stop.killed_any = True
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE_SECONDS
    while proc.poll() is None and time.monotonic() < deadline and stop.count < 2:
        time.sleep(POLL_SECONDS / 5)
    with contextlib.suppress(ProcessLookupError):  # what is left of the group, too
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tee(source: IO[bytes], log: IO[str]) -> None:
    """Copy a command's output to the log whole, and to stdout with each line capped."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    shown = 0  # characters of the current line shown so far
    while chunk := source.read1(TAIL_BYTES):  # type: ignore[attr-defined]
        text = decoder.decode(chunk)
        log.write(text)
        log.flush()
        echoed, shown = capped_lines(text, shown, ECHO_LINE_CHARS)
        sys.stdout.write(echoed)
        sys.stdout.flush()
    source.close()


def capped_lines(text: str, shown: int, limit: int) -> tuple[str, int]:
    """`text` with every line cut at `limit` characters (" [...]" marks a cut), given that
    `shown` characters of its first line came before; also how many its last line has."""
    pieces = text.split("\n")
    out = []
    for i, piece in enumerate(pieces):
        if shown < limit:
            out.append(piece[:limit - shown])
            if shown + len(piece) > limit:
                out.append(" [...]")
        shown += len(piece)
        if i < len(pieces) - 1:
            out.append("\n")
            shown = 0
    return "".join(out), shown


def read_tail(path: Path, start: int = 0, limit: int = TAIL_BYTES) -> str:
    """The end of a file from offset `start`, at most `limit` bytes: never the whole of a
    large log."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(start, size - limit))
            return f.read(limit).decode(errors="replace")
    except OSError:
        return ""


def kill_groups_of(argument: str) -> int:
    """SIGKILL the process groups of processes still running with `argument` on their
    command line (a killed run's commands go on in their own sessions); return how many
    groups."""
    mark = argument.encode()
    groups = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if mark in (entry / "cmdline").read_bytes().split(b"\0"):
                groups.add(os.getpgid(int(entry.name)))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    deadline = time.monotonic() + KILL_GRACE_SECONDS
    while groups and time.monotonic() < deadline and any(_group_alive(g) for g in groups):
        time.sleep(POLL_SECONDS)
    return len(groups)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True
