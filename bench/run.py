"""imagebake benchmarks: `python bench/run.py [--quick]` prints a table per benchmark and
writes bench/results.json (and bench/profile-noop-1000.txt).

1. Makespan at -n 8 on Kolla's shape with heavy-tailed (lognormal) sleeps, one tree per
   seed, each variant on a fresh storage root and build dir: `doit -n 8 build
   dispatch=fifo` (doit's own order), `doit -n 8 build` (critical-path-first), the
   level-synchronous scheduler of bench/levels.py; each against the lower bound
   max(critical path, total work / 8, total CPU time / cores) of isolated build times.
2. No-op `doit build` of fully built trees: the Kolla tree built in 1 (RUN layers), the
   same shape without RUN steps, and 1,000 random images (sleep 0): wall time against
   the targets and against a bare doit no-op of as many tasks (the floor), buildah
   processes started, time per image, doit's state backends (dbm, json, sqlite3), each
   run's top five costs (timed in process) and a cProfile of the largest.
3. One-template edit: the vars of `nova-base` in the built Kolla tree; wall time and the
   rebuilt set, checked against that image's subtree.
4. Overhead per image: `doit -n 1` against raw `buildah bud` with the same arguments.

Every build uses a private buildah storage root under a temp dir, removed at the end.
The machine may be busy with other work: compare the ratios measured in the same run.
`--seeds N --makespan-only` runs part of benchmark 1 alone.
"""

from __future__ import annotations

import argparse
import compileall
import dbm
import io
import json
import os
import pstats
import random
import resource
import shlex
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import aging
import levels
import trees
from doit import dependency

from buildlib import project
from buildlib.graph import Graph

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DODO = REPO / "dodo.py"
DOIT = Path(sys.executable).parent / "doit"
REAL_BUILDAH = shutil.which("buildah")
RESULTS = BENCH / "results.json"
JOBS = 8
TIMEOUT = 3600
BACKENDS = ("dbm", "json", "sqlite3")

# Logs each buildah command line, then runs the real buildah (a shell script: cheap).
WRAPPER = """#!/bin/sh
printf '%s\\n' "$*" >> {log}
exec {real} "$@"
"""


@dataclass(frozen=True)
class Plan:
    """What one run measures: the full version, or the reduced `--quick` one."""

    kolla_size: int | None  # None: all of Kolla's 188 images; else a part with nova-base's
    sleep: tuple[float, float]  # RUN sleep seconds: lognormal, (median, sigma)
    seeds: int  # draws of the sleeps in benchmark 1
    isolated: int  # images (an ancestor-closed subset) timed at -n 1 and with raw buildah
    noop_random: int  # images of the random tree for the no-op benchmark (sleep 0)
    repeats: int  # no-op runs per variant (the median is reported)
    seed: int = 1
    aged_images: int = 40  # the tree rebuilt in fresh, aged and pruned storage (benchmark 6)
    aged_keys: int = 2000  # images of old keys the aged storage holds
    push_sleep: tuple[float, float] = (0.3, 1.0)  # benchmark 7's build sleeps
    upload_delay: float = 0.3  # seconds each blob upload waits in benchmark 7


FULL = Plan(kolla_size=None, sleep=(1.0, 1.3), seeds=3, isolated=16, noop_random=1000,
            repeats=5, upload_delay=1.0)
QUICK = Plan(kolla_size=20, sleep=(0.5, 1.0), seeds=2, isolated=5, noop_random=100, repeats=3,
             aged_keys=400)
TARGETS = {188: 0.3, 1000: 1.0}  # no-op seconds, by tree size (issue 13)


class BenchError(Exception):
    pass


# --- running things -------------------------------------------------------------------


@dataclass
class Measured:
    wall: float
    cpu: float  # user + system seconds of the process and every process it waited for
    stdout: str = ""
    calls: list[str] = field(default_factory=list)  # buildah command lines, when logged


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
            cwd: Path | None = None) -> Measured:
    cpu, start = children_cpu(), time.perf_counter()
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise BenchError(f"{' '.join(map(str, argv[:6]))} ... exited {proc.returncode}:\n{tail}")
    return Measured(wall, children_cpu() - cpu, proc.stdout)


class Runner:
    """Runs doit on a tree, optionally with a logging `buildah` first on PATH."""

    def __init__(self, work: Path) -> None:
        self.calls_log = work / "buildah-calls.log"
        wrapper_dir = work / "wrapper-bin"
        wrapper_dir.mkdir()
        wrapper = wrapper_dir / "buildah"
        wrapper.write_text(WRAPPER.format(log=shlex.quote(str(self.calls_log)),
                                          real=shlex.quote(REAL_BUILDAH or "buildah")))
        wrapper.chmod(0o755)
        self.logged_env = {**os.environ, "PATH": f"{wrapper_dir}:{os.environ['PATH']}"}

    def doit(self, tree: trees.Tree, *args: str, logged: bool = False,
             python: Sequence[str] = ()) -> Measured:
        self.calls_log.unlink(missing_ok=True)
        argv = [*python, DOIT, "-f", DODO, f"config={tree.config}", *args]
        result = measure(argv, env=self.logged_env if logged else None, cwd=tree.root)
        if logged and self.calls_log.exists():
            result.calls = self.calls_log.read_text().splitlines()
        return result


def verb(command_line: str) -> str:
    """`--root R --runroot RR --storage-driver overlay bud ...` -> `bud`."""
    words = command_line.split()
    i = 0
    while i < len(words) and words[i].startswith("--"):
        i += 1 if "=" in words[i] else 2
    return words[i] if i < len(words) else "?"


def statuses(tree: trees.Tree) -> dict[str, str]:
    report = json.loads(tree.report_path.read_text())
    return {name: entry["status"] for name, entry in report["images"].items()}


