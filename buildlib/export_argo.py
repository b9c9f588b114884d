"""The image graph's jobs as an Argo Workflow, built by hera (the `argo` extra; pure: text
out), and `argo_problems`, which checks what hera's models do not."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from buildlib import export
from buildlib.export import Target, Tool
from buildlib.export_jobs import Job, Partition

ARGO_SECRET = "imagebake-registry"  # a Kubernetes secret with keys `username`, `password`
# settings.sign: the secret `cosign generate-key-pair k8s://NAMESPACE/imagebake-signing`
# writes, with keys `cosign.key`, `cosign.password` (and `cosign.pub`)
ARGO_SIGNING_SECRET = "imagebake-signing"
ARGO_SIGNING_KEYS = {"COSIGN_PRIVATE_KEY": "cosign.key", "COSIGN_PASSWORD": "cosign.password"}
ARGO_BUILD_SECRETS = "imagebake-build-secrets"  # a Kubernetes secret: variable -> content


def argo(partition: Partition, tool: Tool, target: Target, whole: bool) -> str:
    """A Workflow whose DAG has one task per job; hera (the `argo` extra) builds it."""
    from hera.workflows import DAG, GitArtifact, Parameter, Script, Task, Workflow
    from hera.workflows.models import (
        Arguments,
        EnvVar,
        EnvVarSource,
        SecretKeySelector,
        SecurityContext,
        ValueFrom,
    )

    whole = whole and len(partition.jobs) == 1
    secrets = [EnvVar(name=name, value_from=EnvVarSource(secret_key_ref=SecretKeySelector(
        name=ARGO_SECRET, key=name.removeprefix("REGISTRY_").lower(), optional=True)))
        for name in export.REGISTRY_SECRETS]
    if target.signs:
        secrets += [EnvVar(name=name, value_from=EnvVarSource(secret_key_ref=SecretKeySelector(
            name=ARGO_SIGNING_SECRET, key=ARGO_SIGNING_KEYS[name])))
            for name in export.SIGNING_SECRETS]
    values = [EnvVar(name=name, value=value)
              for name, value in {**tool.env(), **target.env()}.items()]
    values.append(EnvVar(name=export.NO_CACHE_ENV, value="{{workflow.parameters.no_cache}}"))
    templates, tasks = [], []
    for job in partition.jobs:
        outputs = partition.outputs(job)
        needed = tool.secrets_of(job.images)
        env = [*secrets, *values,
               EnvVar(name="REGISTRY_AUTH_FILE", value="/tmp/registry-auth.json"),
               *(EnvVar(name=secret.variable, value_from=EnvVarSource(
                   secret_key_ref=SecretKeySelector(name=ARGO_BUILD_SECRETS,
                                                    key=secret.variable, optional=True)))
                 for secret in needed),
               *(EnvVar(name=name, value=value)
                 for name, value in tool.secret_variables(needed).items())]
        inputs: list[Any] = [GitArtifact(name="source", path="/src",
                                         repo="{{workflow.parameters.repo}}",
                                         revision="{{workflow.parameters.revision}}")]
        arguments = None
        if job.pins:
            inputs.append(Parameter(name="pins"))
            env.append(EnvVar(name="PINS", value="{{inputs.parameters.pins}}"))
            pins = ",".join(f"{parent}@{{{{tasks.{job.parent}.outputs.parameters."
                            f"{export.output_name(parent)}}}}}" for parent in job.pinned())
            arguments = Arguments(parameters=[Parameter(name="pins", value=pins).as_argument()])
        templates.append(Script(
            name=job.name, image=export.CI_IMAGE, command=["bash"], working_dir="/src",
            source=_argo_script(job, tool, target, whole, outputs),
            env=env, security_context=SecurityContext(privileged=True), inputs=inputs,
            outputs=[Parameter(name=export.output_name(image),
                               value_from=ValueFrom(
                                   path=f"/tmp/digests/{export.output_name(image)}"))
                     for image in outputs] or None))
        tasks.append(Task(name=job.name, template=job.name, depends=job.parent,
                          arguments=arguments))
    workflow = Workflow(
        generate_name="images-", entrypoint="images",
        arguments=[Parameter(name="repo", value="https://example.invalid/your/repository.git"),
                   Parameter(name="revision", value="main"),
                   Parameter(name="no_cache", value="false", description=export.NO_CACHE_INPUT)],
        templates=[DAG(name="images", tasks=tasks), *templates])
    return (export.HEADER.format(format="argo", config=tool.config)
            + workflow.to_yaml(width=1 << 16))


def _argo_script(job: Job, tool: Tool, target: Target, whole: bool, outputs: list[str]) -> str:
    selection = export.images_variable(job, whole)
    pin_words = ['"pin=$PINS"'] if job.pins else []
    lines = ["set -euo pipefail", tool.install().rstrip("\n"),
             export.login(target).rstrip("\n"),
             *tool.write_secrets(tool.secrets_of(job.images)).splitlines(),
             tool.doit("push", "cache=registry", *selection, *pin_words, export.NO_CACHE_WORD)]
    if target.verifies:
        lines.append(tool.doit("verify", "cache=registry", *selection))
    if outputs:
        lines.append("mkdir -p /tmp/digests")
        lines.append(
            export.publish(tool, selection, outputs, "/tmp/digests/all").rstrip("\n"))
        lines.append("while IFS='=' read -r name digest; do printf '%s' \"$digest\" > "
                     "\"/tmp/digests/$name\"; done < /tmp/digests/all")
    return "\n".join(lines) + "\n"


def argo_problems(document: Mapping[str, Any]) -> list[str]:
    """What Argo would reject or run wrongly that hera's models accept: a DAG task that
    depends on a task not declared, a cycle, a `{{tasks.X...}}` reference to a task that
    is not among its dependencies, a template that is not declared."""
    templates = {t["name"]: t for t in document["spec"]["templates"]}
    problems = []
    for template in templates.values():
        tasks = {task["name"]: task for task in (template.get("dag") or {}).get("tasks", [])}
        needs = {name: set(re.findall(r"[A-Za-z0-9_-]+", task.get("depends") or ""))
                 - {"Succeeded", "Failed", "Errored", "Skipped", "Omitted", "Daemoned",
                    "AnySucceeded", "AllFailed"} | set(task.get("dependencies") or [])
                 for name, task in tasks.items()}
        for name, task in tasks.items():
            if task["template"] not in templates:
                problems.append(f"task {name}: template {task['template']} is not declared")
            for missing in sorted(needs[name] - set(tasks)):
                problems.append(f"task {name}: depends on {missing}, which is not a task")
            referenced = set(re.findall(r"\{\{\s*tasks\.([A-Za-z0-9_-]+)\.", str(task)))
            for stray in sorted(referenced - needs[name]):
                problems.append(f"task {name}: refers to tasks.{stray}, not a dependency")
        problems += [f"tasks form a cycle through {name}" for name in _cycles(needs)]
    return problems


def _cycles(needs: Mapping[str, set[str]]) -> list[str]:
    """Tasks on a cycle of `needs` (Kahn's algorithm: what never becomes ready)."""
    waiting = {name: set(deps) & set(needs) for name, deps in needs.items()}
    ready = [name for name, deps in waiting.items() if not deps]
    while ready:
        done = ready.pop()
        for name, deps in waiting.items():
            if done in deps:
                deps.discard(done)
                if not deps:
                    ready.append(name)
    return sorted(name for name, deps in waiting.items() if deps)
