"""Where a `kolla:` tree's templates and context files are, as kolla-build finds them: its
docker/ folder with the `docker_dir` folders over it, base's apt files, each image's
patches."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from buildlib import render
from buildlib.config import Config
from buildlib.errors import InputError

TEMPLATE = "Dockerfile.j2"


# kolla-build options that put files into contexts, followed as its KollaWorker does (the
# same in 21.3.0 and 23.0.0): `copy_apt_files` copies these into base's folder, under these
# names; `setup_working_dir` copies each `docker_dir` over its docker/ folder;
# `create_patch_files` gives every image a `patches/` folder.
APT_FILES = {"apt_sources_list": "sources.list", "apt_preferences": "apt_preferences"}


PATH_FIX = ("correct it in kolla-build.conf or kolla.options (a relative path starts at the "
            "directory of images.yaml)")


def docker_dir(config: Config, worker: Any) -> Path:
    """`package`: where kolla-build finds its templates (its own search, which differs
    by release: inside the package, or under <prefix>/share/kolla); else the path."""
    source = config.kolla
    assert source is not None
    if source.docker == "package":
        folder = Path(worker.images_dir)
    else:
        folder = config.source_path(source.docker)
    if not (folder / "base" / TEMPLATE).is_file():
        raise InputError(config.path, f"kolla.docker: {folder} is not Kolla's docker/ folder "
                         f"(it has no base/{TEMPLATE})",
                         fix="name the docker/ folder of a Kolla checkout, or `package` for "
                         "the installed kolla package's")
    return folder.resolve()


def extra_docker_dirs(config: Config, conf: Any) -> list[Path]:
    """kolla-build's `docker_dir` folders, in the order it copies them over docker/."""
    folders = [_option_path(config, "docker_dir", value) for value in conf.docker_dir or []]
    for folder in folders:
        if not folder.is_dir():
            raise InputError(config.path, f"kolla option docker_dir: {folder} is not a "
                             "folder", fix=PATH_FIX)
    return [folder.resolve() for folder in folders]


def _option_path(config: Config, option: str, value: str) -> Path:
    path = config.source_path(os.path.expanduser(value))
    if not path.exists():
        raise InputError(config.path, f"kolla option {option}: {path} does not exist",
                         fix=PATH_FIX)
    return path


def find_templates(config: Config, layers: list[Path]) -> dict[str, str]:
    """Image name (its folder's name) -> template path inside docker/ and the docker_dir
    folders copied over it, as kolla-build finds them in its working dir."""
    found: dict[str, str] = {}
    for layer in layers:
        for path in sorted(layer.rglob(TEMPLATE)):
            name, relative = path.parent.name, str(path.relative_to(layer))
            if found.setdefault(name, relative) != relative:
                raise InputError(config.path, f"two Kolla templates for image '{name}': "
                                 f"{found[name]} and {relative}", image=name,
                                 fix="keep one folder of that name under the docker/ "
                                 "folder and the docker_dir folders")
    return found


def context_files(config: Config, conf: Any, layers: list[Path], name: str,
                   template: str) -> dict[str, str]:
    """The files kolla-build's options put into the image's context (context path ->
    file): from docker_dir folders, base's apt files, the image's patches."""
    files = _layered_files(layers, template)
    if name == "base":
        for option, inner in APT_FILES.items():
            if conf[option]:
                files[inner] = str(_option_path(config, option, conf[option]))
    return {**files, **_patch_files(config, conf, name)}


def _layered_files(layers: list[Path], template: str) -> dict[str, str]:
    """The files of the template's folder in kolla-build's working dir (each layer's
    copied over the ones before) that its own folder, beside the template, lacks."""
    if len(layers) == 1:
        return {}
    folder = Path(template).parent
    merged: dict[str, Path] = {}
    for layer in layers:
        merged.update({str(path.relative_to(layer / folder)): path
                       for path in sorted((layer / folder).rglob("*"))
                       if path.is_file() and not path.name.endswith(render.TEMPLATE_SUFFIX)})
    home = next(layer for layer in reversed(layers) if (layer / template).is_file()) / folder
    return {inner: str(path) for inner, path in merged.items()
            if not path.is_relative_to(home)}


def _patch_files(config: Config, conf: Any, name: str) -> dict[str, str]:
    """kolla-build's `patches/` of the image's context when `patches_path` is set: the
    `series` of `<patches_path>/<image>/` and the files it lists that exist there (`#`
    lines out); an empty folder when there are none."""
    if not conf.patches_path:
        return {}
    patches = _option_path(config, "patches_path", conf.patches_path)
    if not patches.is_dir():
        raise InputError(config.path, f"kolla option patches_path: {patches} is not a folder",
                         fix=PATH_FIX)
    series, files = patches / name / "series", {}
    if series.is_file():
        files["patches/series"] = str(series)
        for line in series.read_text(encoding="utf-8").splitlines():
            if not line.startswith("#") and (series.parent / line.strip()).is_file():
                files[f"patches/{line.strip()}"] = str(series.parent / line.strip())
    if not files:
        empty = config.build_dir / "kolla" / "empty-folder"
        empty.mkdir(parents=True, exist_ok=True)
        files["patches"] = str(empty)
    return files
