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
import datetime
import importlib.util
import logging
import os
import pickle
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from buildlib import dockerfile as dockerfile_reading
from buildlib import kolla_sources, render
from buildlib.config import Config, Image, Jinja, named_image
from buildlib.errors import InputError

TEMPLATE = "Dockerfile.j2"
# kolla-build options that imagebake's settings decide, so that references agree.
FROM_SETTINGS = {"registry": "registry", "namespace": "namespace", "tag": "tag",
                 "image_name_prefix": "prefix"}
INSTALL_FIX = "install it with `pip install .[kolla]` (or `pip install kolla`)"
PROBE = "imagebake-probe"
CAPTURE = "imagebake_capture"
# kolla-build labels an image with the git commit of the folder kolla is installed in;
# that follows this machine's checkout, not the image, so it is left out.
MACHINE_LABELS = ("org.opencontainers.image.revision", "org.opencontainers.image.source")
CREATED_LABEL = "org.opencontainers.image.created"
# kolla-build options imagebake does not follow, and what to use instead where there is one.
NOT_USED = {
    **dict.fromkeys(("engine", "podman_base_url", "buildkit", "buildkit_builder", "cache",
                     "debug", "quiet", "keep", "logs_dir", "work_dir", "list_images",
                     "list_dependencies", "save_dependency", "summary", "summary_json_file",
                     "template_only", "squash", "squash_cleanup", "squash_tmp_dir",
                     "network_mode", "retries", "allowed_to_fail", "skip_existing",
                     "skip_parents"), "imagebake does not use it"),
    "push": "use `imagebake push`", "push_threads": "imagebake does not use it",
    "threads": "use `-n N` or settings.jobs", "pull": "imagebake pulls a base only when "
    "storage lacks it", "timeout": "imagebake's downloads keep their own deadline",
    "platform": "use settings.platforms", "format": "use settings.format",
    "regex": "use `images=`", "profile": "use `profile=`",
    "enable_unbuildable": "use kolla.enable_unbuildable",
    "template_override": "use kolla.template_overrides",
}
SOURCE_OPTIONS = {"type", "location", "reference", "enabled", "sha256", "version"}
# kolla-build options that put files into contexts, followed as its KollaWorker does (the
# same in 21.3.0 and 23.0.0): `copy_apt_files` copies these into base's folder, under these
# names; `setup_working_dir` copies each `docker_dir` over its docker/ folder;
# `create_patch_files` gives every image a `patches/` folder.
APT_FILES = {"apt_sources_list": "sources.list", "apt_preferences": "apt_preferences"}
PATH_FIX = ("correct it in kolla-build.conf or kolla.options (a relative path starts at the "
            "directory of images.yaml)")


@dataclass(frozen=True)
class Probe:
    """What the installed kolla's own `create_dockerfiles` gives every template, learnt by
    letting it render one probe template: the values, the filters and functions (as
    import paths), and the lines it inserts after the first FROM (`ARG PIP_INDEX_URL`...)."""

    values: dict[str, Any]
    filters: dict[str, str]
    globals: dict[str, str]
    after_from: list[str]

    def finish(self, text: str) -> str:
        """A rendered Dockerfile as kolla-build writes it: the lines after its first FROM."""
        if not self.after_from:
            return text
        lines = text.split("\n")
        for index, line in enumerate(lines):
            if re.match(r"^FROM\s", line, re.IGNORECASE):
                lines[index + 1:index + 1] = self.after_from
                break
        return "\n".join(lines)


