"""The image graph's jobs as a `.gitlab-ci.yml` (pure: text out)."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from buildlib import export
from buildlib.export import Target, Tool
from buildlib.export_jobs import Job, Partition

GITLAB_IMAGE = export.CI_IMAGE  # for docker runners; a shell runner ignores it
GITLAB_PINS = "IMAGEBAKE_PINS"  # NAME@DIGEST,... : the one dotenv variable a job publishes
GITLAB_DOTENV = "imagebake-pins.env"
GITLAB_PLATFORM_TAGS = {"linux/arm64": ("saas-linux-small-arm64",)}  # GitLab.com's runners
# Top-level keys that are not jobs (and `pages`, a job that publishes GitLab Pages).
GITLAB_KEYWORDS = frozenset({"default", "include", "stages", "variables", "workflow", "image",
                             "services", "cache", "before_script", "after_script", "types",
                             "spec", "pages"})


def gitlab(partition: Partition, tool: Tool, target: Target, whole: bool,
           platforms: Mapping[str, tuple[str, ...]] | None = None) -> str:
    """The `.gitlab-ci.yml`: one job per entry of `partition`, each `needs:` its parent job
    (a root job needs none) and takes its parents' digests from that job's dotenv report.
    A job of multi-arch images (`platforms`: image -> its platforms) is one job per
    platform, tagged for a runner of that platform, and a job that merges their lists.

    A job publishes one variable, `IMAGEBAKE_PINS` (`NAME@DIGEST,...` of its images that
    child jobs stand on; `IMAGEBAKE_PINS_<platform>` for one platform's lists), rather
    than one per image: no two images can share a variable name, and GitLab's limit on a
    dotenv report's variables (20 on some plans) never bites.
    The paths and the registry are `variables:`, whose `$` GitLab would expand: it is
    written `$$`. The login uses GitLab's `CI_REGISTRY*` variables when they are set;
    `runs_on` labels become every job's `tags:` (which runners may take it). A push signs
    with the project's CI/CD variables COSIGN_PRIVATE_KEY and COSIGN_PASSWORD (GitLab hands
    every job its project's variables); with settings.trust each job then verifies what it
    pushed."""
    names = _gitlab_names(partition.jobs)
    whole = whole and len(partition.jobs) == 1
    document: dict[str, Any] = {
        "workflow": {"rules": [{"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"},
                               {"if": '$CI_PIPELINE_SOURCE == "web"'}]},
        "default": {"image": GITLAB_IMAGE, "before_script": _gitlab_setup(tool, target),
                    **({"tags": list(target.runs_on)} if target.runs_on else {})},
        "variables": {**{name: value.replace("$", "$$")
                         for name, value in {**tool.env(), **target.env()}.items()},
                      # (a prefilled variable of "Run pipeline": 1 builds afresh)
                      export.NO_CACHE_ENV: {"value": "", "description": export.NO_CACHE_INPUT}},
    }
    for job in partition.jobs:
        own = export.job_platforms(job, platforms or {})
        made = {names[job.name]: _gitlab_job(partition, job, names, tool, target, whole)
                } if not own else {
            **{export.platform_job(names[job.name], platform): _gitlab_job(
                partition, job, names, tool, target, whole, platform) for platform in own},
            f"merge-{names[job.name]}": _gitlab_merge_job(job, names, own, tool)}
        for name in set(made) & (set(document) | GITLAB_KEYWORDS):
            raise ValueError(f"two jobs would be named {name}")
        document.update(made)
    return export.HEADER.format(format="gitlab", config=tool.config) + export.dump(document)


def _gitlab_names(jobs: Sequence[Job]) -> dict[str, str]:
    """Job names as GitLab keys: a name GitLab reserves gets `-job` (numbered if taken)."""
    taken = {job.name for job in jobs}
    names = {}
    for job in jobs:
        name, number = job.name, 1
        while name in GITLAB_KEYWORDS or name in taken - {job.name}:
            name = f"{job.name}-job" + (f"-{number}" if number > 1 else "")
            number += 1
        taken.add(name)
        names[job.name] = name
    return names


def _gitlab_setup(tool: Tool, target: Target) -> list[str]:
    """Every job's `before_script`: install, then log in with GitLab's registry variables
    (to $CI_REGISTRY; the images' registry when it is not set), the credentials in a file
    of the job's own."""
    command = export.login(target, "CI_REGISTRY_USER", "CI_REGISTRY_PASSWORD",
                    '"${CI_REGISTRY:-$IMAGEBAKE_REGISTRY}"')
    return [tool.install().rstrip("\n"),
            'export REGISTRY_AUTH_FILE="$(mktemp -d)/registry-auth.json"', command.rstrip("\n")]


def _gitlab_job(partition: Partition, job: Job, names: Mapping[str, str], tool: Tool,
                target: Target, whole: bool, platform: str | None = None) -> dict[str, Any]:
    """A job of `partition` (for one platform of its multi-arch images: then it publishes
    all its images' lists, which its merge job needs)."""
    parent = job.parent and names[job.parent]
    if parent and platform:
        parent = export.platform_job(parent, platform)
    selection = export.images_variable(job, whole) + (
        [shlex.quote(f"platform={platform}")] if platform else [])
    # (a child job whose dotenv did not arrive stops, rather than look its parents up)
    pin_words = [f'"pin={_pins_word(parent, platform)}"'] if job.pins and parent else []
    secrets = tool.secrets_of(job.images)  # (each a CI/CD variable of the project)
    result: dict[str, Any] = {
        "needs": [parent] if parent else [],
        "script": [*tool.write_secrets(secrets).splitlines(),
                   tool.doit("push", "cache=registry", *selection, *pin_words,
                             export.NO_CACHE_WORD)]}
    if target.verifies and not platform:  # (a platform's list: the user's tag is merge's)
        result["script"].append(tool.doit("verify", "cache=registry", *selection))
    if tool.secret_variables(secrets):
        result["variables"] = {name: value.replace("$", "$$")
                               for name, value in tool.secret_variables(secrets).items()}
    labels = _gitlab_tags(target, platform)
    if labels != target.runs_on:
        result["tags"] = list(labels)
    outputs = list(job.images) if platform else partition.outputs(job)
    if outputs:
        result["script"].append(
            _publish_pins(tool, selection, outputs, pins_variable(platform)).rstrip("\n"))
        result["artifacts"] = {"reports": {"dotenv": GITLAB_DOTENV}}
    return result


def _gitlab_merge_job(job: Job, names: Mapping[str, str], platforms: tuple[str, ...],
                      tool: Tool) -> dict[str, Any]:
    """The job that makes each multi-arch image's list of its platforms' lists."""
    needs = [export.platform_job(names[job.name], platform) for platform in platforms]
    parts = ",".join(_pins_word(need, platform) for need, platform in zip(needs, platforms,
                                                                          strict=True))
    return {"needs": needs, "script": [tool.doit("merge", f'"parts={parts}"')]}


def _gitlab_tags(target: Target, platform: str | None) -> tuple[str, ...]:
    """The runner tags of a job for that platform (None: any other job)."""
    if platform is None:
        return target.runs_on
    return dict(target.runners).get(platform) or GITLAB_PLATFORM_TAGS.get(platform) \
        or target.runs_on


def pins_variable(platform: str | None) -> str:
    """The dotenv variable a job publishes its digests in (one per platform: a merge job
    receives all its platforms' at once)."""
    return GITLAB_PINS if platform is None else f"{GITLAB_PINS}_{export.output_name(platform)}"


def _pins_word(job: str, platform: str | None) -> str:
    """The shell text of the digests `job` published, stopping the script when absent."""
    return f"${{{pins_variable(platform)}:?no digests from job {job}}}"


def _publish_pins(tool: Tool, selection: list[str], outputs: list[str], variable: str
                  ) -> str:
    """`doit resolve`, then `VARIABLE=NAME@sha256:...,...` of the images other jobs need."""
    names = " ".join(shlex.quote(image) for image in outputs)
    return "\n".join([
        tool.doit("resolve", *selection),
        f'python3 - "$IMAGEBAKE_LOCK" {names} > {GITLAB_DOTENV} <<\'PY\'',
        "import json, sys",
        'images = json.load(open(sys.argv[1]))["images"]',
        f'print("{variable}=" + ",".join(f"{{name}}@{{images[name][\'digest\']}}" '
        "for name in sys.argv[2:]))",
        "PY",
    ]) + "\n"
