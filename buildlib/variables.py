"""The command-line variables (`doit build images=nova`, `imagebake push cache=registry`):
one table of them, and their one reader.

Every variable a task reads is a row of `VARIABLES`; `value` refuses a name that is not,
and docs/reference/variables.md is generated from the table (buildlib.reference_docs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from doit import get_var

from buildlib import doit_seam

TRUE_WORDS = {"1", "true", "yes", "on"}
SET_PREFIX = "set."  # `set.nova.args.X=8`: one variable per field set for this run


@dataclass(frozen=True)
class Variable:
    name: str
    form: str  # what follows `name=`
    tasks: str  # the tasks that read it
    meaning: str


VARIABLES: dict[str, Variable] = {v.name: v for v in (
    Variable("config", "PATH[,PATH...]", "all", "another images.yaml (default: the one "
             "beside dodo.py, with images.override.yaml beside it merged on top; `imagebake`: "
             "the one in the working directory, or `-c PATH`); several files: each merged on "
             "top of those before it (then no images.override.yaml is read)"),
    Variable(f"{SET_PREFIX}IMAGE.FIELD", "VALUE", "all", "change a field for this run only, "
             "e.g. `'set.nova-*.args.WORKERS=8'` or `set.settings.tag=rc1` (IMAGE: a glob of "
             "image names; VALUE: YAML); one variable per field (`imagebake --set "
             "IMAGE.FIELD=VALUE`)"),
    Variable("images", "RE[,RE...]", "build, push, status, resolve, graph, render, export, "
             "prune, watch, verify", "only the images whose name matches any regex, with their "
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
    Variable("cache", "local|registry", "build, push, status, resolve, verify", "`registry`: look "
             "images up in the registry by their key before building them (default: "
             "settings.cache)"),
    Variable("pin", "NAME@sha256:DIGEST[,...]", "build, push, status, resolve", "take these "
             "images from the registry at exactly that digest"),
    Variable("bases", "pull", "build, push, resolve", "pull every selected root's base image "
             "anew before building"),
    Variable("format", "gha|gitlab|argo", "export", "the workflow to write: GitHub Actions, "
             "GitLab CI or Argo Workflows"),
    Variable("out", "PATH", "export", "where to write it (default: "
             ".github/workflows/images.yml, .gitlab-ci.yml, or build/argo-workflow.yaml)"),
    Variable("max_jobs", "N", "export", "at most N jobs (default: one job per image)"),
    Variable("job_start", "SECONDS", "export", "the estimated start of a job: runner, "
             "checkout, install (default 30)"),
    Variable("runs_on", "LABEL[,LABEL...]", "export", "the runner labels of every job "
             "(default: ubuntu-latest; on GitLab its `tags:`, default none), e.g. "
             "runs_on=self-hosted,linux"),
    Variable("runners", "PLATFORM=LABEL[+LABEL...][,...]", "export", "the runner labels of "
             "each platform's jobs (default: linux/arm64=ubuntu-24.04-arm, on GitLab "
             "saas-linux-small-arm64; else runs_on)"),
    Variable("storage", "runner|job|/PATH", "export", "where each job's buildah storage "
             "lives: the runner's default, one per job, or a folder the runner's jobs share"),
    Variable("platform", "OS/ARCH", "build, push, status, resolve", "build (and push) each "
             "multi-arch image's list of this platform alone, as one native runner of it does"),
    Variable("parts", "NAME@sha256:DIGEST[,...]", "merge", "each platform's pushed list of an "
             "image, merged into its manifest list"),
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


def assignments(prefix: str = SET_PREFIX) -> list[str]:
    """The variables named `prefix` + PATH, as `PATH=VALUE` in the command line's order
    (`set.nova-*.args.X=8` -> `nova-*.args.X=8`)."""
    if f"{prefix}IMAGE.FIELD" not in VARIABLES:
        raise KeyError(f"command-line variables {prefix}* are not in buildlib.variables.VARIABLES")
    return [f"{name.removeprefix(prefix)}={text}"
            for name, text in doit_seam.command_line_variables().items()
            if name.startswith(prefix)]
