"""Load and validate images.yaml into plain dataclasses.

This is the only module that reads images.yaml. pydantic checks the types and rejects
unknown keys; the checks that span keys (references, parents) live in `graph` and
`render`, which report through the same `InputError`.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from buildlib.credentials import find_authfile
from buildlib.errors import InputError

if TYPE_CHECKING:
    import yaml
    from pydantic import TypeAdapter, ValidationError

    from buildlib.fieldtypes import (
        ImportPath,
        NonNegativeInt,
        Platforms,
        PositiveInt,
        PositiveSeconds,
        Scalar,
        StrictBool,
        StrictStr,
    )

# pydantic (and `fieldtypes`, the field types it checks) is imported only to validate an
# images.yaml unlike the last one that passed here.
# Each field's docstring is its description (docs/reference, docs/images.schema.json).
_STRICT = {"extra": "forbid", "use_attribute_docstrings": True}
SOURCE_DATE_EPOCH = "SOURCE_DATE_EPOCH"  # the reproducible-builds convention
VALIDATED_NOTE = ".valid-images-yaml.json"  # in build_dir: the last valid file's data
CONFIG_FILE = "images.yaml"
OVERRIDE_FILE = "images.override.yaml"  # merged on top of CONFIG_FILE, as bake's

# Grammar of docker/distribution references (reference/regexp.go), one part at a time.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"^{_COMPONENT}$")
NAMESPACE_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
REGISTRY_RE = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(?::[0-9]+)?$"
)
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1: never in a folder name
PREFIX_RE = re.compile(r"^(?:[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:[._]|__|-+)?)?$")
# `platforms:` as `fieldtypes.Platforms` checks them: os/arch[/variant]
PLATFORM_FIX = ("write each as os/arch[/variant], e.g. `platforms: [linux/amd64, linux/arm64]`, "
                "each once (drop `platforms:` for the native platform only)")


@dataclass(frozen=True)
class Secret:
    """A build secret of `settings.secrets` or an image's `secrets:`: one of `file`, `env`.

    `RUN --mount=type=secret,id=ID` reads it at /run/secrets/ID. Its content is in no
    image, key, log or report: changing it rebuilds nothing."""

    __pydantic_config__ = _STRICT
    file: StrictStr | None = None
    """A file whose content is the secret (`~` is your home; relative to images.yaml)."""
    env: StrictStr | None = None
    """An environment variable of the run whose value is the secret."""

    @property
    def kinds(self) -> list[str]:
        return [k for k in ("file", "env") if getattr(self, k) is not None]


@dataclass(frozen=True)
class Settings:
    """How every image is built, named and pushed (the `settings:` section).

    Each field's docstring is its description in docs/reference and the JSON Schema."""

    __pydantic_config__ = _STRICT
    registry: StrictStr = "localhost:5000"
    """Where pushes go: the first part of every image's reference (host[:port])."""
    namespace: StrictStr = "kolla"
    """The path after the registry in every reference ("" for none)."""
    prefix: StrictStr = ""
    """Put before each image's name in its reference, e.g. `centos-binary-`."""
    tag: StrictStr = "latest"
    """Your tag of every image (pushes also write the key's tag `ib-<key>`)."""
    # oci: buildah 1.28 writes the build container's ID and hostname into a docker-format
    # config, so only oci builds are reproducible (same inputs -> same image ID).
    format: Literal["docker", "oci"] = "oci"
    """`buildah bud --format`; only oci builds are reproducible with buildah 1.28."""
    timestamp: NonNegativeInt | None = None
    """The created time of every image, Unix seconds (unset: SOURCE_DATE_EPOCH, else 0)."""
    jobs: PositiveInt = 8
    """Builds at once when `-n` is not given."""
    build_timeout: PositiveSeconds = 1800
    """Seconds a build may take before buildah and all it started are killed."""
    push_retries: PositiveInt = 10
    """Retries of a push that failed in a way that may pass (refused, 5xx, 429)."""
    push_timeout: PositiveSeconds = 300
    """Seconds per `buildah push` attempt (each registry request: at most 15)."""
    push_deadline: PositiveSeconds = 1800
    """Seconds all attempts of one image's push (or pull) may take, from its start."""
    tls_verify: StrictBool = True
    """Verify the registry's TLS; false only for a plain-HTTP registry you trust."""
    authfile: StrictStr | None = None
    """Registry credentials, relative to images.yaml (unset or absent: REGISTRY_AUTH_FILE)."""
    isolation: Literal["chroot", "oci", "rootless"] | None = None
    """`buildah --isolation` for RUN steps (chroot inside containers and sandboxes)."""
    cache: Literal["local", "registry"] = "local"
    """`registry`: look each image up in the registry by its key before building it."""
    build_dir: StrictStr = "build"
    """Rendered contexts, logs, report.json and doit's state: a folder inside the tree's."""
    templates: list[StrictStr] = field(default_factory=lambda: ["templates"])
    """Template folders, relative to images.yaml; the first that holds a template wins."""
    buildah_args: list[StrictStr] = field(default_factory=list)
    """Global flags of every buildah command, e.g. `[--root, /srv/images]`."""
    excludes: list[StrictStr] = field(default_factory=list)
    """Regexes of images never built (nor their descendants)."""
    args: dict[StrictStr, Scalar] = field(default_factory=dict)
    """`--build-arg` for every image; an image's own `args:` win."""
    labels: dict[StrictStr, Scalar] = field(default_factory=dict)
    """`--label` for every image; an image's own `labels:` win."""
    platforms: Platforms | None = None
    """Build each root for these platforms (os/arch[/variant]) as a manifest list; unset:
    the machine's own platform."""
    keep_keys: NonNegativeInt | None = None
    """Prune after each run that built something, keeping N old keys per image; unset: off."""
    push_jobs: NonNegativeInt = 4
    """Pushes at once, in their own pool beside the build jobs (0: in the build slots)."""
    secrets: dict[StrictStr, Secret] = field(default_factory=dict)
    """Build secrets of every image by id (`RUN --mount=type=secret,id=ID`); an image's own
    `secrets:` win. Not in the key."""
    ssh: list[StrictStr] = field(default_factory=list)
    """SSH agent sockets or keys of every build (`RUN --mount=type=ssh`), as `buildah --ssh`:
    `default` (SSH_AUTH_SOCK) or `ID=PATH[,PATH]`; an image's own `ssh:` win by ID."""