def expect_all(tree: trees.Tree, status: str, images: Iterable[str] | None = None) -> None:
    got = statuses(tree)
    wanted = set(tree.parents if images is None else images)
    wrong = {n: got.get(n) for n in wanted if got.get(n) != status}
    if wrong:
        sample = dict(list(sorted(wrong.items()))[:5])
        raise BenchError(f"{len(wrong)} images not {status}, e.g. {sample}")


def unmount_under(path: Path) -> None:
    """Overlay storage may leave mounts behind; unmount them so that the dir can go."""
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def remove_storage(storage: Path) -> None:
    unmount_under(storage)
    shutil.rmtree(storage, ignore_errors=True)


# --- tree shapes ----------------------------------------------------------------------


def closed_sample(parents: Mapping[str, str | None], count: int, seed: int,
                  include: Iterable[str] = ()) -> dict[str, str | None]:
    """An ancestor-closed subset of about `count` images (every chosen image's parent is
    chosen): `include` and its ancestors, then the chains of images in a seeded random order."""
    chosen: set[str] = set()

    def chain(name: str | None) -> list[str]:
        found = []
        while name is not None and name not in chosen:
            found.append(name)
            name = parents[name]
        return found

    for name in include:
        chosen.update(chain(name))
    order = list(parents)
    random.Random(seed).shuffle(order)
    for name in order:
        missing = chain(name)
        if len(chosen) + len(missing) <= count:
            chosen.update(missing)
    return {name: parent for name, parent in parents.items() if name in chosen}


def kolla_shape(size: int | None, seed: int) -> dict[str, str | None]:
    """Kolla's tree, or an ancestor-closed part of it that keeps nova-base's subtree."""
    parents = trees.kolla_parents()
    if size is None:
        return parents
    return closed_sample(parents, size, seed, include=trees.subtree(parents, "nova-base"))


# --- 1 and 4: makespan, lower bound, overhead -----------------------------------------


def raw_builds(tree: trees.Tree, names: Iterable[str]) -> dict[str, Any]:
    """`buildah bud` with our tool's arguments, one image after the other, nothing else.
    The contexts are written first, untimed."""
    proj = project.load(tree.config)
    wanted = set(names)
    order = [name for name in proj.graph.order() if name in wanted]
    for name in order:
        plan = proj.plans[name]
        plan.context.write(plan.dockerfile, plan.context_dir)
    times, cpu = {}, children_cpu()
    started = time.perf_counter()
    for name in order:
        log = proj.plans[name].workdir / f"{name}-raw.log"
        start = time.perf_counter()
        with log.open("w") as out:
            subprocess.run(levels.bud_argv(proj, name), stdout=out, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, check=True, timeout=TIMEOUT)
        times[name] = time.perf_counter() - start
    return {"wall": time.perf_counter() - started, "cpu": children_cpu() - cpu,
            "images": times}


def bench_isolated(work: Path, runner: Runner, tree: trees.Tree, plan: Plan
                   ) -> dict[str, Any]:
    """Isolated build times of an ancestor-closed sample at -n 1 (from report.json's
    start/end), then the same images with raw buildah (benchmark 4); each on a fresh
    storage root. Gives the overhead of a build beyond its sleep and its CPU time."""
    parents, seconds = tree.parents, tree.seconds
    subset = closed_sample(parents, plan.isolated, plan.seed)
    tree.use_storage(work / "storage-n1", build_dir="build-n1")
    n1 = runner.doit(tree, "-n", "1", *[f"build:{name}" for name in subset])
    expect_all(tree, "built", subset)
    report = json.loads(tree.report_path.read_text())["images"]
    measured = {name: report[name]["end"] - report[name]["start"] for name in subset}
    remove_storage(work / "storage-n1")
    progress(f"doit -n 1 on {len(subset)} of the images: {n1.wall:.1f} s")

    tree.use_storage(work / "storage-raw", build_dir="build-raw")
    raw = raw_builds(tree, subset)
    remove_storage(work / "storage-raw")
    progress(f"raw buildah bud on the same {len(subset)}: {raw['wall']:.1f} s")
    overhead = statistics.median(measured[name] - seconds[name] for name in subset
                                 if parents[name] is not None)
    return {"images": sorted(subset), "seconds": {k: seconds[k] for k in subset},
            "doit_n1": {"wall": n1.wall, "cpu": n1.cpu, "images": measured}, "raw": raw,
            "overhead": overhead, "cpu_per_image": raw["cpu"] / len(subset)}


def lower_bound(graph: Graph, seconds: Mapping[str, float], isolated: Mapping[str, Any],
                measured: Mapping[str, float], cores: int) -> dict[str, Any]:
    """max(critical path, work / jobs, CPU time / cores) of isolated build times: those
    `measured`, the others their sleep plus the sample's overhead; CPU time the sample's
    per image."""
    durations = {name: measured.get(name, seconds[name] + isolated["overhead"])
                 for name in graph.parents}
    path = graph.longest_path(durations)
    work_total = sum(durations.values())
    cpu_total = isolated["cpu_per_image"] * len(durations)
    parts = {"critical_path": path.length, "work_per_job": work_total / JOBS,
             "cpu_per_core": cpu_total / cores}
    return {"wall": max(parts.values()), **parts, "work": work_total, "cpu": cpu_total,
            "chain": path.chain, "measured": len(measured)}


