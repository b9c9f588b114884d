"""Build one image, and tell whether an earlier build of it still stands."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Mapping
from typing import Any

from buildlib import buildah, cache, keys, registry, render
from buildlib.buildah import Buildah, BuildahError, Interrupted
from buildlib.project import ImagePlan, Project
from buildlib.reference import ImageRef


class Storage:
    """The images in local storage, listed by one buildah process on first use."""

    def __init__(self, buildah: Buildah) -> None:
        self._buildah = buildah
        self._lock = threading.Lock()
        self._images: dict[str, set[str]] | None = None
        self._error: Exception | None = None
        self._by_key_tag: dict[str, str] | None = None
        self._key_locks: dict[str, threading.Lock] = {}
        self._update_lock = threading.Lock()

    def prefetch(self) -> None:
        """List in the background now, while doit loads tasks and reads its state."""
        threading.Thread(target=self._list_once, daemon=True).start()

    def _list_once(self) -> None:
        with self._lock:
            if self._images is None and self._error is None:
                try:
                    self._images = self._buildah.images()
                except Exception as err:  # raised to whoever needs the listing
                    self._error = err

    def _listing(self) -> dict[str, set[str]]:
        self._list_once()
        if self._error is not None:
            raise self._error
        assert self._images is not None
        return self._images

    def check(self) -> None:
        """Raise StorageError now if local storage cannot be listed."""
        self._listing()

    def has(self, image_id: str, reference: str) -> bool:
        return reference in self._listing().get(image_id, ())

    def holds(self, image_id: str) -> bool:
        return image_id in self._listing()

    def id_of(self, reference: str) -> str | None:
        return self.id_named([reference])

    def id_named(self, names: list[str]) -> str | None:
        """The image with the first of these names that storage holds."""
        for name in names:
            found = next((i for i, held in self._listing().items() if name in held), None)
            if found is not None:
                return found
        return None

    def with_key(self, key: str) -> str | None:
        """The image named by this key's tag, in any repository (it was built with this
        key, here or by a run whose state is lost)."""
        by_key_tag = self._by_key_tag
        if by_key_tag is None:
            by_key_tag = self._by_key_tag = {
                name.rpartition(":")[2]: image_id
                for image_id, names in self._listing().items() for name in names
                if name.rpartition(":")[2].startswith(keys.KEY_TAG_PREFIX)}
        return by_key_tag.get(keys.key_tag(key))

    def lock_for(self, what: str) -> threading.Lock:
        """One lock per key (two images of the same inputs, one image ID, are built once:
        the second finds the first's; buildah cannot commit one ID twice at once), and
        one per image pulled."""
        with self._lock:
            return self._key_locks.setdefault(what, threading.Lock())

    def add(self, image_id: str, names: list[str]) -> None:
        """An image this run built or tagged, so that later lookups see it. (A new listing
        replaces the old, which other threads may be reading.)"""
        with self._update_lock:
            listing = dict(self._listing())
            listing[image_id] = listing.get(image_id, set()) | set(names)
            self._images, self._by_key_tag = listing, None

    def names(self, image_id: str) -> set[str]:
        return self._listing().get(image_id, set())


def build_image(project: Project, name: str, record: keys.Record, storage: Storage,
                reason: str | None = None, echo: bool = False,
                parent_name: str | None = None) -> dict[str, Any]:
    """The image with this record's key: found in storage by its key tag (and tagged
    with the reference), or built from a fresh copy of the context, FROM `parent_name`:
    the parent's key name, or the digest reference of a pinned parent that carries no key
    (exactly that image; and buildah writes the FROM name into the image's history, so a
    tag there would make the ID depend on the tag). Returns what later runs, children and
    pushes need."""
    plan = project.plans[name]
    start = time.time()
    with storage.lock_for(record.key):
        found = storage.with_key(record.key)
        if found is not None:
            missing = [n for n in plan.local_names(record.key)
                       if n not in storage.names(found)]
            if missing:
                project.buildah.tag(found, *missing)
                storage.add(found, missing)
            return _values(plan, found, record, "local", start)
        context = plan.context
        if parent_name and plan.parent:
            context = context.from_parent(plan.parent_reference, parent_name)
        values = _build(project, plan, context, record, reason, echo, start)
        storage.add(values["id"], plan.local_names(values["key"]))
        return values


def _build(project: Project, plan: ImagePlan, context: render.Context, record: keys.Record,
           reason: str | None, echo: bool, start: float) -> dict[str, Any]:
    name = plan.name
    plan.own_workdir()
    try:
        context.write(plan.dockerfile, plan.context_dir)
    except OSError:
        shutil.rmtree(plan.context_dir, ignore_errors=True)  # a full disk: free what we took
        raise
    # What is in the image is the copy: if a file changed since it was hashed, key the copy.
    copied = context.copied_to(plan.context_dir).file_digests()
    if copied != record.files:
        record = plan.record_of(copied).on_parent(record.parent_id)
    what = f"{name} for {record.platform}" if record.platform else name
    # a multi-arch image's platforms share its log, one after another
    built = project.buildah.bud(project.bud_argv(name, record), plan.iidfile,
                                plan.build_log, plan.timeout,
                                note=f"building {what}: {reason or 'asked to'}", echo=echo,
                                append=record.platform is not None)
    return _values(plan, built.id, record, "built", start, built.cpu_seconds)


def _values(plan: ImagePlan, image_id: str, record: keys.Record, found: str,
            start: float, cpu_seconds: float = 0.0) -> dict[str, Any]:
    """`cpu_seconds`: what buildah took to build it (0 for an image found by its key)."""
    return {"id": image_id, "key": record.key, "record": record.as_dict(), "found": found,
            "image": plan.reference, "start": start, "end": time.time(),
            "cpu_seconds": cpu_seconds}


def build(project: Project, name: str, records: Mapping[str | None, keys.Record],
          storage: Storage, reasons: Mapping[str | None, str], echo: bool = False,
          parent_names: Mapping[str | None, str | None] | None = None) -> dict[str, Any]:
    """The image of these records (one per platform; `None`: a native image's one), each
    found by its key or built on `parent_names[platform]`, one after another into one log;
    of a multi-arch image, then the manifest list of them, named by its key and the
    reference. Returns what later runs, children and pushes need (a multi-arch image's
    per platform under "platforms")."""
    plan = project.plans[name]
    parent_names = parent_names or {}
    if not plan.platforms:
        return build_image(project, name, records[None], storage, reasons.get(None), echo,
                           parent_names.get(None))
    start = time.time()
    if any(storage.with_key(record.key) is None for record in records.values()):
        plan.own_workdir()
        plan.build_log.write_text("")  # the platforms' builds follow one another in it
    platforms = {platform: build_image(project, name, record, storage,
                                       reasons.get(platform), echo, parent_names.get(platform))
                 for platform, record in records.items()}
    key = keys.list_key({platform: values["key"] for platform, values in platforms.items()})
    list_id = manifest_list(project, plan, key, [v["id"] for v in platforms.values()],
                            storage)
    built = any(values["found"] == "built" for values in platforms.values())
    return {"id": list_id, "key": key, "found": "built" if built else "local",
            "image": plan.reference, "start": start, "end": time.time(),
            "cpu_seconds": sum(values["cpu_seconds"] for values in platforms.values()),
            "platforms": {platform: {field: values[field] for field in PLATFORM_FIELDS}
                          for platform, values in platforms.items()}}


PLATFORM_FIELDS = ("id", "key", "record", "found")


def manifest_list(project: Project, plan: ImagePlan, key: str, image_ids: list[str],
                  storage: Storage) -> str:
    """The manifest list of these images (one per platform): found by its key name, or
    made; named by the reference too. Returns its ID in storage."""
    names = plan.list_names(key)
    with storage.lock_for(key):
        found = storage.with_key(key)
        if found is None:
            found = project.buildah.manifest_create(names[0], image_ids)
            storage.add(found, names[:1])
        missing = [n for n in names if n not in storage.names(found)]
        if missing:
            project.buildah.tag(found, *missing)
            storage.add(found, missing)
    return found


def pull(project: Project, name: str, settled: Mapping[str, Any], storage: Storage) -> None:
    """Bring an image found in the registry into storage, once, by digest (exactly the
    image the run settled on; of a multi-arch image, each platform's), named as a build
    names it: a child is built on it."""
    plan = project.plans[name]
    for values in (settled.get("platforms") or {None: settled}).values():
        with storage.lock_for(f"pull {values['pinned']}"):
            if not storage.has(values["id"], build_from(plan, values) or plan.reference):
                _pull_one(project, plan, values, storage)


def _pull_one(project: Project, plan: ImagePlan, values: Mapping[str, Any],
              storage: Storage) -> None:
    settings = project.config.settings

    def attempt() -> str:
        try:
            return project.buildah.pull(values["pinned"], tls_verify=settings.tls_verify,
                                        authfile=project.authfile,
                                        timeout=settings.push_timeout)
        except BuildahError as err:
            if registry.permanent_cause(err.output):
                raise
            raise registry.TransientError(str(err)) from None

    try:
        image_id = registry.with_retries(attempt, settings.push_retries, lambda *_: None)
    except registry.TransientError as err:
        raise BuildahError(f"still failing after {settings.push_retries} attempts: "
                           f"{err}") from None
    if image_id != values["id"]:
        raise BuildahError(f"pulled {values['pinned']}: image {image_id}, "
                           f"not {values['id']} as its manifest says")
    if not values.get("key"):  # named by its digest alone: children build FROM that
        storage.add(image_id, [values["pinned"]])
        return
    # an image that verifiably carries its key: named as a build names it (a platform's
    # image by its key name only: the reference names the list)
    names = plan.local_names(values["key"])
    project.buildah.tag(image_id, *names)
    project.buildah.untag(values["pinned"])  # the pull's name would come first
    storage.add(image_id, names)


def build_from(plan: ImagePlan, settled: Mapping[str, Any]) -> str | None:
    """The name a child of this image is built FROM: its key name, or for an image taken
    by a pin that carries no key, its digest reference."""
    return plan.key_name(settled["key"]) if settled.get("key") else settled.get("pinned")


def pull_base(project: Project, reference: str, anew: bool = False) -> tuple[str | None, str]:
    """`buildah pull` a root's base image (TLS and credentials as settings say), when
    storage lacks it or `anew`; the IDs its name had in storage before and has now."""
    settings = project.config.settings
    ref = ImageRef.parse(reference)
    before = Storage(project.buildah).id_named(ref.storage_names())
    after = project.buildah.pull(
        str(ref), tls_verify=settings.tls_verify, timeout=settings.push_timeout, anew=anew,
        authfile=registry.find_authfile(ref.domain, settings.authfile, project.config.root))
    return before, after


class PushFailed(Exception):
    """A push that failed for good: a permanent error, or every attempt used."""


def push_stale_reason(plan: ImagePlan, built: dict[str, Any],
                      lookups: cache.Lookups) -> str | None:
    """Why the image must be pushed, or None when the registry holds it under its key's
    tag and the user's tag names that same manifest. (Asked of the registry each time:
    what another machine pushed counts, and so does a tag moved since.)"""
    key_reference = plan.key_reference(built["key"])
    try:
        content = lookups.find(key_reference)
        if content is None:
            return f"not in the registry yet ({key_reference})"
        problem = _key_tag_problem(plan, built, content)
        if problem:
            return f"{key_reference} {problem}: this run's image is pushed over it"
        tagged = lookups.find(plan.reference)
    except registry.RegistryError as err:
        return str(err)
    if tagged is None or tagged.manifest.digest != content.manifest.digest:
        served = tagged.manifest.digest if tagged else "nothing"
        return f"{plan.reference} names {served}, not {content.manifest.digest}"
    return None


def _key_tag_problem(plan: ImagePlan, built: dict[str, Any], found: cache.Found) -> str | None:
    """Why what the key's tag names is not the image this run built or checked."""
    problem = found.problem(built["key"], multi_arch=bool(plan.platforms),
                            local_id=built.get("id"))
    return f"names {found.manifest.digest}, which {problem}" if problem else None


def push_image(project: Project, name: str, built: dict[str, Any],
               lookups: cache.Lookups) -> dict[str, Any]:
    """The image in the registry under its key's tag (`buildah push`, unless the registry
    holds it already), then the user's tag set to that manifest; tried again on
    transient failures. Returns the digest and the tries it took.

    Nothing is tried when the registry's check failed, or when the run's other pushes
    found it unreachable several in a row (the shared circuit breaker)."""
    plan, settings = project.plans[name], project.config.settings
    client = lookups.client
    key_reference = plan.key_reference(built["key"])
    plan.own_workdir()
    plan.push_log.write_text("")
    start, attempts, replaced = time.time(), 0, None
    try:
        client.check()
    except registry.RegistryError as err:
        raise _give_up(plan, str(err)) from None

    def attempt() -> registry.Manifest:
        nonlocal attempts, replaced
        if client.breaker.cause:
            raise _give_up(plan, client.breaker.cause)
        attempts += 1
        with plan.push_log.open("a") as log:
            log.write(f"{report_try_line(attempts)}\n")
        try:
            content = client.manifest(key_reference)
            problem = content and _key_tag_problem(
                plan, built, cache.Found(cache.repository_of(key_reference), content))
            if content is None or problem:
                replaced = problem or None
                content = _pushed_with_key(project, name, built)
            client.put_manifest(plan.reference, content)
        except registry.RegistryError as err:
            raise _request_failed(err, name, client.breaker) from None
        client.breaker.answered()
        return content

    def log_retry(number: int, sleep: float, error: BaseException | None) -> None:
        with plan.push_log.open("a") as log:
            log.write(f"retry {number + 1}/{settings.push_retries} after {sleep:.1f} s: "
                      f"{error}\n")

    try:
        content = registry.with_retries(attempt, settings.push_retries, log_retry)
    except registry.TransientError as err:
        raise PushFailed(f"still failing after {attempts} attempts: {err}") from None
    with plan.push_log.open("a") as log:
        if replaced:
            log.write(f"# {key_reference} {replaced}: pushed this run's image over it\n")
        log.write(f"# tagged {plan.reference} -> {key_reference} ({content.digest})\n")
    return {"id": built.get("id"), "key": built["key"], "digest": content.digest,
            "image": plan.reference, "start": start, "end": time.time(),
            "attempts": attempts, "replaced": replaced and f"{key_reference} {replaced}"}


def _pushed_with_key(project: Project, name: str, built: Mapping[str, Any]
                     ) -> registry.Manifest:
    """`buildah push` to the key's tag, then that manifest annotated with the key (which
    the image config cannot hold without changing the image ID; a manifest list also with
    its images' keys) put back under the tag: what a lookup checks before it takes the
    image as the key's."""
    key = built["key"]
    client, key_reference = project.registry_client, project.plans[name].key_reference(key)
    digest = _buildah_push(project, name, key)
    pushed = client.manifest(f"{cache.repository_of(key_reference)}@{digest}")
    if pushed is None:
        raise registry.TransientError(f"the registry does not serve {digest}, just pushed")
    annotations = {keys.KEY_ANNOTATION: key}
    if built.get("platforms"):
        annotations[keys.PLATFORM_KEYS_ANNOTATION] = json.dumps(
            {platform: values["key"] for platform, values in built["platforms"].items()},
            sort_keys=True)
    content = pushed.annotated(annotations)
    client.put_manifest(key_reference, content)
    return content


TRY_LINE = "# try"


def report_try_line(number: int) -> str:
    """How a push log marks each try (`report.attempts_in` counts them)."""
    return f"{TRY_LINE} {number}"


def _give_up(plan: ImagePlan, message: str) -> PushFailed:
    with plan.push_log.open("a") as log:
        log.write(f"# {message}\n")
    return PushFailed(message)


def _buildah_push(project: Project, name: str, key: str) -> str:
    """One `buildah push` to the key's tag; the pushed digest."""
    plan = project.plans[name]
    try:
        return project.buildah.push(project.push_argv(name, key), plan.digestfile,
                                    plan.push_log, project.config.settings.push_timeout)
    except Interrupted:
        raise PushFailed("interrupted") from None
    except BuildahError as err:
        raise _attempt_failed(err, name, project.registry_client.breaker) from None


def _request_failed(err: registry.RegistryError, name: str,
                    breaker: registry.Breaker) -> Exception:
    """A failed registry request as PushFailed or TransientError; tells the breaker."""
    if err.unreachable:
        breaker.unreachable(name, err.unreachable)
    if err.transient:
        return registry.TransientError(str(err))
    cause = registry.permanent_cause(str(err))
    return PushFailed(f"{cause} ({err})" if cause else str(err))


def _attempt_failed(err: BuildahError, name: str, breaker: registry.Breaker) -> Exception:
    """A failed `buildah push` as PushFailed (no retry mends it) or TransientError,
    in buildah's own error line; tells the breaker whether the registry was there."""
    line = err.reason if err.timed_out else (buildah.error_line(err.output) or err.reason)
    not_there = err.reason if err.timed_out else registry.unreachable(err.output)
    if not_there:
        breaker.unreachable(name, not_there)
    else:
        breaker.answered()
    cause = None if err.timed_out else registry.permanent_cause(err.output)
    if cause:
        return PushFailed(f"{cause} ({line})")
    return registry.TransientError(line)
