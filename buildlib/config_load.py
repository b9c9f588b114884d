"""Read, merge, validate and check images.yaml into a `Config`: the only reader of
images.yaml (with `config_yaml`, which reads and merges the files, and `config_note`, which
keeps the last valid file's data). pydantic validates the model of `config`; the checks here
span fields (names, patterns, build_dir, sources, platforms, vars, the authfile)."""

from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from buildlib import config as config_module
from buildlib.config import (
    ALLOWED_KEYS,
    CONTROL_RE,
    NAME_RE,
    NAMESPACE_RE,
    PLATFORM_FIX,
    PREFIX_RE,
    REGISTRY_RE,
    RESERVED_VARS,
    SOURCE_DATE_EPOCH,
    TAG_RE,
    Config,
    Image,
    Sources,
    built,
    named_image,
    validate,
)
from buildlib.config_note import note_valid, set_lines, validated_before
from buildlib.config_yaml import Origins, apply_set, dotted, merge, read_text, read_yaml
from buildlib.credentials import find_authfile
from buildlib.errors import InputError
from buildlib.tree_files import holds

if TYPE_CHECKING:
    from pydantic import ValidationError


def load(source: Path | str | Sources) -> Config:
    """Read, merge and validate images.yaml (a path: that file alone; `Sources`: the files
    and --set assignments merged as one); raise InputError naming the problem, where it
    was written (file and line, or the --set) and its fix."""
    sources = (source if isinstance(source, Sources) else Sources((Path(source),))).resolved()
    path = sources.path
    texts = [read_text(file) for file in sources.files]
    digest = _digest(sources, texts)
    data = validated_before(path, "\n".join(texts + set_lines(sources.sets)), digest)
    parsed = built(data) if data is not None else None
    noted = parsed is not None
    if parsed is None:
        data, origins = _merged(sources, texts)
        parsed = _validated(origins, data)
    if parsed.images is None and parsed.kolla is None:
        raise InputError(path, "missing key 'images'",
                         fix="add `images:` to the file (or `kolla:` for Kolla's images)")
    images = {name: named_image(image or Image(), name)
              for name, image in (parsed.images or {}).items()}
    config = Config(path=path, settings=parsed.settings, vars=parsed.vars, images=images,
                    profiles=parsed.profiles, jinja=parsed.jinja, kolla=parsed.kolla,
                    merged=sources, data=data)
    _check_references(config)
    _check_patterns(config)
    _check_source_date_epoch(path)
    _check_vars(config)
    _check_sources(config)
    _check_platforms(config)
    _check_build_dir(config)
    _check_bake_fields(config)
    if not noted:
        note_valid(config.build_dir, digest, data)
    return config


def _validated(origins: Origins, data: Any) -> config_module._File:
    from pydantic import ValidationError

    try:
        return validate(data)
    except ValidationError as err:
        path, spot = origins.of(tuple(err.errors()[0]["loc"]))
        error = _input_error(path, err)
        if spot:
            error = InputError(path, f"{spot}: {error.problem}", image=error.image,
                               fix=error.fix)
        raise error from None


@functools.cache
def _schema() -> bytes:
    """The model's source: a change to the schema asks for validation again."""
    return Path(config_module.__file__).read_bytes()


def _merged(sources: Sources, texts: list[str]) -> tuple[dict[str, Any], Origins]:
    """The files merged in order, then each --set applied; with where each value came from."""
    origins = Origins(sources.path)
    data: dict[str, Any] = {}
    for file, text in zip(sources.files, texts, strict=True):
        layer, spots = read_yaml(file, text, first=file == sources.path)
        data = merge(data, layer, (), origins, spots)
    for arg in sources.sets:
        apply_set(data, arg, origins, ALLOWED_KEYS[()])
    return data, origins


def _digest(sources: Sources, texts: list[str]) -> str:
    """What a note is bound to: these texts, at these places (the resolved path of each
    file merged: a note copied from another tree does not match), these --set assignments,
    under this schema."""
    parts = [part for file, text in zip(sources.files, texts, strict=True)
             for part in (str(file), text)]
    parts += ["--set", *sources.sets]
    return hashlib.sha256(b"\0".join([*(p.encode() for p in parts), _schema()])).hexdigest()