def bench_seed(work: Path, runner: Runner, parents: dict[str, str | None], plan: Plan,
               seed: int) -> tuple[dict[str, Any], trees.Tree]:
    """FIFO, critical-path-first and level-by-level on one draw of sleeps, each on a fresh
    storage root and build dir. Critical-path-first reads the durations FIFO's run recorded
    in report.json, as a user's next build reads the last one's. The plan's own seed leaves
    its tree built by critical-path-first in `work/storage-a` and its `build` dir."""
    seconds = trees.draw_lognormal(parents, *plan.sleep, seed=seed)
    graph = Graph.build(parents)
    tree = trees.write_tree(work / f"kolla-{seed}", parents, seconds, work / "storage-fifo")
    tree.use_storage(work / "storage-fifo", build_dir="build-fifo")
    fifo = runner.doit(tree, "-n", str(JOBS), "build", "dispatch=fifo")
    expect_all(tree, "built")
    fifo_report = tree.report_path.read_text()
    fifo_slots = slot_use(graph, json.loads(fifo_report), seconds, fifo.wall)
    remove_storage(work / "storage-fifo")
    progress(f"seed {seed}: FIFO {fifo.wall:.1f} s")

    kept = seed == plan.seed
    storage = work / ("storage-a" if kept else "storage-cp")
    tree.use_storage(storage, build_dir="build" if kept else "build-cp")
    tree.build_dir.mkdir(parents=True)
    tree.report_path.write_text(fifo_report)
    critical = runner.doit(tree, "-n", str(JOBS), "build", "dispatch=critical-path")
    expect_all(tree, "built")
    critical_slots = slot_use(graph, json.loads(tree.report_path.read_text()), seconds,
                              critical.wall)
    if not kept:
        remove_storage(storage)
    progress(f"seed {seed}: critical-path-first {critical.wall:.1f} s")

    tree.use_storage(work / "storage-levels", build_dir="build-levels")
    levels = measure([sys.executable, BENCH / "levels.py", tree.config, "--jobs", str(JOBS),
                      "--report", work / "levels-report.json"], cwd=tree.root)
    remove_storage(work / "storage-levels")
    level_spans = json.loads((work / "levels-report.json").read_text())["levels"]
    progress(f"seed {seed}: level-by-level {levels.wall:.1f} s")
    if kept:
        tree.use_storage(work / "storage-a", build_dir="build")
    result = {"seed": seed, "sleep_total": tree.total_seconds,
              "fifo": {"wall": fifo.wall, "cpu": fifo.cpu, **fifo_slots},
              "critical_path_first": {"wall": critical.wall, "cpu": critical.cpu,
                                      **critical_slots},
              "levels": {"wall": levels.wall, "cpu": levels.cpu, "levels": level_spans}}
    return result, tree


def fifo_again(work: Path, runner: Runner, tree: trees.Tree, first: dict[str, Any]) -> float:
    """FIFO on the last seed's tree once more, on a fresh storage root: how far apart two
    runs of the same order land on this machine."""
    tree.use_storage(work / "storage-again", build_dir="build-again")
    again = runner.doit(tree, "-n", str(JOBS), "build", "dispatch=fifo")
    expect_all(tree, "built")
    remove_storage(work / "storage-again")
    progress(f"seed {first['seed']}: FIFO again {again.wall:.1f} s")
    return again.wall


def slot_use(graph: Graph, report: Mapping[str, Any], seconds: Mapping[str, float],
             wall: float) -> dict[str, float]:
    """How full the run kept its job slots (the builds' summed durations over jobs x wall
    time), each build's median time beyond its sleep (with the slots full, only builds
    that take less time can end the run sooner), and the run against its own lower bound:
    max(critical path, summed build times / jobs) of the build times it measured."""
    spans = {name: entry["end"] - entry["start"] for name, entry in report["images"].items()}
    own_bound = max(graph.longest_path(spans).length, sum(spans.values()) / JOBS)
    return {"slots_busy": sum(spans.values()) / (JOBS * wall),
            "beyond_sleep": statistics.median(spans[name] - seconds[name] for name in spans),
            "own_bound": own_bound, "own_ratio": wall / own_bound}


VARIANTS = (("fifo", "FIFO"), ("critical_path_first", "critical-path-first"),
            ("levels", "level-by-level"))


