"""The command-line variables (`doit build images=nova`, `imagebake push cache=registry`):
one table of them, and their one reader.

Every variable a task reads is a row of `VARIABLES`; `value` refuses a name that is not,
and docs/reference/variables.md is generated from the table (buildlib.reference_docs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from doit import get_var

TRUE_WORDS = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Variable:
    name: str
    form: str  # what follows `name=`
    tasks: str  # the tasks that read it
    meaning: str


VARIABLES: dict[str, Variable] = {v.name: v for v in (
    Variable("config", "PATH", "all", "another images.yaml (default: the one beside dodo.py; "
             "`imagebake`: the one in the working directory, or `-c PATH`)"),
    Variable("images", "RE[,RE...]", "build, push, status, resolve, graph, render, export, "
             "prune, watch", "only the images whose name matches any regex, with their "
             "ancestors"),
    Variable("profile", "NAME[,NAME...]", "as images=", "the regexes of these `profiles:` "
             "of images.yaml"),
    Variable("exclude", "RE[,RE...]", "as images=", "never these images nor their "
             "descendants (adds to settings.excludes)"),
    Variable("skip_parents", "1", "as images=", "build the selected images on their parents "
             "as they are in local storage"),
    Variable("fail_fast", "1", "build, push", "stop at the first failure instead of building "
             "everything else"),
    Variable("verbose", "1", "build, push", "buildah's output on the terminal too (it always "
             "goes to the logs)"),
    Variable("dispatch", "critical-path|fifo", "build, push", "the order of ready builds: the "
             "longest remaining path first (default while the jobs do not outnumber the "
             "cores), or doit's own first-come order"),
    Variable("cache", "local|registry", "build, push, status, resolve", "`registry`: look "
             "images up in the registry by their key before building them (default: "
             "settings.cache)"),
    Variable("pin", "NAME@sha256:DIGEST[,...]", "build, push, status, resolve", "take these "
             "images from the registry at exactly that digest"),
    Variable("bases", "pull", "build, push, resolve", "pull every selected root's base image "
             "anew before building"),
    Variable("format", "gha|argo", "export", "the workflow to write: GitHub Actions or Argo "
             "Workflows"),
    Variable("out", "PATH", "export", "where to write it (default: "
             ".github/workflows/images.yml, or build/argo-workflow.yaml)"),
    Variable("max_jobs", "N", "export", "at most N jobs (default: one job per image)"),
    Variable("job_start", "SECONDS", "export", "the estimated start of a job: runner, "
             "checkout, install (default 30)"),
    Variable("keep", "N", "prune", "keep each image's N most recently used old keys too "
             "(default: settings.keep_keys, else 0)"),
    Variable("dry", "1", "prune", "list what would be removed and the space; remove nothing"),
    Variable("registry", "1", "prune", "delete the registry's old key tags too"),
)}


def value(name: str, default: Any = None) -> Any:
    """The variable's value on the command line, else `default`."""
    if name not in VARIABLES:
        raise KeyError(f"command-line variable {name!r} is not in buildlib.variables.VARIABLES")
    return get_var(name, default)


def flag(name: str) -> bool:
    """A yes/no variable (`dry=1`, `verbose=yes`)."""
    return str(value(name, "")).lower() in TRUE_WORDS


def words(name: str) -> list[str]:
    """A comma-separated variable (`images=nova,^cron$`)."""
    return [word for word in str(value(name, "")).split(",") if word]
