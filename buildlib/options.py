"""The command-line variables (`doit build images=nova`, `imagebake push cache=registry`):
one model of them, read from the command line once, when the run loads.

Each field of `Options` is a variable: its docstring says what it means, its metadata its
form and the tasks that read it, and docs/reference/variables.md is generated from them
(buildlib.reference_docs), so the table and the parser cannot drift. As with the model of
images.yaml, pydantic describes these fields for the reference while plain Python reads
them: a run that changes nothing imports no pydantic.

A field's default says how its text is read: `()` a comma-separated list, `False` a yes/no
word, `None` the text as given. The checks against the tree (a pin names an image of it, a
platform is one of its platforms) are the run's; the variables of one task alone (export's,
merge's, prune's) are checked when that task runs, so that another command ignores them.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from buildlib import doit_seam
from buildlib.errors import InputError

if TYPE_CHECKING:
    from buildlib.project import Project

TRUE_WORDS = {"1", "true", "yes", "on"}
SET_PREFIX = "set."  # `set.nova.args.X=8`: one variable per field set for this run
SETS = f"{SET_PREFIX}IMAGE.FIELD"


def variable(form: str, tasks: str, default: Any = None, name: str | None = None) -> Any:
    """A field that is the command-line variable `name` (default: the field's name),
    written `name=form` and read by `tasks`."""
    return dataclasses.field(default=default,
                             metadata={"form": form, "tasks": tasks, "name": name})


@dataclasses.dataclass(frozen=True)
class Options:
    """The run's command-line variables, as given (each field's docstring is its meaning on
    docs/reference/variables.md)."""

    __pydantic_config__ = {"extra": "forbid", "use_attribute_docstrings": True}

    config: tuple[str, ...] = variable("PATH[,PATH...]", "all", ())
    """another images.yaml (default: the one beside dodo.py, with images.override.yaml
    beside it merged on top; `imagebake`: the one in the working directory, or `-c PATH`);
    several files: each merged on top of those before it (then no images.override.yaml is
    read)"""
    sets: tuple[str, ...] = variable("VALUE", "all", (), name=SETS)
    """change a field for this run only, e.g. `'set.nova-*.args.WORKERS=8'` or
    `set.settings.tag=rc1` (IMAGE: a glob of image names; VALUE: YAML); one variable per
    field (`imagebake --set IMAGE.FIELD=VALUE`)"""
    images: tuple[str, ...] = variable(
        "RE[,RE...]", "build, push, status, resolve, graph, render, export, prune, watch, "
        "verify", ())
    """only the images whose name matches any regex, with their ancestors"""
    profile: tuple[str, ...] = variable("NAME[,NAME...]", "as images=", ())
    """the regexes of these `profiles:` of images.yaml"""
    exclude: tuple[str, ...] = variable("RE[,RE...]", "as images=", ())
    """never these images nor their descendants (adds to settings.excludes)"""
    skip_parents: bool = variable("1", "as images=", False)
    """build the selected images on their parents as they are in local storage"""
    no_cache: bool = variable("1", "build, push, status", False)
    """build the selected images afresh, without buildah's layer cache, though their keys
    are current (their children then rebuild on them): for what the key cannot see, e.g. a
    mirror's security updates; with skip_parents=1, the matched images alone"""
    fail_fast: bool = variable("1", "build, push", False)
    """stop at the first failure instead of building everything else"""
    verbose: bool = variable("1", "build, push", False)
    """buildah's output on the terminal too (it always goes to the logs)"""
    dispatch: str | None = variable("critical-path|fifo", "build, push")
    """the order of ready builds: the longest remaining path first (default while the jobs
    do not outnumber the cores), or doit's own first-come order"""
    cache: str | None = variable("local|registry", "build, push, status, resolve, verify")
    """`registry`: look images up in the registry by their key before building them
    (default: settings.cache)"""
    pin: tuple[str, ...] = variable("NAME@sha256:DIGEST[,...]", "build, push, status, resolve",
                                    ())
    """take these images from the registry at exactly that digest"""
    bases: str | None = variable("pull", "build, push, resolve")
    """pull every selected root's base image anew before building"""
    format: str | None = variable("gha|gitlab|argo", "export")
    """the workflow to write: GitHub Actions, GitLab CI or Argo Workflows"""
    out: str | None = variable("PATH", "export")
    """where to write it (default: .github/workflows/images.yml, .gitlab-ci.yml, or
    build/argo-workflow.yaml)"""
    max_jobs: str | None = variable("N", "export")
    """at most N jobs (default: one job per image)"""
    job_start: str | None = variable("SECONDS", "export")
    """the estimated start of a job: runner, checkout, install (default 30)"""
    runs_on: str | None = variable("LABEL[,LABEL...]", "export")
    """the runner labels of every job (default: ubuntu-latest; on GitLab its `tags:`,
    default none), e.g. runs_on=self-hosted,linux"""
    runners: tuple[str, ...] = variable("PLATFORM=LABEL[+LABEL...][,...]", "export", ())
    """the runner labels of each platform's jobs (default: linux/arm64=ubuntu-24.04-arm, on
    GitLab saas-linux-small-arm64; else runs_on)"""
    storage: str | None = variable("runner|job|/PATH", "export")
    """where each job's buildah storage lives: the runner's default, one per job, or a
    folder the runner's jobs share"""
    platform: str | None = variable("OS/ARCH", "build, push, status, resolve")
    """build (and push) each multi-arch image's list of this platform alone, as one native
    runner of it does"""
    parts: tuple[str, ...] = variable("NAME@sha256:DIGEST[,...]", "merge", ())
    """each platform's pushed list of an image, merged into its manifest list"""
    keep: str | None = variable("N", "prune")
    """keep each image's N most recently used old keys too (default: settings.keep_keys,
    else 0)"""
    dry: bool = variable("1", "prune", False)
    """list what would be removed and the space; remove nothing"""
    registry: bool = variable("1", "prune", False)
    """delete the registry's old key tags too"""

    @classmethod
    def read(cls, given: Mapping[str, str] | None = None) -> Options:
        """The variables of `given` (default: doit's command line) that are fields, each
        read as its default's type says; other names are not this model's."""
        given = doit_seam.command_line_variables() if given is None else given
        return cls(**{f.name: _read(f, given) for f in dataclasses.fields(cls)})


