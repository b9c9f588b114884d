"""Benchmarks 6 and 7 (bench/run.py runs them): storage that ages, and the push pool.

6. Aged storage: the same 40-image rebuild (an edit of the root rebuilds all 40, sleep 0)
   in a fresh storage, in one holding about 2,000 images of old keys (the same tree
   edited again and again), and after `doit prune`: wall time and buildah's CPU seconds per
   build (report.json's `build_cpu_seconds`), with the images in storage; and, to tell
   where buildah's time goes, the CPU of `buildah images` (loading the storage's lists)
   and of one small `buildah bud` with and without `--layers` (the layer cache lookup) in
   each storage. The ageing builds' CPU per build against the images in storage is kept in
   the results as the growth curve.
7. Push pool: `doit -n 8 push` of the Kolla shape (lognormal sleeps) to a loopback registry
   behind a proxy that holds each blob upload a while (a slow link), with pushes in their
   own pool (`push_jobs: 4`) and in the build job slots (`push_jobs: 0`), each from a
   fresh storage into a fresh namespace.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trees

REPO = Path(__file__).resolve().parents[1]
REPEATS = 2  # measured rebuilds per storage state (the median is reported)


def key_images(storage: Path) -> tuple[int, int]:
    """(images named by a key, every image incl. intermediate ones) in a storage root."""
    listing = json.loads((storage / "root" / "overlay-images" / "images.json").read_text())
    keyed = sum(any(":ib-" in n for n in entry.get("names") or ()) for entry in listing)
    return keyed, len(listing)


def cpu_per_build(tree: trees.Tree) -> float:
    report = json.loads(tree.report_path.read_text())["images"]
    cpus = [e["build_cpu_seconds"] for e in report.values() if e.get("build_cpu_seconds")]
    return sum(cpus) / max(1, len(cpus))


def probes(measure: Callable[..., Any], buildah: str, storage: Path, work: Path,
           base: str, label: str) -> dict[str, float]:
    """CPU seconds of `buildah images` and of a one-COPY `buildah bud` on `base`, with and
    without --layers, in this storage (each bud's image removed after)."""
    args = trees.storage_args(storage)
    context = work / f"probe-{label}"
    context.mkdir(exist_ok=True)
    result = {"images_cpu": measure([buildah, *args, "images", "--quiet"]).cpu}
    for layers in ("--layers=true", "--layers=false"):
        (context / "file").write_text(f"{label} {layers}\n")
        (context / "Dockerfile").write_text(f"FROM {base}\nCOPY file /probe\n")
        tag = f"localhost/probe:{label}-{layers[-4:].strip('=')}"
        built = measure([buildah, *args, "bud", layers, "--pull=never", "-t", tag,
                         "--timestamp", "0", str(context)])
        result[f"bud{layers.replace('=', '_').replace('--', '_')}_cpu"] = built.cpu
        subprocess.run([buildah, *args, "rmi", tag], capture_output=True, check=False)
    if shutil.which("strace"):
        result["syscalls"] = syscalls(buildah, args, context, label)
    return result


def syscalls(buildah: str, args: list[str], context: Path, label: str) -> dict[str, int]:
    """The system calls of one `bud --layers` (strace -f -c), the most frequent ones and
    the total: what a bigger storage makes buildah do more of."""
    (context / "file").write_text(f"{label} strace\n")
    counts = context / "strace.txt"
    tag = f"localhost/probe:{label}-strace"
    subprocess.run(["strace", "-f", "-c", "-o", str(counts), buildah, *args, "bud",
                    "--layers=true", "--pull=never", "-t", tag, "--timestamp", "0",
                    str(context)], capture_output=True, check=False)
    subprocess.run([buildah, *args, "rmi", tag], capture_output=True, check=False)
    calls: dict[str, int] = {}
    for line in counts.read_text().splitlines():
        words = line.split()
        if len(words) >= 5 and words[-1] != "total" and words[3].isdigit():
            calls[words[-1]] = int(words[3])
    top = dict(sorted(calls.items(), key=lambda item: -item[1])[:6])
    return {"total": sum(calls.values()), **top}


def bench_aged(work: Path, runner: Any, measure: Callable[..., Any], buildah: str,
               images: int, old_keys: int, jobs: int, progress: Callable[[str], None],
               table: Callable[..., str]) -> tuple[dict[str, Any], str]:
    parents = trees.random_parents(images, 1)
    storage = work / "storage-aged"
    tree = trees.write_tree(work / "aged", parents, dict.fromkeys(parents, 0), storage)
    base = f"localhost:5000/bench/{trees.ROOT_NAME}:latest"

    def rebuild() -> dict[str, float]:
        tree.edit_image(trees.ROOT_NAME)
        built = runner.doit(tree, "-n", str(jobs), "build")
        report = json.loads(tree.report_path.read_text())["images"]
        if {e["status"] for e in report.values()} != {"built"}:
            raise RuntimeError(f"aged bench: not every image was built: {built.stdout[-2000:]}")
        keyed, total = key_images(storage)
        return {"wall": built.wall, "cpu_per_build": cpu_per_build(tree), "keyed": keyed,
                "images": total}

    def state(label: str) -> dict[str, Any]:
        runs = [rebuild() for _ in range(REPEATS)]
        found = {key: statistics.median(r[key] for r in runs) for key in ("wall", "cpu_per_build")}
        found.update(keyed=runs[0]["keyed"], images=runs[0]["images"],
                     **probes(measure, buildah, storage, work, base, label))
        progress(f"aged storage, {label}: {found}")
        return found

    progress(f"aged storage: a {images}-image tree, built, then rebuilt by root edits ...")
    runner.doit(tree, "-n", str(jobs), "build")
    fresh = state("fresh")
    curve = []
    while key_images(storage)[0] < old_keys:
        step = rebuild()
        curve.append(step)
        if len(curve) % 5 == 0:
            progress(f"ageing: {step['keyed']} keyed images ({step['images']} in all), "
                     f"{step['cpu_per_build']:.2f} s CPU per build, {step['wall']:.1f} s")
    aged = state("aged")
    before = key_images(storage)
    pruned_run = runner.doit(tree, "prune")
    after = key_images(storage)
    progress(f"prune: {before} -> {after} in {pruned_run.wall:.1f} s")
    pruned = state("pruned")
    third = max(1, len(curve) // 3)
    result = {"images": images, "fresh": fresh, "aged": aged, "pruned": pruned,
              "prune": {"wall": pruned_run.wall, "before": before, "after": after,
                        "said": pruned_run.stdout.strip().splitlines()[-1:]},
              "curve": [{k: s[k] for k in ("keyed", "images", "cpu_per_build", "wall")}
                        for s in curve],
              "ageing_cpu_first_third": statistics.mean(s["cpu_per_build"] for s in curve[:third]),
              "ageing_cpu_last_third": statistics.mean(s["cpu_per_build"] for s in curve[-third:])}
    rows = [[label, f"{s['keyed']}/{s['images']}", f"{s['wall']:.1f}",
             f"{s['wall'] / fresh['wall']:.2f}", f"{s['cpu_per_build']:.2f}",
             f"{s['images_cpu']:.2f}", f"{s['bud_layers_true_cpu']:.2f}",
             f"{s['bud_layers_false_cpu']:.2f}"]
            for label, s in (("fresh storage", fresh), ("aged", aged),
                             ("aged, after doit prune", pruned))]
    within = pruned["wall"] <= 1.1 * fresh["wall"]
    text = "\n".join([
        f"6. Aged storage: the same {images}-image rebuild (root edited, sleep 0, -n {jobs}), "
        f"median of {REPEATS}",
        table(["storage", "keyed/all images", "wall s", "x fresh", "CPU s/build",
               "images CPU s", "bud --layers CPU s", "bud no-layers CPU s"], rows),
        f"   doit prune: {before[0]} keyed / {before[1]} images -> {after[0]} / {after[1]} in "
        f"{pruned_run.wall:.1f} s; after prune within 10% of fresh: "
        f"{'met' if within else 'MISSED'}",
        f"   ageing builds: {result['ageing_cpu_first_third']:.2f} s CPU per build in the "
        f"first third, {result['ageing_cpu_last_third']:.2f} s in the last",
        *[f"   system calls of one bud --layers, {label}: {s.get('syscalls')}"
          for label, s in (("fresh", fresh), ("aged", aged), ("pruned", pruned))]])
    return result, text


def bench_push_pool(work: Path, runner: Any, parents: dict[str, str | None],
                    sleep: tuple[float, float], upload_delay: float, jobs: int,
                    progress: Callable[[str], None], table: Callable[..., str]
                    ) -> tuple[dict[str, Any], str]:
    sys.path.insert(0, str(REPO / "tests"))
    from registry import FlakyProxy, start_registry  # the tests' loopback registry and proxy

    seconds = trees.draw_lognormal(parents, *sleep, seed=1)
    server = start_registry(work / "pool-registry")
    results: dict[str, Any] = {"images": len(parents), "upload_delay": upload_delay}
    try:
        with FlakyProxy(server, failure_rate=0, upload_delay=upload_delay) as proxy:
            for label, push_jobs in (("pool", 4), ("shared", 0)):
                tree = trees.write_tree(work / f"push-{label}", parents, seconds,
                                        work / f"storage-push-{label}")
                tree.settings(registry=proxy.address, tls_verify=False,
                              namespace=f"bench-{label}", push_jobs=push_jobs)
                progress(f"push pool: doit -n {jobs} push, push_jobs {push_jobs}, "
                         f"{len(parents)} images ...")
                run = runner.doit(tree, "-n", str(jobs), "push")
                report = json.loads(tree.report_path.read_text())
                statuses = {e["status"] for e in report["pushes"].values()}
                builds = [e["end"] - e["start"] for e in report["images"].values()]
                pushes = [e["end"] - e["start"] for e in report["pushes"].values()]
                results[label] = {"wall": run.wall, "cpu": run.cpu, "statuses": sorted(statuses),
                                  "build_seconds": sum(builds), "push_seconds": sum(pushes)}
                progress(f"push pool, {label}: {results[label]}")
    finally:
        server.stop()
    pool, shared = results["pool"], results["shared"]
    text = "\n".join([
        f"7. Push pool: doit -n {jobs} push of the Kolla shape ({len(parents)} images, "
        f"lognormal sleeps {sleep}) through a link holding each blob upload {upload_delay} s",
        table(["pushes", "wall s", "sum of builds s", "sum of pushes s", "statuses"], [
            ["own pool (push_jobs: 4)", f"{pool['wall']:.1f}", f"{pool['build_seconds']:.0f}",
             f"{pool['push_seconds']:.0f}", ",".join(pool["statuses"])],
            ["in the build slots (push_jobs: 0)", f"{shared['wall']:.1f}",
             f"{shared['build_seconds']:.0f}", f"{shared['push_seconds']:.0f}",
             ",".join(shared["statuses"])]]),
        f"   makespan pool / shared = {pool['wall'] / shared['wall']:.2f}"])
    return results, text
