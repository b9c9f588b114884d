"""doit's command line as the run reads it, once, before doit does: the command, the
tasks it names, `-n` jobs; and what that run will do (build, read storage, push, watch,
take the tree's lock)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from buildlib import doit_seam

# doit commands that change the tree's state or images, and so take the lock.
CHANGING_COMMANDS = {"run", "clean", "forget", "ignore", "reset-dep", "strace"}
# tasks that start no buildah themselves (`watch` starts `build` runs, each with its lock)
READ_ONLY_TASKS = {"status", "graph", "watch", "export", "render", "merge"}
STORAGE_FREE_TASKS = {"export", "render", "merge"}  # never read local image storage


@dataclass(frozen=True)
class Invocation:
    """doit's command line, read once: the command, the tasks it names, `-n` jobs."""

    command: str = "run"  # `doit build` is doit's `run` command with task `build`
    tasks: tuple[str, ...] = ()
    jobs: int | None = None
    words: tuple[str, ...] = field(default=(), compare=False)
    program: str = field(default="doit", compare=False)  # or `imagebake`

    @property
    def runs_tasks(self) -> bool:
        return self.command == "run"

    @property
    def builds(self) -> bool:
        """Whether it may start buildah to build or push (`doit status` does not)."""
        return self.runs_tasks and not (self.tasks and set(self.tasks) <= READ_ONLY_TASKS)

    @property
    def reads_storage(self) -> bool:
        """Whether its up-to-date checks list local images (`doit export` does not)."""
        return self.runs_tasks and not (self.tasks and set(self.tasks) <= STORAGE_FREE_TASKS)

    @property
    def pushes(self) -> bool:
        """Whether it runs a push task (`doit push`, `doit push:nova-api`), whose up-to-date
        checks ask the registry."""
        return self.runs_tasks and any(t == "push" or t.startswith("push:") for t in self.tasks)

    @property
    def may_push(self) -> bool:
        """Whether a push task may run or be shown: anything but `build` or `build:<image>`
        runs (doit's `list` and `info` show every task)."""
        return not self.runs_tasks or not all(
            task == "build" or task.startswith("build:") for task in self.tasks or ("build",))

    @property
    def watches(self) -> bool:
        return self.runs_tasks and "watch" in self.tasks

    @property
    def where(self) -> Path:
        """The folder the command was run in (doit has changed into dodo.py's since)."""
        return doit_seam.user_workdir()

    def rerun_as(self, task: str) -> list[str]:
        """This command line as a child process runs it, with `watch` replaced by `task`."""
        module = "buildlib.cli" if self.program == "imagebake" else "doit"
        return [sys.executable, "-m", module,
                *(task if word == "watch" else word for word in self.words)]

    @property
    def takes_lock(self) -> bool:
        return self.command in CHANGING_COMMANDS and (self.command != "run" or self.builds)


def parse_argv(argv: list[str], program: str = "doit") -> Invocation:
    """Read argv as doit reads it: its loader options (`-f dodo.py`) first, variables
    (`config=x`) aside; the first word left names the command, `run` when it names none."""
    rest = doit_seam.strip_loader_options(argv)
    words = [arg for arg in rest if arg.startswith("-") or "=" not in arg]
    command = "run"
    if words and words[0] in doit_seam.command_names():
        command, words = words[0], words[1:]
    parsed = doit_seam.run_options(words) if command == "run" else None
    if parsed is None:
        return Invocation(command, words=tuple(argv), program=program)
    jobs, tasks = parsed
    return Invocation(command, tuple(tasks), jobs, tuple(argv), program)
