"""What a build stands on, brought into local storage before it starts: a root's base image
and the other images it reads (by name, when storage lacks them), and a parent the run
found in the registry (by digest: exactly the image it settled on). An image is then built
with `--pull=never`, on exactly the images its key names."""

from __future__ import annotations

from collections.abc import Collection

from buildlib.buildah import BuildahError
from buildlib.plan import ImagePlan
from buildlib.reference import ImageRef
from buildlib.services import Services
from buildlib.settled import Settled
from buildlib.storage import Storage


def pull_base(services: Services, reference: str, storage: Storage,
              anew: bool = False) -> tuple[str | None, str]:
    """Pull a root's base image (or an image a build reads) when storage lacks it or
    `anew`; the IDs its name had in storage before and has now."""
    before = storage.id_of_image(reference)
    after = services.pull(reference, anew=anew)
    storage.add(after, [str(ImageRef.parse(reference))])
    return before, after


def images_read(services: Services, storage: Storage, plan: ImagePlan,
                tree: Collection[str]) -> str | bool:
    """A root's base image, and every other image the build reads but this tree's own
    (`tree`: their references), pulled when local storage lacks it: whether any was, or
    the error when one cannot be pulled."""
    wanted = [plan.base] if plan.base and not plan.parent else []
    wanted += [image for image in plan.reads if image not in tree]
    pulled = False
    for image in wanted:
        if storage.id_of_image(image):
            continue
        what = "its base image" if image == plan.base and not plan.parent else "the image"
        try:
            pull_base(services, image, storage)
        except BuildahError as err:
            return (f"cannot build {plan.name}: {what} {image!r} is not in local storage and "
                    f"could not be pulled: {err}\n  fix: correct the line that names it, "
                    "or pull or build that image first")
        pulled = True
        services.base_triggers.pulled(image)
    return pulled


def pull_found(services: Services, storage: Storage, plan: ImagePlan,
               settled: Settled) -> None:
    """Bring an image found in the registry into storage, once, by digest (exactly the
    image the run settled on; of a multi-arch image, each platform's), named as a build
    names it: a child is built on it."""
    for image in settled.per_platform().values():
        with storage.lock_for(f"pull {image.pinned}"):
            if not storage.has(image.id, plan.build_from(image) or plan.reference):
                _pull_one(services, storage, plan, image)


def _pull_one(services: Services, storage: Storage, plan: ImagePlan, image: Settled) -> None:
    assert image.pinned is not None  # (found in the registry)
    image_id = services.pull(image.pinned)
    if image_id != image.id:
        raise BuildahError(f"pulled {image.pinned}: image {image_id}, "
                           f"not {image.id} as its manifest says")
    if not image.key:  # named by its digest alone: children build FROM that
        storage.add(image_id, [image.pinned])
        return
    # an image that verifiably carries its key: named as a build names it (a platform's
    # image by its key name only: the reference names the list)
    names = plan.local_names(image.key)
    services.buildah.tag(image_id, *names)
    services.buildah.untag(image.pinned)  # the pull's name would come first
    storage.add(image_id, names)
