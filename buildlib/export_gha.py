"""The image graph's jobs as a GitHub Actions workflow (pure: text out)."""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from typing import Any

from buildlib import export
from buildlib.export import Target, Tool
from buildlib.export_jobs import Job, Partition, identifier

CHECKOUT_ACTION = "actions/checkout@v5"
GHA_AUTH = {"REGISTRY_AUTH_FILE": "${{ runner.temp }}/registry-auth.json"}


def gha(partition: Partition, tool: Tool, target: Target, whole: bool,
        platforms: Mapping[str, tuple[str, ...]] | None = None) -> str:
    """The workflow file: one job per entry of `partition`, each needing its parent job. A
    job of multi-arch images (`platforms`: image -> its platforms) is one job per platform,
    each on a runner of that platform (`push platform=P`, needing its parent job's job of
    that platform), and then one job per image merges its platforms' lists."""
    whole = whole and len(partition.jobs) == 1
    jobs: dict[str, dict[str, Any]] = {}
    for job in partition.jobs:
        own = export.job_platforms(job, platforms or {})
        made = {job.name: _gha_job(partition, job, tool, target, whole)} if not own else {
            **{export.platform_job(job.name, platform):
               _gha_job(partition, job, tool, target, whole, platform) for platform in own},
            **{f"merge-{identifier(image)}": _gha_merge_job(image, job, own, tool, target)
               for image in job.images}}
        for name in set(made) & set(jobs):
            raise ValueError(f"two jobs would be named {name}")
        jobs.update(made)
    document = {
        "name": "images",
        "on": {"push": {"branches": ["main"]}, "workflow_dispatch": {"inputs": {
            "no_cache": {"description": export.NO_CACHE_INPUT, "type": "boolean",
                         "default": False}}}},
        "permissions": {"contents": "read"},
        "env": {**tool.env(), **target.env(), export.NO_CACHE_ENV: "${{ inputs.no_cache }}"},
        "jobs": jobs,
    }
    return export.HEADER.format(format="gha", config=tool.config) + export.dump(document)


def _gha_start(tool: Tool, target: Target) -> list[dict[str, Any]]:
    """The steps every job starts with: checkout, install, login."""
    return [
        {"uses": CHECKOUT_ACTION},
        {"name": "install imagebake", "run": tool.install()},
        {"name": "log in to the registry",
         "env": {**GHA_AUTH, **_gha_secrets(export.REGISTRY_SECRETS)},
         "run": export.login(target)},
    ]


def _gha_secrets(names: Iterable[str]) -> dict[str, str]:
    """Each variable from the repository's secret of its name."""
    return {name: f"${{{{ secrets.{name} }}}}" for name in names}


def _signing(target: Target) -> dict[str, str]:
    """The secrets a signing push reads (the key's PEM and its password), if it signs."""
    return _gha_secrets(export.SIGNING_SECRETS) if target.signs else {}


def _runs_on(labels: tuple[str, ...]) -> str | list[str]:
    return labels[0] if len(labels) == 1 else list(labels)


def _gha_job(partition: Partition, job: Job, tool: Tool, target: Target, whole: bool,
             platform: str | None = None) -> dict[str, Any]:
    """A job of `partition` (for one platform of its multi-arch images: then its outputs
    are all its images' lists, which their merge jobs need)."""
    parent = job.parent and (export.platform_job(job.parent, platform) if platform
                             else job.parent)
    outputs = list(job.images) if platform else partition.outputs(job)
    steps = _gha_start(tool, target)
    secrets = tool.secrets_of(job.images)
    build_env = {**GHA_AUTH, **_gha_secrets(s.variable for s in secrets),
                 **tool.secret_variables(secrets)}
    pin_words = []
    if job.pins:
        build_env["PINS"] = ",".join(
            f"{name}@${{{{ needs.{parent}.outputs.{export.output_name(name)} }}}}"
            for name in job.pinned())
        pin_words = ['"pin=$PINS"']
    selection = export.images_variable(job, whole) + (
        [shlex.quote(f"platform={platform}")] if platform else [])
    what = job.summary() + (f" for {platform}" if platform else "")
    steps.append({"name": f"build and push {what}", "env": {**build_env, **_signing(target)},
                  "run": tool.write_secrets(secrets)
                  + tool.doit("push", "cache=registry", *selection, *pin_words,
                                export.NO_CACHE_WORD) + "\n"})
    if target.verifies and not platform:  # (a platform's list: the user's tag is merge's)
        steps.append({"name": f"verify {what}", "env": GHA_AUTH,
                      "run": tool.doit("verify", "cache=registry", *selection) + "\n"})
    result: dict[str, Any] = {"name": what, "runs-on": _runs_on(target.labels(platform))}
    if parent:
        result["needs"] = parent
    if outputs:
        result["outputs"] = {output: f"${{{{ steps.digests.outputs.{output} }}}}"
                             for output in map(export.output_name, outputs)}
        steps.append({"name": "publish the digests other jobs need", "id": "digests",
                      "env": GHA_AUTH,
                      "run": export.publish(tool, selection, outputs, '"$GITHUB_OUTPUT"')})
    result["steps"] = steps
    return result


def _gha_merge_job(image: str, job: Job, platforms: tuple[str, ...], tool: Tool,
                   target: Target) -> dict[str, Any]:
    """The job that makes a multi-arch image's list of its platforms' lists."""
    needs = [export.platform_job(job.name, platform) for platform in platforms]
    parts = ",".join(f"{image}@${{{{ needs.{name}.outputs.{export.output_name(image)} }}}}"
                     for name in needs)
    return {"name": f"merge {image}", "runs-on": _runs_on(target.labels()), "needs": needs,
            "steps": [*_gha_start(tool, target),
                      {"name": f"merge the platforms of {image}",
                       "env": {**GHA_AUTH, "PARTS": parts, **_signing(target)},
                       "run": tool.doit("merge", '"parts=$PARTS"') + "\n"}]}