def _located(config: Config, loc: tuple, problem: str, *, image: str | None = None,
             fix: str = "") -> InputError:
    """An InputError naming the file and line (or the --set) the value at `loc` came from:
    the files are merged again, only for this error (a note kept no lines)."""
    sources = config.sources
    try:
        path, spot = _merged(sources, [read_text(f) for f in sources.files])[1].of(loc)
    except InputError:
        path, spot = config.path, ""
    return InputError(path, f"{spot}: {problem}" if spot else problem, image=image, fix=fix)


BUILD_DIR = ("settings", "build_dir")


def _check_references(config: Config) -> None:
    s = config.settings
    checks = [
        (REGISTRY_RE, s.registry, "settings.registry", "a host name with an optional :port"),
        (NAMESPACE_RE, s.namespace, "settings.namespace",
         "lowercase letters, digits and . _ - separators, parts joined by /"),
        (PREFIX_RE, s.prefix, "settings.prefix", "lowercase letters, digits and . _ -"),
        (TAG_RE, s.tag, "settings.tag",
         "up to 128 letters, digits, _ . - (not starting with . or -)"),
    ]
    for pattern, value, key, expected in checks:
        if value and not pattern.fullmatch(value):
            raise _located(config, tuple(key.split(".")), f"invalid {key} {value!r}",
                           fix=f"use {expected}")
    _check_authfile(config)
    _check_key_files(config)
    for name in config.images:
        if not NAME_RE.fullmatch(name) or not NAME_RE.fullmatch(s.prefix + name):
            raise _located(config, ("images", name), f"invalid image name {name!r}", image=name,
                           fix="use lowercase letters and digits separated by . _ or -")


def _check_key_files(config: Config) -> None:
    """settings.trust's keys must exist (their contents are read by a run that checks;
    settings.sign's key, or COSIGN_PRIVATE_KEY, with its password by a run that pushes:
    a CI job's other steps have neither)."""
    trust = config.settings.trust
    if trust and not trust.keys:
        raise _located(config, ("settings", "trust", "keys"), "settings.trust.keys is empty",
                       fix="name at least one public key file, or drop settings.trust")
    for index, key in enumerate(trust.keys if trust else []):
        if not config.source_path(key).is_file():
            raise _located(config, ("settings", "trust", "keys", index),
                           f"settings.trust.keys {key!r}: {config.source_path(key)} does not "
                           "exist", fix="make a key pair with `imagebake keygen` (or `cosign "
                           "generate-key-pair`) or correct the path (relative to the "
                           "directory of images.yaml)")


def _check_authfile(config: Config) -> None:
    """settings.authfile, or what stands in for it when the file is absent (a CI job logs
    in to REGISTRY_AUTH_FILE: the checkout lacks the named file), must exist."""
    s = config.settings
    if not s.authfile:
        return
    found = find_authfile(s.registry, s.authfile, config.root)
    if found is None or not found.is_file():
        raise _located(config, ("settings", "authfile"), f"settings.authfile {s.authfile!r}: "
                       f"{config.source_path(s.authfile)} does not exist, and no "
                       "REGISTRY_AUTH_FILE names a file that does",
                       fix="create it (e.g. `buildah login --authfile FILE REGISTRY`), "
                       "correct the path (relative to the directory of images.yaml), or set "
                       "REGISTRY_AUTH_FILE to an authfile")


def _check_patterns(config: Config) -> None:
    named = [(("profiles", name, index), p) for name, ps in config.profiles.items()
             for index, p in enumerate(ps)]
    named += [(("settings", "excludes", index), p)
              for index, p in enumerate(config.settings.excludes)]
    for loc, pattern in named:
        try:
            re.compile(pattern)
        except re.error as err:
            raise _located(config, loc, f"{dotted(loc[:-1])}: {pattern!r} is not a "
                           f"regular expression ({err})",
                           fix="correct the pattern (Python `re` syntax)") from None


def _check_source_date_epoch(path: Path) -> None:
    value = os.environ.get(SOURCE_DATE_EPOCH)
    if value and not value.isdigit():
        raise InputError(path, f"{SOURCE_DATE_EPOCH}={value!r} is not a number of seconds",
                         fix=f"set {SOURCE_DATE_EPOCH} to a Unix time, or unset it")


