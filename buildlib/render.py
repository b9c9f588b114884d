"""Render each image's Dockerfile from its Jinja2 template and gather its build context."""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import importlib
import re
import shutil
import sys
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import jinja2.sandbox

from buildlib import dockerfile, template_errors
from buildlib.config import Config
from buildlib.errors import InputError
from buildlib.graph import Graph
from buildlib.tree_files import context_file_digest, files_under, holds

TEMPLATE_SUFFIX = ".j2"
PARENT_PLACEHOLDER = "{parent}"


@dataclass(frozen=True)
class Context:
    """What one `buildah bud` sees: the Dockerfile text and the files of its context."""

    name: str
    dockerfile: str
    files: dict[str, Path]  # each file's path inside the context -> its source on disk
    # (a folder there is an empty folder, e.g. kolla-build's `patches/` of an image with none)
    template: Path
    fetches: dict[str, str] = field(default_factory=dict)  # path -> what a build fetches first
    follows: tuple[Path, ...] = ()  # folders outside the tree that context files are made of
    failures: dict[str, str] = field(default_factory=dict)  # path -> why its source failed
    digests: dict[str, str] = field(default_factory=dict)  # path -> its digest, known already
    # the ONBUILD instructions of the image it is built on, which buildah runs first
    triggers: tuple[dockerfile.Instruction, ...] = ()
    target: str | None = None  # the stage it builds (`target:`); None: the last

    def file_digests(self) -> dict[str, str]:
        """Each context file the build can read (its path inside the context) -> sha256 of
        its mode and bytes. A file no COPY, ADD or bind mount can name changes no byte of
        the image, so it is no part of the key."""
        digests = {}
        read = dockerfile.context_read(self.dockerfile, self.triggers, self.target)
        for inner, source in sorted(self.files.items()):
            if not read(inner):
                continue
            # (a source's archive: read again only when it changed)
            digests[inner] = self.digests.get(inner) or context_file_digest(source)
        return digests

    def dockerfile_digest(self, parent_reference: str | None = None) -> str:
        """sha256 of the Dockerfile as buildah reads it (comments, blank lines and line
        continuations are no part of it), its first FROM naming the parent by a
        placeholder: the parent is keyed by its image ID, and where it is stored
        (registry, tag) is no part of what the child is made of (nor are the ONBUILD
        triggers it holds: its ID covers them)."""
        parsed = dockerfile.read(self.dockerfile)
        if parent_reference:
            parsed = dockerfile.first_from_renamed(self.dockerfile, parent_reference,
                                                   PARENT_PLACEHOLDER)[1]
        return hashlib.sha256(parsed.canonical().encode()).hexdigest()

    def from_parent(self, parent_reference: str | None, name: str) -> Context:
        """This context with its first FROM naming the parent (`parent_reference` in the
        template) as `name` instead."""
        if not parent_reference:
            return self
        text = dockerfile.first_from_renamed(self.dockerfile, parent_reference, name)[0]
        return replace(self, dockerfile=text)

    def as_built(self, labels: Mapping[str, str]) -> Context:
        """This context with the Dockerfile a build writes (`as_built`)."""
        return replace(self, dockerfile=dockerfile.as_built(self.dockerfile, labels,
                                                            self.target))

    def missing_sources(self) -> list[str]:
        """What the Dockerfile's COPY/ADD take from the context but the context lacks,
        e.g. `ADD nova-base-archive /nova-base-source` (as `ADD 'nova-base-archive'`)."""
        present = {".", *self.fetches, *self.failures}
        for inner in self.files:  # every file, and each folder on its way
            parts = Path(inner).parts
            present.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
        instructions = dockerfile.built_instructions(self.dockerfile, target=self.target,
                                                     triggers=self.triggers)
        return [f"{keyword} {path!r}" for keyword, path in dockerfile.context_sources(instructions)
                if not (fnmatch.filter(present, path) if dockerfile.is_glob(path)
                        else path in present)]

    def write(self, dockerfile_path: Path, context_dir: Path) -> None:
        """Write the Dockerfile and a fresh copy of the context (links copied as the files
        they name, as they were hashed), keeping file modes."""
        if context_dir.exists():
            shutil.rmtree(context_dir)
        context_dir.mkdir(parents=True)
        for inner, source in self.files.items():
            target = context_dir / inner
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                target.mkdir()
                shutil.copymode(source, target)
            else:
                shutil.copy2(source, target)
        dockerfile_path.write_text(self.dockerfile, encoding="utf-8")


def environment(config: Config) -> jinja2.Environment:
    """The example tree's environment: undefined variables are errors, files keep their
    last newline. A Kolla tree renders as kolla-build does: sandboxed, undefined variables
    empty, the final newline dropped. Both get the filters and globals of `jinja:`."""
    options: dict[str, Any] = {
        "loader": jinja2.FileSystemLoader([str(d) for d in config.template_dirs]),
        "autoescape": False,
        "auto_reload": False,  # a run renders each template as it was when first loaded
    }
    if config.kolla is not None:
        # Kolla's ~190 templates take a second to compile: keep the compiled code between runs.
        cache_dir = config.build_dir / "jinja-cache"
        with contextlib.suppress(OSError):
            cache_dir.mkdir(parents=True, exist_ok=True)
            options["bytecode_cache"] = jinja2.FileSystemBytecodeCache(str(cache_dir))
        env: jinja2.Environment = jinja2.sandbox.SandboxedEnvironment(**options)
    else:
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                 **options)
    env.filters.update(_imported(config, "filters", config.jinja.filters))
    env.globals.update(_imported(config, "globals", config.jinja.globals))
    return env


