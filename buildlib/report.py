"""What a run tells its user: a line per image, an end-of-run summary and report.json.

The reporter is doit's extension point for this; it sees every task's start, success,
failure (blocked ones fail with `UnmetDependency`) and skip.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from doit.exceptions import BaseFail, UnmetDependency
from doit.reporter import ConsoleReporter

from buildlib.project import Project

LOG_TAIL_LINES = 15


def jobs_from_argv(argv: list[str], default: int) -> int:
    """The effective `-n/--process` of this doit run (doit does not hand it to reporters)."""
    for i, arg in enumerate(argv):
        if arg in ("-n", "--process") and i + 1 < len(argv):
            return _int_or(argv[i + 1], default)
        if arg.startswith("--process="):
            return _int_or(arg.partition("=")[2], default)
        if arg.startswith("-n") and len(arg) > 2 and not arg.startswith("--"):
            return _int_or(arg[2:], default)
    return default


def _int_or(text: str, default: int) -> int:
    try:
        return int(text)
    except ValueError:
        return default


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(True)[-lines:])
    except OSError:
        return ""


def display_path(path: Path) -> str:
    """Relative to the current directory when under it, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def reporter_for(proj: Project) -> type[ConsoleReporter]:
    return type("ImageReporter", (ImageReporter,), {"project": proj})


SUCCESS = {"build": "built", "push": "pushed"}
PLURAL = {"build": "builds", "push": "pushes"}
SAVED_FIELDS = {"build": ("id",), "push": ("digest", "attempts")}


class ImageReporter(ConsoleReporter):
    """Prints each build and push as it starts and each failure as it happens; at the end,
    a summary and report.json (`images` for builds, `pushes` for pushes)."""

    project: Project
    desc = "images: one line per build, a summary, report.json"

    def __init__(self, outstream: Any, options: dict[str, Any]) -> None:
        super().__init__(outstream, options)
        self.lock = threading.Lock()
        self.started = time.time()
        self.command = "build"
        self.sections: dict[str, dict[str, dict[str, Any]]] = {"build": {}, "push": {}}
        self.uptodate_tasks: list[Any] = []

    def write(self, text: str) -> None:
        with self.lock:
            self.outstream.write(text)
            self.outstream.flush()

    def initialize(self, tasks: Any, selected_tasks: list[str]) -> None:
        self.command = " ".join(selected_tasks)

    def execute_task(self, task: Any) -> None:
        if _image(task):
            self._entry(task)["start"] = time.time()
            self.write(f".  {task.title()}\n")

    def add_success(self, task: Any) -> None:
        if _image(task):
            self._entry(task).update(status=SUCCESS[_kind(task)], end=time.time(),
                                     **self._saved(task))

    def add_failure(self, task: Any, fail: BaseFail) -> None:
        if not _image(task):
            if task.actions:  # a group task fails only through its images, reported already
                super().add_failure(task, fail)
            return
        entry = self._entry(task)
        if isinstance(fail, UnmetDependency):
            entry.update(status="blocked", error=f"not run: {fail.get_msg().strip()} failed")
            return
        entry.update(status="failed", end=time.time(), error=fail.get_msg().strip())
        tail = log_tail(task.meta["log"])
        self.write(f"FAILED {_kind(task)} {_image(task)}: {entry['error']}\n"
                   + "".join(f"   | {line}" for line in tail.splitlines(True)))

    def skip_uptodate(self, task: Any) -> None:
        if _image(task):
            self._entry(task)["status"] = "up-to-date"
            self.uptodate_tasks.append(task)  # doit sets task.values after this call

    def skip_ignore(self, task: Any) -> None:
        pass

    def complete_run(self) -> None:
        for task in self.uptodate_tasks:
            kind = _kind(task)
            self._entry(task).update({k: task.values.get(k) for k in SAVED_FIELDS[kind][:1]})
        self.write_report()
        self.write(self.summary())
        super().complete_run()

    def _saved(self, task: Any) -> dict[str, Any]:
        return {key: task.values.get(key) for key in SAVED_FIELDS[_kind(task)]}

    def _entry(self, task: Any) -> dict[str, Any]:
        name, kind = _image(task), _kind(task)
        entry = {"status": None, "image": self.project.plans[name].reference}
        entry.update(dict.fromkeys(SAVED_FIELDS[kind]))
        entry.update(start=None, end=None, error=None,
                     log=os.path.relpath(task.meta["log"], self.project.config.root))
        return self.sections[kind].setdefault(name, entry)

    def write_report(self) -> None:
        settings = self.project.config.settings
        data: dict[str, Any] = {
            "command": self.command,
            "jobs": jobs_from_argv(sys.argv[1:], settings.jobs),
            "started": self.started,
            "finished": time.time(),
            "images": dict(sorted(self.sections["build"].items())),
        }
        if self.sections["push"]:
            data["pushes"] = dict(sorted(self.sections["push"].items()))
        path = self.project.report_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(path)

    def summary(self) -> str:
        parts, failures = [], []
        for kind, section in self.sections.items():
            counts = Counter(entry["status"] for entry in section.values())
            order = (SUCCESS[kind], "up-to-date", "failed", "blocked")
            if section:
                parts.append(f"{PLURAL[kind]}: " + ", ".join(f"{counts[s]} {s}" for s in order
                                                       if counts[s]))
            failures += [f"  {kind} failed: {name}: {entry['error']}\n"
                         for name, entry in sorted(section.items())
                         if entry["status"] == "failed"]
        elapsed = time.time() - self.started
        return (f"{'; '.join(parts) or 'nothing to do'} in {elapsed:.1f} s; "
                f"report: {display_path(self.project.report_path)}\n" + "".join(failures))


def _kind(task: Any) -> str:
    return task.meta["kind"]


def _image(task: Any) -> str | None:
    return (task.meta or {}).get("image")
