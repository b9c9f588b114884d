"""The level-synchronous scheduler of tripleo's BuildahBuilder, reimplemented for comparison.

tripleo-common's `BuildahBuilder.build_all` walks the image tree as a list of groups and,
for each group, starts a `ThreadPoolExecutor` of at most 8 workers (`min(8, max(2,
cpu_count), len(group))`), submits one `buildah bud` per image, and waits for the whole
group before it starts the next (`_multi_build`). Here a group is one dependency level
(every image at the same depth), with `min(jobs, len(level))` workers: the most charitable
reading of it. (tripleo's own grouping puts each parent's children in a separate group,
which only adds barriers; its `max(2, cpu_count)` would give 2 workers on a 2-core machine.)

Each image is built exactly as our tool builds it: the same Dockerfile and context, written by
`plan.write_build_folder` (FROM the parent's reference, which our tool's argv tags too), and
the same `buildah bud` argument list, `builder.bud_argv`.

    python bench/levels.py CONFIG [--jobs 8] [--report levels.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from buildlib import buildah, builder, expanders, project
from buildlib.run import bench_of, services_of


def bud_argv(proj: project.Project, name: str) -> list[str]:
    """Our `buildah bud` argv for an image whose parent (if any) was built before it."""
    plan = proj.plans[name]
    parent_id = (buildah.image_id(proj.plans[plan.parent].iidfile.read_text())
                 if plan.parent else None)
    return builder.bud_argv(bench_of(proj, services_of(proj)), plan,
                            plan.sources.on_parent(parent_id))


def build_one(proj: project.Project, name: str) -> dict[str, Any]:
    """Write the context and run `buildah bud` with our tool's arguments; log to build_log."""
    plan = proj.plans[name]
    start = time.time()
    plan.write_build_folder(None)
    log = plan.workdir / f"{name}-levels.log"
    with log.open("w") as out:
        subprocess.run(bud_argv(proj, name), stdout=out, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, check=True)
    return {"start": start, "end": time.time()}


def build_levels(proj: project.Project, jobs: int = 8) -> dict[str, Any]:
    """Build every image, level by level; return per-image start/end and the level spans."""
    started = time.time()
    images: dict[str, dict[str, Any]] = {}
    spans = []
    for level in proj.graph.levels():
        level_start = time.time()
        with ThreadPoolExecutor(max_workers=min(jobs, len(level))) as pool:
            futures = {pool.submit(build_one, proj, name): name for name in level}
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [futures[f] for f in done if f.exception() is not None]
            if failed:  # as tripleo does: a failure stops the build
                for future in futures:
                    future.cancel()
                raise RuntimeError(f"builds failed: {', '.join(sorted(failed))}")
        for future, name in futures.items():
            images[name] = future.result()
        spans.append({"size": len(level), "start": level_start, "end": time.time()})
    return {"started": started, "finished": time.time(), "jobs": jobs, "levels": spans,
            "images": images}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="images.yaml of the tree to build")
    parser.add_argument("--jobs", type=int, default=8, help="workers per level at most")
    parser.add_argument("--report", type=Path, help="write per-image times here (JSON)")
    args = parser.parse_args(argv)
    proj = project.load(args.config, expand=expanders.kolla)
    result = build_levels(proj, args.jobs)
    if args.report:
        args.report.write_text(json.dumps(result, indent=1) + "\n")
    sizes = "+".join(str(span["size"]) for span in result["levels"])
    print(f"levels: built {len(result['images'])} images in {len(result['levels'])} levels "
          f"({sizes}) in {result['finished'] - result['started']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
