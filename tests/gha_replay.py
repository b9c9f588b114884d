"""Replays a GitHub Actions workflow file on this machine, for tests.

It knows GitHub Actions, not imagebake: every job runs in a fresh runner directory of
its own (workspace, temp dir, its own environment from `runner_env`), a job starts
when all its `needs` have succeeded (a failed or skipped need skips it, as GitHub does),
jobs run in parallel as far as the graph allows (up to `parallel` at once), and each
`run:` step runs as GitHub runs it: `bash -e` on the script written as is, in the
workspace, after substituting `${{ ... }}` expressions, with `$GITHUB_OUTPUT` a fresh
file per step whose `name=value` lines become the step's outputs.

What cannot run here (`uses:` actions, steps that install software with sudo) is
mapped by the caller onto a function of the workspace, keyed by the step's `uses:` or
`name:`: `setup={"actions/checkout@v5": clone, "install imagebake": link_venv}`. A step
neither runnable nor mapped, and any feature the harness does not implement (`if:`,
`strategy:`, `services:`, `shell:`, expressions beyond the contexts listed in
`CONTEXTS`), is an error rather than a silent approximation.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
CONTEXTS = ("secrets.NAME", "env.NAME", "needs.JOB.outputs.NAME", "steps.ID.outputs.NAME",
            "runner.temp", "github.workspace", "inputs.NAME")
JOB_KEYS = {"name", "runs-on", "needs", "outputs", "steps", "env"}
STEP_KEYS = {"name", "id", "uses", "run", "env", "with"}
STEP_TIMEOUT = 900  # seconds; a test's runaway step fails instead of hanging the suite


class Unsupported(ValueError):
    """The workflow uses something this harness does not replay."""


@dataclass
class JobResult:
    name: str
    runner: Path  # the job's runner directory: workspace/, temp/, log
    status: str = "pending"  # then success | failure | skipped
    outputs: dict[str, str] = field(default_factory=dict)
    started: float | None = None
    finished: float | None = None
    log: list[str] = field(default_factory=list)

    @property
    def workspace(self) -> Path:
        return self.runner / "workspace"

    @property
    def text(self) -> str:
        return "\n".join(self.log)


@dataclass
class Replay:
    workflow: dict[str, Any]
    root: Path  # one runner directory per job is made under it
    secrets: Mapping[str, str] = field(default_factory=dict)
    inputs: Mapping[str, str] = field(default_factory=dict)  # a workflow_dispatch's; a push: none
    setup: Mapping[str, Callable[[Path], None]] = field(default_factory=dict)
    runner_env: Callable[[Path], Mapping[str, str]] = lambda runner: {}
    parallel: int = 4
    jobs: dict[str, JobResult] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def of(cls, path: Path, root: Path, **options: Any) -> Replay:
        return cls(yaml.safe_load(path.read_text()), root, **options)

    # -- scheduling ---------------------------------------------------------------------------

    def run(self) -> dict[str, JobResult]:
        specs = self.workflow["jobs"]
        for name, spec in specs.items():
            unknown = set(spec) - JOB_KEYS
            if unknown:
                raise Unsupported(f"job {name}: {sorted(unknown)} not replayed")
        needs = {name: _needs(spec) for name, spec in specs.items()}
        self.root.mkdir(parents=True, exist_ok=True)
        self.jobs = {name: JobResult(name, self.root / name) for name in specs}
        running: dict[Future, str] = {}
        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            while True:
                for name, result in self.jobs.items():
                    if result.status != "pending" or name in running.values():
                        continue
                    states = {self.jobs[need].status for need in needs[name]}
                    if states & {"failure", "skipped"}:
                        result.status = "skipped"
                    elif states <= {"success"}:
                        running[pool.submit(self._job, name, specs[name], needs[name])] = name
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()  # a harness error (Unsupported) ends the replay
                    del running[future]
        return self.jobs

    # -- one job ------------------------------------------------------------------------------

    def _job(self, name: str, spec: dict[str, Any], needs: list[str]) -> None:
        result = self.jobs[name]
        result.started = time.time()
        temp = result.runner / "temp"
        result.workspace.mkdir(parents=True)
        temp.mkdir()
        context: dict[str, Any] = {
            "secrets": dict(self.secrets), "inputs": dict(self.inputs), "steps": {},
            "needs": {need: {"outputs": self.jobs[need].outputs} for need in needs},
            "runner": {"temp": str(temp)}, "github": {"workspace": str(result.workspace)},
            "env": {},
        }
        base_env = {**os.environ, **self.runner_env(result.runner), "CI": "true",
                    "GITHUB_ACTIONS": "true", "RUNNER_TEMP": str(temp),
                    "GITHUB_WORKSPACE": str(result.workspace)}
        declared = self._values(self.workflow.get("env") or {}, context)
        declared.update(self._values(spec.get("env") or {}, {**context, "env": declared}))
        context["env"] = declared
        succeeded = all(self._step(result, index, step, context, {**base_env, **declared})
                        for index, step in enumerate(spec.get("steps") or []))
        if succeeded:
            result.outputs = self._values(spec.get("outputs") or {}, context)
        result.finished = time.time()
        result.status = "success" if succeeded else "failure"  # last: children may start

    def _step(self, result: JobResult, index: int, step: dict[str, Any],
              context: dict[str, Any], env: dict[str, str]) -> bool:
        unknown = set(step) - STEP_KEYS
        if unknown:
            raise Unsupported(f"job {result.name} step {index}: {sorted(unknown)} not replayed")
        label = step.get("name") or step.get("uses") or f"step {index}"
        mapped = self.setup.get(step.get("uses", "")) or self.setup.get(step.get("name", ""))
        if mapped is not None:
            result.log.append(f"## {label}: mapped onto the prepared runner")
            mapped(result.workspace)
            return True
        if "run" not in step:
            raise Unsupported(f"job {result.name}: step {label!r} has no run: and no mapping")
        own = self._values(step.get("env") or {}, context)
        step_env = {**env, **own}
        output = result.runner / "temp" / f"output-{index}"
        output.touch()
        script = result.runner / "temp" / f"step-{index}.sh"
        script.write_text(self._substitute(step["run"], {**context,
                                                         "env": {**context["env"], **own}}))
        step_env["GITHUB_OUTPUT"] = str(output)
        result.log.append(f"## {label}\n{script.read_text()}")
        try:
            done = subprocess.run(["bash", "-e", str(script)], cwd=result.workspace,
                                  env=step_env, capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL, timeout=STEP_TIMEOUT)
            code, out = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired as err:
            code, out = -1, f"timed out after {STEP_TIMEOUT} s: {err}"
        result.log.append(out + f"## exit {code}")
        if step.get("id"):
            context["steps"][step["id"]] = {"outputs": _outputs(output.read_text())}
        return code == 0

    # -- expressions --------------------------------------------------------------------------

    def _values(self, mapping: Mapping[str, Any], context: dict[str, Any]) -> dict[str, str]:
        return {key: self._substitute(str(value), context) for key, value in mapping.items()}

    def _substitute(self, text: str, context: dict[str, Any]) -> str:
        return EXPRESSION.sub(lambda m: self._evaluate(m.group(1), context), text)

    @staticmethod
    def _evaluate(expression: str, context: dict[str, Any]) -> str:
        """A context property: GitHub yields '' for a missing secret or output."""
        parts = expression.split(".")
        shapes = {"secrets": 2, "inputs": 2, "env": 2, "runner": 2, "github": 2, "needs": 4,
                  "steps": 4}
        if parts[0] not in shapes or len(parts) != shapes[parts[0]] or (
                len(parts) == 4 and parts[2] != "outputs"):
            raise Unsupported(f"expression ${{{{ {expression} }}}}: the harness replays "
                              f"only {', '.join(CONTEXTS)}")
        if parts[0] in ("runner", "github") and parts[1] not in context[parts[0]]:
            raise Unsupported(f"${{{{ {expression} }}}}: the harness replays only "
                              f"{', '.join(CONTEXTS)}")
        if parts[0] == "needs" and parts[1] not in context["needs"]:
            raise Unsupported(f"${{{{ {expression} }}}}: {parts[1]} is not in this job's needs")
        value: Any = context[parts[0]]
        for part in parts[1:]:
            value = value.get(part, "") if isinstance(value, dict) else ""
        return str(value)


def _needs(spec: dict[str, Any]) -> list[str]:
    needs = spec.get("needs") or []
    return [needs] if isinstance(needs, str) else list(needs)


def _outputs(text: str) -> dict[str, str]:
    """`name=value` lines and `name<<DELIMITER` blocks, as GitHub reads $GITHUB_OUTPUT."""
    outputs: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            block = []
            for inner in lines:
                if inner == delimiter:
                    break
                block.append(inner)
            outputs[name] = "\n".join(block)
        elif "=" in line:
            name, value = line.split("=", 1)
            outputs[name] = value
    return outputs
