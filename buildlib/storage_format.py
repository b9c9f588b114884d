"""containers/storage's on-disk format: the private files buildah's storage keeps, read
without starting a process. Each read of one file is one small function here, and
tests/test_storage_format.py checks every field they read against a real buildah, so that
a buildah or containers/storage upgrade fails a test, not a user's run."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

# A parse that meets a file of another shape: the file is treated as unreadable.
UNEXPECTED = (KeyError, TypeError, AttributeError, ValueError)


def image_id(raw: str) -> str:
    """IDs as `sha256:<hex>`: `buildah images` prints them so, `buildah inspect` and the
    storage's files bare."""
    raw = raw.strip()
    return raw if raw.startswith("sha256:") else f"sha256:{raw}"


def images_file(graph_root: Path, driver: str) -> Path:
    """Where the storage lists its images: `<graph root>/<driver>-images/images.json`."""
    return graph_root / f"{driver}-images" / "images.json"


def graph_root(images_list: Path) -> Path:
    """The storage's folder, two above its images.json."""
    return images_list.parent.parent


def _beside(images_list: Path, kind: str) -> Path:
    """The folder of `kind` (layers, containers) beside the folder of images."""
    driver = images_list.parent.name.removesuffix("-images")
    return graph_root(images_list) / f"{driver}-{kind}"


@dataclass(frozen=True)
class StoredImage:
    """One image record of local storage, as prune reads it."""

    id: str
    names: frozenset[str]
    layer: str | None  # its top layer (None: an image of metadata only)
    is_list: bool  # a manifest list (removed with `manifest rm`, never `rmi`)
    # its config's history entries and layer digests (None: unread), which tell the
    # steps it was built through: buildah's layer cache keeps one image per step
    history: tuple[str, ...] | None = None
    diff_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class StorageContents:
    """Images, layers and what working containers stand on: what prune decides from."""

    images: dict[str, StoredImage]
    layers: dict[str, tuple[str | None, int]]  # layer ID -> (its parent, its diff size)
    in_use: frozenset[str]  # image IDs that working containers stand on
    complete: bool  # False: read through `buildah images` (no layers, no containers)

    def chain(self, layer: str | None) -> list[str]:
        """A layer and every layer below it."""
        chain: list[str] = []
        while layer and layer not in chain:
            chain.append(layer)
            layer = self.layers.get(layer, (None, 0))[0]
        return chain


def _read_list(path: Path) -> list | None:
    """A JSON list the storage writes whole and renames into place (so never read
    half-written); [] when there is no such file yet, None when it cannot be read."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, ValueError):
        return None
    return data if isinstance(data, list) else None


def read_image_store(path: Path | None) -> dict[str, set[str]] | None:
    """images.json as image ID -> names; None when it cannot be read as such."""
    if path is None:
        return None
    try:
        entries = json.loads(path.read_bytes())
        return {image_id(entry["id"]): set(entry.get("names") or []) for entry in entries}
    except (OSError, *UNEXPECTED):
        return None


def read_image_steps(images_list: Path, bare_id: str) -> tuple[tuple[str, ...] | None,
                                                               tuple[str, ...]]:
    """An image's config history (each entry as canonical JSON) and layer digests, from
    the config the storage keeps in the image's folder (`=<base64 of its digest>`)."""
    name = "=" + base64.b64encode(f"sha256:{bare_id}".encode()).decode()
    try:
        config = json.loads((images_list.parent / bare_id / name).read_bytes())
        history = tuple(json.dumps(entry, sort_keys=True) for entry in config["history"])
        return history, tuple(config.get("rootfs", {}).get("diff_ids") or ())
    except (OSError, *UNEXPECTED):
        return None, ()


def read_images(images_list: Path) -> dict[str, StoredImage] | None:
    """images.json as image records, with the steps each was built through."""
    entries = _read_list(images_list)
    try:
        return None if entries is None else {image_id(e["id"]): StoredImage(
            image_id(e["id"]), frozenset(e.get("names") or ()), e.get("layer") or None,
            "instances.json" in (e.get("big-data-names") or ()),
            *read_image_steps(images_list, e["id"])) for e in entries}
    except UNEXPECTED:
        return None


def read_layers(images_list: Path) -> dict[str, tuple[str | None, int]] | None:
    """`<driver>-layers/layers.json`: layer ID -> (its parent, its diff size)."""
    entries = _read_list(_beside(images_list, "layers") / "layers.json")
    try:
        return None if entries is None else {
            e["id"]: (e.get("parent") or None, int(e.get("diff-size") or 0)) for e in entries}
    except UNEXPECTED:
        return None


def read_images_in_use(images_list: Path) -> frozenset[str] | None:
    """`<driver>-containers/containers.json`: the images working containers stand on."""
    entries = _read_list(_beside(images_list, "containers") / "containers.json")
    try:
        return None if entries is None else frozenset(
            image_id(e["image"]) for e in entries if e.get("image"))
    except UNEXPECTED:
        return None


def read_storage_contents(images_list: Path) -> StorageContents | None:
    """Images, layers and images in use, from the storage's own files beside its
    images.json; None when one cannot be read."""
    images = read_images(images_list)
    layers = read_layers(images_list)
    in_use = read_images_in_use(images_list)
    if images is None or layers is None or in_use is None:
        return None
    return StorageContents(images, layers, in_use, complete=True)


def read_build_args(graph_root: Path, driver: str, container: str) -> dict[str, str]:
    """The build args of a working container, from buildah's own record of it
    (`buildah inspect` leaves them out); {} when it cannot be read."""
    record = graph_root / f"{driver}-containers" / container / "userdata" / "buildah.json"
    try:
        return json.loads(record.read_text()).get("Args") or {}
    except (OSError, ValueError):
        return {}
