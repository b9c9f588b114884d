"""What an image's task settled on in a run (built, found by its key, pinned), per platform:
one frozen type, which children stand on and pushes push.

doit saves a task's values as a plain dict: they are read into a `Settled` (and written
back) at doit's seam only, by `from_values` and `as_values`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

Platform = str | None  # None: the machine's own platform (an image with no `platforms:`)


class How(Enum):
    """How the image was come by (doit's saved values spell it as the value)."""

    LOCAL = "local"  # in local storage: by its key, or the image its task recorded
    REGISTRY = "registry"  # in the registry (cache=registry, or pin=): pulled when needed
    BUILT = "built"


_HOW = {how.value: how for how in How}


@dataclass(frozen=True, slots=True)  # (slots: made and read in every up-to-date check)
class Settled:
    id: str | None  # the image ID (a multi-arch image's: its manifest list's)
    key: str | None  # None: a pinned image that carries no key
    how: How = How.BUILT
    pinned: str | None = None  # `repo@sha256:...` of an image the registry holds
    digest: str | None = None  # its manifest's digest there
    record: Mapping[str, Any] | None = None  # what the key is made of (keys.Record.as_dict)
    image: str | None = None  # the reference
    start: float | None = None
    end: float | None = None
    cpu_seconds: float | None = None
    platforms: Mapping[str, Settled] | None = None  # a multi-arch image's, per platform

    def per_platform(self) -> Mapping[Platform, Settled]:
        """A multi-arch image's platforms, a native image itself under `None`."""
        return self.platforms or {None: self}

    def ids(self) -> dict[Platform, str | None]:
        """The image ID of each platform: what a child of that platform is built on."""
        return {platform: settled.id for platform, settled in self.per_platform().items()}

    def all_keys(self) -> list[str]:
        """Its platforms' keys, then its own: every key it was made or found under."""
        return [s.key for s in (*(self.platforms or {}).values(), self) if s.key]

    def found_locally(self) -> Settled:
        return Settled(self.id, self.key, How.LOCAL, self.pinned, self.digest, self.record,
                       self.image, self.start, self.end, self.cpu_seconds, self.platforms)

    def as_values(self) -> dict[str, Any]:
        """doit's saved values: the fields that are set, `how` as "found"."""
        values = {"id": self.id, "key": self.key, "found": self.how.value,
                  "pinned": self.pinned, "digest": self.digest,
                  "record": self.record if self.record is None else dict(self.record),
                  "image": self.image, "start": self.start, "end": self.end,
                  "cpu_seconds": self.cpu_seconds,
                  "platforms": self.platforms if self.platforms is None else
                  {p: s.as_values() for p, s in self.platforms.items()}}
        return {name: value for name, value in values.items() if value is not None}

    @classmethod
    def from_values(cls, values: Mapping[str, Any] | None) -> Settled | None:
        """doit's saved values (None when the task saved none)."""
        if not values:
            return None
        get, platforms = values.get, values.get("platforms")
        return cls(get("id"), get("key"), _HOW.get(get("found"), How.BUILT),
                   get("pinned"), get("digest"), get("record"), get("image"), get("start"),
                   get("end"), get("cpu_seconds"),
                   {p: cls.from_values(v) or cls(None, None) for p, v in platforms.items()}
                   if platforms else None)