def expand(config: Config
           ) -> tuple[Config, dict[str, str], dict[str, kolla_sources.Sourced]]:
    """The config with Kolla's images, variables, filters, profiles, exclusions, labels,
    build args and source archives; each image's rendered Dockerfile (which kolla-build
    writes with --template-only); and what each image's sources would fetch."""
    source = config.kolla
    assert source is not None
    _require_kolla(config)
    conf = _kolla_options(config)
    with _quiet_kolla():
        worker = _worker(config, conf)
        layers = [_docker_dir(config, worker), *_extra_docker_dirs(config, conf)]
        probe = _probe(config, worker)
    templates = _find_templates(config, layers)
    images = _images(config, templates)
    expanded = replace(
        config,
        # the loader finds a template, or a file it includes, where kolla-build's merged
        # working dir has it: in the last docker_dir that holds it
        settings=replace(config.settings, templates=[str(d) for d in reversed(layers)],
                         excludes=config.settings.excludes + _unbuildable(conf, source)),
        vars={**probe.values, **config.vars},
        images=images,
        profiles={**_profiles(conf), **config.profiles},
        jinja=Jinja(filters={**probe.filters, **config.jinja.filters},
                    globals={**probe.globals, **config.jinja.globals}),
    )
    renderer = render.Renderer(expanded)
    with _repos_read_once():
        texts = {name: probe.finish(renderer.render(name)) for name in images}
    parents = {name: _parent(expanded, name, texts[name]) for name in images}
    with _quiet_kolla():
        kolla_images = _kolla_images(config, worker, templates)
    for warning in _not_used(config, conf, set(templates)):
        print(f"warning: {warning}", file=sys.stderr)
    args = _build_args(conf)
    made = {name: _as_kolla_build_makes(expanded, conf, image, texts[name], args,
                                        _context_files(config, conf, layers, name,
                                                       templates[name]))
            for name, image in kolla_images.items()}
    images = {name: named_image(replace(image, parent=parents[name], labels=made[name].labels,
                                        args=made[name].args, files=made[name].files), name)
              if name in made else image for name, image in images.items()}
    return replace(expanded, images=images), texts, \
        {name: made[name].sourced for name in made}


@contextlib.contextmanager
def _quiet_kolla() -> Iterator[None]:
    """kolla logs what it finds at INFO (e.g. its templates folder): not ours to print."""
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _worker(config: Config, conf: Any) -> Any:
    """kolla-build's own KollaWorker for these options, as `--template-only` makes it (no
    container engine needed), with the image reference's parts from settings."""
    from kolla.image.kolla_worker import KollaWorker

    settings = config.settings
    for option, value in (("registry", settings.registry), ("namespace", settings.namespace),
                          ("tag", settings.tag), ("image_name_prefix", settings.prefix)):
        conf.set_override(option, value)
    conf.set_override("template_override", None)  # kolla.template_overrides: ours to render
    with contextlib.suppress(Exception):  # buildah builds: kolla's engine client stays unused
        conf.set_override("engine", "docker")
    try:
        return KollaWorker(conf)
    except Exception as err:  # kolla's own exceptions, e.g. KollaDirNotFoundException
        raise InputError(config.path, f"kolla: kolla-build cannot start: "
                         f"{type(err).__name__}: {err}",
                         fix="correct kolla.options or kolla.config_file, or reinstall "
                         "kolla") from None


def _probe(config: Config, worker: Any) -> Probe:
    """Let kolla's `create_dockerfiles` render one template that records what it sees."""
    import jinja2

    captured: dict[str, Any] = {}

    @jinja2.pass_context
    def capture(context: Any) -> str:
        shadowed = context.environment.globals
        captured.update({key: value for key, value in context.get_all().items()
                         if key not in shadowed or shadowed[key] is not value})
        return ""

    filters, methods = worker._get_filters(), worker._get_methods()
    with tempfile.TemporaryDirectory(prefix="imagebake-kolla-") as tmp:
        folder = Path(tmp) / PROBE
        folder.mkdir()
        (folder / TEMPLATE).write_text(f"FROM {PROBE}\n{{{{ {CAPTURE}() }}}}END",
                                       encoding="utf-8")
        worker.working_dir, worker.docker_build_paths = tmp, [str(folder)]
        worker._get_methods = lambda: {**methods, CAPTURE: capture}
        try:
            worker.create_dockerfiles()
        finally:
            del worker._get_methods
        written = (folder / "Dockerfile").read_text(encoding="utf-8").split("\n")
    values = {key: value for key, value in captured.items() if key != "image_name"}
    values["env"] = dict(values.get("env", os.environ))
    if "build_date" in values:  # kolla-build: today's date; here the build timestamp's
        values["build_date"] = _utc(config.timestamp).strftime("%Y%m%d")
    return Probe(values=values, filters=_import_paths(filters),
                 globals=_import_paths(methods), after_from=written[1:-1])


