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

import json
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from buildlib import keys, standing
from buildlib.keys import KEY_ANNOTATION, PLATFORM_KEYS_ANNOTATION, Record
from buildlib.reference import ImageRef
from buildlib.registry import Client, Manifest, RegistryError, asked_again
from buildlib.retries import Budget
from buildlib.settled import How, Settled

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

    from buildlib.plan import ImagePlan
    from buildlib.project import Project
    from buildlib.storage import Storage

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

    @property
    def key(self) -> str | None:
        """The key the pushed manifest carries (a push annotates it), if any."""
        return self.manifest.annotations.get(KEY_ANNOTATION)

    def platform_keys(self, key: str | None) -> dict[str, str] | None:
        """A manifest list's platforms' keys as its annotation gives them, when they are
        the ones its key is made of."""
        try:
            platform_keys = json.loads(self.manifest.annotations.get(PLATFORM_KEYS_ANNOTATION, ""))
        except ValueError:
            return None
        if isinstance(platform_keys, dict) and key and keys.list_key(platform_keys) == key:
            return platform_keys
        return None

    def problem(self, key: str, *, multi_arch: bool = False,
                local_id: str | None = None) -> str | None:
        """Why this is not the image of `key`, or None when it carries that key, is what
        the image is (one image, or a manifest list) and, where this machine has the key's
        image, has its ID. (The registry is trusted as far as its push rights go.)"""
        if self.key != key:
            return (f"carries another key ({self.key[:32]}...)" if self.key
                    else "carries no imagebake key (pushed by something else)")
        if self.manifest.is_index != multi_arch:
            return ("is a manifest list, not one image" if self.manifest.is_index
                    else "is one image, not a manifest list")
        if local_id and not multi_arch and self.image_id != local_id:
            return f"is image {self.image_id}, not {local_id} as built here for that key"
        return None


def repository_of(reference: str) -> str:
    """`host:port/ns/name` of `host:port/ns/name:tag` or `...@sha256:...`."""
    return ImageRef.parse(reference).repository


class Lookups:
    """Manifests asked of one registry, each reference once, by a pool of threads."""

    def __init__(self, client: Client, budget: Callable[[], Budget] | None = None,
                 trusted: Sequence[EllipticCurvePublicKey] = ()) -> None:
        self.client, self.budget = client, budget  # budget: each lookup's retries
        self.trusted = tuple(trusted)  # settings.trust's keys: a found image must be signed
        self._checked: dict[str, Future[str | None]] = {}
        self._lock = threading.Lock()
        self._asked: dict[str, Future[Manifest | None]] = {}
        self._pool: ThreadPoolExecutor | None = None

    def ask(self, reference: str) -> Future[Manifest | None]:
        with self._lock:
            if reference not in self._asked:
                if self._pool is None:
                    from concurrent.futures import ThreadPoolExecutor

                    self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="lookup")
                self._asked[reference] = self._pool.submit(self._manifest, reference)
            return self._asked[reference]

    def _manifest(self, reference: str) -> Manifest | None:
        if self.budget is None:
            return self.client.manifest(reference)
        return asked_again(lambda: self.client.manifest(reference), self.budget())

    def find(self, reference: str) -> Found | None:
        """The manifest behind `reference`, or None; raises RegistryError when the
        registry could not say."""
        manifest = self.ask(reference).result()
        return Found(repository_of(reference), manifest) if manifest else None

    def requests(self) -> int:
        return len(self._asked)

    def unsigned(self, found: Found) -> str | None:
        """With settings.trust, why `found` is not signed by a trusted key for its
        repository ("unsigned", "signed by an unknown key"), else None; asked once each."""
        if not self.trusted:
            return None
        from buildlib import signatures

        def check() -> str | None:
            verdict = signatures.check_signature(self.client, found.repository,
                                                 found.manifest.digest, self.trusted)
            return None if verdict.valid else verdict.why

        from concurrent.futures import Future

        with self._lock:  # (the walk and a check may ask at once: one request)
            answer = self._checked.get(found.pinned)
            mine = answer is None
            if answer is None:
                answer = self._checked[found.pinned] = Future()
        if mine:
            try:
                answer.set_result(check())
            except BaseException as err:
                answer.set_exception(err)
        return answer.result()


def find_by_key(lookups: Lookups, plan: ImagePlan, key: str,
                warn: Callable[[str], None]) -> Found | None:
    """The image the registry holds under the key's tag, when it verifiably is that key's
    image; anything else there is "not cached", with one warning. Raises RegistryError
    when the registry could not say."""
    reference = plan.key_reference(key)
    found = lookups.find(reference)
    if found is None:
        return None
    problem = found.problem(key, multi_arch=bool(plan.platforms))
    if problem:
        warn(f"warning: registry {lookups.client.host}: {reference} names "
             f"{found.manifest.digest}, which {problem}; not taken as {plan.name}'s image")
        return None
    unsigned = lookups.unsigned(found)
    if unsigned:
        warn(f"warning: registry {lookups.client.host}: {reference} names "
             f"{found.manifest.digest}: not cached: {unsigned} (settings.trust); "
             f"{plan.name} is built")
        return None
    return found


def find_image(lookups: Lookups, plan: ImagePlan, records: Mapping[str | None, Record],
               warn: Callable[[str], None]) -> Settled | None:
    """What the registry verifiably holds for these records (one per platform): its image
    (of a multi-arch image, its manifest list and each platform's image), as a task
    settles it; None when it holds nothing of that key."""
    platform_keys = {p: r.key for p, r in records.items()}
    key = keys.list_key(platform_keys) if plan.platforms else platform_keys[None]
    found = find_by_key(lookups, plan, key, warn)
    return settled_from(lookups, plan, found, key, platform_keys) if found else None


