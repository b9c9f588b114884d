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
from buildlib import kolla_files, kolla_options, kolla_sources, render
from buildlib.config import Config, Image, Jinja, named_image
from buildlib.errors import InputError

INSTALL_FIX = "install it with `pip install .[kolla]` (or `pip install kolla`)"
PROBE = "imagebake-probe"
CAPTURE = "imagebake_capture"
# kolla-build labels an image with the git commit of the folder kolla is installed in;
# that follows this machine's checkout, not the image, so it is left out.
MACHINE_LABELS = ("org.opencontainers.image.revision", "org.opencontainers.image.source")
CREATED_LABEL = "org.opencontainers.image.created"


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
    conf = kolla_options.parsed(config)
    with _quiet_kolla():
        worker = _worker(config, conf)
        layers = [kolla_files.docker_dir(config, worker),
                  *kolla_files.extra_docker_dirs(config, conf)]
        probe = _probe(config, worker)
    templates = kolla_files.find_templates(config, layers)
    images = _images(config, templates)
    expanded = replace(
        config,
        # the loader finds a template, or a file it includes, where kolla-build's merged
        # working dir has it: in the last docker_dir that holds it
        settings=replace(config.settings, templates=[str(d) for d in reversed(layers)],
                         excludes=[*config.settings.excludes,
                                   *kolla_options.unbuildable(conf, source)]),
        vars={**probe.values, **config.vars},
        images=images,
        profiles={**kolla_options.profiles(conf), **config.profiles},
        jinja=Jinja(filters={**probe.filters, **config.jinja.filters},
                    globals={**probe.globals, **config.jinja.globals}),
    )
    renderer = render.Renderer(expanded)
    with _repos_read_once():
        texts = {name: probe.finish(renderer.render(name)) for name in images}
    parents = {name: _parent(expanded, name, texts[name]) for name in images}
    with _quiet_kolla():
        kolla_images = _kolla_images(config, worker, templates)
    for warning in kolla_options.not_used(config, conf, set(templates)):
        print(f"warning: {warning}", file=sys.stderr)
    args = _build_args(conf)
    made = {name: _as_kolla_build_makes(expanded, conf, image, texts[name], args,
                                        kolla_files.context_files(config, conf, layers, name,
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
        (folder / kolla_files.TEMPLATE).write_text(f"FROM {PROBE}\n{{{{ {CAPTURE}() }}}}END",
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
