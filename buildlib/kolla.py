"""OpenStack Kolla's image tree, read live from the `kolla` package (`pip install .[kolla]`).

`expand` turns a config with a `kolla:` section into an ordinary one: one image per
`Dockerfile.j2` under Kolla's docker/ folder, the template variables kolla-build gives
its templates (from kolla's own option defaults, a kolla-build.conf and `options:`),
kolla's filters and functions registered by import path, kolla's profiles, and its
unbuildable images excluded. Each image's parent is read from its rendered FROM line,
as kolla-build reads it. Nothing of Kolla is copied here: it is all imported.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import pickle
import re
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from buildlib import render
from buildlib.config import Config, Image, Jinja, named_image
from buildlib.errors import InputError

TEMPLATE = "Dockerfile.j2"
FILTERS = {"customizable": "kolla.template.filters:customizable"}
GLOBALS = {name: f"kolla.template.methods:{name}" for name in
           ("debian_package_install", "handle_repos", "cleanup_repos", "raise_error")}
# kolla-build options that imagebake's settings decide, so that references agree.
FROM_SETTINGS = {"registry": "registry", "namespace": "namespace", "tag": "tag",
                 "image_name_prefix": "prefix"}
INSTALL_FIX = "install it with `pip install .[kolla]` (or `pip install kolla`)"


def expand(config: Config) -> tuple[Config, dict[str, str]]:
    """The config with Kolla's images, variables, filters, profiles and exclusions, and
    each image's rendered Dockerfile (which kolla-build writes with --template-only)."""
    source = config.kolla
    assert source is not None
    _require_kolla(config)
    docker = _docker_dir(config)
    conf = _kolla_options(config)
    templates = _find_templates(config, docker)
    images = _images(config, templates)
    expanded = replace(
        config,
        settings=replace(config.settings, templates=[str(docker)],
                         excludes=config.settings.excludes + _unbuildable(conf, source)),
        vars={**template_values(config, conf), **config.vars},
        images=images,
        profiles={**_profiles(conf), **config.profiles},
        jinja=Jinja(filters={**FILTERS, **config.jinja.filters},
                    globals={**GLOBALS, **config.jinja.globals}),
    )
    renderer = render.Renderer(expanded)
    with _repos_read_once():
        texts = {name: _with_pip_args(renderer.render(name), conf) for name in images}
    parents = {name: _parent(expanded, name, texts[name]) for name in images}
    images = {name: named_image(replace(image, parent=parents[name]), name)
              if name in templates else image for name, image in images.items()}
    return replace(expanded, images=images), texts


@contextlib.contextmanager
def _repos_read_once() -> Iterator[None]:
    """kolla's `handle_repos`/`cleanup_repos` parse repos.yaml (pure-Python YAML) at every
    call: 480 parses, 8 s for one tree. While we render, they read each file once and get
    a fresh copy of it per call; their own logic is untouched."""
    from kolla.template import methods

    original = methods._load_repos
    cached = functools.lru_cache(maxsize=None)(lambda override: pickle.dumps(original(override)))
    methods._load_repos = lambda override=None: pickle.loads(cached(override))  # a fresh copy
    try:
        yield
    finally:
        methods._load_repos = original


def _require_kolla(config: Config) -> None:
    if importlib.util.find_spec("kolla") is None:
        raise InputError(config.path, "`kolla:` needs the `kolla` Python package, which is "
                         "not installed", fix=INSTALL_FIX)


def _docker_dir(config: Config) -> Path:
    source = config.kolla
    assert source is not None
    if source.docker == "package":
        import kolla  # the installed package keeps its templates in kolla/docker
        folder = Path(kolla.__file__).parent / "docker"
    else:
        folder = config.source_path(source.docker)
    if not (folder / "base" / TEMPLATE).is_file():
        raise InputError(config.path, f"kolla.docker: {folder} is not Kolla's docker/ folder "
                         f"(it has no base/{TEMPLATE})",
                         fix="name the docker/ folder of a Kolla checkout, or `package` for "
                         "the installed kolla package's")
    return folder.resolve()


def _find_templates(config: Config, docker: Path) -> dict[str, str]:
    """Image name (its folder's name) -> template path inside docker/, as kolla-build
    finds them."""
    found: dict[str, str] = {}
    for path in sorted(docker.rglob(TEMPLATE)):
        name, relative = path.parent.name, str(path.relative_to(docker))
        if name in found:
            raise InputError(config.path, f"two Kolla templates for image '{name}': "
                             f"{found[name]} and {relative}", image=name,
                             fix="keep one folder of that name under the docker/ folder")
        found[name] = relative
    return found


