"""Build one image, and tell whether an earlier build of it still stands."""

from __future__ import annotations

import threading
import time
from typing import Any

from buildlib.buildah import Buildah
from buildlib.project import ImagePlan, Project


class Storage:
    """The images in local storage, listed by one buildah process on first use."""

    def __init__(self, buildah: Buildah) -> None:
        self._buildah = buildah
        self._lock = threading.Lock()
        self._images: dict[str, set[str]] | None = None

    def has(self, image_id: str, reference: str) -> bool:
        with self._lock:
            if self._images is None:
                self._images = self._buildah.images()
        return reference in self._images.get(image_id, ())


def stale_reason(plan: ImagePlan, saved: dict[str, Any], parent_id: str | None,
                 storage: Storage) -> str | None:
    """Why the image must be rebuilt, or None when its last build still stands."""
    if not saved.get("id"):
        return "never built"
    if saved.get("key") != plan.inputs_key:
        return "its inputs changed (Dockerfile, context files, args, labels, volumes or settings)"
    if saved.get("parent_id") != parent_id:
        return f"its parent '{plan.parent}' was rebuilt"
    if not storage.has(saved["id"], plan.reference):
        return f"image {saved['id']} ({plan.reference}) is no longer in local storage"
    return None


def build_image(project: Project, name: str, parent_id: str | None) -> dict[str, Any]:
    """Write the context, run `buildah bud`; return what later runs and children need."""
    plan = project.plans[name]
    start = time.time()
    plan.context.write(plan.dockerfile, plan.context_dir)
    image_id = project.buildah.bud(project.bud_argv(name), plan.iidfile, plan.build_log,
                                   plan.timeout)
    return {"id": image_id, "key": plan.inputs_key, "parent_id": parent_id,
            "image": plan.reference, "start": start, "end": time.time()}