@dataclass(frozen=True)
class Jinja:
    """Filters and globals (functions, constants) that every template sees, by import path."""

    __pydantic_config__ = _STRICT
    filters: dict[StrictStr, ImportPath] = field(default_factory=dict)
    """Jinja filters: name -> `module:attr` (modules beside images.yaml are found first)."""
    globals: dict[StrictStr, ImportPath] = field(default_factory=dict)
    """Functions or constants every template sees: name -> `module:attr`."""


@dataclass(frozen=True)
class KollaSource:
    """The images are OpenStack Kolla's: every `Dockerfile.j2` under its docker/ folder."""

    __pydantic_config__ = _STRICT
    docker: StrictStr = "package"
    """`package`: the installed kolla package's docker/ folder; else the path of one."""
    base: StrictStr = "rocky"
    """The distribution, as `kolla-build --base`."""
    template_overrides: list[StrictStr] = field(default_factory=list)
    """Override templates, in order, as `kolla-build --template-override`."""
    enable_unbuildable: StrictBool = False
    """Also the images Kolla marks unbuildable (else they are excluded)."""
    config_file: StrictStr | None = None
    """A kolla-build.conf: its options and its sources' sections."""
    options: dict[StrictStr, Scalar | list[Scalar]] = field(default_factory=dict)
    """Any other kolla-build option, e.g. `openstack_release`."""


@dataclass(frozen=True)
class Source:
    """One of an image's `sources:`, archived into its context as `<name>-archive`."""

    __pydantic_config__ = _STRICT
    local: StrictStr | None = None
    """A folder (archived: in a git checkout the files git would take, else all but what
    its `.dockerignore` excludes) or a file (taken as it is)."""
    git: StrictStr | None = None
    """A local git repository (or a folder inside one), archived at `ref` (a pbr project
    with the PKG-INFO of its version)."""
    ref: StrictStr = "HEAD"
    """The branch, tag or commit of `git`."""
    url: StrictStr | None = None
    """A tarball: file: (a relative path from the folder of images.yaml), http:// or
    https://, downloaded once per URL and `sha256` by a run that builds the image."""
    sha256: StrictStr | None = None
    """The sha256 of the tarball at `url` (64 hex digits, either case): a tarball with
    another fails the images that need it."""

    @property
    def kinds(self) -> list[str]:
        return [k for k in ("local", "git", "url") if getattr(self, k) is not None]


