"""Render each image's Dockerfile from its Jinja2 template and gather its build context."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from collections.abc import Container
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import jinja2

from buildlib.config import Config
from buildlib.errors import InputError
from buildlib.graph import Graph

TEMPLATE_SUFFIX = ".j2"
PARENT_PLACEHOLDER = "{parent}"


@dataclass(frozen=True)
class Context:
    """What one `buildah bud` sees: the Dockerfile text and the files of its context."""

    name: str
    dockerfile: str
    files: dict[str, Path]  # each file's path inside the context -> its source on disk
    template: Path

    def file_digests(self) -> dict[str, str]:
        """Each context file (its path inside the context) -> sha256 of its mode and bytes."""
        digests = {}
        for inner, source in sorted(self.files.items()):
            h = hashlib.sha256(f"{os.stat(source).st_mode & 0o7777:o}\0".encode())
            h.update(source.read_bytes())
            digests[inner] = h.hexdigest()
        return digests

    def dockerfile_digest(self, parent_reference: str | None = None) -> str:
        """sha256 of the Dockerfile, its first FROM naming the parent by a placeholder:
        the parent is keyed by its image ID, and where it is stored (registry, tag) is no
        part of what the child is made of."""
        text = self.dockerfile
        if parent_reference:
            lines = text.splitlines(keepends=True)
            first = next(i for i, line in enumerate(lines)
                         if line.lstrip().upper().startswith("FROM"))
            lines[first] = lines[first].replace(parent_reference, PARENT_PLACEHOLDER, 1)
            text = "".join(lines)
        return hashlib.sha256(text.encode()).hexdigest()

    def copied_to(self, context_dir: Path) -> Context:
        """This context as `write` copied it into context_dir."""
        return replace(self, files={inner: context_dir / inner for inner in self.files})

    def write(self, dockerfile_path: Path, context_dir: Path) -> None:
        """Write the Dockerfile and a fresh copy of the context (links copied as the files
        they name, as they were hashed), keeping file modes."""
        if context_dir.exists():
            shutil.rmtree(context_dir)
        context_dir.mkdir(parents=True)
        for inner, source in self.files.items():
            target = context_dir / inner
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        dockerfile_path.write_text(self.dockerfile, encoding="utf-8")


def environment(config: Config) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in config.template_dirs]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def template_vars(config: Config, graph: Graph, name: str,
                  settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Settings, then global vars, then the image's vars, then the image's own names."""
    image = config.images[name]
    parent = graph.parents[name]
    settings = settings if settings is not None else asdict(config.settings)
    return {
        **settings,
        "settings": settings,
        **config.vars,
        **image.vars,
        "image_name": name,
        "image": config.reference(name),
        "tag": config.settings.tag,
        "parent_name": parent,
        "parent_image": config.reference(parent) if parent else None,
    }


def render_all(config: Config, graph: Graph) -> dict[str, Context]:
    env, settings = environment(config), asdict(config.settings)
    return {name: render_image(env, config, graph, name, settings) for name in graph.order()}


def render_image(env: jinja2.Environment, config: Config, graph: Graph, name: str,
                 settings: dict[str, Any] | None = None) -> Context:
    image = config.images[name]
    try:
        template = env.get_template(image.template_name)
        text = template.render(template_vars(config, graph, name, settings))
    except jinja2.TemplateNotFound as err:
        searched = ", ".join(str(d) for d in config.template_dirs)
        raise InputError(config.path, f"template '{err.name}' not found (searched {searched})",
                         image=name, fix=f"create {config.template_dirs[0] / err.name} "
                         "or set `template:` for this image") from None
    except jinja2.TemplateSyntaxError as err:
        raise InputError(config.path, f"template syntax error in {err.filename}:{err.lineno}: "
                         f"{err.message}", image=name, fix="correct the template") from None
    except jinja2.UndefinedError as err:
        raise InputError(config.path, f"template {_where_in_template(config)}: {err.message}",
                         image=name, fix="define the variable under `vars:` (globally or for "
                         "this image) or correct its name") from None
    except jinja2.TemplateError as err:
        raise InputError(config.path, f"template error: {err}", image=name,
                         fix="correct the template") from None
    except Exception as err:  # e.g. {{ 1 // 0 }}: a user's template, not our bug
        raise InputError(config.path, f"template {_where_in_template(config)}: "
                         f"{type(err).__name__}: {err}", image=name,
                         fix="correct the expression in the template") from None
    template_path = Path(template.filename or "")
    _check_from(config, graph, name, text, template_path)
    return Context(name, text, _context_files(config, name, template_path), template_path)


