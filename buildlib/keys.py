"""The content key of an image: one versioned record of what makes it, hashed to one hex key.

Pure: no I/O (the caller hands in digests of the Dockerfile and of each context file).
The record holds what can change the image's bytes: the Dockerfile as buildah parses it
(comments left out), the context files a COPY/ADD can read, args, labels, volumes (and what
a read-only one holds), format,
timestamp, platform, the stage it builds (`target`), the ID of the image it is built FROM
(its parent's, or for a root its base image's) and of every other image the build reads,
and what each named build context holds. It leaves out where the image goes
or is stored (registry, namespace, prefix, tag, global buildah flags), so changing those
re-tags an image and never rebuilds it. The key is kept beside the image, never inside it
(a label would change the image ID with every key, and no rebuild could ever end in the
same ID): in the image's key name in local storage, in doit's state, and in the registry
as the key tag and an annotation of the pushed manifest. A multi-arch image has one record
per platform (its `platform` set, on the parent's image of that platform) and its manifest
list a key made of theirs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from typing import Any

KEY_VERSION = 4  # 3: the Dockerfile as buildah reads it, every image a build reads in;
# 4: built without buildah's layer cache where it is blind (a v3 key may name old bytes),
# labels and a last step of its own in the Dockerfile a build writes (another image ID)
KEY_ANNOTATION = "org.imagebake.key"  # on a pushed manifest: the full key it was pushed for
PLATFORM_KEYS_ANNOTATION = "org.imagebake.platform-keys"  # on a pushed list: its images' keys
KEY_TAG_PREFIX = "ib-"
UNSET_LEFT_OUT = ("target", "contexts", "volume_contents")  # held only when set
KEY_TAG_HEX = 32  # 128 bits: the tag that names an image by its key


@dataclass(frozen=True)
class Record:
    """What makes one image, field by field."""

    dockerfile: str  # sha256 of the rendered Dockerfile
    files: Mapping[str, str]  # path inside the context -> sha256 of its mode and bytes
    args: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    volumes: tuple[str, ...] = ()
    format: str = "oci"
    timestamp: int | None = 0
    platform: str | None = None
    parent_id: str | None = None  # the image it is built FROM: its parent, or its base
    # every other image the build reads (a later stage's FROM, COPY --from, RUN --mount
    # from=): its reference -> its image ID
    images: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None  # the stage it builds (`--target`); None: the last
    # each named build context (`--build-context`): its name -> its folder's content
    # digest, or the ID of its image
    contexts: Mapping[str, str] = field(default_factory=dict)
    # each volume mounted read-only (an input, not a cache): its host path -> the content
    # digest of what is there ("absent": nothing)
    volume_contents: Mapping[str, str] = field(default_factory=dict)

    def on_parent(self, parent_id: str | None) -> Record:
        return replace(self, parent_id=parent_id)

    def as_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(files=dict(self.files), args=dict(self.args), labels=dict(self.labels),
                      volumes=list(self.volumes), images=dict(self.images),
                      contexts=dict(self.contexts), volume_contents=dict(self.volume_contents))
        for name in UNSET_LEFT_OUT:  # (so that the keys of images without them stay)
            if not values[name]:
                del values[name]
        return {"version": KEY_VERSION, **values}

    @cached_property
    def key(self) -> str:
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def list_key(platform_keys: Mapping[str, str]) -> str:
    """The key of a manifest list: of its platforms' keys (each holds its platform), so
    it changes exactly when one of its images does."""
    text = json.dumps({"version": KEY_VERSION, "manifest_list": dict(platform_keys)},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def key_tag(key: str) -> str:
    """The tag that names an image by its key, beside the user's tag: `ib-<32 hex>`."""
    return f"{KEY_TAG_PREFIX}{key[:KEY_TAG_HEX]}"


def changes(saved: Mapping[str, Any] | None, current: Record, built_on: str) -> str:
    """Why `current` differs from a saved record (`Record.as_dict`), in words; `built_on`
    names what `parent_id` is the ID of (`parent 'nova-base'`, `base image 'debian:12'`)."""
    if not saved:
        return "never built"
    if saved.get("version") != KEY_VERSION:
        return f"content key version changed: {saved.get('version')} -> {KEY_VERSION}"
    now = current.as_dict()
    found = []
    if saved.get("dockerfile") != now["dockerfile"]:
        found.append("rendered Dockerfile changed (template or vars)")
    found += _file_changes(saved.get("files") or {}, now["files"])
    for name, words in (("args", "build arg"), ("labels", "label")):
        found += _mapping_changes(words, saved.get(name) or {}, now[name])
    if saved.get("volumes") != now["volumes"]:
        found.append(f"volumes changed: {saved.get('volumes')} -> {now['volumes']}")
    for name in ("format", "timestamp", "platform", "target"):
        if saved.get(name) != now.get(name):
            found.append(f"{name} changed: {saved.get(name)} -> {now.get(name)}")
    if saved.get("parent_id") != now["parent_id"]:
        found.append(f"{built_on} changed: {saved.get('parent_id')} -> {now['parent_id']}")
    found += _image_changes(saved.get("images") or {}, now["images"])
    for name, words in (("contexts", "build context"), ("volume_contents", "volume content")):
        found += _mapping_changes(words, saved.get(name) or {}, now.get(name) or {})
    return "; ".join(found) or "inputs changed"


def _image_changes(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """`image 'localhost/ext:1' changed: sha256:... -> sha256:...`, for each image the
    build reads besides its parent or base."""
    found = []
    for name in sorted(old.keys() | new.keys()):
        if old.get(name) != new.get(name):
            how = ("now read" if name not in old else "no longer read" if name not in new
                   else "changed")
            found.append(f"image '{name}' {how}: {old.get(name)} -> {new.get(name)}")
    return found


def _file_changes(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    found = []
    for label, names in (("added", new.keys() - old.keys()),
                         ("removed", old.keys() - new.keys()),
                         ("changed", {n for n in new.keys() & old.keys() if new[n] != old[n]})):
        if names:
            found.append(f"context file {label}: {', '.join(sorted(names))}")
    return found


def _mapping_changes(words: str, old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """`build arg changed: -WORKERS=2 +WORKERS=4`: what went and what came."""
    gone = [f"-{k}={v}" for k, v in sorted(old.items()) if new.get(k) != v]
    came = [f"+{k}={v}" for k, v in sorted(new.items()) if old.get(k) != v]
    return [f"{words} changed: {' '.join(gone + came)}"] if gone or came else []