def _images(config: Config, templates: dict[str, str]) -> dict[str, Image]:
    """Kolla's images, each refined by its entry under `images:` if any, then the images
    declared there that Kolla has not."""
    images = {}
    for name, template in templates.items():
        own = config.images.get(name)
        if own is not None and own.parent is not None:
            raise InputError(config.path, f"images.{name}.parent: a Kolla image's parent "
                             "comes from its template's FROM line", image=name,
                             fix="remove `parent:` (or change the FROM line with "
                             "kolla.template_overrides)")
        if own is not None and own.template is not None:
            raise InputError(config.path, f"images.{name}.template: a Kolla image's template "
                             f"is {template}", image=name,
                             fix="remove `template:`; change templates with "
                             "kolla.template_overrides")
        images[name] = named_image(replace(own or Image(), template=template), name)
    for name, image in config.images.items():
        images.setdefault(name, image)
    return images


def _kolla_options(config: Config) -> Any:
    """kolla-build's options, parsed by kolla's own code: its defaults, then the
    kolla-build.conf named by `kolla.config_file`, then `kolla.options`."""
    from kolla.common import config as kolla_config
    from oslo_config import cfg

    source = config.kolla
    assert source is not None
    for option in source.options:
        if option.replace("-", "_") in FROM_SETTINGS:
            setting = FROM_SETTINGS[option.replace("-", "_")]
            raise InputError(config.path, f"kolla.options.{option}: set by settings.{setting}",
                             fix=f"set `settings.{setting}` instead (kolla's `namespace` "
                             "is `registry/namespace`)")
    files = []
    if source.config_file:
        path = config.source_path(source.config_file)
        if not path.is_file():
            raise InputError(config.path, f"kolla.config_file: {path} does not exist",
                             fix="correct the path (relative to the directory of images.yaml)")
        files.append(str(path))
    conf = cfg.ConfigOpts()
    with tempfile.TemporaryDirectory(prefix="imagebake-kolla-") as tmp:
        if source.options:
            options_file = Path(tmp) / "options.conf"
            options_file.write_text(_ini(source.options), encoding="utf-8")
            files.append(str(options_file))
        try:
            kolla_config.parse(conf, ["--base", source.base], prog="kolla-build",
                               default_config_files=files)
        except (cfg.Error, ValueError) as err:
            raise InputError(config.path, f"kolla: kolla-build's options refuse it: {err}",
                             fix="correct kolla.base, kolla.options or kolla.config_file") \
                from None
        except SystemExit:  # oslo prints the problem (e.g. an invalid --base choice) and exits
            raise InputError(config.path, f"kolla.base: {source.base!r} is not a base "
                             "kolla-build knows", fix="use one of: "
                             + ", ".join(kolla_config.BASE_OS_DISTRO)) from None
        for option in source.options:
            try:
                conf[option.replace("-", "_")]
            except cfg.NoSuchOptError:
                raise InputError(config.path, f"kolla.options.{option}: kolla-build has no "
                                 "such option", fix="correct its name (see `kolla-build "
                                 "--help`)") from None
        return conf


def _ini(options: dict[str, Any]) -> str:
    def word(value: Any) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, list):
            return ",".join(word(v) for v in value)
        return str(value)
    return "[DEFAULT]\n" + "".join(f"{k.replace('-', '_')} = {word(v)}\n"
                                   for k, v in options.items())


def template_values(config: Config, conf: Any) -> dict[str, Any]:
    """What kolla-build passes to every template (KollaWorker.create_dockerfiles), with
    the image reference's parts from settings; `image_name` and `tag` come per image."""
    from kolla import version
    from kolla.common import config as kolla_config

    settings = config.settings
    package_type, package_manager = {"rocky": ("rpm", "dnf")}.get(conf.base, ("deb", "apt"))
    return {
        "base_distro": conf.base,
        "base_image": conf.base_image,
        "base_distro_tag": conf.base_tag,
        "base_arch": conf.base_arch,
        "repos_yaml": conf.repos_yaml,
        "use_dumb_init": conf.use_dumb_init,
        "base_package_type": conf.base_package_type or package_type,
        "debian_arch": {"aarch64": "arm64", "x86_64": "amd64"}.get(conf.base_arch,
                                                                    conf.base_arch),
        "docker_healthchecks": conf.docker_healthchecks,
        "supported_distro_name": kolla_config.DISTRO_PRETTY_NAME.get(conf.base),
        "image_prefix": settings.prefix,
        "namespace": "/".join(p for p in (settings.registry, settings.namespace) if p),
        "openstack_release": conf.openstack_release,
        "openstack_release_codename": conf.openstack_release_codename,
        "openstack_branch": conf.openstack_branch,
        "openstack_branch_slashed": conf.openstack_branch_slashed,
        "maintainer": conf.maintainer,
        "kolla_version": version.git_info or version.version_info.cached_version_string(),
        "users": _users(conf),
        "distro_package_manager": conf.distro_package_manager or package_manager,
        "rpm_setup": _rpm_setup(conf),
        "clean_package_cache": conf.clean_package_cache,
        "patches_path": conf.patches_path,
        "env": dict(os.environ),
    }


