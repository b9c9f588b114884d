"""Prune: remove the images of a tree's old keys from local storage and, on request, from
the registry, so that storage (and buildah's cost per build, which grows with it) stays
bounded.

What is "this tree's": a key name `localhost/imagebake/<name>:ib-<key>` of one of the
tree's images whose key this tree's own record (`{build_dir}/keys.jsonl`, one line per
key a build of this tree made or found) lists. Two trees that share a storage and image
names share those repositories; the record tells their keys apart. A key this tree has
no record of is left alone, whoever made it.

What stays: each image's current key (computed from the roots as a build computes it,
else the key doit recorded for it), the `keep` keys used most recently before it (by the
record's order), every image that carries a name imagebake did not make (its old key
name is taken off, the image stays), and every image a working container uses. Of the
intermediate images (buildah's layer cache, images without names), exactly those whose
layers only the removed images use go with them.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from buildlib import keys
from buildlib.buildah import Buildah
from buildlib.plan import LOCAL_KEY_REPOSITORY
from buildlib.project import Project
from buildlib.settled import Settled
from buildlib.standing import Parent, walk
from buildlib.storage_format import StorageContents, StoredImage

RECORD_FILE = "keys.jsonl"
KEY_NAME = re.compile(rf"^{re.escape(LOCAL_KEY_REPOSITORY)}/(?P<image>[^:]+):"
                      rf"(?P<tag>{keys.KEY_TAG_PREFIX}[0-9a-f]+)$")

# -- the tree's record of its keys --------------------------------------------------------

def record_path(proj: Project) -> Path:
    return proj.build_dir / RECORD_FILE


def remember(proj: Project, name: str, settled: Settled, lock: threading.Lock) -> None:
    """Note the keys a build of `name` made or found (each platform's and the list's),
    as this tree's, most recent last; `lock` is the run's (its builds append at once)."""
    tags = [keys.key_tag(key) for key in settled.all_keys()]
    lines = "".join(json.dumps({"image": name, "tag": tag, "at": round(time.time(), 3)}) + "\n"
                    for tag in tags)
    with lock, record_path(proj).open("a") as out:
        out.write(lines)


def recorded(proj: Project) -> dict[str, list[str]]:
    """Each image's key tags this tree made, least recently used first."""
    order: dict[tuple[str, str], int] = {}  # the line of its last use: appended in order
    try:
        text = record_path(proj).read_text()
    except FileNotFoundError:
        return {}
    for number, line in enumerate(text.splitlines()):
        try:
            entry = json.loads(line)
            order[(entry["image"], entry["tag"])] = number
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by a full disk or a kill: the others still count
    tags: dict[str, list[str]] = {}
    for (image, tag), _ in sorted(order.items(), key=lambda item: item[1]):
        tags.setdefault(image, []).append(tag)
    return tags


def rewrite_record(proj: Project, tags: Mapping[str, list[str]]) -> None:
    """The record compacted to one line per key, keeping only `tags`."""
    path = record_path(proj)
    lines = [json.dumps({"image": image, "tag": tag})
             for image, order in sorted(tags.items()) for tag in order]
    scratch = path.with_name(path.name + ".new")
    scratch.write_text("".join(line + "\n" for line in lines))
    scratch.replace(path)


# -- which keys are current ---------------------------------------------------------------

def current_tags(proj: Project, names: list[str], contents: StorageContents,
                 saved: Callable[[str], Settled | None]) -> dict[str, set[str]]:
    """Each image's current key tags (its platforms' and its list's too): computed from the
    roots as a build computes them, where storage holds the parents to compute them on,
    and the key its last build recorded (`saved(name)`: doit's values)."""
    by_name = {(match["image"], match["tag"]): image.id for image in contents.images.values()
               for match in map(KEY_NAME.match, image.names) if match}

    def find(name: str, records: Mapping[str | None, keys.Record]
             ) -> dict[str | None, str | None]:
        return {p: by_name.get((name, keys.key_tag(r.key))) for p, r in records.items()}

    def outside(name: str) -> Parent:  # a parent left out of `names`: as it is now
        reference = proj.plans[proj.plans[name].parent].reference  # type: ignore[index]
        return None if proj.plans[name].platforms else {None: next(
            (i.id for i in contents.images.values() if reference in i.names), None)}

    current: dict[str, set[str]] = {name: set() for name in names}
    for step in walk(proj.plans, names, lambda reference: None, find, outside):
        platform_keys = {p: record.key for p, record in step.records.items()}
        if proj.plans[step.name].platforms and platform_keys:
            platform_keys["list"] = keys.list_key(platform_keys)
        current[step.name].update(map(keys.key_tag, platform_keys.values()))
    for name in names:
        settled = saved(name)
        current[name].update(map(keys.key_tag, settled.all_keys() if settled else []))
    return current


