"""The validation note: the data of the last images.yaml that passed validation, kept in
build_dir, bound to the file's text, place and schema; while they are unchanged, a run takes
the data from the note instead of parsing and validating the file again."""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any

VALIDATED_NOTE = ".valid-images-yaml.json"  # in build_dir: the last valid file's data


def set_lines(sets: tuple[str, ...]) -> list[str]:
    """`--set settings.build_dir=out` as the line `build_dir: out` (where a note may be)."""
    return [f"{target.rsplit('.', 1)[-1]}: {value}"
            for target, _, value in (arg.partition("=") for arg in sets)]


# `build_dir: out` anywhere in the text: where a note of this file may be (checked below)
_BUILD_DIR_LINE = re.compile(r"""\bbuild_dir\s*:\s*["']?([^"'#\s,{}\[\]]+)""")


def validated_before(path: Path, text: str, digest: str) -> dict[str, Any] | None:
    """The data of this very text in this tree (`digest`), as an earlier run parsed and
    validated it, from the note it left in build_dir; None when there is none. build_dir
    is in the text: the candidates are found without parsing it (comments too), so a note
    counts only from a folder inside the tree, written by this user, and only when its data
    names that folder as build_dir."""
    for build_dir in dict.fromkeys([*_BUILD_DIR_LINE.findall(text), "build"]):
        folder = (path.parent / build_dir).resolve()
        if path.parent not in folder.parents:
            continue
        data = _note_data(folder / VALIDATED_NOTE, digest)
        if data is not None and _noted_build_dir(data) == build_dir:
            return data
    return None


def _note_data(note: Path, digest: str) -> Any:
    """The data of the note at `note` if it is this user's and bound to `digest`, else None."""
    try:
        with note.open("rb") as file:
            if os.fstat(file.fileno()).st_uid != os.geteuid():
                return None
            content = json.loads(file.read())
    except (OSError, ValueError):
        return None
    if isinstance(content, dict) and content.get("digest") == digest:
        return content.get("data")
    return None


def _noted_build_dir(data: Any) -> Any:
    """settings.build_dir as noted data gives it; None for data of another shape."""
    if not isinstance(data, dict):
        return None
    settings = data.get("settings", {})
    return settings.get("build_dir", "build") if isinstance(settings, dict) else None


def note_valid(build_dir: Path, digest: str, data: Any) -> None:
    """Keep the data of a valid file in build_dir for the next run (when a run has made
    build_dir, and JSON gives the data back as YAML gave it)."""
    note = build_dir / VALIDATED_NOTE
    try:
        text = json.dumps({"digest": digest, "data": data})
    except (TypeError, ValueError):  # e.g. a YAML date among the vars
        return
    if json.loads(text)["data"] != data or not build_dir.is_dir():
        return
    with contextlib.suppress(OSError):
        scratch = note.with_name(note.name + ".new")
        scratch.write_text(text)
        scratch.replace(note)
