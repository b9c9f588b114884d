"""The images in local storage: listed once per run (from containers/storage's own list,
see `Buildah.images`), kept up to date by the run's own builds, tags and pulls."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TypeVar

from buildlib import keys
from buildlib.buildah import Buildah
from buildlib.reference import ImageRef

P = TypeVar("P", bound=str | None)  # a platform (None: a native image's one)


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

    def id_of_image(self, reference: str) -> str | None:
        """The image a reference names as buildah finds it here (a short name also under
        `localhost/`)."""
        return self.id_named(ImageRef.parse(reference).storage_names())

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

    def with_keys(self, records: Mapping[P, keys.Record]) -> dict[P, str | None]:
        """The image of each record's key (`with_key`): what "found by its key" means."""
        return {platform: self.with_key(record.key) for platform, record in records.items()}

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
            for other, held in listing.items():  # (a name names one image: a tag moves)
                if other != image_id and held & set(names):
                    listing[other] = held - set(names)
            listing[image_id] = listing.get(image_id, set()) | set(names)
            self._images, self._by_key_tag = listing, None

    def names(self, image_id: str) -> set[str]:
        return self._listing().get(image_id, set())
