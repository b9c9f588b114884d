"""An image and the registry: push one under its key's tag (annotated with the key) and set
the user's tag to that manifest; retry what may pass, and read what buildah's and the
registry's errors mean."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

from buildlib import buildah, cache, keys, push_signing, registry, retries, signatures
from buildlib.buildah import BuildahError, Interrupted
from buildlib.plan import ImagePlan
from buildlib.project import Project
from buildlib.services import Services
from buildlib.settled import Settled


class PushFailed(Exception):
    """A push that failed for good: a permanent error, or every attempt used."""


def push_stale_reason(plan: ImagePlan, built: Settled, lookups: cache.Lookups,
                      services: Services | None = None) -> str | None:
    """Why the image must be pushed, or None when the registry holds it under its key's
    tag and the user's tag names that same manifest. (Asked of the registry each time:
    what another machine pushed counts, and so does a tag moved since.)"""
    key_reference = plan.key_reference(_key(built))
    try:
        content = lookups.find(key_reference)
        if content is None:
            return f"not in the registry yet ({key_reference})"
        problem = _key_tag_problem(plan, built, content)
        if problem:
            return f"{key_reference} {problem}: this run's image is pushed over it"
        unsigned = services and push_signing.unsigned(services, content)
        if unsigned:
            return f"{key_reference} {unsigned}"
        if plan.one_of:  # one platform's list: the user's tag is `merge`'s
            return None
        for reference in plan.tag_references:
            tagged = lookups.find(reference)
            if tagged is None or tagged.manifest.digest != content.manifest.digest:
                served = tagged.manifest.digest if tagged else "nothing"
                return f"{reference} names {served}, not {content.manifest.digest}"
    except registry.RegistryError as err:
        return str(err)
    return None


def _key(built: Settled) -> str:
    assert built.key is not None  # (an image that carries no key is pinned: never pushed)
    return built.key


def _key_tag_problem(plan: ImagePlan, built: Settled, found: cache.Found) -> str | None:
    """Why what the key's tag names is not the image this run built or checked."""
    problem = found.problem(_key(built), multi_arch=bool(plan.platforms),
                            local_id=built.id)
    return f"names {found.manifest.digest}, which {problem}" if problem else None


def push_image(project: Project, services: Services, name: str, built: Settled,
               lookups: cache.Lookups, parent: Settled | None = None) -> dict[str, Any]:
    """The image in the registry under its key's tag (`buildah push`, unless the registry
    holds it already), signed with its provenance when settings.sign says so (`parent`:
    the values of the image it is built on), then the user's tag set to that manifest;
    tried again on transient failures. Returns the digest and the tries it took.

    Nothing is tried when the registry's check failed, or when the run's other pushes
    found it unreachable several in a row (the shared circuit breaker)."""
    plan, settings = project.plans[name], project.config.settings
    client = lookups.client
    key_reference = plan.key_reference(_key(built))
    plan.own_workdir()
    plan.push_log.write_text("")
    start, attempts, replaced = time.time(), 0, None
    budget = services.budget()
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
            log.write(f"{retries.try_line(attempts)}\n")
        try:
            content = client.manifest(key_reference)
            problem = content and _key_tag_problem(
                plan, built, cache.Found(cache.repository_of(key_reference), content))
            if content is None or problem:
                replaced = problem or None
                content = _pushed_with_key(project, services, name, built,
                                           budget.timeout(settings.push_timeout))
            push_signing.sign_pushed(project, services, name, built, content, parent, budget)
            if not plan.one_of:  # (one platform's list: the user's tags are `merge`'s)
                for reference in plan.tag_references:
                    client.put_manifest(reference, content)
        except registry.RegistryError as err:
            raise _request_failed(err, name, client.breaker) from None
        client.breaker.answered()
        return content

    def log_retry(number: int, sleep: float, error: BaseException | None) -> None:
        with plan.push_log.open("a") as log:
            log.write(f"retry {number + 1}/{settings.push_retries} after {sleep:.1f} s: "
                      f"{error}\n")

    try:
        content = retries.with_retries(attempt, budget, log_retry)
    except retries.GaveUp as err:
        services.failed_pushes.add(name)
        raise _give_up(plan, str(err)) from None
    except BaseException:
        services.failed_pushes.add(name)  # (a child's signed push waits for no more)
        raise
    with plan.push_log.open("a") as log:
        if replaced:
            log.write(f"# {key_reference} {replaced}: pushed this run's image over it\n")
        log.write(f"# {key_reference} ({content.digest})" if plan.one_of else
                  f"# tagged {', '.join(plan.tag_references)} -> {key_reference} "
                  f"({content.digest})\n")
    return {"id": built.id, "key": built.key, "digest": content.digest,
            "image": plan.reference, "start": start, "end": time.time(),
            "attempts": attempts, "replaced": replaced and f"{key_reference} {replaced}"}