@dataclass(frozen=True)
class Image:
    """One image of the tree (an entry under `images:`)."""

    __pydantic_config__ = _STRICT
    template: StrictStr | None = None
    """Its template, in a template folder (default `<name>/Dockerfile.j2`)."""
    parent: StrictStr | None = None
    """The image of the tree it is built FROM; unset for a root."""
    files: dict[StrictStr, StrictStr] = field(default_factory=dict)
    """Extra build-context entries: name in the context -> a file or folder."""
    args: dict[StrictStr, Scalar] = field(default_factory=dict)
    """`--build-arg` for this image."""
    vars: dict[StrictStr, Any] = field(default_factory=dict)
    """Template variables for this image (over the file's `vars:`)."""
    labels: dict[StrictStr, Scalar] = field(default_factory=dict)
    """`--label` for this image."""
    volumes: list[StrictStr] = field(default_factory=list)
    """`--volume` for this image's build, mounted while building only."""
    timeout: PositiveSeconds | None = None
    """Seconds its build may take (default: settings.build_timeout)."""
    sources: dict[StrictStr, Source] = field(default_factory=dict)
    """Sources archived into its context, each as `<name>-archive`."""
    platforms: Platforms | None = None
    """Its platforms, among its parent's (default: the parent's; a root's: settings')."""
    secrets: dict[StrictStr, Secret] = field(default_factory=dict)
    """Build secrets of this image by id, over settings' (not in the key)."""
    ssh: list[StrictStr] = field(default_factory=list)
    """SSH agent sockets or keys of this build, over settings' by ID (not in the key)."""
    network: StrictStr | None = None
    """`buildah bud --network` of its RUN steps: `private` (the default), `none`, `host` or
    `ns:PATH`. Not in the key: it changes what a RUN can reach, not what it is given."""
    tags: list[StrictStr] = field(default_factory=list)
    """Extra tags beside settings.tag (e.g. a release tag), each set at push to the same
    digest. Not in the key."""
    name: str = field(default="", init=False)  # the key under `images:`, not a setting

    @property
    def template_name(self) -> str:
        return self.template or f"{self.name}/Dockerfile.j2"


@dataclass(frozen=True)
class _File:
    """images.yaml: the settings, then each image with its parent."""

    __pydantic_config__ = _STRICT
    images: dict[StrictStr, Image | None] | None = None
    """The images by name (required unless `kolla:` gives them)."""
    settings: Settings = field(default_factory=Settings)
    """How every image is built, named and pushed."""
    vars: dict[StrictStr, Any] = field(default_factory=dict)
    """Template variables for every image."""
    profiles: dict[StrictStr, list[StrictStr]] = field(default_factory=dict)
    """Named selections: name -> regexes (`doit build profile=NAME`)."""
    jinja: Jinja = field(default_factory=Jinja)
    """Jinja filters and globals by import path."""
    kolla: KollaSource | None = None
    """Make the tree OpenStack Kolla's, from the installed kolla package."""


@dataclass(frozen=True)
class Sources:
    """What a config is merged from: images.yaml, then each file on top of it in order
    (later wins), then the `--set PATH=VALUE` assignments. Every path in any of the files
    is taken from the first file's folder."""

    files: tuple[Path, ...]
    sets: tuple[str, ...] = ()

    @classmethod
    def default(cls, folder: Path, sets: tuple[str, ...] = ()) -> Sources:
        """images.yaml in `folder`, and images.override.yaml beside it when there is one
        (as bake picks up docker-bake.override.hcl only when no file is named)."""
        files = [folder / CONFIG_FILE, folder / OVERRIDE_FILE]
        return cls(tuple(files[:1] + [f for f in files[1:] if f.is_file()]), sets)

    @property
    def path(self) -> Path:
        return self.files[0]

    def resolved(self) -> Sources:
        return Sources(tuple(Path(f).resolve() for f in self.files), self.sets)


@dataclass(frozen=True)
class Config:
    """A validated images.yaml; every path in it is taken from `root`."""

    path: Path
    settings: Settings
    vars: dict[str, Any]
    images: dict[str, Image]
    profiles: dict[str, list[str]] = field(default_factory=dict)
    jinja: Jinja = field(default_factory=Jinja)
    kolla: KollaSource | None = None
    merged: Sources | None = None  # the files and --set assignments, as `load` merged them
    data: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The merged tree as the files and --set give it (`imagebake config` prints it)."""

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def sources(self) -> Sources:
        """What this config was merged from (a Config made otherwise: its file alone)."""
        return self.merged or Sources((self.path,))

    @property
    def build_dir(self) -> Path:
        return self.root / self.settings.build_dir

    @property
    def template_dirs(self) -> list[Path]:
        return [self.root / t for t in self.settings.templates]

    def reference(self, name: str) -> str:
        """`{registry}/{namespace}/{prefix}{name}:{tag}`, empty parts and their slash dropped."""
        s = self.settings
        repository = "/".join(p for p in (s.registry, s.namespace, s.prefix + name) if p)
        return f"{repository}:{s.tag}"

    def source_path(self, value: str) -> Path:
        return self.root / value

    @property
    def timestamp(self) -> int:
        """Every image's created time: settings.timestamp, else SOURCE_DATE_EPOCH, else 0."""
        if self.settings.timestamp is not None:
            return self.settings.timestamp
        return int(os.environ.get(SOURCE_DATE_EPOCH) or 0)