def variable_name(field: dataclasses.Field[Any]) -> str:
    return field.metadata["name"] or field.name


def _read(field: dataclasses.Field[Any], given: Mapping[str, str]) -> Any:
    name = variable_name(field)
    if name == SETS:  # `set.nova-*.args.X=8` -> `nova-*.args.X=8`, in the command line's order
        return tuple(f"{key.removeprefix(SET_PREFIX)}={text}" for key, text in given.items()
                     if key.startswith(SET_PREFIX))
    text = given.get(name)
    if isinstance(field.default, tuple):
        return tuple(word for word in str(text or "").split(",") if word)
    if isinstance(field.default, bool):
        return str(text or "").lower() in TRUE_WORDS
    return None if text is None or text == "" else str(text)


# --- the variables checked against the tree ------------------------------------------------

def cache_mode(proj: Project, options: Options) -> str:
    mode = options.cache or proj.config.settings.cache
    if mode not in ("local", "registry"):
        raise InputError(proj.config.path, f"cache={mode}: not a cache",
                         fix="use cache=local or cache=registry")
    return mode


def pin_digests(proj: Project, options: Options) -> dict[str, str]:
    """`pin=NAME@sha256:DIGEST,...`: images taken from the registry at that digest."""
    found: dict[str, str] = {}
    for name, digest in _images_at_digests(proj, "pin", options.pin):
        if found.get(name, digest) != digest:
            raise InputError(proj.config.path, f"pin= names two digests for {name}: "
                             f"{found[name]} and {digest}", image=name,
                             fix=f"pin {name} once")
        found[name] = digest
    return found


def _images_at_digests(proj: Project, variable: str, words: tuple[str, ...]
                       ) -> list[tuple[str, str]]:
    """`VARIABLE=NAME@sha256:DIGEST,...` as (name, digest) pairs."""
    pairs = []
    for word in words:
        name, _, digest = word.partition("@")
        if name not in proj.plans or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise InputError(proj.config.path, f"{variable}={word}: not an image of this "
                             "tree at a digest", image=name if name in proj.plans else None,
                             fix=f"write {variable}=NAME@sha256:<64 hex>, NAME under `images:`")
        pairs.append((name, digest))
    return pairs


def merge_parts(proj: Project, options: Options) -> dict[str, list[str]]:
    """`doit merge`'s `parts=NAME@sha256:DIGEST,...`: for each multi-arch image, the
    digests of its platforms' lists (one each, pushed by `push platform=P`)."""
    parts: dict[str, list[str]] = {}
    for name, digest in _images_at_digests(proj, "parts", options.parts):
        if not proj.plans[name].platforms:
            raise InputError(proj.config.path, f"parts={name}@...: {name} has no "
                             "`platforms:`", image=name, fix="merge multi-arch images only")
        parts.setdefault(name, []).append(digest)
    if not parts:
        raise InputError(proj.config.path, "merge needs parts=NAME@sha256:<digest>,... (the "
                         "lists that `push platform=P` pushed, one per platform)",
                         fix="give each platform's list of the image")
    return parts


def prune_keep(proj: Project, options: Options) -> int:
    """`doit prune`'s `keep=N`: how many old keys of each image it keeps."""
    if options.keep is None:
        return proj.config.settings.keep_keys or 0
    if not options.keep.isdigit():
        raise InputError(proj.config.path, f"keep={options.keep!r} is not a whole number >= 0",
                         fix="write keep=N: how many old keys of each image to keep")
    return int(options.keep)


