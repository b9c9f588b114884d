"""`doit clean`: an image's names that imagebake gave it, and its work folder, taken off."""

from __future__ import annotations

import shutil
import subprocess

from buildlib import keys
from buildlib.buildah import error_line
from buildlib.plan import LOCAL_KEY_REPOSITORY, ImagePlan
from buildlib.run import Run


def clean_image(run: Run, name: str) -> None:
    """Take off the names imagebake gave the image (its key names and its reference): an
    image goes with the last of them, so one that a user named too stays, by that name."""
    plan = run.project.plans[name]
    try:
        _remove_names(run, plan)
    except subprocess.CalledProcessError as err:  # gone meanwhile, or a container uses it
        print(f"left {plan.reference} in local storage: {error_line(err.stderr or '')}")
    if plan.owns_workdir():
        shutil.rmtree(plan.workdir, ignore_errors=True)
    elif plan.workdir.exists():
        print(f"left {plan.workdir} alone: imagebake did not make it")


def _remove_names(run: Run, plan: ImagePlan) -> None:
    buildah_, image_id = run.services.buildah, run.storage.id_of(plan.reference)
    if image_id and plan.platforms:  # the manifest list, then the images it lists
        images = buildah_.manifest_images(plan.reference)
        buildah_.manifest_rm(*_names_made(plan, run.storage.names(image_id)))
        for image in images:
            if made := _names_made(plan, run.storage.names(image)):
                buildah_.remove_names(*made)
    elif image_id:
        buildah_.remove_names(*_names_made(plan, run.storage.names(image_id)))


def _names_made(plan: ImagePlan, names: set[str]) -> list[str]:
    """Those of an image's names that builds of this image give: its reference, and the
    names made of its keys (`localhost/imagebake/<name>:ib-<key>`)."""
    key_names = f"{LOCAL_KEY_REPOSITORY}/{plan.name}:{keys.KEY_TAG_PREFIX}"
    return sorted(n for n in names if n == plan.reference or n.startswith(key_names))
