"""What a user reads in a built image: the files of its rootfs (mode and bytes) and the
config fields that change what a container does."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CONFIG_FIELDS = ("Env", "Cmd", "Entrypoint", "Labels", "User", "WorkingDir")


def _buildah(global_args: Sequence[str], *args: str) -> str:
    return subprocess.run(["buildah", *global_args, *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def files(global_args: Sequence[str], image: str) -> dict[str, tuple[str, str]]:
    """Each path in the image's rootfs -> (its mode in octal, sha256 of its bytes, or
    the target of a link; "" for a folder)."""
    container = _buildah(global_args, "from", "--pull-never", image)
    try:
        top = Path(_buildah(global_args, "mount", container))
        found = {}
        for folder, dirs, names in os.walk(top):
            for name in dirs + names:
                path = Path(folder) / name
                info = path.lstat()
                if stat.S_ISLNK(info.st_mode):
                    what = os.readlink(path)
                elif stat.S_ISREG(info.st_mode):
                    what = hashlib.sha256(path.read_bytes()).hexdigest()
                else:
                    what = ""
                found["/" + str(path.relative_to(top))] = (oct(info.st_mode), what)
        return found
    finally:
        _buildah(global_args, "rm", container)


def read(global_args: Sequence[str], image: str, path: str) -> bytes | None:
    """The bytes of one file in the image (None: it has none there)."""
    container = _buildah(global_args, "from", "--pull-never", image)
    try:
        inside = Path(_buildah(global_args, "mount", container) + path)
        return inside.read_bytes() if inside.is_file() else None
    finally:
        _buildah(global_args, "rm", container)


def config(global_args: Sequence[str], image: str) -> dict[str, Any]:
    """The config fields a container runs by (CONFIG_FIELDS); empty ones as None."""
    found = json.loads(_buildah(global_args, "inspect", "--type", "image", image))
    values = found["OCIv1"].get("config") or {}
    return {name: values.get(name) or None for name in CONFIG_FIELDS}


def why_ids_differ(global_args: Sequence[str], image: str, other_args: Sequence[str],
                   other: str) -> str:
    """The first part of two images' OCI configs that differs (the config digest is the
    image ID): a history entry, a layer, another field."""
    mine, theirs = (json.loads(_buildah(args, "inspect", "--type", "image", name))["OCIv1"]
                    for args, name in ((global_args, image), (other_args, other)))
    pairs = [(f"history[{i}]", a, b) for i, (a, b) in enumerate(
        zip(mine.get("history") or [], theirs.get("history") or [], strict=False))]
    pairs += [(f"layer {i}", a, b) for i, (a, b) in enumerate(
        zip(mine["rootfs"]["diff_ids"], theirs["rootfs"]["diff_ids"], strict=False))]
    for where, a, b in pairs:
        if a != b:
            return f"{where}: {a} != {b}"
    return ", ".join(f"{k}: {mine.get(k)} != {theirs.get(k)}"
                     for k in sorted(mine.keys() | theirs.keys()) if mine.get(k) != theirs.get(k))