def _check_vars(config: Config) -> None:
    named = [(None, ("vars",), config.vars)]
    named += [(name, ("images", name, "vars"), image.vars)
              for name, image in config.images.items()]
    for image, loc, variables in named:
        taken = [v for v in RESERVED_VARS if v in variables]
        if taken:
            raise _located(config, (*loc, taken[0]), f"{dotted(loc)}.{taken[0]}: "
                           f"'{taken[0]}' is a name every template already sees", image=image,
                           fix=f"rename the variable (settings are `settings.<name>`; "
                           f"reserved: {', '.join(RESERVED_VARS)})")


def _check_sources(config: Config) -> None:
    for image in config.images.values():
        for name, source in image.sources.items():
            if len(source.kinds) != 1:
                raise _located(config, ("images", image.name, "sources", name),
                               f"images.{image.name}.sources.{name}: "
                               f"{' and '.join(source.kinds) or 'nothing'} given",
                               image=image.name, fix="give exactly one of `local:`, "
                               "`git:` (with `ref:`) or `url:`")
            if not NAME_RE.fullmatch(name):
                raise _located(config, ("images", image.name, "sources", name),
                               f"images.{image.name}.sources.{name}: invalid source name",
                               image=image.name,
                               fix="use lowercase letters and digits separated by . _ or -")
            if source.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}",
                                                               source.sha256):
                raise _located(config, ("images", image.name, "sources", name, "sha256"),
                               f"images.{image.name}.sources.{name}.sha256: "
                               f"{source.sha256!r} is not a sha256 (64 hex digits)",
                               image=image.name, fix="give the tarball's sha256 "
                               "(`sha256sum FILE`), or leave `sha256:` out")


def _check_platforms(config: Config) -> None:
    named = [(None, ("settings", "platforms"), config.settings.platforms)]
    named += [(name, ("images", name, "platforms"), image.platforms)
              for name, image in config.images.items()]
    for image, loc, platforms in named:
        twice = sorted({p for p in platforms or [] if platforms.count(p) > 1})
        if twice:
            raise _located(config, loc, f"{dotted(loc)}: {twice[0]} is given twice",
                           image=image, fix=PLATFORM_FIX)


def _check_build_dir(config: Config) -> None:
    """build_dir is the tool's own: inside the tree's folder, holding none of the tree, and
    no `files:` source holds it (copying a folder that holds build_dir never ends)."""
    if CONTROL_RE.search(config.settings.build_dir):
        raise _located(config, BUILD_DIR, f"settings.build_dir {config.settings.build_dir!r} "
                       "holds a control character", fix="name a folder without control "
                       "characters (newline, tab, ...), e.g. `build_dir: build`")
    build, root = config.build_dir.resolve(), config.root.resolve()
    if root not in build.parents:
        raise _located(config, BUILD_DIR, f"settings.build_dir {config.settings.build_dir!r} "
                       f"is {build}, not a folder inside the tree's folder {root}",
                         fix="use a folder inside it, e.g. `build_dir: build`")
    parts = [("images.yaml", config.path)] + [
        (f"template folder {t!r}", config.root / t) for t in config.settings.templates]
    for what, path in parts:
        if holds(build, path.resolve()):
            raise _located(config, BUILD_DIR, f"settings.build_dir "
                           f"{config.settings.build_dir!r} holds {what}: {path}",
                           fix="use a folder of its own for build_dir, e.g. `build_dir: build`")
    for name, image in config.images.items():
        named = [(f"files: {inner!r}", ("files", inner), source)
                 for inner, source in image.files.items()]
        named += [(f"sources.{inner}.local", ("sources", inner, "local"),
                   os.path.expanduser(source.local))
                  for inner, source in image.sources.items() if source.local is not None]
        for what, loc, source in named:
            path = config.source_path(source).resolve()
            if holds(path, build) or holds(build, path):
                raise _located(config, ("images", name, *loc), f"{what}: {path} "
                               f"{'holds' if holds(path, build) else 'is inside'} build_dir "
                               f"{build}", image=name, fix="name the files or folders the "
                               "image needs, outside build_dir (not `/` or the tree's folder)")