def kept_tags(names: Iterable[str], current: Mapping[str, set[str]],
              record: Mapping[str, list[str]], keep: int) -> dict[str, set[str]]:
    """The current tags, and the `keep` old ones of the record used most recently."""
    kept = {}
    for name in names:
        old = [tag for tag in record.get(name, []) if tag not in current.get(name, set())]
        kept[name] = set(current.get(name, set())) | set(old[len(old) - keep:] if keep else [])
    return kept


# -- local storage ------------------------------------------------------------------------

@dataclass
class LocalPlan:
    remove: list[StoredImage] = field(default_factory=list)  # named by old keys only
    untag: dict[str, str] = field(default_factory=dict)  # old key name -> why its image stays
    intermediates: list[StoredImage] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # old key name -> why it stays
    unknown: list[str] = field(default_factory=list)  # key names this tree has no record of
    frees: int = 0  # bytes of the layers only what is removed uses


def plan_local(proj: Project, names: Iterable[str], contents: StorageContents,
               kept: Mapping[str, set[str]], record: Mapping[str, list[str]]) -> LocalPlan:
    """What a prune removes from local storage: pure, from what storage holds."""
    names = set(names)
    ours = {plan.reference for plan in proj.plans.values()}
    plan = LocalPlan()
    for image in sorted(contents.images.values(), key=lambda i: sorted(i.names)):
        old = set()
        for name in image.names:
            match = KEY_NAME.match(name)
            if not match or match["image"] not in names:
                continue
            if match["tag"] in kept[match["image"]]:
                continue
            if match["tag"] not in record.get(match["image"], ()):
                plan.unknown.append(name)
            else:
                old.add(name)
        if not old:
            continue
        others = image.names - old
        if not others and image.id in contents.in_use:
            plan.kept.update(dict.fromkeys(old, "a working container uses it"))
        elif not others:
            plan.remove.append(image)
        else:
            foreign = sorted(n for n in others if n not in ours and not KEY_NAME.match(n))
            why = (f"also named {foreign[0]}, a name imagebake did not make" if foreign
                   else f"also named {sorted(others)[0]}")
            plan.untag.update(dict.fromkeys(sorted(old), why))
    plan.intermediates = _intermediates(contents, {image.id for image in plan.remove})
    plan.remove.sort(key=lambda image: -len(contents.chain(image.layer)))  # children first
    plan.frees = _bytes_freed(contents, plan)
    return plan


def _intermediates(contents: StorageContents, removed: set[str]) -> list[StoredImage]:
    """Images without names that only removed named images were built through (their
    build cache: the config history of each is a first part of theirs); not one that a
    kept image, another tree's, or a container was built through, nor one that no named
    image was (a failed build's: whose it is cannot be told)."""
    users: dict[str, set[str]] = {}
    for image in contents.images.values():
        if image.names or image.is_list:
            for step in _steps_through(image):
                users.setdefault(step, set()).add(image.id)
    found = [image for image in contents.images.values()
             if not image.names and not image.is_list and image.id not in contents.in_use
             and image.history is not None
             and users.get(_step(image.history, image.diff_ids))
             and users[_step(image.history, image.diff_ids)] <= removed]
    return sorted(found, key=lambda image: -len(image.history or ()))


def _steps_through(image: StoredImage) -> list[str]:
    """The steps an image was built through: each first part of its history, with the
    layers made so far."""
    if image.history is None:
        return []
    steps, layers = [], 0
    for count, entry in enumerate(image.history, start=1):
        layers += not json.loads(entry).get("empty_layer", False)
        steps.append(_step(image.history[:count], image.diff_ids[:layers]))
    return steps


def _step(history: tuple[str, ...], diff_ids: tuple[str, ...]) -> str:
    return hashlib.sha256(json.dumps([history, diff_ids]).encode()).hexdigest()


def _bytes_freed(contents: StorageContents, plan: LocalPlan) -> int:
    going = {image.id for image in [*plan.remove, *plan.intermediates]}
    needed = {layer for image in contents.images.values() if image.id not in going
              for layer in contents.chain(image.layer)}
    freed = {layer for image_id in going
             for layer in contents.chain(contents.images[image_id].layer)} - needed
    return sum(contents.layers[layer][1] for layer in freed if layer in contents.layers)


