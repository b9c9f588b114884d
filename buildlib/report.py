"""What a run tells its user: live progress, an end-of-run summary and report.json.

`RunReport` holds the outcome of every image of a run and renders the summary and
report.json. `ImageReporter` is doit's extension point that feeds it: doit calls it as
each task starts, succeeds, fails (blocked tasks fail with `UnmetDependency`) or is
skipped. What it prints of a log is bounded: the last lines of the log's last bytes,
each line cut.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from doit.exceptions import BaseFail, UnmetDependency
from doit.reporter import ConsoleReporter

from buildlib import buildah, dispatch, pictures, processes
from buildlib.doit_seam import display_path
from buildlib.estimate import Estimate
from buildlib.graph import Selection
from buildlib.progress import Progress
from buildlib.project import Project
from buildlib.retries import TRY_LINE
from buildlib.settled import How, Settled

LOG_TAIL_LINES = 15
NAMES_SHOWN = 12  # of the images that failed with one cause
LOG_TAIL_BYTES = 16 * 1024
LINE_CHARS = 300  # a summary line shows at most this much of a log line
ERROR_CHARS = 800  # and of an error line, whose fix may follow a long cause
SUCCESS = {"build": "built", "push": "pushed"}
PLURAL = {"build": "builds", "push": "pushes"}
SAVED_FIELDS = {"build": ("id", "key", "found"), "push": ("digest", "attempts", "replaced")}
STATUS_ORDER = ("built", "pushed", "up-to-date", "failed", "blocked", "excluded")


def ends_of(line: str, limit: int = LINE_CHARS) -> str:
    """A line of at most `limit` characters: a longer one keeps its start and its end, where
    buildah says the cause (after a request dump: "...: link /etc/passwd /hl: no such file")."""
    if len(line) <= limit:
        return line
    half = (limit - len(" [...] ")) // 2
    return f"{line[:half]} [...] {line[-half:]}"


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log, each cut to LINE_CHARS, read from its last bytes."""
    tail = processes.read_tail(path, limit=LOG_TAIL_BYTES).splitlines()[-lines:]
    return "".join(ends_of(line) + "\n" for line in tail)


def attempts_in(push_log: Path) -> int:
    """How many tries a push log records (`retries.try_line`)."""
    try:
        return sum(line.startswith(TRY_LINE) for line in push_log.read_text().splitlines())
    except OSError:
        return 0