def _input_error(path: Path, err: ValidationError) -> InputError:
    first = err.errors()[0]
    loc = tuple(first["loc"])
    image = loc[1] if len(loc) > 1 and loc[0] == "images" else None
    if first["type"] == "unexpected_keyword_argument":
        key = loc[-1]
        allowed = ", ".join(next((keys for pattern, keys in ALLOWED_KEYS.items()
                                  if _matches(pattern, loc[:-1])), []))
        return InputError(path, f"unknown key '{dotted(loc)}'", image=image,
                          fix=f"remove '{key}' or correct its spelling; allowed here: {allowed}")
    if first["type"] == "missing":
        return InputError(path, f"missing key '{dotted(loc)}'", image=image,
                          fix=f"add `{loc[-1]}:` to the file")
    field_loc = _field_loc(loc)
    got = first.get("input")
    if "platforms" in loc:
        where = dotted(loc[:loc.index("platforms") + 1])
        what = {"too_short": "empty", "list_type": f"{got!r} is not a list"}.get(
            first["type"], f"{got!r} is not a platform")
        return InputError(path, f"'{where}': {what}", image=image, fix=PLATFORM_FIX)
    if first["type"] == "string_pattern_mismatch" and loc[0] == "jinja":
        return InputError(path, f"'{dotted(loc)}': {got!r} is not an import path",
                          fix="write it as `module:attr`, e.g. "
                          "`kolla.template.filters:customizable`")
    return InputError(path, f"'{dotted(field_loc)}': {first['msg']} (got {got!r})",
                      image=image, fix=f"give '{field_loc[-1]}' a value of the right type")


def _matches(pattern: tuple, loc: tuple) -> bool:
    """Whether `loc` is the place `pattern` names (`*`: any name)."""
    return len(pattern) == len(loc) and all(p in ("*", part)
                                            for p, part in zip(pattern, loc, strict=True))


def _field_loc(loc: tuple) -> tuple:
    """Drop the union-member names pydantic appends (e.g. ..., 'X', 'str')."""
    members = {"str", "int", "float", "bool", "none", "literal", "list", "dict", "Image",
               "Source", "Secret"}
    while len(loc) > 1 and isinstance(loc[-1], str) and (
        loc[-1] in members or loc[-1].startswith(("literal[", "constrained-"))
    ):
        loc = loc[:-1]
    return loc


NETWORK_RE = re.compile(r"^(private|none|host|ns:/.+)$")  # what `buildah bud --network` takes
SECRET_ID_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_bake_fields(config: Config) -> None:
    """Each secret names one source buildah can read, each extra tag is a tag, `network:`
    is one buildah gives."""
    owners = [(None, ("settings",), config.settings.secrets)]
    owners += [(name, ("images", name), image.secrets) for name, image in config.images.items()]
    for image, loc, secrets in owners:
        for secret_id, secret in secrets.items():
            where = (*loc, "secrets", secret_id)
            if len(secret.kinds) != 1:
                raise _located(config, where, f"{dotted(where)}: "
                               f"{' and '.join(secret.kinds) or 'nothing'} given", image=image,
                               fix="give exactly one of `file: PATH` or `env: VARIABLE`")
            # (buildah reads `--secret id=ID,src=...` split at commas)
            if not SECRET_ID_RE.fullmatch(secret_id) or "," in (secret.file or "") or not \
                    ENV_NAME_RE.fullmatch(secret.env or "X"):
                raise _located(config, where, f"{dotted(where)}: an id, file or variable "
                               "buildah cannot take", image=image, fix="name the secret with "
                               "letters, digits, _ . -; give a file path without commas and a "
                               "variable name of letters, digits and _")
    for name, image in config.images.items():
        _check_image_bake_fields(config, name, image)


def _check_image_bake_fields(config: Config, name: str, image: Image) -> None:
    for tag in image.tags:
        if not TAG_RE.fullmatch(tag):
            raise _located(config, ("images", name, "tags"), f"images.{name}.tags: "
                           f"invalid tag {tag!r}", image=name, fix="use up to 128 "
                           "letters, digits, _ . - (not starting with . or -)")
    if image.network is not None and not NETWORK_RE.fullmatch(image.network):
        raise _located(config, ("images", name, "network"), f"images.{name}.network: "
                       f"{image.network!r} is not a network buildah knows", image=name,
                       fix="give `private`, `none`, `host` or `ns:/PATH` of a namespace")
    if image.network not in (None, "host") and config.settings.isolation == "chroot":
        raise _located(config, ("images", name, "network"), f"images.{name}.network: "
                       f"{image.network} needs a network namespace, which "
                       "`isolation: chroot` has not (buildah: only host)", image=name,
                       fix="drop `network:` (or give `host`), or set settings.isolation "
                       "to oci where RUN steps can run in a namespace")