def platform_tree(proj: Project, options: Options) -> Project:
    """With `platform=os/arch`: the tree as one runner of that platform builds it."""
    wanted = options.platform
    if not wanted:
        return proj
    known = _platforms(proj)
    if wanted not in known:
        raise InputError(proj.config.path, f"platform={wanted!r} is none of the tree's "
                         f"platforms ({', '.join(sorted(known)) or 'none: no `platforms:`'})",
                         fix="name one of the platforms under `platforms:`")
    return proj.one_platform(wanted)


def check_platform_selection(proj: Project, options: Options, selected: frozenset[str]
                             ) -> None:
    """A run for one platform builds only images of that platform."""
    wanted = options.platform
    other = sorted(name for name in selected if wanted and not proj.plans[name].one_of)
    if other:
        raise InputError(proj.config.path, f"platform={wanted} selects {', '.join(other)}, "
                         f"which {'is' if len(other) == 1 else 'are'} not built for {wanted}",
                         image=other[0], fix="select only images of that platform (images=)")


def _platforms(proj: Project) -> set[str]:
    return {p for plan in proj.plans.values() for p in plan.platforms}


# --- export's variables --------------------------------------------------------------------

EXPORT_FORMATS = ("gha", "argo", "gitlab")
DEFAULT_JOB_START = 30.0  # seconds: a fresh runner's start, checkout and install


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    format: str
    out: Path | None  # from the user's directory
    max_jobs: int | None
    job_start: float
    runs_on: tuple[str, ...] | None  # runner labels; None: the format's default
    storage: str  # runner | job | an absolute path
    runners: tuple[tuple[str, tuple[str, ...]], ...]  # platform -> its jobs' runner labels


def export_options(proj: Project, options: Options) -> ExportOptions:
    """`doit export`'s variables, checked when it runs, so that other commands ignore them."""
    fmt = options.format or ""
    if fmt not in EXPORT_FORMATS:
        raise InputError(proj.config.path, f"export needs format=gha, format=gitlab or "
                         f"format=argo (got {fmt!r})", fix="`doit export format=gha` (GitHub "
                         "Actions), `format=gitlab` (GitLab CI) or `format=argo` (Argo "
                         "Workflows)")
    out = options.out
    path = (doit_seam.user_workdir() / out).resolve() if out else None
    if path is not None and path.is_dir():
        raise InputError(proj.config.path, f"out={out!r} is a folder", fix="give out= the "
                         "path of the file to write, e.g. out=.github/workflows/images.yml")
    return ExportOptions(fmt, path,
                         _number(proj, "max_jobs", options.max_jobs, int, None, minimum=1),
                         _number(proj, "job_start", options.job_start, float,
                                 DEFAULT_JOB_START, minimum=0),
                         _runner_labels(proj, "runs_on", options.runs_on),
                         _storage(proj, options.storage), _platform_runners(proj, options))


def _runner_labels(proj: Project, variable: str, text: str | None, separator: str = ","
                   ) -> tuple[str, ...] | None:
    if not text:
        return None
    labels = tuple(label.strip() for label in text.split(separator))
    if not all(labels) or any(re.search(r"[\s{}\x00-\x1f,=+]", label) for label in labels):
        raise InputError(proj.config.path, f"{variable}={text!r} is not a list of runner "
                         "labels", fix="give labels separated by commas, e.g. "
                         "runs_on=self-hosted,linux (in runners=: by +, e.g. "
                         "runners=linux/arm64=self-hosted+arm64)")
    return labels


def _platform_runners(proj: Project, options: Options
                      ) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """`runners=linux/arm64=my-arm,...`: the runner labels (joined by `+`) of each
    platform's jobs."""
    known = _platforms(proj)
    result = []
    for word in options.runners:
        platform, _, labels = word.partition("=")
        if platform not in known:
            raise InputError(proj.config.path, f"runners={word}: {platform!r} is none of the "
                             f"tree's platforms ({', '.join(sorted(known)) or 'none'})",
                             fix="write runners=PLATFORM=LABEL[+LABEL],... for platforms "
                             "under `platforms:`")
        result.append((platform, _runner_labels(proj, "runners", labels, "+") or ()))
        if not result[-1][1]:
            raise InputError(proj.config.path, f"runners={word}: no labels",
                             fix="write runners=linux/arm64=my-arm-runner")
    return tuple(result)


def _storage(proj: Project, text: str | None) -> str:
    text = text or "runner"
    if text not in ("runner", "job") and not text.startswith("/"):
        raise InputError(proj.config.path, f"storage={text!r} is not runner, job or an "
                         "absolute path", fix="storage=runner (the runner's default storage), "
                         "storage=job (one per job) or storage=/a/folder (shared by the "
                         "runner's jobs)")
    return text


def _number(proj: Project, name: str, text: str | None, kind: type, default: Any,
            minimum: float) -> Any:
    if text is None:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < minimum:
        raise InputError(proj.config.path, f"{name}={text!r} is not a number >= {minimum:g}",
                         fix=f"give {name} a {'whole ' if kind is int else ''}number")
    return value