def _imported(config: Config, kind: str, paths: dict[str, str]) -> dict[str, Any]:
    """Each `name: module:attr` imported, modules beside images.yaml first."""
    found = {}
    for name, path in paths.items():
        module_name, attr = path.split(":")
        try:
            with _importable_from(config.root):
                module = importlib.import_module(module_name)
            found[name] = getattr(module, attr)
        except ImportError as err:
            fix = ("install it with `pip install .[kolla]`" if module_name.startswith("kolla.")
                   else f"install the package that provides {module_name}, put "
                   f"{module_name}.py beside images.yaml, or correct the path")
            raise InputError(config.path, f"jinja.{kind}.{name}: cannot import {module_name} "
                             f"({err})", fix=fix) from None
        except AttributeError:
            raise InputError(config.path, f"jinja.{kind}.{name}: {module_name} has no "
                             f"'{attr}'", fix="correct the name after the colon") from None
    return found


@contextlib.contextmanager
def _importable_from(folder: Path) -> Iterator[None]:
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))


def template_vars(config: Config, graph: Graph | None, name: str,
                  settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Global vars, then the image's vars, then the names every template sees (settings
    under `settings`). Without a graph (Kolla's tree, whose parents come from the rendered
    FROM lines) there is no parent to name."""
    image = config.images[name]
    parent = graph.parents[name] if graph is not None else None
    values = {
        **config.vars,
        **image.vars,
        "settings": settings if settings is not None else asdict(config.settings),
        "image_name": name,
        "image": config.reference(name),
        "tag": config.settings.tag,
    }
    if graph is not None:
        values["parent_name"] = parent
        values["parent_image"] = config.reference(parent) if parent else None
    return values


class Renderer:
    """Renders the images of one config; templates compile once, shared by all images."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.env = environment(config)
        self.settings = asdict(config.settings)
        self.override = _override_template(config, self.env)
        self.paths: dict[str, Path] = {}  # template name -> its file, as the loader found it

    def render(self, name: str, graph: Graph | None = None) -> str:
        """The rendered Dockerfile of one image; any template problem is an InputError."""
        config = self.config
        try:
            values = template_vars(config, graph, name, self.settings)
            template = self.env.get_template(config.images[name].template_name)
            if self.override is not None:
                values["parent_template"] = template
                template = self.override
            return template.render(values)
        except jinja2.TemplateNotFound as err:
            searched = ", ".join(str(d) for d in config.template_dirs)
            raise InputError(config.path, f"template '{err.name}' not found (searched "
                             f"{searched})", image=name, fix=f"create "
                             f"{config.template_dirs[0] / err.name} or set `template:` for "
                             "this image") from None
        except jinja2.TemplateSyntaxError as err:
            raise template_errors.syntax_error(config.path, name, err) from None
        except jinja2.UndefinedError as err:
            raise template_errors.undefined_error(config.path, config.template_dirs, name,
                                                  err) from None
        except jinja2.TemplateError as err:
            raise InputError(config.path, f"template error: {err}", image=name,
                             fix="correct the template") from None
        except Exception as err:  # e.g. {{ 1 // 0 }}: a user's template, not our bug
            where = template_errors.where_in_template(config.template_dirs)
            raise InputError(config.path, f"template {where}: "
                             f"{type(err).__name__}: {err}", image=name,
                             fix="correct the expression in the template") from None

    def template_path(self, name: str) -> Path:
        """Where the image's template is (found as the loader finds it, not compiled)."""
        template_name = self.config.images[name].template_name
        if template_name not in self.paths:
            try:
                _, filename, _ = self.env.loader.get_source(self.env, template_name)
            except jinja2.TemplateNotFound:
                self.render(name)  # raises the InputError that names the folders searched
                raise
            self.paths[template_name] = Path(filename or "")
        return self.paths[template_name]


def templates_used(config: Config) -> set[Path]:
    """Each image's template and every template it extends, imports or includes, where the
    loader finds them (a name computed while rendering: every template it could find), and
    kolla's override files. A template that cannot be found or parsed still counts."""
    env = environment(config)
    found = {config.source_path(p) for p in (config.kolla.template_overrides
                                             if config.kolla is not None else [])}
    queue = [image.template_name for image in config.images.values()]
    seen: set[str] = set()
    while queue:
        name = queue.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            source, filename, _ = env.loader.get_source(env, name)
            found.add(Path(filename or name))
            referenced = list(jinja2.meta.find_referenced_templates(env.parse(source)))
        except jinja2.TemplateError:  # not found, or a syntax error: the build says which
            continue
        if None in referenced:
            found.update(path for folder in config.template_dirs
                         for path in folder.rglob(f"*{TEMPLATE_SUFFIX}"))
        queue += [ref for ref in referenced if ref is not None]
    return found