def bench_makespan(work: Path, runner: Runner, plan: Plan, seeds: int
                   ) -> tuple[dict[str, Any], str, trees.Tree]:
    """FIFO vs critical-path-first vs level-by-level per seed, each against the three-part
    lower bound, and the isolated times for the bound and for benchmark 4. Returns the
    plan's seed's tree, left fully built in `work/storage-a` and its `build` dir."""
    parents = kolla_shape(plan.kolla_size, plan.seed)
    graph = Graph.build(parents)
    cores = os.cpu_count() or 1
    n, shape = len(parents), [len(level) for level in graph.levels()]
    median, sigma = plan.sleep
    title = (f"1. Makespan at -n {JOBS}: Kolla shape, {n} images in levels of "
             f"{'+'.join(map(str, shape))}, RUN sleep lognormal (median {median:g} s, sigma "
             f"{sigma:g}), {seeds} seeds; fresh storage root per run")
    progress(title)
    sample = trees.write_tree(work / "kolla-sample", parents,
                              trees.draw_lognormal(parents, *plan.sleep, seed=plan.seed),
                              work / "storage-sample")
    isolated = bench_isolated(work, runner, sample, plan)
    runs, kept = [], None
    for seed in range(plan.seed, plan.seed + seeds):
        result, tree = bench_seed(work, runner, parents, plan, seed)
        measured = isolated["doit_n1"]["images"] if seed == plan.seed else {}
        result["bound"] = lower_bound(graph, tree.seconds, isolated, measured, cores)
        for key, _ in VARIANTS:
            result[key]["ratio"] = result[key]["wall"] / result["bound"]["wall"]
        runs.append(result)
        if seed == plan.seed:
            kept = tree
    assert kept is not None
    again = fifo_again(work, runner, tree, runs[-1])
    if tree is kept:  # one seed: later benchmarks use its built storage
        kept.use_storage(work / "storage-a", build_dir="build")

    def cell(run: dict[str, Any], key: str) -> str:
        return f"{run[key]['wall']:.1f} ({run[key]['ratio']:.2f}x)"

    rows = [(str(r["seed"]), f"{r['sleep_total']:.0f}", f"{r['bound']['critical_path']:.1f}",
             f"{r['bound']['work_per_job']:.1f}", f"{r['bound']['cpu_per_core']:.1f}",
             f"{r['bound']['wall']:.1f}", *[cell(r, key) for key, _ in VARIANTS],
             f"{r['critical_path_first']['wall'] / r['fifo']['wall']:.2f}") for r in runs]
    header = ["seed", "sleep s", "crit. path s", f"work/{JOBS} s", f"cpu/{cores} s",
              "bound s", *[f"{label} s (/bound)" for _, label in VARIANTS], "CP/FIFO"]
    never_slower = all(r["critical_path_first"]["wall"] <= r["fifo"]["wall"] for r in runs)
    median_ratio = statistics.median(r["critical_path_first"]["ratio"] for r in runs)
    sample_n = len(isolated["images"])
    lines = [title, table(header, rows),
             f"targets: critical-path-first no slower than FIFO on every seed: "
             f"{'met' if never_slower else 'MISSED'}; within 1.05x the bound on the median "
             f"seed: {median_ratio:.2f}x, {'met' if median_ratio <= 1.05 else 'MISSED'}",
             "level-by-level per level (seed {}): ".format(runs[0]["seed"]) + ", ".join(
                 f"{s['size']} images {s['end'] - s['start']:.1f} s"
                 for s in runs[0]["levels"]["levels"]),
             f"bound = max(critical path, work / {JOBS}, CPU time / {cores} cores) of isolated "
             f"builds, partly modelled: {sample_n} images (an ancestor-closed sample of seed "
             f"{plan.seed}) measured at -n 1 from report.json start/end; every other image "
             f"(all of the other seeds) is its sleep + {isolated['overhead']:.2f} s, the "
             f"sample's median build time beyond its sleep; CPU time is "
             f"{isolated['cpu_per_image']:.2f} s per image, the sample's raw `buildah bud` "
             f"CPU time per image.",
             "job slots busy, and each build's median time beyond its sleep: " + "; ".join(
                 f"seed {r['seed']}: " + ", ".join(
                     f"{label} {r[key]['slots_busy']:.0%}, {r[key]['beyond_sleep']:.2f} s"
                     for key, label in VARIANTS[:2]) for r in runs),
             "each run against its own lower bound, max(critical path, summed build times / "
             f"{JOBS}) of the build times it measured: " + "; ".join(
                 f"seed {r['seed']}: " + ", ".join(
                     f"{label} {r[key]['own_ratio']:.2f}x" for key, label in VARIANTS[:2])
                 for r in runs),
             f"run-to-run spread: FIFO on seed {runs[-1]['seed']} again took {again:.1f} s "
             f"(first {runs[-1]['fifo']['wall']:.1f} s, "
             f"{abs(again / runs[-1]['fifo']['wall'] - 1):.0%} apart): differences between "
             "orders smaller than that are noise on this machine",
             "CPU of the runs (s): " + "; ".join(
                 f"seed {r['seed']}: " + ", ".join(f"{label} {r[key]['cpu']:.0f}"
                                                   for key, label in VARIANTS) for r in runs),
             "critical-path-first reads the durations of the FIFO run before it (report.json),"
             " as a next build reads the last one's."]
    data = {"images": n, "levels": shape, "sleep_lognormal": {"median": median,
                                                              "sigma": sigma},
            "jobs": JOBS, "cores": cores, "seeds": runs, "isolated": isolated,
            "fifo_again": {"seed": runs[-1]["seed"], "wall": again},
            "targets": {"never_slower_than_fifo": never_slower,
                        "median_ratio_to_bound": median_ratio}}
    return data, "\n".join(lines), kept


def bench_overhead(makespan: dict[str, Any]) -> tuple[dict[str, Any], str]:
    iso = makespan["isolated"]
    ours, raw, names = iso["doit_n1"], iso["raw"], iso["images"]
    count = len(names)
    ratio = ours["wall"] / raw["wall"]
    extra = (ours["wall"] - raw["wall"]) / count
    span = statistics.median(ours["images"][n] - raw["images"][n] for n in names)
    lines = [
        f"4. Overhead per image vs raw `buildah bud`: the same {count} images (RUN sleep "
        f"{sum(iso['seconds'].values()):.0f} s in all), same arguments, one at a time, fresh "
        "storage each",
        table(["", "total s", "per image s", "cpu s"], [
            ("doit -n 1 build:<each>", f"{ours['wall']:.1f}", f"{ours['wall'] / count:.2f}",
             f"{ours['cpu']:.1f}"),
            ("raw buildah bud", f"{raw['wall']:.1f}", f"{raw['wall'] / count:.2f}",
             f"{raw['cpu']:.1f}")]),
        f"ratio ours/raw = {ratio:.3f}: {extra:+.3f} s per image (doit's start, loading and "
        f"rendering the tree included); median per-image build span minus raw bud: "
        f"{span:+.3f} s",
    ]
    data = {"images": count, "ours_total": ours["wall"], "raw_total": raw["wall"],
            "ratio": ratio, "overhead_per_image": extra, "median_span_difference": span}
    return data, "\n".join(lines)


# --- 2 and 3: no-op, backends, profile, one edit --------------------------------------


def state_backend(path: Path) -> str:
    """Which doit backend wrote the state file at `path`."""
    if Path(f"{path}.dir").exists():
        return "dbm"
    head = path.read_bytes()[:16]
    if head.startswith(b"SQLite format 3"):
        return "sqlite3"
    if head.lstrip().startswith(b"{"):
        return "json"
    raise BenchError(f"cannot tell which doit backend wrote {path}")


def read_state(path: Path) -> dict[str, dict[str, Any]]:
    backend = state_backend(path)
    if backend == "json":
        return json.loads(path.read_text())
    if backend == "sqlite3":
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT task_id, task_data FROM doit").fetchall()
        return {task: json.loads(data) for task, data in rows}
    with dbm.open(str(path), "r") as db:
        return {key.decode(): json.loads(db[key]) for key in db}


