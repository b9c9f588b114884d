"""The content key of an image: one versioned record of what makes it, hashed to one hex key.

Pure: no I/O (the caller hands in digests of the Dockerfile and of each context file).
The record holds what changes the image's bytes, the parent's image ID included, and
leaves out where the image goes or is stored (registry, namespace, prefix, tag, global
buildah flags), so changing those re-tags an image and never rebuilds it. The same key
is stored in doit's state, as a label on the image and as a tag beside the user's tag,
so that any storage or registry can tell whether an image is current. A multi-arch image
has one record per platform (its `platform` set, on the parent's image of that platform)
and its manifest list a key made of theirs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from typing import Any

KEY_VERSION = 1
KEY_LABEL = "imagebake.key"
KEY_TAG_PREFIX = "ib-"
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
    parent_id: str | None = None

    def on_parent(self, parent_id: str | None) -> Record:
        return replace(self, parent_id=parent_id)

    def as_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(files=dict(self.files), args=dict(self.args), labels=dict(self.labels),
                      volumes=list(self.volumes))
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


def changes(saved: Mapping[str, Any] | None, current: Record, parent: str | None) -> str:
    """Why `current` differs from a saved record (`Record.as_dict`), in words."""
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
    for name in ("format", "timestamp", "platform"):
        if saved.get(name) != now[name]:
            found.append(f"{name} changed: {saved.get(name)} -> {now[name]}")
    if saved.get("parent_id") != now["parent_id"]:
        found.append(f"parent '{parent}' changed: {saved.get('parent_id')} -> "
                     f"{now['parent_id']}")
    return "; ".join(found) or "inputs changed"


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