def _override_template(config: Config, env: jinja2.Environment) -> jinja2.Template | None:
    """kolla-build --template-override: the files joined into one template (the first
    whole, the others without their `extends` line), which extends `parent_template`."""
    paths = config.kolla.template_overrides if config.kolla is not None else []
    if not paths:
        return None
    texts = []
    for index, relative in enumerate(paths):
        path = config.source_path(relative)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise InputError(config.path, f"kolla.template_overrides: cannot read {path}: "
                             f"{err.strerror}", fix="correct the path (relative to the "
                             "directory of images.yaml)") from None
        texts.append(text if index == 0 else re.sub(r".*\{\%.*extends.*\n", "", text))
    name = Path(paths[0]).name
    overrides = env.overlay(loader=jinja2.DictLoader({name: "".join(texts)}))
    try:
        return overrides.get_template(name)
    except jinja2.TemplateSyntaxError as err:
        raise InputError(config.path, f"template syntax error in {paths[0]} (and the other "
                         f"kolla.template_overrides) at line {err.lineno}: {err.message}",
                         fix="correct the override file") from None


def render_all(config: Config, graph: Graph,
               texts: dict[str, str] | None = None) -> dict[str, Context]:
    """Every image's build context; `texts` are Dockerfiles already rendered (Kolla's)."""
    renderer, texts = Renderer(config), texts or {}
    folders = _Folders(config)
    contexts = {}
    for name in graph.order():
        text = texts[name] if name in texts else renderer.render(name, graph)
        template_path = renderer.template_path(name)
        _check_from(config, graph, name, text, template_path)
        contexts[name] = Context(name, text, folders.context_files(name, template_path),
                                 template_path)
    return contexts


class _Folders:
    """The files of each template folder, listed once however many images share it."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.build_dir = config.build_dir.resolve()
        self.listed: dict[tuple[Path, frozenset[str]], dict[str, Path]] = {}

    def context_files(self, name: str, template_path: Path) -> dict[str, Path]:
        """The files beside the template (templates excluded), then the image's `files:`."""
        config = self.config
        folder = template_path.parent
        declared = config.images[name].files
        if holds(folder.resolve(), self.build_dir):
            raise InputError(config.path, f"the template's folder {folder} holds build_dir",
                             image=name, fix="give the image a template folder of its own")
        key = (folder, frozenset(declared))
        if key not in self.listed:
            self.listed[key] = files_under(folder, declared, config_path=config.path, image=name)
        files = {inner: path for inner, path in self.listed[key].items()
                 if not path.name.endswith(TEMPLATE_SUFFIX) and path != template_path}
        for inner, source in declared.items():
            path = config.source_path(source)
            if not path.exists():
                raise InputError(config.path, f"context file '{inner}': {path} does not "
                                 "exist", image=name, fix="correct the path under `files:` "
                                 "(relative paths start at the directory of images.yaml)")
            if Path(inner).is_absolute() or ".." in Path(inner).parts:
                raise InputError(config.path, f"context file name '{inner}' leaves the "
                                 "context", image=name,
                                 fix="use a relative name inside the build context")
            under = files_under(path, config_path=config.path, image=name) if path.is_dir() else {}
            files.update({f"{inner}/{rel}": p for rel, p in under.items()})
            if not under:  # a file, or an empty folder (made empty in the context)
                files[inner] = path
        return files


def _check_from(config: Config, graph: Graph, name: str, text: str, template: Path) -> None:
    _check_reading(config, name, text, template)
    found = dockerfile.first_from(text)
    parent = graph.parents[name]
    if parent is None:
        if found is None:
            raise InputError(config.path, f"rendered {template} does not begin with FROM",
                             image=name, fix="start a root image's template with a FROM line")
        return
    expected = config.reference(parent)
    if found != expected:
        raise InputError(config.path, f"rendered {template} starts FROM {found!r}, "
                         f"not its parent '{parent}' ({expected})", image=name,
                         fix="begin the template with `FROM {{ parent_image }}`"
                         if config.kolla is None else "begin the template with `FROM "
                         "{{ namespace }}/{{ image_prefix }}" + parent + ":{{ tag }}`")


def _check_reading(config: Config, name: str, text: str, template: Path) -> None:
    """The Dockerfile is one buildah 1.28 reads to its end: no instruction it fails on."""
    where = f"rendered {template}"
    try:
        dockerfile.read(text)
        dockerfile.sources_in(text)  # each source's quotes and variables as buildah takes them
    except dockerfile.DockerfileError as err:
        raise InputError(config.path, f"{where}: buildah cannot read it: {err}", image=name,
                         fix="correct the template") from None
    for instruction in dockerfile.unknown_instructions(text):
        raise InputError(config.path, f"{where} line {instruction.start}: buildah 1.28 knows "
                         f"no instruction {instruction.keyword.upper()!r}", image=name,
                         fix="correct the line; buildah 1.28 reads no here-documents "
                         "(`<<EOF`): write the lines into a context file and COPY it")