def write_state(state: Mapping[str, Mapping[str, Any]], path: Path, backend: str) -> None:
    """Write the same task states with doit's own class for `backend`."""
    classes = {"dbm": dependency.DbmDB, "json": dependency.JsonDB,
               "sqlite3": dependency.SqliteDB}
    db = classes[backend](str(path), dependency.JSONCodec())
    for task, values in state.items():
        for key, value in values.items():
            db.set(task, key, value)
    db.dump()


def noop_runs(runner: Runner, tree: trees.Tree, repeats: int, *args: str) -> dict[str, Any]:
    runs = []
    for _ in range(repeats):
        result = runner.doit(tree, *args, "build", logged=True)
        expect_all(tree, "up-to-date")
        runs.append(result)
    walls = [r.wall for r in runs]
    verbs = Counter(verb(call) for r in runs for call in r.calls)
    return {"median": statistics.median(walls), "min": min(walls), "runs": walls,
            "cpu_median": statistics.median(r.cpu for r in runs),
            "buildah_per_run": max(len(r.calls) for r in runs),
            "buildah_verbs": {k: v / repeats for k, v in verbs.items()},
            "per_image_buildah": max(sum(verb(c) != "images" for c in r.calls) for r in runs)}


PHASES = [  # (label, path suffix, function): cumulative times shown when present
    ("load the project (config, graph, render, plans)", "buildlib/project.py", "load"),
    ("  images.yaml (note, or YAML + validation)", "buildlib/config_load.py", "load"),
    ("  render every template", "buildlib/render.py", "render_all"),
    ("hash every image's inputs", "buildlib/project.py", "sources"),
    ("doit: import dodo.py (which loads the project)", "doit/loader.py", "get_module"),
    ("  import buildlib", "buildlib/tasks.py", "<module>"),
    ("doit: create the tasks", "doit/loader.py", "load_tasks"),
    ("doit: up-to-date checks", "doit/dependency.py", "get_status"),
    ("  our up-to-date check", "buildlib/tasks.py", "__call__"),
    ("  local images (storage's images.json)", "buildlib/buildah.py", "images"),
    ("doit: save state", "doit/dependency.py", "close"),
    ("report.json and summary", "buildlib/report.py", "complete_run"),
]


def profile_noop(runner: Runner, tree: trees.Tree, out: Path, work: Path) -> list[str]:
    """cProfile one no-op run; write the top entries to `out`; return a phase breakdown."""
    stats_file = work / "noop.prof"
    result = runner.doit(tree, "build", logged=True,
                         python=[sys.executable, "-m", "cProfile", "-o", str(stats_file)])
    expect_all(tree, "up-to-date")
    stats = pstats.Stats(str(stats_file))
    phases = []
    for label, suffix, function in PHASES:
        cumulative = [ct for (path, _, func), (_, _, _, ct, _) in stats.stats.items()
                      if path.endswith(suffix) and func == function]
        if cumulative:
            phases.append(f"{label:<50} {max(cumulative):6.2f} s")
    total = f"{'all (main thread, under the profiler)':<50} {stats.total_tt:6.2f} s"
    buffer = io.StringIO()
    stats.stream = buffer
    buffer.write("## top 10 by cumulative time\n")
    stats.sort_stats("cumulative").print_stats(10)
    buffer.write("\n## top 25 by cumulative time in buildlib, dodo.py, doit and what they call\n")
    stats.print_stats(r"buildlib|dodo\.py|/doit/|subprocess|yaml|jinja2|pydantic|sqlite|dbm", 25)
    buffer.write("\n## top 15 by own time\n")
    stats.sort_stats("tottime").print_stats(15)
    text = buffer.getvalue()
    for prefix in sorted({p for p in sys.path if p.endswith("-packages")}, key=len,
                         reverse=True):
        text = text.replace(prefix + "/", "")
    text = text.replace(str(REPO) + "/", "")
    out.write_text(
        f"# cProfile of a no-op `doit build` of {len(tree.parents)} images: {result.wall:.2f} s "
        f"wall under the profiler ({len(result.calls)} buildah process)\n\n## phases "
        "(cumulative, overlapping)\n" + "\n".join([*phases, total]) + "\n\n" + text)
    return [*phases, total]


# One no-op run in this process, its parts timed by wrappers (no profiler to skew them).
# The parts do not overlap; "doit's own work" is what doit's runner spends besides ours.
PHASE_DRIVER = """
import time
START = time.perf_counter()
import functools, json, sys
from doit.doit_cmd import DoitMain
from doit import dependency, loader, runner
from buildlib import config_load, render, report, run, tasks
IMPORTED = time.perf_counter()
spent = dict.fromkeys(["config", "render", "load_run", "create", "checks", "run_all",
                       "report", "save"], 0.0)
def timed(owner, attr, part):
    inner = getattr(owner, attr)
    @functools.wraps(inner)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[part] += time.perf_counter() - start
    setattr(owner, attr, wrapper)
timed(config_load, "load", "config"); timed(render, "render_all", "render")
timed(run, "load_run", "load_run"); timed(loader, "load_tasks", "create")
timed(tasks.ImageUpToDate, "__call__", "checks"); timed(runner.Runner, "run_all", "run_all")
timed(report.RunReport, "write", "report"); timed(report.RunReport, "summary", "report")
timed(dependency.Dependency, "close", "save")
try:
    DoitMain().run(sys.argv[1:])
except SystemExit:
    pass
end = time.perf_counter()
print(json.dumps({"imports": IMPORTED - START, "total": end - START, **spent}))
"""
PHASE_LABELS = {
    "startup": "start Python (no imports)",
    "imports": "import doit and buildlib",
    "config": "images.yaml (its note in build_dir, or YAML + validation)",
    "render": "render templates, list context files",
    "load_run": "rest of the run's start (lock, state check, selection)",
    "create": "doit: create the tasks",
    "checks": "up-to-date checks (hash inputs, keys, local images)",
    "doit": "doit's own work (dispatch, status, reporter)",
    "report": "report.json, pictures, summary",
    "save": "doit: save its state",
    "other": "the rest",
}