def _import_paths(functions: dict[str, Any]) -> dict[str, str]:
    return {name: f"{function.__module__}:{function.__qualname__}"
            for name, function in functions.items()}


def _utc(timestamp: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC)


def _kolla_images(config: Config, worker: Any, templates: dict[str, str]) -> dict[str, Any]:
    """kolla-build's own Image of each template (`build_image_list`): its source, plugins,
    additions and labels as kolla reads them from its configuration."""
    from oslo_config import cfg

    with tempfile.TemporaryDirectory(prefix="imagebake-kolla-") as tmp:
        paths = []
        for name in templates:  # kolla reads only the FROM line of each
            (Path(tmp) / name).mkdir()
            (Path(tmp) / name / "Dockerfile").write_text(f"FROM {PROBE}\n", encoding="utf-8")
            paths.append(str(Path(tmp) / name))
        worker.docker_build_paths, worker.images = paths, []
        try:
            worker.build_image_list()
        except (cfg.Error, ValueError) as err:  # e.g. `type = svn` in a source section
            raise InputError(config.path, f"kolla: kolla-build's configuration refuses it: "
                             f"{err}", fix="correct the section of kolla-build.conf it "
                             "names") from None
    return {image.name: image for image in worker.images}


@dataclass(frozen=True)
class Made:
    """What kolla-build gives one image's build besides its Dockerfile."""

    labels: dict[str, Any]
    args: dict[str, Any]
    files: dict[str, str]
    sourced: kolla_sources.Sourced


def _build_args(conf: Any) -> dict[str, str]:
    """kolla-build's build args (its own `update_buildargs`): `build_args`, the proxy
    variables of the environment, the pip index options."""
    from kolla.image.tasks import BuildTask

    return BuildTask.update_buildargs(SimpleNamespace(conf=conf)) or {}


def _as_kolla_build_makes(config: Config, conf: Any, image: Any, dockerfile: str,
                          args: dict[str, str], context: dict[str, str]) -> Made:
    """The labels and build args kolla-build gives the image's build, the archives of
    its sources its Dockerfile reads and the `context` files its options add, under
    images.yaml's own."""
    settings, own = config.settings, config.images[image.name]
    wanted = {path for _, path in dockerfile_reading.sources_in(dockerfile)} \
        - {f"{name}-archive" for name in own.sources}  # images.yaml's `sources:` win
    sourced = kolla_sources.sourced(config, image, wanted, _debian_arch(conf))
    return Made(labels={**_kolla_labels(config, image), **settings.labels, **own.labels},
                args={**args, **settings.args, **own.args},
                files={**context,
                       **{inner: str(path) for inner, path in sourced.files.items()},
                       **own.files},
                sourced=sourced)


def _debian_arch(conf: Any) -> str:
    """kolla's arch name of a `sha256` pin (its option in newer releases)."""
    from oslo_config import cfg

    try:
        return conf.debian_arch
    except cfg.NoSuchOptError:  # an older release: derived from base_arch as kolla does
        return "arm64" if conf.base_arch == "aarch64" else "amd64"


def _kolla_labels(config: Config, image: Any) -> dict[str, str]:
    """The labels kolla-build sets on an image (none in releases that set none), with
    the build timestamp for its build time."""
    if not hasattr(image, "labels"):
        return {}
    labels = {key: value for key, value in image.labels.items() if key not in MACHINE_LABELS}
    created = _utc(config.timestamp)
    if CREATED_LABEL in labels:
        labels[CREATED_LABEL] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    labels["build-date"] = created.strftime("%Y%m%d")  # kolla-build: when the build starts
    return labels