def _pushed_with_key(project: Project, services: Services, name: str,
                     built: Settled, timeout: float) -> registry.Manifest:
    """`buildah push` to the key's tag, then that manifest annotated with the key (which
    the image config cannot hold without changing the image ID; a manifest list also with
    its images' keys) put back under the tag: what a lookup checks before it takes the
    image as the key's."""
    key = _key(built)
    client, key_reference = services.client(), project.plans[name].key_reference(key)
    digest = _buildah_push(project, services, name, key, timeout)
    pushed = client.manifest(f"{cache.repository_of(key_reference)}@{digest}")
    if pushed is None:
        raise retries.TransientError(f"the registry does not serve {digest}, just pushed")
    annotations = {keys.KEY_ANNOTATION: key}
    if built.platforms:
        annotations[keys.PLATFORM_KEYS_ANNOTATION] = json.dumps(
            {platform: image.key for platform, image in built.platforms.items()},
            sort_keys=True)
    content = pushed.annotated(annotations)
    client.put_manifest(key_reference, content)
    return content


def push_argv(project: Project, services: Services, name: str, key: str) -> list[str]:
    """`buildah push` of the image to its key's tag (the user's tag then names the
    manifest it pushed); of a multi-arch image, `buildah manifest push --all` of its
    manifest list with every platform's image."""
    settings, plan = project.config.settings, project.plans[name]
    push = services.buildah.manifest_push_argv if plan.platforms else services.buildah.push_argv
    return push(plan.reference, plan.key_reference(key), fmt=settings.format,
                digestfile=project.plans[name].digestfile, tls_verify=settings.tls_verify,
                authfile=services.authfile())


def _give_up(plan: ImagePlan, message: str) -> PushFailed:
    with plan.push_log.open("a") as log:
        log.write(f"# {message}\n")
    return PushFailed(message)


def _buildah_push(project: Project, services: Services, name: str, key: str,
                  timeout: float) -> str:
    """One `buildah push` to the key's tag, killed after `timeout` seconds; the digest."""
    plan = project.plans[name]
    try:
        return services.buildah.push(push_argv(project, services, name, key), plan.digestfile,
                                     plan.push_log, timeout)
    except Interrupted:
        raise PushFailed("interrupted") from None
    except BuildahError as err:
        raise _attempt_failed(err, name, services.client().breaker) from None


def _request_failed(err: registry.RegistryError, name: str,
                    breaker: retries.Breaker) -> Exception:
    """A failed registry request as PushFailed or TransientError; tells the breaker."""
    if err.unreachable:
        breaker.unreachable(name, err.unreachable)
    if err.transient:
        return retries.TransientError(str(err))
    cause = retries.permanent_cause(str(err))
    return PushFailed(f"{cause} ({err})" if cause else str(err))


def _attempt_failed(err: BuildahError, name: str, breaker: retries.Breaker) -> Exception:
    """A failed `buildah push` as PushFailed (no retry mends it) or TransientError,
    in buildah's own error line; tells the breaker whether the registry was there."""
    line = err.reason if err.timed_out else (buildah.error_line(err.output) or err.reason)
    not_there = err.reason if err.timed_out else retries.unreachable(err.output)
    if not_there:
        breaker.unreachable(name, not_there)
    else:
        breaker.answered()
    cause = None if err.timed_out else retries.permanent_cause(err.output)
    if cause:
        return PushFailed(f"{cause} ({line})")
    return retries.TransientError(line)


def merge(project: Project, services: Services, name: str,
          parts: list[cache.Found]) -> registry.Manifest:
    """The manifest list of a multi-arch image made of its platforms' lists (`parts`, each
    pushed by a `push platform=P` run): an index of their images, annotated with its key
    (of its platforms' keys) and theirs, put under its key's tag and the user's tag."""
    plan, client = project.plans[name], services.client()
    entries: dict[str, Any] = {}
    platform_keys: dict[str, str] = {}
    for part in parts:
        keys_of = part.platform_keys(part.key) if part.manifest.is_index else None
        if not keys_of or len(keys_of) != 1:
            raise registry.RegistryError(f"{part.pinned} is not one platform's list of "
                                         f"{name} pushed by `push platform=...`")
        [(platform, key)] = keys_of.items()
        entries[platform] = json.loads(part.manifest.body)["manifests"][0]
        platform_keys[platform] = key
    missing = [p for p in plan.platforms if p not in entries]
    if missing or len(entries) != len(plan.platforms):
        raise registry.RegistryError(f"{name} is built for {', '.join(plan.platforms)}; "
                                     f"the lists given hold {', '.join(entries)}")
    key = keys.list_key(platform_keys)
    document = json.loads(parts[0].manifest.body)  # a list as buildah writes it, of all
    document.pop("annotations", None)
    document["manifests"] = [entries[p] for p in plan.platforms]
    index = replace(parts[0].manifest, body=json.dumps(document).encode()).annotated({
                                  keys.KEY_ANNOTATION: key,
                                  keys.PLATFORM_KEYS_ANNOTATION: json.dumps(platform_keys,
                                                                            sort_keys=True)})
    client.put_manifest(plan.key_reference(key), index)
    if services.signing_key is not None:  # (its images were signed by their pushes)
        signatures.sign_image(client, cache.repository_of(plan.reference), index.digest,
                              services.signing_key)
    for reference in plan.tag_references:
        client.put_manifest(reference, index)
    return index