def noop_phases(tree: trees.Tree, repeats: int) -> dict[str, float]:
    """The parts of a no-op run (median of `repeats`), timed without a profiler."""
    startup = statistics.median(measure([sys.executable, "-c", "pass"]).wall
                                for _ in range(repeats))
    argv = [sys.executable, "-c", PHASE_DRIVER, "-f", DODO, f"config={tree.config}", "build"]
    runs = [json.loads(measure(argv, cwd=tree.root).stdout.splitlines()[-1])
            for _ in range(repeats)]
    expect_all(tree, "up-to-date")
    part = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    part["load_run"] -= part["config"] + part["render"]
    part["doit"] = part.pop("run_all") - part["checks"] - part["report"] - part["save"]
    total = part.pop("total")
    part["other"] = total - sum(part.values())
    part["startup"] = startup
    return {"total": total + startup, "parts": part}


def work_storage(tree: trees.Tree) -> Path:
    args = tree.read()["settings"]["buildah_args"]
    return Path(args[args.index("--root") + 1]).parent


def bench_noop(work: Path, runner: Runner, plan: Plan, tree: trees.Tree,
               profile: Path | None = None) -> dict[str, Any]:
    """No-op runs of a fully built tree: its own state (default backend), then a copy of
    that state in each of doit's backends."""
    progress(f"no-op runs of the {len(tree.parents)}-image tree ...")
    result: dict[str, Any] = {"images": len(tree.parents), "tree": tree}
    result["default"] = noop_runs(runner, tree, plan.repeats)
    state_file = tree.build_dir / ".doit.db"
    result["default_backend"] = state_backend(state_file)
    state = read_state(state_file)
    result["backends"] = {}
    for backend in BACKENDS:
        copy = tree.build_dir / f"bench-state-{backend}.db"
        write_state(state, copy, backend)
        result["backends"][backend] = noop_runs(runner, tree, plan.repeats, "--backend",
                                                backend, "--db-file", str(copy))
    result["phases_wall"] = noop_phases(tree, plan.repeats)
    result["floor"] = bare_doit_noop(work / f"floor-{tree.root.name}", tree.parents,
                                     plan.repeats)
    if profile is not None:
        result["profile"] = str(profile)
        result["phases"] = profile_noop(runner, tree, profile, work)
    return result


def build_sleepless(work: Path, runner: Runner, label: str, parents: dict[str, str | None],
                    always_run: bool) -> dict[str, Any]:
    """A tree of `parents` built with sleep 0 (and no RUN step unless `always_run`), in its
    own folder and storage root, for the no-op runs."""
    tree = trees.write_tree(work / label, parents, dict.fromkeys(parents, 0),
                            work / f"storage-{label}", always_run=always_run)
    how = "sleep 0" + (", RUN sleep 0 kept" if always_run else ", no RUN step")
    progress(f"building the {label} tree for the no-op: {len(parents)} images, {how}, "
             f"max depth {len(trees.levels(parents)) - 1} ...")
    built = runner.doit(tree, "-n", str(JOBS), "build")
    expect_all(tree, "built")
    progress(f"built in {built.wall:.1f} s")
    return {"tree": tree, "wall": built.wall, "cpu": built.cpu, "how": how}


# A dodo.py of one task per image, shaped as ours (a task_dep and a getargs on the parent,
# saved values, an up-to-date check), that does nothing: doit's own no-op floor.
FLOOR_DODO = """
import json
PARENTS = json.load(open({parents!r}))
DOIT_CONFIG = {{"default_tasks": ["build"], "dep_file": {state!r}, "backend": "sqlite3",
               "num_process": {jobs}, "par_type": "thread"}}

def built(parent_id=None):
    return {{"id": "sha256:0"}}

def seen(task, values):
    return bool(values)

def task_build():
    yield {{"basename": "build", "name": None}}
    for name, parent in PARENTS.items():
        dep = "build:" + parent if parent else None
        yield {{"name": name, "actions": [built], "task_dep": [dep] if dep else [],
               "getargs": {{"parent_id": (dep, "id")}} if dep else {{}}, "uptodate": [seen]}}
"""


def bare_doit_noop(folder: Path, parents: Mapping[str, str | None], repeats: int
                   ) -> dict[str, Any]:
    """A no-op of bare doit on as many tasks, of the same shape (the floor), in `folder`."""
    folder.mkdir()
    (folder / "parents.json").write_text(json.dumps(parents))
    dodo = folder / "dodo.py"
    dodo.write_text(FLOOR_DODO.format(parents=str(folder / "parents.json"), jobs=JOBS,
                                      state=str(folder / ".doit.db")))
    argv = [DOIT, "-f", dodo, "build"]
    measure(argv, cwd=folder)  # the first run saves every task's values
    walls = [measure(argv, cwd=folder).wall for _ in range(repeats)]
    return {"median": statistics.median(walls), "min": min(walls), "runs": walls}