@functools.cache
def _adapter() -> TypeAdapter[_File]:
    """pydantic's validator of the whole file. pydantic resolves the names in the fields'
    annotations among this module's globals, where the field types (imported only for
    type checkers above) are put now."""
    from pydantic import TypeAdapter

    from buildlib import fieldtypes

    for name, value in vars(fieldtypes).items():
        globals().setdefault(name, value)
    return TypeAdapter(_File)


_ALLOWED_KEYS = {
    (): [f.name for f in fields(_File)],
    ("settings",): [f.name for f in fields(Settings)],
    ("images", "*"): [f.name for f in fields(Image) if f.init],
    ("jinja",): [f.name for f in fields(Jinja)],
    ("images", "*", "sources", "*"): [f.name for f in fields(Source)],
    ("images", "*", "secrets", "*"): [f.name for f in fields(Secret)],
    ("settings", "secrets", "*"): [f.name for f in fields(Secret)],
    ("kolla",): [f.name for f in fields(KollaSource)],
}
# What every template sees under these names; `vars:` may not take them.
RESERVED_VARS = ("settings", "image_name", "image", "tag", "parent_name", "parent_image")


def load(source: Path | str | Sources) -> Config:
    """Read, merge and validate images.yaml (a path: that file alone; `Sources`: the files
    and --set assignments merged as one); raise InputError naming the problem, where it
    was written (file and line, or the --set) and its fix."""
    sources = (source if isinstance(source, Sources) else Sources((Path(source),))).resolved()
    path = sources.path
    texts = [_read_text(file) for file in sources.files]
    digest = _digest(sources, texts)
    data = _validated_before(path, "\n".join(texts + _set_lines(sources.sets)), digest)
    parsed = _built(data) if data is not None else None
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
        _note_valid(config, digest, data)
    return config


def merged_yaml(config: Config) -> str:
    """The merged tree as YAML, after comments naming what was merged, in order."""
    import yaml

    sources = config.sources
    merged = [f"# {file}" for file in sources.files] + [f"# --set {s}" for s in sources.sets]
    return "\n".join(["# merged from:", *merged, ""]) + yaml.safe_dump(
        config.data, sort_keys=False, allow_unicode=True, default_flow_style=False)


def _validated(origins: Origins, data: Any) -> _File:
    from pydantic import ValidationError

    try:
        return _adapter().validate_python(data)
    except ValidationError as err:
        path, spot = origins.of(tuple(err.errors()[0]["loc"]))
        error = _input_error(path, err)
        if spot:
            error = InputError(path, f"{spot}: {error.problem}", image=error.image,
                               fix=error.fix)
        raise error from None


@functools.cache
def _schema() -> bytes:
    """This module's source: a change to the schema asks for validation again."""
    return Path(__file__).read_bytes()


def _digest(sources: Sources, texts: list[str]) -> str:
    """What a note is bound to: these texts, at these places (the resolved path of each
    file merged: a note copied from another tree does not match), these --set assignments,
    under this schema."""
    parts = [part for file, text in zip(sources.files, texts, strict=True)
             for part in (str(file), text)]
    parts += ["--set", *sources.sets]
    return hashlib.sha256(b"\0".join([*(p.encode() for p in parts), _schema()])).hexdigest()


def _set_lines(sets: tuple[str, ...]) -> list[str]:
    """`--set settings.build_dir=out` as the line `build_dir: out` (where a note may be)."""
    return [f"{target.rsplit('.', 1)[-1]}: {value}"
            for target, _, value in (arg.partition("=") for arg in sets)]


# `build_dir: out` anywhere in the text: where a note of this file may be (checked below)
_BUILD_DIR_LINE = re.compile(r"""\bbuild_dir\s*:\s*["']?([^"'#\s,{}\[\]]+)""")