def _where_in_template(config: Config) -> str:
    """file:line of the innermost template frame of the exception being handled."""
    folders = [str(d.resolve()) + os.sep for d in config.template_dirs]
    tb, where = sys.exc_info()[2], "rendering"
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith(tuple(folders)):
            where = f"{filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


def _context_files(config: Config, name: str, template_path: Path) -> dict[str, Path]:
    """The files beside the template (templates excluded), then the image's `files:`."""
    folder = template_path.parent
    declared = config.images[name].files
    if _holds(folder.resolve(), config.build_dir.resolve()):
        raise InputError(config.path, f"the template's folder {folder} holds build_dir",
                         image=name, fix="give the image a template folder of its own")
    files = {inner: path for inner, path in _files_under(config, name, folder, declared).items()
             if not path.name.endswith(TEMPLATE_SUFFIX) and path != template_path}
    for inner, source in declared.items():
        path = config.source_path(source)
        if not path.exists():
            raise InputError(config.path, f"context file '{inner}': {path} does not exist",
                             image=name, fix="correct the path under `files:` (relative "
                             "paths start at the directory of images.yaml)")
        if Path(inner).is_absolute() or ".." in Path(inner).parts:
            raise InputError(config.path, f"context file name '{inner}' leaves the context",
                             image=name, fix="use a relative name inside the build context")
        if path.is_dir():
            files.update({f"{inner}/{rel}": p
                          for rel, p in _files_under(config, name, path).items()})
        else:
            files[inner] = path
    return files


def _files_under(config: Config, name: str, folder: Path,
                 declared: Container[str] = ()) -> dict[str, Path]:
    """Every file under `folder` by its path there, but the `declared` ones. Links are
    followed when they stay inside `folder` (a linked folder's files appear under the
    link's name); a link that leaves it, dangles or loops is an input error: declare what
    it names under `files:`."""
    top = folder.resolve()
    found: dict[str, Path] = {}

    def visit(directory: Path, prefix: str, seen: frozenset[Path]) -> None:
        for entry in sorted(directory.iterdir()):
            inner = f"{prefix}{entry.name}"
            if inner in declared:  # `files:` gives it
                continue
            target = entry
            if entry.is_symlink():
                target = _link_target(config, name, folder, inner, entry)
                if not _holds(top, target):
                    raise InputError(config.path, f"{entry} links to {target}, outside "
                                     f"{folder}", image=name, fix=f"declare it under "
                                     f"`files:` (`{inner}: {target}`), or copy it here")
            if target.is_dir():
                real = target.resolve()
                if real in seen:
                    raise InputError(config.path, f"{entry} links to a folder that holds "
                                     "it: the context would never end", image=name,
                                     fix="remove the link")
                visit(target, f"{inner}/", seen | {real})
            elif target.is_file():
                found[inner] = entry

    visit(folder, "", frozenset({top}))
    return found


def _link_target(config: Config, name: str, folder: Path, inner: str, link: Path) -> Path:
    try:
        target = link.resolve(strict=True)
    except (OSError, RuntimeError):  # dangling, or a loop of links
        raise InputError(config.path, f"{link} is a broken link (to {os.readlink(link)})",
                         image=name, fix=f"remove it or make it name a file in {folder}"
                         ) from None
    return target


def _holds(folder: Path, path: Path) -> bool:
    return path == folder or folder in path.parents


def first_from(dockerfile: str) -> str | None:
    """The image named by the first FROM instruction, or None if another comes first."""
    for line in _instructions(dockerfile):
        keyword, rest = (line.split(None, 1) + [""])[:2]
        keyword = keyword.upper()
        if keyword == "ARG":
            continue
        if keyword != "FROM":
            return None
        words = [w for w in rest.split() if not w.startswith("--")]
        return words[0] if words else None
    return None


def _instructions(dockerfile: str) -> list[str]:
    """Logical lines without comments, blank lines or backslash continuations."""
    lines, current = [], ""
    for raw in dockerfile.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append((current + stripped).strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def _check_from(config: Config, graph: Graph, name: str, text: str, template: Path) -> None:
    found = first_from(text)
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
                         fix="begin the template with `FROM {{ parent_image }}`")