@dataclass
class LocalResult:
    images: int  # images gone from storage (named and intermediate)
    named: int
    untagged: int
    freed: int  # bytes of the layers gone
    errors: list[str]
    held: set[tuple[str, str]]  # (image, key tag) of every key name storage still holds


def prune_local(buildah: Buildah, plan: LocalPlan, before: StorageContents) -> LocalResult:
    """Carry out `plan`: old key names off the images that stay, then the images named by
    old keys only (manifest lists by `manifest rm`), then their intermediate images,
    again while some still wait for a dependent image to go."""
    errors = buildah.remove(*plan.untag) if plan.untag else []
    lists = [image for image in plan.remove if image.is_list]
    errors += buildah.remove_lists(*[sorted(image.names)[0] for image in lists])
    images = [name for image in plan.remove if not image.is_list for name in sorted(image.names)]
    errors += buildah.remove(*images) if images else []
    waiting = [image.id.removeprefix("sha256:") for image in plan.intermediates]
    while waiting:
        buildah.remove(*waiting)
        left = buildah.images()
        still = [i for i in waiting if f"sha256:{i}" in left]
        if len(still) == len(waiting):
            errors.append(f"{len(still)} intermediate images could not be removed")
            break
        waiting = still
    after = buildah.contents()
    gone = set(before.images) - set(after.images)
    freed = sum(size for layer, (_, size) in before.layers.items() if layer not in after.layers)
    named = sum(1 for image in plan.remove if image.id in gone)
    untagged = sum(1 for name in plan.untag
                   if not any(name in image.names for image in after.images.values()))
    held = {(match["image"], match["tag"]) for image in after.images.values()
            for match in map(KEY_NAME.match, image.names) if match}
    return LocalResult(len(gone), named, untagged, freed, errors, held)


def size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


def describe_local(plan: LocalPlan, contents: StorageContents, dry: bool) -> list[str]:
    """The lines a prune prints about local storage, before it removes anything."""
    verb = "would remove" if dry else "removing"
    lines = [f"{verb} {sorted(image.names)[0]} ({image.id[7:19]})"
             + (f" and {len(image.names) - 1} more names" if len(image.names) > 1 else "")
             for image in sorted(plan.remove, key=lambda i: sorted(i.names))]
    lines += [f"{'would untag' if dry else 'untagging'} {name}: the image stays, {why}"
              for name, why in sorted(plan.untag.items())]
    lines += [f"kept {name}: {why}" for name, why in sorted(plan.kept.items())]
    if plan.unknown:
        lines.append(f"left alone {len(plan.unknown)} key names of this tree's image names "
                     f"that {RECORD_FILE} does not list (another tree's, or made before "
                     f"it was kept), e.g. {sorted(plan.unknown)[0]}")
    return lines


# -- the registry -------------------------------------------------------------------------

@dataclass
class RegistryPlan:
    delete: dict[str, list[str]] = field(default_factory=dict)  # repo@digest -> its old tags
    kept: dict[str, str] = field(default_factory=dict)  # repo:tag -> why it stays
    unknown: int = 0


def plan_registry(repositories: Mapping[str, str], tags: Mapping[str, dict[str, str | None]],
                  kept: Mapping[str, set[str]], record: Mapping[str, list[str]]
                  ) -> RegistryPlan:
    """Which manifests to delete (pure): per image, `repositories[name]` holds `tags[name]`
    (tag -> digest); an old key tag of this tree's record goes with its manifest unless a
    tag that stays (a user's, a kept key's, one of no record) names that manifest too."""
    plan = RegistryPlan()
    for name, repository in repositories.items():
        old: dict[str, str] = {}
        staying: set[str | None] = set()
        for tag, digest in tags[name].items():
            is_key = tag.startswith(keys.KEY_TAG_PREFIX)
            if is_key and tag not in kept[name] and tag in record.get(name, ()) and digest:
                old[tag] = digest
            else:
                staying.add(digest)
                plan.unknown += is_key and tag not in kept[name]
        for tag, digest in sorted(old.items()):
            if digest in staying:
                plan.kept[f"{repository}:{tag}"] = "names the same manifest as a tag that stays"
            else:
                plan.delete.setdefault(f"{repository}@{digest}", []).append(tag)
    return plan


def still_held(record: Mapping[str, list[str]], local: set[tuple[str, str]],
               in_registry: Mapping[str, set[str]] | None) -> dict[str, list[str]]:
    """The record without the keys gone from both places: not named in local storage and
    not tagged in the registry (known only for the images whose tags were listed)."""
    if in_registry is None:
        return dict(record)
    return {name: [tag for tag in tags if (name, tag) in local or name not in in_registry
                   or tag in in_registry[name]]
            for name, tags in record.items()}