def noop_text(results: Mapping[str, dict[str, Any]]) -> str:
    rows = []
    for label, res in results.items():
        n = res["images"]
        target = TARGETS.get(n)
        variants = [(f"default ({res['default_backend']})", res["default"])]
        variants += [(f"--backend {b}", res["backends"][b]) for b in BACKENDS]
        for variant, runs in variants:
            met = "-" if target is None else (
                f"< {target:g} s: " + ("met" if runs["median"] < target else "MISSED"))
            verbs = ", ".join(f"{v:g} {k}" for k, v in sorted(runs["buildah_verbs"].items()))
            rows.append((f"{label} ({n})", variant, f"{runs['median']:.2f}",
                         f"{runs['min']:.2f}", f"{1000 * runs['median'] / n:.1f}",
                         verbs or "none", str(runs["per_image_buildah"]), met))
        floor = res["floor"]
        rows.append((f"{label} ({n})", "floor: bare doit, same shape", f"{floor['median']:.2f}",
                     f"{floor['min']:.2f}", f"{1000 * floor['median'] / n:.1f}", "none", "0",
                     "-"))
    repeats = len(next(iter(results.values()))["default"]["runs"])
    lines = [f"2. No-op `doit build` of fully built trees (median and min of {repeats} runs "
             "each; buildah processes per run, counted by a logging wrapper first on PATH)",
             table(["tree", "state backend", "median s", "min s", "ms/image", "buildah/run",
                    "per-image procs", "target"], rows)]
    for label, res in results.items():
        phases = res["phases_wall"]
        top = sorted(phases["parts"].items(), key=lambda item: -item[1])[:5]
        lines.append(f"{label} ({res['images']} images, built in {res['build_wall']:.1f} s at "
                     f"-n {JOBS}, {res['build_how']}): top five costs of a no-op "
                     f"({phases['total']:.2f} s, timed in process, median of "
                     f"{len(res['default']['runs'])}): " + "; ".join(
                         f"{PHASE_LABELS[key]} {1000 * value:.0f} ms" for key, value in top))
    for res in results.values():
        if res.get("phases"):
            lines.append(f"profile of the {res['images']}-image no-op ({res['profile']}):")
            lines += [f"  {line}" for line in res["phases"]]
    return "\n".join(lines)


def bench_edit(runner: Runner, tree: trees.Tree) -> tuple[dict[str, Any], str]:
    name = trees.mid_level_image(tree.parents)
    expected = tree.edit_image(name)
    result = runner.doit(tree, "-n", str(JOBS), "build", logged=True)
    got = statuses(tree)
    rebuilt = {n for n, status in got.items() if status == "built"}
    others = Counter(status for n, status in got.items() if n not in rebuilt)
    buds = sum(1 for call in result.calls if verb(call) == "bud")
    ok = rebuilt == expected
    sleep = sum(tree.seconds[n] for n in expected)
    lines = [f"3. One-template edit: the vars of '{name}' changed in the built "
             f"{len(tree.parents)}-image Kolla tree (its subtree sleeps {sleep:.0f} s in all)",
             table(["edited", "wall s", "rebuilt", "subtree", "buildah bud", "others",
                    "check"],
                   [(name, f"{result.wall:.1f}", str(len(rebuilt)), str(len(expected)),
                     str(buds), ", ".join(f"{c} {s}" for s, c in sorted(others.items())),
                     "OK" if ok else "MISMATCH")])]
    if not ok:
        lines.append(f"missing: {sorted(expected - rebuilt)}; "
                     f"extra: {sorted(rebuilt - expected)}")
    data = {"image": name, "wall": result.wall, "rebuilt": sorted(rebuilt),
            "expected": sorted(expected), "buildah_bud": buds, "ok": ok}
    return data, "\n".join(lines)


# --- output ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_cache(work: Path, runner: Runner, plan: Plan) -> tuple[dict[str, Any], str]:
    """A fresh machine whose registry holds every image of the Kolla shape: machine A
    builds and pushes (sleep 0), machine B (its own storage and build dir) runs
    `doit push cache=registry`: wall time, builds, pushes, pulls, registry requests."""
    parents = kolla_shape(plan.kolla_size, plan.seed)
    port = free_port()
    registry_dir = work / "cache-registry"
    subprocess.run([sys.executable, REPO / "scripts" / "local-registry", "start", "--port",
                    str(port), "--dir", registry_dir], check=True, capture_output=True)
    try:
        machine_a = trees.write_tree(work / "cache-a", parents, dict.fromkeys(parents, 0),
                                     work / "storage-cache-a")
        machine_a.settings(registry=f"127.0.0.1:{port}", tls_verify=False)
        progress(f"registry cache: machine A builds and pushes {len(parents)} images ...")
        pushed = runner.doit(machine_a, "-n", str(JOBS), "push")
        shutil.copytree(machine_a.root, work / "cache-b", ignore=shutil.ignore_patterns("build"))
        machine_b = trees.Tree(work / "cache-b", machine_a.parents, machine_a.seconds)
        machine_b.use_storage(work / "storage-cache-b")
        progress("registry cache: machine B, fresh, pushes with cache=registry ...")
        fresh = runner.doit(machine_b, "-n", str(JOBS), "push", "cache=registry", logged=True)
        report = json.loads(machine_b.report_path.read_text())
    finally:
        subprocess.run([sys.executable, REPO / "scripts" / "local-registry", "stop", "--dir",
                        registry_dir], check=False, capture_output=True)
        remove_storage(work / "storage-cache-a")
        remove_storage(work / "storage-cache-b")
    count = {v: sum(verb(c) == v for c in fresh.calls) for v in ("bud", "push", "pull")}
    found = Counter(entry["found"] for entry in report["images"].values())
    result = {"images": len(parents), "push_a": pushed.wall, "fresh_b": fresh.wall,
              "calls_b": count, "found_b": dict(found)}
    met = "met" if fresh.wall < 3 and count["bud"] == 0 else "MISSED"
    text = "\n".join([
        f"5. Registry cache: a fresh machine, every image of the Kolla shape ({len(parents)}, "
        "sleep 0) already in a loopback registry",
        table(["run", "wall s", "buildah bud", "buildah push", "buildah pull", "target"], [
            ["A: doit -n 8 push (build + push)", f"{pushed.wall:.1f}", "-", "-", "-", "-"],
            ["B: doit -n 8 push cache=registry", f"{fresh.wall:.2f}", str(count["bud"]),
             str(count["push"]), str(count["pull"]), f"< 3 s, 0 builds: {met}"]]),
        f"   B found: {dict(found)}; ratio B/A = {fresh.wall / pushed.wall:.3f}"])
    return result, text


