"""The only module that starts buildah: one function per buildah verb, argument lists only."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

BUILDAH = "buildah"
KILL_GRACE_SECONDS = 10
PUSH_FORMATS = {"docker": "v2s2", "oci": "oci"}

_RUNNING: set[subprocess.Popen] = set()  # buildah processes now running, for interrupts
_RUNNING_LOCK = threading.Lock()


class StorageError(Exception):
    """Local storage cannot be listed (a wrong --root, broken storage, no buildah)."""


class BuildahError(Exception):
    """buildah exited non-zero or ran out of time; `log` holds its output."""

    def __init__(self, reason: str, log: Path | None = None, output: str = "",
                 timed_out: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.log, self.output, self.timed_out = reason, log, output, timed_out


def image_id(raw: str) -> str:
    """IDs as `sha256:<hex>`: `buildah images` prints them so, `buildah inspect` bare."""
    raw = raw.strip()
    return raw if raw.startswith("sha256:") else f"sha256:{raw}"


def command_line(argv: Sequence[str]) -> str:
    return shlex.join(argv)


def bud_options(tags: Sequence[str], *, fmt: str, timestamp: int | None,
                isolation: str | None, args: Mapping[str, str], labels: Mapping[str, str],
                volumes: Sequence[str]) -> list[str]:
    """The options of `buildah bud` that shape the image (everything but paths).
    `--timestamp` and no identity label make it reproducible: the same inputs on the
    same parent give the same image ID in any storage."""
    options = ["--format", fmt, "--layers", "--identity-label=false"]
    if timestamp is not None:
        options += ["--timestamp", str(timestamp)]
    for tag in tags:
        options += ["--tag", tag]
    if isolation:
        options += ["--isolation", isolation]
    for key, value in sorted(args.items()):
        options += ["--build-arg", f"{key}={value}"]
    for key, value in sorted(labels.items()):
        options += ["--label", f"{key}={value}"]
    for volume in volumes:
        options += ["--volume", volume]
    return options


@dataclass(frozen=True)
class Buildah:
    global_args: tuple[str, ...] = ()

    def argv(self, *args: str) -> list[str]:
        return [BUILDAH, *self.global_args, *args]

    def bud_argv(self, options: Sequence[str], dockerfile: Path, context_dir: Path,
                 iidfile: Path) -> list[str]:
        return self.argv("bud", *options, "--iidfile", str(iidfile),
                         "-f", str(dockerfile), str(context_dir))

    def bud(self, argv: Sequence[str], iidfile: Path, log: Path, timeout: float,
            note: str = "", echo: bool = False) -> str:
        """Run a `bud_argv` command with its output in `log`; return the built image ID."""
        iidfile.unlink(missing_ok=True)
        run_logged(argv, log, timeout, note=note, echo=echo)
        return image_id(iidfile.read_text())

    def push_argv(self, reference: str, destination: str, *, fmt: str, digestfile: Path,
                  tls_verify: bool, authfile: Path | None) -> list[str]:
        # --retry 0: the caller retries with its own policy. (buildah 1.28 still retries
        # a dropped or refused connection 3 times within one push, and says so in the log.)
        options = ["--format", PUSH_FORMATS[fmt], "--digestfile", str(digestfile),
                   f"--tls-verify={str(tls_verify).lower()}", "--retry", "0"]
        if authfile is not None:
            options += ["--authfile", str(authfile)]
        return self.argv("push", *options, reference, f"docker://{destination}")

    def push(self, argv: Sequence[str], digestfile: Path, log: Path, timeout: float) -> str:
        """Run a `push_argv` command, its output appended to `log`; return the digest."""
        digestfile.unlink(missing_ok=True)
        run_logged(argv, log, timeout, append=True)
        return digestfile.read_text().strip()

    def images(self) -> dict[str, set[str]]:
        """Every image in local storage: ID -> its names (one buildah process)."""
        argv = self.argv("images", "--json", "--no-trunc")
        try:
            out = subprocess.run(argv, check=True, capture_output=True, text=True,
                                 stdin=subprocess.DEVNULL).stdout
        except subprocess.CalledProcessError as err:
            said = error_line(err.stderr) or f"exit code {err.returncode}"
            raise StorageError(f"`{command_line(argv)}` failed: {said}") from None
        except OSError as err:
            raise StorageError(f"cannot run buildah: {err}") from None
        return {image_id(entry["id"]): set(entry.get("names") or [])
                for entry in json.loads(out or "[]")}

    def tag(self, image: str, *names: str) -> None:
        """Give an image in storage more names (no build, no copy)."""
        subprocess.run(self.argv("tag", image, *names), check=True, capture_output=True,
                       stdin=subprocess.DEVNULL)

    def pull(self, reference: str, *, tls_verify: bool, authfile: Path | None,
             timeout: float) -> str:
        """Pull `reference` (by digest: exactly that image) into storage; return its ID."""
        options = [f"--tls-verify={str(tls_verify).lower()}", "--quiet"]
        if authfile is not None:
            options += ["--authfile", str(authfile)]
        argv = self.argv("pull", *options, reference)
        try:
            out = subprocess.run(argv, check=True, capture_output=True, text=True,
                                 stdin=subprocess.DEVNULL, timeout=timeout).stdout
        except subprocess.CalledProcessError as err:
            raise BuildahError(f"`{command_line(argv)}` failed: {error_line(err.stderr)}",
                               output=err.stderr) from None
        except subprocess.TimeoutExpired:
            raise BuildahError(f"`{command_line(argv)}` timed out after {timeout:g} s") from None
        return image_id(out.strip().splitlines()[-1])

    def rmi(self, *references: str) -> None:
        subprocess.run(self.argv("rmi", "--force", *references), check=True,
                       capture_output=True, stdin=subprocess.DEVNULL)


def error_line(output: str) -> str:
    """What buildah said went wrong: its last `Error:` line, else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    return (errors or lines or [""])[-1]


