"""The registry as the shared cache: an image is looked up by its content key (the tag
`ib-<key>` that every push puts beside the user's tag) before it is built.

doit runs its up-to-date checks one at a time in its main thread, so the lookups are
made ahead of them, concurrently: a walk of the tree from its roots computes each key
(a child's key needs its parent's image ID: from local storage, or from the config
digest of the parent's manifest in the registry) and asks for it, while doit loads and
works. A check then finds its answer waiting; a key the walk could not know (its parent
is built in this run) is asked when that parent is done.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from buildlib.registry import Client, Manifest, RegistryError

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

    from buildlib.builder import Storage
    from buildlib.project import Project

WORKERS = 8


@dataclass(frozen=True)
class Found:
    """An image the registry holds: where, its manifest and, in it, its image ID."""

    repository: str  # registry/namespace/name
    manifest: Manifest

    @property
    def image_id(self) -> str | None:
        return self.manifest.config_digest

    @property
    def pinned(self) -> str:
        """`repo@sha256:...`: exactly this image, whatever a tag points at by then."""
        return f"{self.repository}@{self.manifest.digest}"


def repository_of(reference: str) -> str:
    """`host:port/ns/name` of `host:port/ns/name:tag` or `...@sha256:...`."""
    return reference.partition("@")[0] if "@" in reference else reference.rpartition(":")[0]


class Lookups:
    """Manifests asked of one registry, each reference once, by a pool of threads."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._lock = threading.Lock()
        self._asked: dict[str, Future[Manifest | None]] = {}
        self._pool: ThreadPoolExecutor | None = None

    def ask(self, reference: str) -> Future[Manifest | None]:
        with self._lock:
            if reference not in self._asked:
                if self._pool is None:
                    from concurrent.futures import ThreadPoolExecutor

                    self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="lookup")
                self._asked[reference] = self._pool.submit(self.client.manifest, reference)
            return self._asked[reference]

    def find(self, reference: str) -> Found | None:
        """The manifest behind `reference`, or None; raises RegistryError when the
        registry could not say."""
        manifest = self.ask(reference).result()
        return Found(repository_of(reference), manifest) if manifest else None

    def requests(self) -> int:
        return len(self._asked)


def walk(project: Project, selected: Collection[str], storage: Storage,
         lookups: Lookups) -> None:
    """Ask the registry for every selected image whose key can be known before any
    build: roots, and children of images found in local storage or in the registry.
    Run it in a thread of its own: it waits for answers, parents first."""

    def image_of(name: str, key: str) -> str | None:
        local = storage.with_key(key)
        if local is not None or project.plans[name].platforms:
            return local  # multi-arch images are not looked up: they are built
        try:
            found = lookups.find(project.plans[name].key_reference(key))
        except RegistryError:
            return None  # the check asks again, and says so
        return found.image_id if found else None

    names = [name for name in project.graph.order() if name in selected]
    for _ in project.keys_from_roots(names, image_of):
        pass


def resolve(project: Project, names: list[str], lookups: Lookups) -> dict[str, dict | None]:
    """What the registry holds for each image's current key (parents first in `names`):
    its pinned reference, user tag, digest, key and ID; None where it holds nothing."""
    found: dict[str, Found | None] = {}

    def image_of(name: str, key: str) -> str | None:
        if project.plans[name].platforms:  # not resolved yet (nor are its children)
            found[name] = None
            return None
        found[name] = lookups.find(project.plans[name].key_reference(key))
        return found[name].image_id if found[name] else None

    resolved: dict[str, dict | None] = {}
    for name, key, _ in project.keys_from_roots(names, image_of):
        image = found.get(name)
        resolved[name] = image and {"reference": image.pinned,
                                    "tag": project.plans[name].reference,
                                    "digest": image.manifest.digest, "key": key,
                                    "id": image.image_id}
    return resolved
