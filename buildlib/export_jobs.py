"""CI jobs from the image graph, and their estimated makespan (pure).

`partition` splits the selected images into jobs: one job per image, or at most `max_jobs`
jobs chosen to keep the estimated makespan short. A job holds whole pieces of the tree
whose parents are all in one other job (its parent job), so each job waits for exactly
one other job and receives its images' parents from it by digest. The estimate runs
every job on a runner of its own, its images one after another, each job costing
`job_start` seconds before its first build; a job starts when its parent job is done.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from buildlib.graph import Graph


@dataclass(frozen=True)
class Job:
    """One CI job: its images in build order, the job it waits for, and which of its images
    stand on an image of that job (image -> parent)."""

    name: str
    images: tuple[str, ...]
    parent: str | None
    pins: tuple[tuple[str, str], ...]  # (image here, its parent in the parent job)

    def pinned(self) -> list[str]:
        """The parents this job's images stand on in the parent job, each once, in order."""
        return list(dict.fromkeys(parent for _, parent in self.pins))

    def summary(self) -> str:
        """`first` or `first and N more`: the job's images in a few words."""
        more = len(self.images) - 1
        return self.images[0] + (f" and {more} more" if more else "")


@dataclass(frozen=True)
class Partition:
    jobs: tuple[Job, ...]
    makespan: float

    def outputs(self, job: Job) -> list[str]:
        """The images of `job` whose digests its child jobs need, in build order."""
        needed = {parent for other in self.jobs if other.parent == job.name
                  for _, parent in other.pins}
        return [image for image in job.images if image in needed]


@dataclass(frozen=True)
class Estimates:
    """The chosen partition, and the two it is compared with."""

    chosen: Partition
    per_image: Partition
    single: Partition


def selected_graph(graph: Graph, selected: frozenset[str] | set[str]) -> Graph:
    """The selected images, each standing on its parent when that is selected too."""
    return Graph({name: parent if parent in selected else None
                  for name, parent in graph.parents.items() if name in selected})


def partition(graph: Graph, durations: Mapping[str, float], max_jobs: int | None,
              job_start: float) -> Estimates:
    """Jobs for every image of `graph`: one per image when `max_jobs` is None, else the
    partition into at most `max_jobs` jobs with the shortest estimated makespan that
    `_two_levels` finds (or one job per image, when that fits and is shorter)."""
    per_image = _partition(graph, {name: name for name in graph.parents}, durations, job_start)
    single = _partition(graph, dict.fromkeys(graph.parents, ""), durations, job_start)
    if max_jobs is None:
        return Estimates(per_image, per_image, single)
    candidates = [single, *_two_levels(graph, durations, max_jobs, job_start)]
    if max_jobs >= len(graph.parents):
        candidates.append(per_image)
    chosen = min(candidates, key=lambda p: (p.makespan, len(p.jobs)))
    return Estimates(chosen, per_image, single)


def _two_levels(graph: Graph, durations: Mapping[str, float], max_jobs: int,
                job_start: float) -> list[Partition]:
    """A head job (the roots and the images below them taken so far) and up to
    max_jobs - 1 jobs packing the subtrees hanging from it, heaviest first into the
    lightest job. Grown one image at a time (the top of the heaviest subtree joins the
    head), keeping the step with the shortest makespan."""
    if max_jobs < 2:
        return []
    kids = graph.children
    weight: dict[str, float] = {}
    for name in reversed(graph.order()):
        weight[name] = durations[name] + sum(weight[kid] for kid in kids[name])
    head = set(graph.roots())
    pieces = {kid for root in head for kid in kids[root]}
    best: tuple[float, list[list[str]]] | None = None
    while pieces:
        bins = _pack(sorted(pieces, key=lambda p: (-weight[p], p)), weight, max_jobs - 1)
        head_work = sum(durations[name] for name in head)
        estimate = 2 * job_start + head_work + max(sum(weight[p] for p in b) for b in bins)
        if best is None or estimate < best[0]:
            best = (estimate, bins)
        heaviest = min(pieces, key=lambda p: (-weight[p], p))
        pieces.remove(heaviest)
        head.add(heaviest)
        pieces.update(kids[heaviest])
    if best is None:
        return []
    chunk_of = dict.fromkeys(graph.parents, "")
    for index, tops in enumerate(best[1], start=1):
        for top in tops:
            for name in _subtree(kids, top):
                chunk_of[name] = f"{index}"
    return [_partition(graph, chunk_of, durations, job_start)]


def _pack(pieces: list[str], weight: Mapping[str, float], count: int) -> list[list[str]]:
    """Each piece, heaviest first, into the lightest of `count` bins (fewer if fewer pieces)."""
    bins: list[list[str]] = [[] for _ in range(min(count, len(pieces)))]
    loads = [0.0] * len(bins)
    for piece in pieces:
        lightest = loads.index(min(loads))
        bins[lightest].append(piece)
        loads[lightest] += weight[piece]
    return bins


def _subtree(kids: Mapping[str, list[str]], top: str) -> list[str]:
    found, stack = [], [top]
    while stack:
        name = stack.pop()
        found.append(name)
        stack.extend(kids[name])
    return found


def _partition(graph: Graph, chunk_of: Mapping[str, str], durations: Mapping[str, float],
               job_start: float) -> Partition:
    """Jobs from a chunk label per image; each job is named after its first image."""
    members: dict[str, list[str]] = {}
    for name in graph.order():
        members.setdefault(chunk_of[name], []).append(name)
    names = _unique_ids({chunk: images[0] for chunk, images in members.items()})
    parent_chunk: dict[str, str | None] = {}
    pins: dict[str, list[tuple[str, str]]] = {chunk: [] for chunk in members}
    for chunk, images in members.items():
        parent_chunk[chunk] = None
        for image in images:
            parent = graph.parents[image]
            if parent is not None and chunk_of[parent] != chunk:
                parent_chunk[chunk] = chunk_of[parent]
                pins[chunk].append((image, parent))
    jobs = tuple(Job(names[chunk], tuple(images),
                     names[parent_chunk[chunk]] if parent_chunk[chunk] is not None else None,
                     tuple(pins[chunk]))
                 for chunk, images in members.items())
    return Partition(jobs, makespan(jobs, durations, job_start))


def makespan(jobs: Sequence[Job], durations: Mapping[str, float], job_start: float) -> float:
    """The estimated wall time of these jobs: the longest chain of jobs, each taking
    job_start plus its images' durations."""
    job_graph = Graph({job.name: job.parent for job in jobs})
    seconds = {job.name: job_start + sum(durations[name] for name in job.images) for job in jobs}
    return job_graph.longest_path(seconds).length


def _unique_ids(wanted: Mapping[str, str]) -> dict[str, str]:
    """Identifiers GitHub Actions and Argo both accept (letters, digits, `-`), one each."""
    taken: set[str] = set()
    result = {}
    for key, name in wanted.items():
        base = identifier(name)
        candidate, number = base, 2
        while candidate in taken:
            candidate, number = f"{base}-{number}", number + 1
        taken.add(candidate)
        result[key] = candidate
    return result


def identifier(name: str) -> str:
    """An image name as a job or task name: `.` and `_` become `-`; a leading digit gets
    an `i` before it (GitHub Actions ids start with a letter or `_`). Not one to one:
    `_unique_ids` numbers the names it makes twice."""
    spelled = re.sub(r"[^A-Za-z0-9-]", "-", name)
    return spelled if spelled[:1].isalpha() else f"i{spelled}"