def _validated_before(path: Path, text: str, digest: str) -> dict[str, Any] | None:
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


def _note_valid(config: Config, digest: str, data: Any) -> None:
    """Keep the data of a valid file in build_dir for the next run (when a run has made
    build_dir, and JSON gives the data back as YAML gave it)."""
    note = config.build_dir / VALIDATED_NOTE
    try:
        text = json.dumps({"digest": digest, "data": data})
    except (TypeError, ValueError):  # e.g. a YAML date among the vars
        return
    if json.loads(text)["data"] != data or not config.build_dir.is_dir():
        return
    with contextlib.suppress(OSError):
        scratch = note.with_name(note.name + ".new")
        scratch.write_text(text)
        scratch.replace(note)


def _built(data: dict[str, Any]) -> _File | None:
    """What `_adapter().validate_python(data)` returns for data that passed it before (the
    file is unchanged), made without pydantic: the nested dataclasses from their
    mappings, every other value as YAML gave it (validation is strict: it converts none).
    None if the data is not such (a note someone edited)."""
    try:
        return _file_of(data)
    except (TypeError, AttributeError):
        return None


def _file_of(data: dict[str, Any]) -> _File:
    images = data.get("images")
    return _File(
        images=None if images is None else {name: _built_image(image)
                                            for name, image in images.items()},
        settings=_built_settings(data.get("settings", {})),
        vars=data.get("vars", {}),
        profiles=data.get("profiles", {}),
        jinja=Jinja(**data.get("jinja", {})),
        kolla=None if data.get("kolla") is None else KollaSource(**data["kolla"]))


def _built_image(image: dict[str, Any] | None) -> Image | None:
    if image is None:
        return None
    sources = {name: Source(**source) for name, source in image.get("sources", {}).items()}
    return Image(**{**image, "sources": sources, "secrets": _built_secrets(image)})


def _built_settings(settings: dict[str, Any]) -> Settings:
    return Settings(**{**settings, "secrets": _built_secrets(settings)})


def _built_secrets(owner: dict[str, Any]) -> dict[str, Secret]:
    return {name: Secret(**secret) for name, secret in owner.get("secrets", {}).items()}


def named_image(image: Image, name: str) -> Image:
    """The image under its name (frozen: set where the image is made, never later)."""
    object.__setattr__(image, "name", name)
    return image


def _check_source_date_epoch(path: Path) -> None:
    value = os.environ.get(SOURCE_DATE_EPOCH)
    if value and not value.isdigit():
        raise InputError(path, f"{SOURCE_DATE_EPOCH}={value!r} is not a number of seconds",
                         fix=f"set {SOURCE_DATE_EPOCH} to a Unix time, or unset it")


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
            raise _located(config, loc, f"{_dotted(loc)}: {twice[0]} is given twice",
                           image=image, fix=PLATFORM_FIX)


def _check_vars(config: Config) -> None:
    named = [(None, ("vars",), config.vars)]
    named += [(name, ("images", name, "vars"), image.vars)
              for name, image in config.images.items()]
    for image, loc, variables in named:
        taken = [v for v in RESERVED_VARS if v in variables]
        if taken:
            raise _located(config, (*loc, taken[0]), f"{_dotted(loc)}.{taken[0]}: "
                           f"'{taken[0]}' is a name every template already sees", image=image,
                           fix=f"rename the variable (settings are `settings.<name>`; "
                           f"reserved: {', '.join(RESERVED_VARS)})")


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


BUILD_DIR = ("settings", "build_dir")


def _located(config: Config, loc: tuple, problem: str, *, image: str | None = None,
             fix: str = "") -> InputError:
    """An InputError naming the file and line (or the --set) the value at `loc` came from:
    the files are merged again, only for this error (a note kept no lines)."""
    sources = config.sources
    try:
        path, spot = _merged(sources, [_read_text(f) for f in sources.files])[1].of(loc)
    except InputError:
        path, spot = config.path, ""
    return InputError(path, f"{spot}: {problem}" if spot else problem, image=image, fix=fix)


def holds(folder: Path, path: Path) -> bool:
    """Whether `path` is `folder` or inside it (both resolved)."""
    return path == folder or folder in path.parents