def run_logged(argv: Sequence[str], log: Path, timeout: float, append: bool = False,
               note: str = "", echo: bool = False) -> None:
    """Run argv with stdout and stderr in `log` (after `# note` and the command line),
    and on our stdout too when `echo`; kill its whole process group on timeout.
    A failure raises BuildahError carrying this run's output."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a" if append else "w", encoding="utf-8") as out:
        if note:
            out.write(f"# {note}\n")
        out.write(f"$ {command_line(argv)}\n")
        out.flush()
        start = out.tell()
        # Own session, so that a timeout kills buildah and every process it started.
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE if echo else out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        tee = threading.Thread(target=_tee, args=(proc.stdout, out), daemon=True)
        if echo:
            tee.start()
        with _RUNNING_LOCK:
            _RUNNING.add(proc)
        try:
            code: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_groups([proc])
            code = None
        except BaseException:
            _kill_groups([proc])
            raise
        finally:
            with _RUNNING_LOCK:
                _RUNNING.discard(proc)
            if echo:
                tee.join(timeout=KILL_GRACE_SECONDS)
    if code is None:
        raise BuildahError(f"timed out after {timeout:g} s", log, _read_from(log, start),
                           timed_out=True)
    if code != 0:
        raise BuildahError(f"exit code {code}", log, _read_from(log, start))


# What buildah prints while it copies: never the reason it failed.
PROGRESS_LINE = re.compile(r"^(Getting image source signatures|Copying (blob|config) |"
                           r"Writing manifest|Storing signatures|\$ |# )")


def error_lines(output: str) -> list[str]:
    """buildah's `Error: ...` lines in `output`, or else its last line that is not
    progress (`Copying blob ...`) nor our own notes; at most one of each."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = list(dict.fromkeys(line for line in lines if line.startswith("Error:")))
    if errors:
        return errors
    return [line for line in lines if not PROGRESS_LINE.match(line)][-1:]


def _tee(source: IO[bytes], log: IO[str]) -> None:
    for raw in source:
        line = raw.decode(errors="replace")
        log.write(line)
        log.flush()
        sys.stdout.write(line)
    source.close()


def _read_from(log: Path, offset: int) -> str:
    with log.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def terminate_running() -> None:
    """Stop every buildah process group this process started (on SIGINT or SIGTERM)."""
    with _RUNNING_LOCK:
        procs = list(_RUNNING)
    _kill_groups(procs)


def _kill_groups(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each group, give them a grace period together, then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        deadline = time.monotonic() + KILL_GRACE_SECONDS
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    for proc in procs:
        proc.wait()