class RunReport:
    """Every image's outcome in this run, per kind (`build`, `push`)."""

    def __init__(self, project: Project, command: str = "build",
                 last: dict[str, Any] | None = None) -> None:
        """`last`: the report.json of the run before, if any."""
        self.project = project
        self.command = command
        self.started = time.time()
        self.estimated: float | None = None  # seconds, at the start, from the last run
        self.sections: dict[str, dict[str, dict[str, Any]]] = {"build": {}, "push": {}}
        # each image's last build time and CPU time, carried over for the images this run
        # does not build
        self.last_build_seconds = dispatch.build_seconds(last)
        self.last_build_cpu = dispatch.build_cpu_seconds(last)

    def entry(self, kind: str, name: str) -> dict[str, Any]:
        plan = self.project.plans[name]
        log = plan.build_log if kind == "build" else plan.push_log
        entry = {"status": None, "image": plan.reference, **dict.fromkeys(SAVED_FIELDS[kind]),
                 "start": None, "end": None, "error": None,
                 "log": os.path.relpath(log, self.project.config.root)}
        return self.sections[kind].setdefault(name, entry)

    def exclude(self, names: set[str] | frozenset[str]) -> None:
        for name in names:
            self.entry("build", name).update(status="excluded")

    def blocked_by(self, kind: str, name: str) -> str | None:
        """The failed image (this one's build, or an ancestor's) that blocked it."""
        builds = self.sections["build"]
        candidates = [name] if kind == "push" else []
        candidates += list(self.project.graph.ancestors(name))
        return next((c for c in candidates if builds.get(c, {}).get("status") == "failed"),
                    None)

    def as_json(self, jobs: int) -> dict[str, Any]:
        data: dict[str, Any] = {
            "command": self.command, "jobs": jobs, "started": self.started,
            "finished": time.time(), "estimated": self.estimated,
            "images": {name: self._with_build_seconds(name, entry)
                       for name, entry in sorted(self.sections["build"].items())},
        }
        if self.sections["push"]:
            data["pushes"] = dict(sorted(self.sections["push"].items()))
        return data

    def _with_build_seconds(self, name: str, entry: dict[str, Any]) -> dict[str, Any]:
        if entry["status"] == "built" and entry["start"] and entry["end"]:
            seconds: float | None = entry["end"] - entry["start"]
            cpu: float | None = entry.get(dispatch.BUILD_CPU_SECONDS)
        else:
            seconds = self.last_build_seconds.get(name)
            cpu = self.last_build_cpu.get(name)
        return {**entry, dispatch.BUILD_SECONDS: seconds, dispatch.BUILD_CPU_SECONDS: cpu}

    def write(self, jobs: int) -> None:
        """report.json, and the run's trace.json and timeline.svg beside it."""
        data = self.as_json(jobs)
        path = self.project.report_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(path)
        pictures.write_run_pictures(self.project.graph, data, path.parent)

    def summary(self) -> str:
        """Counts per kind, then each failure with its reason, log tail and log path, and
        the images it blocked."""
        elapsed = time.time() - self.started
        lines = []
        for kind, section in self.sections.items():
            if section:
                counts = Counter(entry["status"] for entry in section.values())
                lines.append(f"{PLURAL[kind]}: " + ", ".join(
                    f"{counts[s]} {s}" for s in STATUS_ORDER if counts[s]))
        lines += self._platform_counts()
        lines += [f"key tag replaced for {name}: {entry['replaced']}"
                  for name, entry in sorted(self.sections["push"].items())
                  if entry.get("replaced")]
        estimated = (f" (estimated {self.estimated:.1f} s at the start)"
                     if self.estimated is not None else "")
        lines.append(f"took {elapsed:.1f} s{estimated}; "
                     f"report: {display_path(self.project.report_path)}")
        for kind, section in self.sections.items():
            failed: dict[str, list[str]] = {}  # error -> the images that failed with it
            for name, entry in sorted(section.items()):
                if entry["status"] == "failed":
                    failed.setdefault(entry["error"], []).append(name)
            for error, names in failed.items():
                if kind == "push" and len(names) > 1:  # one cause, e.g. the registry is down
                    lines += self._shared_failure(kind, names, error)
                else:
                    lines += [line for name in names
                              for line in self._failure(kind, name, section[name])]
        return "\n".join(lines) + "\n"

    def _platform_counts(self) -> list[str]:
        """`platform images: 3 built, 1 up-to-date (linux/amd64, linux/arm64)` when the run
        has multi-arch images."""
        done = [(platform, entry["status"]) for section in self.sections.values()
                for image in section.values()
                for platform, entry in (image.get("platforms") or {}).items()]
        if not done:
            return []
        counts = Counter(status for _, status in done)
        shown = ", ".join(f"{counts[s]} {s}" for s in STATUS_ORDER if counts[s])
        return [f"platform images: {shown} ({', '.join(sorted({p for p, _ in done}))})"]

    def _failure(self, kind: str, name: str, entry: dict[str, Any]) -> list[str]:
        log = self.project.config.root / entry["log"]
        lines = ["", f"FAILED {kind} {name}: {entry['error']}"]
        tail = log_tail(log)
        if kind == "push":  # buildah's error, not its "Copying blob ..." lines
            tail = "\n".join(buildah.error_lines(tail))
        lines += [f"   | {line}" for line in tail.splitlines()]
        lines.append(f"   log: {display_path(log)}")
        return lines + self._blocked_lines(name)

    def _shared_failure(self, kind: str, names: list[str], error: str) -> list[str]:
        shown = ", ".join(names[:NAMES_SHOWN]) + (
            f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else "")
        lines = ["", f"FAILED {kind} of {len(names)} images ({shown}): {error}"]
        logs = display_path(self.project.config.root / self.sections[kind][names[0]]["log"])
        lines.append(f"   logs: {logs.replace(names[0], '<image>')}")
        return lines  # a push blocks nothing

    def _blocked_lines(self, name: str) -> list[str]:
        blocked = [f"{k} {n}" for k, section in self.sections.items()
                   for n, e in sorted(section.items())
                   if e["status"] == "blocked" and self.blocked_by(k, n) == name]
        return [f"   blocked by it: {', '.join(blocked)}"] if blocked else []