def _check_patterns(config: Config) -> None:
    named = [(("profiles", name, index), p) for name, ps in config.profiles.items()
             for index, p in enumerate(ps)]
    named += [(("settings", "excludes", index), p)
              for index, p in enumerate(config.settings.excludes)]
    for loc, pattern in named:
        try:
            re.compile(pattern)
        except re.error as err:
            raise _located(config, loc, f"{_dotted(loc[:-1])}: {pattern!r} is not a "
                           f"regular expression ({err})",
                           fix="correct the pattern (Python `re` syntax)") from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(path, f"cannot read the image list: {err.strerror}",
                         fix="create it, or name another with `config=PATH` "
                         "(`imagebake -c PATH`)") from None


def _read_yaml(path: Path, text: str, *, first: bool = True) -> tuple[Any, Spots]:
    """The file's data and where each value of it is; a file merged on top of the first
    may be empty (it adds nothing)."""
    import yaml

    try:
        data, spots = _parse_yaml_spots(path, text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise InputError(path, f"malformed YAML{where}: {problem}",
                         fix="correct the YAML syntax there") from None
    if data is None and not first:
        return {}, spots
    if not isinstance(data, dict):
        raise InputError(path, "the top level must be a mapping with an `images:` key",
                         fix="declare your images under `images:`")
    return data, spots


def _parse_yaml(path: Path, text: str) -> Any:
    return _parse_yaml_spots(path, text)[0]


def _parse_yaml_spots(path: Path, text: str) -> tuple[Any, Spots]:
    """Parse once (with libyaml when PyYAML has it: 10x faster on a large tree), checking
    the composed nodes (`_check_nodes`) before constructing the data; with where each
    value of the data is (`_spots`)."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        _check_nodes(path, node)
        return loader.construct_document(node), _spots(path, node)
    finally:
        loader.dispose()


# Where a value was given: its file and `line N`, or images.yaml and the `--set` that set it.
Spot = tuple[Path, str]
Spots = dict[tuple, Spot]


def _spots(path: Path, root: yaml.Node) -> Spots:
    """Each value's path of keys (list items by index) -> the file and the line of its key
    (walked after construction, which folds `<<:` merge keys into the mappings)."""
    import yaml

    spots: Spots = {}

    def walk(node: yaml.Node, where: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            items = [(key.value, key, value) for key, value in node.value]
        elif isinstance(node, yaml.SequenceNode):
            items = [(index, item, item) for index, item in enumerate(node.value)]
        else:
            return
        for name, marked, value in items:
            spots[where + (name,)] = (path, f"line {marked.start_mark.line + 1}")
            walk(value, where + (name,))

    walk(root, ())
    return spots


@dataclass
class Origins:
    """Where each value of a merged tree was given (`Spots`), for errors to name."""

    first: Path
    spots: Spots = field(default_factory=dict)

    def of(self, loc: tuple) -> Spot:
        """The spot of the value at `loc`, else of the nearest value holding it."""
        for end in range(len(loc), 0, -1):
            if loc[:end] in self.spots:
                return self.spots[loc[:end]]
        return self.first, ""

    def given(self, where: tuple, spots: Spots) -> None:
        """The value at `where`, with all inside it, is now the one `spots` place."""
        size = len(where)
        for old in [key for key in self.spots if key[:size] == where]:
            del self.spots[old]
        self.spots.update((key, spot) for key, spot in spots.items() if key[:size] == where)


def _merged(sources: Sources, texts: list[str]) -> tuple[dict[str, Any], Origins]:
    """The files merged in order, then each --set applied; with where each value came from."""
    origins = Origins(sources.path)
    data: dict[str, Any] = {}
    for file, text in zip(sources.files, texts, strict=True):
        layer, spots = _read_yaml(file, text, first=file == sources.path)
        data = _merge(data, layer, (), origins, spots)
    for arg in sources.sets:
        _apply_set(data, arg, origins)
    return data, origins


def _merge(base: Any, over: Any, where: tuple, origins: Origins, spots: Spots) -> Any:
    """`over` on top of `base`, as bake merges an override file: mappings key by key (an
    empty value, `nova:`, adds nothing to one); anything else, a list too, is replaced."""
    if not isinstance(base, dict) or not isinstance(over, dict | None):
        origins.given(where, spots)
        return over
    merged = dict(base)
    for key, value in (over or {}).items():
        if key in base:
            merged[key] = _merge(base[key], value, where + (key,), origins, spots)
        else:
            merged[key] = value
            origins.given(where + (key,), spots)
    return merged


SET_FIX = ("write it as IMAGE.FIELD=VALUE (IMAGE may be a glob, e.g. 'nova-*.args.WORKERS=8'),"
           " or settings.FIELD=VALUE; VALUE is read as YAML")
# The mappings whose keys may hold dots (`labels.org.opencontainers.image.version`): in a
# --set, the rest of the path after one of these is one key.
_FLAT_MAPS = {("settings", "args"), ("settings", "labels"), ("images", "*", "args"),
              ("images", "*", "labels"), ("images", "*", "files"), ("kolla", "options")}


def _apply_set(data: dict[str, Any], arg: str, origins: Origins) -> None:
    """One `--set PATH=VALUE`: the value at PATH of each image PATH names, replaced."""
    target, equals, text = arg.partition("=")
    words = target.split(".")
    if not equals or len(words) < 2 or "" in words:
        raise InputError(origins.first, f"--set {arg!r}: not a PATH=VALUE assignment",
                         fix=SET_FIX)
    value = _set_value(arg, text, origins.first)
    for where in _set_paths(data, tuple(words), arg, origins.first):
        _put(data, where, copy.deepcopy(value), arg, origins.first)
        origins.given(where, {where: (origins.first, f"--set {arg!r}")})


def _set_value(arg: str, text: str, path: Path) -> Any:
    import yaml

    if not text:
        return ""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err)
        raise InputError(path, f"--set {arg!r}: the value is not YAML ({problem})",
                         fix="quote it as a YAML string, e.g. --set 'nova.args.X=\"a: [b\"'"
                         ) from None


def _set_paths(data: dict[str, Any], words: tuple[str, ...], arg: str,
               path: Path) -> list[tuple]:
    """The paths a --set names: from the top (`settings.tag`), or in each image whose name
    matches its first word, a glob (`nova-*.args.X`, or `images.nova-*.args.X`)."""
    if words[0] in _ALLOWED_KEYS[()] and words[0] != "images":
        return [_one_key_after_flat_maps(words)]
    pattern, rest = (words[1], words[2:]) if words[0] == "images" else (words[0], words[1:])
    images = data.get("images")
    names = [name for name in images if fnmatch.fnmatchcase(str(name), pattern)
             ] if isinstance(images, dict) else []
    if not names and "kolla" in data and not set("*?[") & set(pattern):
        names = [pattern]  # one of Kolla's images, refined under `images:`
    if not rest or not names:
        problem = (f"{pattern!r} matches no image under `images:`" if rest else
                   "names an image but no field of it")
        raise InputError(path, f"--set {arg!r}: {problem}", fix=SET_FIX + "; in a Kolla "
                         "tree, a glob matches only the images under `images:`, a name any "
                         "of Kolla's")
    return [_one_key_after_flat_maps(("images", name, *rest)) for name in names]


def _one_key_after_flat_maps(where: tuple[str, ...]) -> tuple[str, ...]:
    shape = ("images", "*", *where[2:]) if where[0] == "images" else where
    for size in range(2, len(where)):
        if shape[:size] in _FLAT_MAPS:
            return (*where[:size], ".".join(where[size:]))
    return where


def _put(data: dict[str, Any], where: tuple, value: Any, arg: str, path: Path) -> None:
    node = data
    for depth, key in enumerate(where[:-1]):
        if node.get(key) is None:
            node[key] = {}
        if not isinstance(node[key], dict):
            raise InputError(path, f"--set {arg!r}: '{_dotted(where[:depth + 1])}' is not a "
                             "mapping", fix=SET_FIX)
        node = node[key]
    node[where[-1]] = value


# Nodes that aliases may add to the data: far more than anchors for shared settings need,
# far less than an alias bomb's billions (9 levels of 9 aliases in 721 bytes).
ALIAS_NODES_LIMIT = 100_000


def _check_nodes(path: Path, root: yaml.Node) -> None:
    """Each node once (an alias is the node its anchor names, not a copy): a key given
    twice, an alias inside its own anchor, and aliases that expand the data past
    ALIAS_NODES_LIMIT nodes are input errors."""
    import yaml

    sizes: dict[int, int] = {}  # id(node) -> nodes of its data with aliases expanded; -1 open

    def size(node: yaml.Node, where: tuple) -> int:
        known = sizes.get(id(node))
        if known == -1:
            raise InputError(path, f"'{_dotted(where) or 'the top level'}' holds itself (an "
                             "alias `*name` inside the value its anchor `&name` marks)",
                             image=_image_at(where),
                             fix="remove the alias, or point it at another value")
        if known is not None:
            return known
        sizes[id(node)] = -1
        total = 1
        if isinstance(node, yaml.MappingNode):
            _check_unique_keys(path, node, where)
            total += sum(size(key, where) + size(value, where + (key.value,))
                         for key, value in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item, where) for item in node.value)
        sizes[id(node)] = total
        return total

    expanded = size(root, ())
    if expanded - len(sizes) > ALIAS_NODES_LIMIT:
        raise InputError(path, f"aliases (`*name`) expand the {len(sizes):,} values the file "
                         f"spells out to {expanded:,} (aliases may add at most "
                         f"{ALIAS_NODES_LIMIT:,})", fix="write the values out, or use aliases "
                         "that do not nest aliases many times over")


def _check_unique_keys(path: Path, node: yaml.MappingNode, where: tuple) -> None:
    """PyYAML keeps the last of two equal keys; a second `base:` must not replace the first."""
    seen: set[str] = set()
    for key_node, _ in node.value:
        key = key_node.value
        if not isinstance(key, str):  # a complex key: construction rejects it
            continue
        if key in seen:
            line = key_node.start_mark.line + 1
            raise InputError(path, f"key '{_dotted(where + (key,))}' is given twice "
                             f"(again at line {line})", image=_image_at(where + (key,)),
                             fix="keep one of them, or rename one")
        seen.add(key)


def _image_at(where: tuple) -> str | None:
    """The image whose part of the file `where` (a path of keys) is in, if any."""
    return where[1] if len(where) > 1 and where[0] == "images" else None


def _input_error(path: Path, err: ValidationError) -> InputError:
    first = err.errors()[0]
    loc = tuple(first["loc"])
    image = loc[1] if len(loc) > 1 and loc[0] == "images" else None
    if first["type"] == "unexpected_keyword_argument":
        key = loc[-1]
        allowed = ", ".join(next((keys for pattern, keys in _ALLOWED_KEYS.items()
                                  if _matches(pattern, loc[:-1])), []))
        return InputError(path, f"unknown key '{_dotted(loc)}'", image=image,
                          fix=f"remove '{key}' or correct its spelling; allowed here: {allowed}")
    if first["type"] == "missing":
        return InputError(path, f"missing key '{_dotted(loc)}'", image=image,
                          fix=f"add `{loc[-1]}:` to the file")
    field_loc = _field_loc(loc)
    got = first.get("input")
    if "platforms" in loc:
        where = _dotted(loc[:loc.index("platforms") + 1])
        what = {"too_short": "empty", "list_type": f"{got!r} is not a list"}.get(
            first["type"], f"{got!r} is not a platform")
        return InputError(path, f"'{where}': {what}", image=image, fix=PLATFORM_FIX)
    if first["type"] == "string_pattern_mismatch" and loc[0] == "jinja":
        return InputError(path, f"'{_dotted(loc)}': {got!r} is not an import path",
                          fix="write it as `module:attr`, e.g. "
                          "`kolla.template.filters:customizable`")
    return InputError(path, f"'{_dotted(field_loc)}': {first['msg']} (got {got!r})",
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


def _dotted(loc: tuple) -> str:
    return ".".join(str(part) for part in loc)


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
    for name in config.images:
        if not NAME_RE.fullmatch(name) or not NAME_RE.fullmatch(s.prefix + name):
            raise _located(config, ("images", name), f"invalid image name {name!r}", image=name,
                           fix="use lowercase letters and digits separated by . _ or -")


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


NETWORK_RE = re.compile(r"^(private|none|host|ns:/.+)$")  # what `buildah bud --network` takes
SECRET_ID_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_bake_fields(config: Config) -> None:
    """Each secret names one source, each extra tag is a tag, `network:` is buildah's."""
    owners = [(None, ("settings",), config.settings.secrets)]
    owners += [(name, ("images", name), image.secrets) for name, image in config.images.items()]
    for image, loc, secrets in owners:
        for secret_id, secret in secrets.items():
            where = (*loc, "secrets", secret_id)
            if len(secret.kinds) != 1:
                raise _located(config, where, f"{_dotted(where)}: "
                               f"{' and '.join(secret.kinds) or 'nothing'} given", image=image,
                               fix="give exactly one of `file: PATH` or `env: VARIABLE`")
            # (buildah reads `--secret id=ID,src=...` split at commas)
            if not SECRET_ID_RE.fullmatch(secret_id) or "," in (secret.file or "") or not \
                    ENV_NAME_RE.fullmatch(secret.env or "X"):
                raise _located(config, where, f"{_dotted(where)}: an id, file or variable "
                               "buildah cannot take", image=image, fix="name the secret with "
                               "letters, digits, _ . -; give a file path without commas and a "
                               "variable name of letters, digits and _")
    for name, image in config.images.items():
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