@contextlib.contextmanager
def _repos_read_once() -> Iterator[None]:
    """kolla's `handle_repos` parses repos.yaml (pure-Python YAML) at every call: 480
    parses, 8 s for one tree. While we render, its YAML reader reads each file once and
    hands out a fresh copy of it per call; kolla's own logic is untouched."""
    from kolla.template import methods

    original = methods.yaml
    methods.yaml = _YamlReadOnce(original)
    try:
        yield
    finally:
        methods.yaml = original


class _YamlReadOnce:
    """The yaml module, with `safe_load` of a named file parsed once (a fresh copy each)."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self.parsed: dict[str, bytes] = {}

    def safe_load(self, stream: Any) -> Any:
        name = getattr(stream, "name", None)
        if not isinstance(name, str):
            return self.module.safe_load(stream)
        if name not in self.parsed:
            self.parsed[name] = pickle.dumps(self.module.safe_load(stream))
        return pickle.loads(self.parsed[name])

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.module, attribute)


def _require_kolla(config: Config) -> None:
    if importlib.util.find_spec("kolla") is None:
        raise InputError(config.path, "`kolla:` needs the `kolla` Python package, which is "
                         "not installed", fix=INSTALL_FIX)


def _docker_dir(config: Config, worker: Any) -> Path:
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


def _extra_docker_dirs(config: Config, conf: Any) -> list[Path]:
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


def _find_templates(config: Config, layers: list[Path]) -> dict[str, str]:
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


def _context_files(config: Config, conf: Any, layers: list[Path], name: str,
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
            kolla_config.parse(conf, ["--base", source.base, "--template-only"],
                               prog="kolla-build",
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


def _not_used(config: Config, conf: Any, images: set[str]) -> list[str]:
    """What kolla-build.conf and kolla.options say that imagebake does not follow: options
    it leaves to kolla-build, options kolla-build does not know, sections naming no image."""
    import configparser

    source = config.kolla
    assert source is not None
    said: list[tuple[str, str, str]] = [  # (where, section, option)
        ("images.yaml kolla.options", "DEFAULT", option.replace("-", "_"))
        for option in source.options]
    if source.config_file:
        path = config.source_path(source.config_file)
        parser = configparser.ConfigParser(interpolation=None, strict=False,
                                           default_section="\0")
        try:
            parser.read(path, encoding="utf-8")
        except configparser.Error:
            return []  # oslo read it; what it refused was said there
        said += [(str(path), section, option) for section in parser.sections()
                 for option in parser[section]]
    warnings = []
    for where, section, option in said:
        problem = _option_problem(conf, images, section, option)
        if problem:
            place = f"[{section}] {option}" if option else f"[{section}]"
            warnings.append(f"{where}: {place}: {problem}")
    return list(dict.fromkeys(warnings))


def _option_problem(conf: Any, images: set[str], section: str, option: str) -> str | None:
    if section == "DEFAULT":
        if option in NOT_USED:
            return NOT_USED[option]
        if option in FROM_SETTINGS:
            return f"settings.{FROM_SETTINGS[option]} decides it"
        return None if option in conf else "kolla-build has no such option"
    if section == "profiles" or section.endswith("-user"):
        return None
    if section in images or any(section.startswith(f"{image}-{kind}-")
                                for image in images for kind in ("plugin", "additions")):
        return None if option in SOURCE_OPTIONS else (
            "not a source option (" + ", ".join(sorted(SOURCE_OPTIONS)) + ")")
    return "names no image of Kolla's tree, nor a plugin or addition of one"


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


def _parent(config: Config, name: str, text: str) -> str | None:
    """The image of the tree that the first FROM names; None for a root (FROM a distro).
    A FROM that names a tree image under another reference says which setting differs."""
    found = dockerfile_reading.first_from(text)
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