def reporter_for(proj: Project, selection: Selection, jobs: int,
                 on_complete: Callable[[], None],
                 likely_builds: Callable[[], set[str]] | None = None,
                 last: dict[str, Any] | None = None, *,
                 stop: processes.StopControl) -> type[ConsoleReporter]:
    """doit's reporter class for this run; `on_complete` runs after the summary;
    `likely_builds()` names the images the run is expected to build, for its estimate;
    `last` is the report.json of the run before; `stop` the run's stop request."""
    return type("ImageReporter", (ImageReporter,),
                {"project": proj, "selection": selection, "jobs": jobs, "last": last,
                 "stop": stop,
                 "on_complete": staticmethod(on_complete),
                 "likely_builds": staticmethod(likely_builds or (lambda: selection.selected))})


class ImageReporter(ConsoleReporter):
    """Feeds a RunReport and a Progress from doit's events."""

    project: Project
    selection: Selection
    jobs: int
    on_complete: Callable[[], None]
    likely_builds: Callable[[], set[str]]
    last: dict[str, Any] | None
    stop: processes.StopControl
    desc = "images: progress, summary, report.json"

    def __init__(self, outstream: Any, options: dict[str, Any]) -> None:
        super().__init__(outstream, options)
        self.report = RunReport(self.project, last=self.last)
        self.progress: Progress | None = None
        self.first_failed_with: dict[tuple[str, str], str] = {}  # (kind, error) -> image
        self.reporting = True

    def initialize(self, tasks: dict[str, Any], selected_tasks: list[str]) -> None:
        self.report.command = " ".join(selected_tasks)
        if len(self.selection.selected) < len(self.project.plans):
            self.report.exclude(set(self.project.plans) - self.selection.selected)
        image_tasks = [t for t in _closure(tasks, selected_tasks) if _image(tasks[t])]
        self.reporting = bool(image_tasks)  # `doit status` and the like leave report.json be
        estimate = self._estimate(image_tasks) if self.reporting else None
        if estimate is not None and estimate.pending:
            self.report.estimated = estimate.left()
        self.progress = Progress(self.outstream, total=len(image_tasks), estimate=estimate)

    def _estimate(self, image_tasks: list[str]) -> Estimate | None:
        """From the last report's durations: every push of the run and the builds of the
        images expected to build count; None when there is no earlier run to go by."""
        expected = dispatch.expected_durations(self.selection.selected, self.last)
        if not expected:
            return None
        try:
            builds = {f"build:{name}" for name in self.likely_builds()}
        except buildah.StorageError:  # the first up-to-date check says so, and stops
            builds = {f"build:{name}" for name in self.selection.selected}
        return Estimate(self.project.graph, {t: expected[t] for t in image_tasks if t in expected},
                        self.jobs, [t for t in image_tasks
                                    if t in expected and (t in builds or t.startswith("push:"))])

    def execute_task(self, task: Any) -> None:
        if _image(task) and not self.stop.signal:
            self.report.entry(_kind(task), _image(task))["start"] = time.time()
            self._progress().begin(task.name, _label(task), task.title())

    def add_success(self, task: Any) -> None:
        if _image(task):
            entry = self.report.entry(_kind(task), _image(task))
            if _kind(task) == "build":
                settled = Settled.from_values(task.values)
                entry.update(status=_success(settled), end=time.time(),
                             **build_fields(settled, up_to_date=False))
                if entry["status"] == "built":
                    entry[dispatch.BUILD_CPU_SECONDS] = settled and settled.cpu_seconds
            else:
                entry.update(status=SUCCESS["push"], end=time.time(),
                             **{key: task.values.get(key) for key in SAVED_FIELDS["push"]})
            self._progress().end(task.name, f"{entry['status']} {_image(task)}")

    def add_failure(self, task: Any, fail: BaseFail) -> None:
        if not _image(task):
            if task.actions:  # a group task fails only through its images, reported already
                super().add_failure(task, fail)
            return
        kind, name = _kind(task), _image(task)
        entry = self.report.entry(kind, name)
        if self.stop.signal and not entry["start"]:
            entry.update(status="blocked", error="not run: interrupted")
            self._progress().skip(task.name)
            return
        if isinstance(fail, UnmetDependency):
            cause = self.report.blocked_by(kind, name) or fail.get_msg().strip()
            entry.update(status="blocked", error=f"not run: {cause} failed")
            self._progress().skip(task.name)
            return
        error = "\n".join(ends_of(line, ERROR_CHARS)
                          for line in fail.get_msg().strip().splitlines())
        entry.update(status="failed", end=time.time(), error=error)
        if kind == "push":
            entry["attempts"] = attempts_in(task.meta["log"])
        # a cause many share (the registry is down) is printed once in full
        first = self.first_failed_with.setdefault((kind, entry["error"]), name)
        said = entry["error"] if first == name else f"as {kind} {first} above"
        self._progress().end(task.name, f"FAILED {kind} {name}: {said}")

    def skip_uptodate(self, task: Any) -> None:
        if _image(task):
            entry = self.report.entry(_kind(task), _image(task))
            entry["status"] = "up-to-date"
            # what the up-to-date check settled on (doit's saved values may predate it)
            settled = task.meta.get("settled")
            if _kind(task) == "build":
                entry.update(build_fields(settled, up_to_date=True))
            else:
                entry.update({key: value for key, value in (settled or {}).items()
                              if key in SAVED_FIELDS["push"]})
            self._progress().skip(task.name)

    def skip_ignore(self, task: Any) -> None:
        pass

    def complete_run(self) -> None:
        self._progress().stop()
        if self.reporting:
            signum = self.stop.signal
            if signum:
                self._mark_unfinished()
                name = signal.Signals(signum).name
                self.write(f"interrupted ({name}): stopped the running builds\n")
            try:
                self.report.write(self.jobs)
            except OSError as err:
                self.write(f"error: cannot write {display_path(self.project.report_path)}: "
                           f"{err.strerror or err}\n")
            self.write(self.report.summary())
        super().complete_run()
        self.on_complete()

    def _mark_unfinished(self) -> None:
        """Started tasks doit did not report the end of, when the run was interrupted."""
        for section in self.report.sections.values():
            for entry in section.values():
                if entry["start"] and entry["status"] is None:
                    entry.update(status="failed", end=time.time(), error="interrupted")

    def _progress(self) -> Progress:
        if self.progress is None:  # doit calls initialize first; this is a fallback
            self.progress = Progress(self.outstream, total=0)
        return self.progress