def bench_aging(work: Path, runner: Runner, plan: Plan, results: dict[str, Any]) -> list[str]:
    """Benchmarks 6 (aged storage, prune) and 7 (the push pool): bench/aging.py."""
    results["aged"], aged_text = aging.bench_aged(
        work, runner, measure, REAL_BUILDAH or "buildah", plan.aged_images, plan.aged_keys,
        JOBS, progress, table)
    remove_storage(work / "storage-aged")
    results["push_pool"], pool_text = aging.bench_push_pool(
        work, runner, kolla_shape(plan.kolla_size, plan.seed), plan.push_sleep,
        plan.upload_delay, JOBS, progress, table)
    remove_storage(work / "storage-push-pool")
    remove_storage(work / "storage-push-shared")
    return [aged_text, pool_text]


def progress(text: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {text}", flush=True)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    return "\n".join([line(header), "  ".join("-" * w for w in widths),
                      *[line(r) for r in rows]])


def indent(text: str) -> str:
    first, *rest = text.splitlines()
    return "\n".join([first, *[f"   {line}" for line in rest]])


def json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items() if not isinstance(v, trees.Tree)}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="imagebake benchmarks (see bench/run.py)")
    parser.add_argument("--quick", action="store_true",
                        help="a reduced version (small trees, short sleeps): under 3 minutes")
    parser.add_argument("--always-run", action="store_true",
                        help="keep `RUN sleep 0` in the no-op tree (slower to build)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (debugging)")
    parser.add_argument("--seeds", type=int, help="draws of the sleeps in benchmark 1")
    parser.add_argument("--makespan-only", action="store_true", help="benchmark 1 alone")
    parser.add_argument("--cache-only", action="store_true", help="benchmark 5 alone")
    parser.add_argument("--noop-only", action="store_true",
                        help="the no-op rows of the trees without RUN layers alone")
    parser.add_argument("--noop-random", type=int,
                        help="images of the random no-op tree (0: Kolla's shape alone)")
    parser.add_argument("--aging-only", action="store_true", help="benchmarks 6 and 7 alone")
    args = parser.parse_args(argv)
    if REAL_BUILDAH is None:
        print("buildah is not installed: run `make setup`", file=sys.stderr)
        return 1
    plan = QUICK if args.quick else FULL
    if args.noop_random is not None:
        plan = replace(plan, noop_random=args.noop_random)
    seeds = args.seeds or plan.seeds
    # Measure the code as a user runs it: compiled once (a checkout may be new, and
    # PYTHONDONTWRITEBYTECODE would make every run compile it again).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    compileall.compile_dir(str(REPO / "buildlib"), quiet=1)
    started = time.time()
    print(f"imagebake benchmarks ({'quick' if args.quick else 'full'}): {os.cpu_count()} "
          f"cores, load average {os.getloadavg()[0]:.1f} at the start", flush=True)
    work = Path(tempfile.mkdtemp(prefix="imagebake-bench-"))
    results: dict[str, Any] = {"quick": args.quick, "plan": asdict(plan),
                               "cores": os.cpu_count(), "started": started,
                               "load_average_start": os.getloadavg()}
    runner = Runner(work)
    try:
        if args.cache_only:
            results["cache"], cache_text = bench_cache(work, runner, plan)
            return finish(results, [cache_text], work, args.keep, started)
        if args.noop_only:
            parents = kolla_shape(plan.kolla_size, plan.seed)
            results["noop"] = bench_sleepless(work, runner, plan, parents, args.always_run)
            return finish(results, [noop_text(results["noop"])], work, args.keep, started)
        if args.aging_only:
            return finish(results, bench_aging(work, runner, plan, results), work, args.keep,
                          started)
        results["makespan"], makespan_text, kolla = bench_makespan(work, runner, plan, seeds)
        results["overhead"], overhead_text = bench_overhead(results["makespan"])
        texts = [makespan_text]
        if args.makespan_only:
            return finish(results, texts, work, args.keep, started)
        noop = {"kolla-run": bench_noop(work, runner, plan, kolla)}
        noop["kolla-run"].update(
            build_wall=results["makespan"]["seeds"][0]["critical_path_first"]["wall"],
            build_how="critical-path-first in 1, RUN sleep included")
        results["edit"], edit_text = bench_edit(runner, kolla)
        remove_storage(work / "storage-a")
        noop.update(bench_sleepless(work, runner, plan, kolla.parents, args.always_run))
        results["noop"] = noop
        results["cache"], cache_text = bench_cache(work, runner, plan)
        texts += [noop_text(noop), edit_text, overhead_text, cache_text,
                  *bench_aging(work, runner, plan, results)]
        return finish(results, texts, work, args.keep, started)
    finally:
        unmount_under(work)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def bench_sleepless(work: Path, runner: Runner, plan: Plan,
                    kolla_parents: Mapping[str, str | None], always_run: bool
                    ) -> dict[str, Any]:
    """The no-op of Kolla's shape without RUN layers and of the random tree."""
    noop = {}
    sleepless = [("kolla-no-run", kolla_parents, False, None)]
    if plan.noop_random:
        sleepless.append(("random", trees.random_parents(plan.noop_random, plan.seed),
                          always_run, BENCH / f"profile-noop-{plan.noop_random}.txt"))
    for label, parents, run_steps, profile in sleepless:
        built = build_sleepless(work, runner, label, parents, run_steps)
        noop[label] = bench_noop(work, runner, plan, built["tree"], profile)
        noop[label].update(build_wall=built["wall"], build_how=built["how"])
        remove_storage(work / f"storage-{label}")
    return noop


def finish(results: dict[str, Any], texts: list[str], work: Path, keep: bool,
           started: float) -> int:
    results["finished"] = time.time()
    results["load_average_end"] = os.getloadavg()
    RESULTS.write_text(json.dumps(json_ready(results), indent=1) + "\n")
    print()
    for text in texts:
        print(indent(text) + "\n")
    print(f"took {results['finished'] - started:.0f} s; load average "
          f"{os.getloadavg()[0]:.1f} at the end (other work on the machine skews wall times: "
          f"compare ratios); results: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
