"""Build one image, and tell whether an earlier build of it still stands."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from buildlib import registry
from buildlib.buildah import Buildah, BuildahError
from buildlib.project import ImagePlan, Project


class Storage:
    """The images in local storage, listed by one buildah process on first use."""

    def __init__(self, buildah: Buildah) -> None:
        self._buildah = buildah
        self._lock = threading.Lock()
        self._images: dict[str, set[str]] | None = None
        self._error: Exception | None = None

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

    def has(self, image_id: str, reference: str) -> bool:
        return reference in self._listing().get(image_id, ())

    def id_of(self, reference: str) -> str | None:
        return next((i for i, names in self._listing().items() if reference in names), None)


def stale_reason(plan: ImagePlan, saved: dict[str, Any], parent_id: str | None,
                 storage: Storage) -> str | None:
    """Why the image must be rebuilt, or None when its last build still stands."""
    if not saved.get("id"):
        return "never built"
    if saved.get("key") != plan.inputs_key:
        return changed_inputs(saved.get("inputs") or {}, plan.inputs)
    if saved.get("parent_id") != parent_id:
        return f"parent '{plan.parent}' changed: {saved.get('parent_id')} -> {parent_id}"
    if not storage.has(saved["id"], plan.reference):
        return f"image {saved['id']} ({plan.reference}) is no longer in local storage"
    return None


def changed_inputs(saved: dict[str, Any], current: dict[str, Any]) -> str:
    """Which inputs differ from the last build, in words."""
    changes = []
    if saved.get("Dockerfile") != current["Dockerfile"]:
        changes.append("rendered Dockerfile changed (template or vars)")
    old_files, new_files = saved.get("files") or {}, current["files"]
    for label, names in (("added", new_files.keys() - old_files.keys()),
                         ("removed", old_files.keys() - new_files.keys()),
                         ("changed", {n for n in new_files.keys() & old_files.keys()
                                      if new_files[n] != old_files[n]})):
        if names:
            changes.append(f"context file {label}: {', '.join(sorted(names))}")
    old_options = _option_pairs(saved.get("options") or [])
    new_options = _option_pairs(current["options"])
    if old_options != new_options:
        changes.append("build options changed: " + " ".join(
            [f"-{o}" for o in old_options if o not in new_options]
            + [f"+{o}" for o in new_options if o not in old_options]))
    return "; ".join(changes) or "inputs changed"


def _option_pairs(options: list[str]) -> list[str]:
    """`--flag value` pairs (and lone flags) of an option list, for a readable diff."""
    pairs: list[str] = []
    for option in options:
        if pairs and not option.startswith("-") and " " not in pairs[-1]:
            pairs[-1] += f" {option}"
        else:
            pairs.append(option)
    return pairs


def build_image(project: Project, name: str, parent_id: str | None,
                reason: str | None = None, echo: bool = False) -> dict[str, Any]:
    """Write the context, run `buildah bud`; return what later runs and children need."""
    plan = project.plans[name]
    start = time.time()
    plan.context.write(plan.dockerfile, plan.context_dir)
    image_id = project.buildah.bud(project.bud_argv(name), plan.iidfile, plan.build_log,
                                   plan.timeout, note=f"building {name}: {reason or 'asked to'}",
                                   echo=echo)
    return {"id": image_id, "key": plan.inputs_key, "inputs": plan.inputs,
            "parent_id": parent_id, "image": plan.reference, "start": start,
            "end": time.time()}


class PushFailed(Exception):
    """A push that failed for good: a permanent error, or every attempt used."""


def push_stale_reason(plan: ImagePlan, saved: dict[str, Any], image_id: str | None,
                      remote_digest: Callable[[], str | None]) -> str | None:
    """Why the image must be pushed again, or None when the registry serves the last push.

    `remote_digest` asks the registry, and is called only when the local image is the
    one pushed last.
    """
    if not saved.get("digest"):
        return "never pushed"
    if saved.get("id") != image_id:
        return f"image {image_id} was built since the last push"
    try:
        served = remote_digest()
    except registry.RegistryError as err:
        return str(err)
    if served != saved["digest"]:
        return f"the registry serves {served or 'nothing'} for {plan.reference}"
    return None


def push_image(project: Project, name: str, image_id: str | None) -> dict[str, Any]:
    """`buildah push` with retries on transient failures; return the pushed digest."""
    plan = project.plans[name]
    argv = project.push_argv(name)
    attempts_allowed = project.config.settings.push_retries
    plan.push_log.parent.mkdir(parents=True, exist_ok=True)
    plan.push_log.write_text("")
    start, attempts = time.time(), 0

    def attempt() -> str:
        nonlocal attempts
        attempts += 1
        try:
            return project.buildah.push(argv, plan.digestfile, plan.push_log, plan.timeout)
        except BuildahError as err:
            cause = registry.permanent_cause(err.output)
            if cause:
                raise PushFailed(f"{cause} ({_last_line(err.output) or err.reason})") from None
            raise registry.TransientPushError(_last_line(err.output) or err.reason) from None

    def log_retry(number: int, sleep: float, error: BaseException | None) -> None:
        with plan.push_log.open("a") as log:
            log.write(f"retry {number + 1}/{attempts_allowed} after {sleep:.1f} s: {error}\n")

    try:
        digest = registry.with_retries(attempt, attempts_allowed, log_retry)
    except registry.TransientPushError as err:
        raise PushFailed(f"still failing after {attempts} attempts: {err}") from None
    return {"id": image_id, "digest": digest, "image": plan.reference, "start": start,
            "end": time.time(), "attempts": attempts}


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    return (errors or lines or [""])[-1]