def build_fields(settled: Settled | None, up_to_date: bool) -> dict[str, Any]:
    """report.json's fields of what a build settled on: its image ID, key, how it was come
    by (`found`), and a multi-arch image's platforms."""
    if settled is None:
        return {}
    fields: dict[str, Any] = {"id": settled.id, "key": settled.key, "found": settled.how.value}
    if settled.platforms:
        fields["platforms"] = platform_entries(settled.platforms, up_to_date)
    return fields


def platform_entries(platforms: Mapping[str, Settled],
                     up_to_date: bool = False) -> dict[str, dict[str, Any]]:
    """report.json's entry of each platform of a multi-arch image: its ID, key and status."""
    return {platform: {"id": settled.id, "key": settled.key,
                       "status": "built" if settled.how is How.BUILT and not up_to_date
                       else "up-to-date"}
            for platform, settled in platforms.items()}


def _closure(tasks: dict[str, Any], selected: list[str]) -> set[str]:
    """The selected tasks and every task they depend on."""
    seen: set[str] = set()
    stack = list(selected)
    while stack:
        name = stack.pop()
        if name in seen or name not in tasks:
            continue
        seen.add(name)
        stack.extend(tasks[name].task_dep)
        stack.extend(tasks[name].setup_tasks)
    return seen


def _image(task: Any) -> str | None:
    return (task.meta or {}).get("image")


def _success(settled: Settled | None) -> str:
    """`built`, or `up-to-date` for an image found by its key instead of built."""
    return SUCCESS["build"] if settled is None or settled.how is How.BUILT else "up-to-date"


def _kind(task: Any) -> str:
    return task.meta["kind"]


def _label(task: Any) -> str:
    """How progress names a running task: `nova-api` for a build, `push nova-api`."""
    return _image(task) if _kind(task) == "build" else f"{_kind(task)} {_image(task)}"