def _users(conf: Any) -> dict[str, dict[str, Any]]:
    """Every `<name>-user` section, kolla's own and the config file's: uid, gid, group."""
    from kolla.common import config as kolla_config

    sections = {s for s in conf.list_all_sections() if s.endswith("-user")}
    for section in sections - set(conf):
        conf.register_opts(kolla_config.get_user_opts(None, None, group=section[:-5]),
                           group=section)
    names = sections | {name for name, _ in kolla_config.gen_all_user_opts()}
    return {name[:-5]: {"uid": conf[name].uid, "gid": conf[name].gid,
                        "group": conf[name].group} for name in names}


def _rpm_setup(conf: Any) -> list[str]:
    wanted = [repo for repo in conf.rpm_setup_config if repo is not None]
    if not wanted:
        return []
    from kolla.image.kolla_worker import KollaWorker  # heavy: only when it is needed

    return KollaWorker.build_rpm_setup(None, wanted)


def _unbuildable(conf: Any, source: Any) -> list[str]:
    """kolla's unbuildable images for this base and arch, as exclude patterns."""
    if source.enable_unbuildable:
        return []
    from kolla.image.unbuildable import UNBUILDABLE_IMAGES

    element = rf"({conf.base}|{conf.base_arch})"
    tag_re = re.compile(rf"^{element}(\+{element})*$")
    names = sorted({name for key, names in UNBUILDABLE_IMAGES.items() if tag_re.match(key)
                    for name in names})
    return [f"^{re.escape(name)}$" for name in names]


def _profiles(conf: Any) -> dict[str, list[str]]:
    return {name: list(conf.profiles[name]) for name in conf.profiles}


def _with_pip_args(text: str, conf: Any) -> str:
    """kolla-build's `ARG PIP_INDEX_URL` (and friends) after the first FROM, when set."""
    args = [f"ARG {name}" for name, value in (
        ("PIP_INDEX_URL", conf.pip_index_url), ("PIP_TRUSTED_HOST", conf.pip_trusted_host),
        ("PIP_EXTRA_INDEX_URL", conf.pip_extra_index_url)) if value]
    if not args:
        return text
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if re.match(r"^FROM\s", line, re.IGNORECASE):
            lines[index + 1:index + 1] = args
            break
    return "\n".join(lines)


def _parent(config: Config, name: str, text: str) -> str | None:
    """The image of the tree that the first FROM names; None for a root (FROM a distro).
    A FROM that names a tree image under another reference says which setting differs."""
    found = render.first_from(text)
    if found is None:
        raise InputError(config.path, f"Kolla's template for '{name}' renders no FROM line",
                         image=name, fix="correct kolla.template_overrides")
    by_reference = {config.reference(other): other for other in config.images}
    if found in by_reference:
        return by_reference[found]
    namespace, _, last = found.rpartition("/")
    repository, _, tag = last.partition(":")
    prefix = config.settings.prefix
    parent = repository[len(prefix):] if repository.startswith(prefix) else None
    if namespace and parent in config.images:
        raise InputError(config.path, f"Kolla's template for '{name}' renders FROM {found!r}, "
                         f"which is not image '{parent}' of this tree "
                         f"({config.reference(parent)})", image=name,
                         fix=_which_setting(config, namespace, tag))
    return None


def _which_setting(config: Config, namespace: str, tag: str) -> str:
    """Which settings make a FROM line's namespace or tag differ from the tree's."""
    if not tag:
        return "make the template's FROM end with `:{{ tag }}`"
    if tag != config.settings.tag:
        return (f"set settings.tag to {tag!r} (templates see it as `tag`), or make the "
                "template's FROM use `{{ tag }}`")
    return (f"set settings.registry and settings.namespace so that kolla's `namespace` "
            f"(registry/namespace) is {namespace!r}, or begin the template with "
            "`FROM {{ namespace }}/{{ image_prefix }}<parent>:{{ tag }}`")