def settled_from(lookups: Lookups, plan: ImagePlan, found: Found, key: str | None,
                 platform_keys: Mapping[str | None, str] | None = None) -> Settled:
    """An image the registry holds, as a task settles it (children are built on its ID,
    pulled by digest when one must be built). A multi-arch image's per platform: each
    image the list names for it, its ID read from that image's manifest; its key from
    `platform_keys`, else from the list's annotation when that agrees with the list's
    key."""
    platforms: dict[str, Settled] | None = None
    if plan.platforms:
        platform_keys = platform_keys or found.platform_keys(key)
        platforms = {}
        for platform in plan.platforms:
            digest = found.manifest.platform_digest(platform)
            image = digest and lookups.find(f"{found.repository}@{digest}")
            if not image:
                raise RegistryError(f"{found.pinned} lists no image for {platform}")
            platforms[platform] = Settled(image.image_id, (platform_keys or {}).get(platform),
                                          How.REGISTRY, pinned=image.pinned)
    return Settled(found.image_id, key, How.REGISTRY, pinned=found.pinned,
                   digest=found.manifest.digest, image=plan.reference, platforms=platforms)


def walk(project: Project, selected: Collection[str], storage: Storage,
         lookups: Lookups, bases: BaseImages, warn: Callable[[str], None]) -> None:
    """Ask the registry for every selected image whose key can be known before any
    build: roots, and children of images found in local storage or in the registry.
    Run it in a thread of its own: it waits for answers, parents first."""

    def find(name: str, records: Mapping[str | None, Record]) -> dict[str | None, str | None]:
        local = storage.with_keys(records)
        if all(local.values()) or project.plans[name].platforms:
            return local  # (a multi-arch image is looked up by its list key when judged)
        try:
            found = find_by_key(lookups, project.plans[name], records[None].key, warn)
        except RegistryError:
            return {}  # the check asks again, and says so
        return {None: found.image_id if found else None}

    names = project.graph.ordered(selected)
    for _ in standing.walk(project.plans, names, bases.id_of, find):
        pass


def current(project: Project, names: list[str], lookups: Lookups, bases: BaseImages,
            warn: Callable[[str], None]) -> dict[str, Settled | None]:
    """What the registry holds for each image's current key (parents first in `names`),
    as a task settles it; None where it holds nothing."""
    held: dict[str, Settled | None] = dict.fromkeys(names)

    def find(name: str, records: Mapping[str | None, Record]) -> dict[str | None, str | None]:
        found = held[name] = find_image(lookups, project.plans[name], records, warn)
        return found.ids() if found else {}

    for _ in standing.walk(project.plans, names, bases.id_of, find):
        pass
    return held


def resolve(project: Project, names: list[str], lookups: Lookups, bases: BaseImages,
            warn: Callable[[str], None]) -> dict[str, dict | None]:
    """`current`, as build/images.lock.json states it: each image's pinned reference, user
    tag, digest (of a multi-arch image, its index's), key and image ID (per platform under
    "platforms")."""
    return {name: found and _locked(lookups, project.plans[name], found)
            for name, found in current(project, names, lookups, bases, warn).items()}


def _locked(lookups: Lookups, plan: ImagePlan, found: Settled) -> dict[str, Any]:
    return {"reference": found.pinned, "tag": plan.reference, "digest": found.digest,
            "tags": _tagged(lookups, plan.tag_references, found.digest),
            "key": found.key, "id": found.id,
            **({"platforms": {p: {"id": v.id, "key": v.key, "reference": v.pinned}
                              for p, v in (found.platforms or {}).items()}}
               if plan.platforms else {})}


def _tagged(lookups: Lookups, references: list[str], digest: str) -> list[str]:
    """The references among these that name `digest` in the registry now."""
    named = {reference: lookups.find(reference) for reference in references}
    return [reference for reference, found in named.items()
            if found is not None and found.manifest.digest == digest]


NATIVE_ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm/v7", "ppc64le": "ppc64le",
                 "s390x": "s390x", "riscv64": "riscv64"}


def native_platform() -> str:
    import platform

    machine = platform.machine()
    return f"linux/{NATIVE_ARCHES.get(machine, machine)}"


class BaseImages:
    """The image ID of each root's base image (its FROM), and of every other image a build
    reads (COPY --from, a later stage's FROM): as local storage holds it; on a
    machine that lacks it, with the registry cache on, as the base's registry names it for
    this machine's platform (its manifest's config digest: nothing pulled); else unknown,
    and the build pulls it first."""

    def __init__(self, storage: Storage, client_for: Callable[[str], Client],
                 from_registry: bool, budget: Callable[[], Budget]) -> None:
        self.storage, self.client_for, self.from_registry = storage, client_for, from_registry
        self.budget = budget  # each request's retries
        self._lock = threading.Lock()
        self._asked: dict[str, str | None] = {}

    def id_of(self, reference: str | None) -> str | None:
        if reference is None:
            return None
        local = self.storage.id_of_image(reference)
        if local is not None or not self.from_registry:
            return local
        with self._lock:
            if reference not in self._asked:
                self._asked[reference] = self._in_registry(ImageRef.parse(reference))
            return self._asked[reference]

    def _in_registry(self, ref: ImageRef) -> str | None:
        client = self.client_for(str(ref))
        try:
            manifest = asked_again(lambda: client.manifest(str(ref)), self.budget())
            if manifest is not None and manifest.is_index:
                digest = manifest.platform_digest(native_platform())
                manifest = digest and asked_again(
                    lambda: client.manifest(f"{ref.repository}@{digest}"), self.budget())
        except RegistryError:
            return None  # unknown: the build pulls it, and says why it fails
        return manifest.config_digest if manifest else None

