"""The image tree: parents, children, build order, levels, ancestors, descendants and
the longest path of durations through it."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass


class GraphError(ValueError):
    """A parent that is not declared, or a cycle; `image` is where it shows."""

    def __init__(self, image: str, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.image, self.problem, self.fix = image, problem, fix


@dataclass(frozen=True)
class Graph:
    parents: Mapping[str, str | None]

    @classmethod
    def build(cls, parents: Mapping[str, str | None]) -> Graph:
        """Check that every parent exists and that there is no cycle."""
        for name, parent in parents.items():
            if parent is not None and parent not in parents:
                raise GraphError(name, f"parent '{parent}' is not declared",
                                 f"declare '{parent}' under `images:` or correct `parent:`")
        graph = cls(dict(parents))
        graph._check_acyclic()
        return graph

    def _check_acyclic(self) -> None:
        done: set[str] = set()
        for start in self.parents:
            path: list[str] = []
            node: str | None = start
            while node is not None and node not in done:
                if node in path:
                    cycle = path[path.index(node):] + [node]
                    raise GraphError(node, "parents form a cycle: " + " -> ".join(cycle),
                                     "make one of these images a root (`parent: null`) "
                                     "or give it another parent")
                path.append(node)
                node = self.parents[node]
            done.update(path)

    @property
    def children(self) -> dict[str, list[str]]:
        kids: dict[str, list[str]] = {name: [] for name in self.parents}
        for name, parent in self.parents.items():
            if parent is not None:
                kids[parent].append(name)
        return kids

    def roots(self) -> list[str]:
        return [name for name, parent in self.parents.items() if parent is None]

    def order(self) -> list[str]:
        """Every image after its parent (depth first from each root, declaration order)."""
        kids = self.children
        result: list[str] = []
        stack = list(reversed(self.roots()))
        while stack:
            name = stack.pop()
            result.append(name)
            stack.extend(reversed(kids[name]))
        return result

    def ordered(self, names: Collection[str]) -> list[str]:
        """Those of `names` in the graph, each after its parent (as `order`)."""
        return [name for name in self.order() if name in names]

    def levels(self) -> list[list[str]]:
        """Images grouped by depth: the roots, their children, their grandchildren, ..."""
        depth: dict[str, int] = {}
        grouped: list[list[str]] = []
        for name in self.order():  # every parent comes before its children
            parent = self.parents[name]
            depth[name] = 0 if parent is None else depth[parent] + 1
            if depth[name] == len(grouped):
                grouped.append([])
            grouped[depth[name]].append(name)
        return grouped

    def longest_path(self, durations: Mapping[str, float]) -> LongestPath:
        """The longest chain of durations through the images that have one (the others are
        not part of it: an image whose parent has no duration starts a chain)."""
        kids = self.children
        remaining: dict[str, float] = {}
        for name in reversed(self.order()):  # every child before its parent
            if name in durations:
                below = [remaining[kid] for kid in kids[name] if kid in remaining]
                remaining[name] = durations[name] + max(below, default=0.0)
        chain: list[str] = []
        step = [name for name in remaining
                if self.parents[name] not in remaining]  # the chains' first images
        while step:
            name = min(step, key=lambda n: (-remaining[n], n))
            chain.append(name)
            step = [kid for kid in kids[name] if kid in remaining]
        return LongestPath(remaining, chain)

    def ancestors(self, name: str) -> Iterator[str]:
        """Parent, grandparent, ... up to the root."""
        parent = self.parents[name]
        while parent is not None:
            yield parent
            parent = self.parents[parent]

    def descendants(self, name: str) -> set[str]:
        kids = self.children
        found: set[str] = set()
        stack = list(kids[name])
        while stack:
            child = stack.pop()
            found.add(child)
            stack.extend(kids[child])
        return found


@dataclass(frozen=True)
class LongestPath:
    """`remaining[image]`: its own duration plus the longest chain of its descendants;
    `chain`: the longest chain of all, first image first."""

    remaining: dict[str, float]
    chain: list[str]

    @property
    def length(self) -> float:
        return self.remaining[self.chain[0]] if self.chain else 0.0


@dataclass(frozen=True)
class Selection:
    """Which images a run builds; the rest of the tree is `excluded` from it."""

    selected: frozenset[str]
    excluded: frozenset[str]
    skip_parents: bool = False

    def parent_dependency(self, graph: Graph, name: str) -> str | None:
        """The parent this image waits for in this run (None: use the parent image as is)."""
        parent = graph.parents[name]
        return parent if parent in self.selected else None


def select(graph: Graph, patterns: list[str], excludes: list[str],
           skip_parents: bool = False, taken: frozenset[str] = frozenset()) -> Selection:
    """Images whose name matches a pattern (every image when there is none), with their
    ancestors unless `skip_parents` (but not those of an image `taken` as it is, by a
    pin: nothing of it is built); images matching an exclude, and their descendants, are
    never built. Patterns are regular expressions searched in the name."""
    matched = {n for n in graph.parents if not patterns or _matches(n, patterns)}
    wanted = set(matched)
    if not skip_parents:
        for name in matched:
            while name not in taken and graph.parents[name] is not None:
                name = graph.parents[name]
                wanted.add(name)
    dropped = {n for n in graph.parents if _matches(n, excludes)}
    for name in list(dropped):
        dropped.update(graph.descendants(name))
    selected = wanted - dropped
    return Selection(frozenset(selected), frozenset(set(graph.parents) - selected),
                     skip_parents)


def _matches(name: str, patterns: list[str]) -> bool:
    return any(re.search(pattern, name) for pattern in patterns)
