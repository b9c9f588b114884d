"""`doit export`: the selection partitioned into jobs, written as a GitHub Actions, GitLab CI
or Argo Workflows workflow where that CI looks for it, with the estimated makespans of
this partition and of the two extremes. The writers (`export*.py`) are pure; this room
reads the run, the repository and the last report.json (and is imported only by
`doit export`: it loads the writers and a YAML writer)."""

from __future__ import annotations

from pathlib import Path

from buildlib import (
    build_access,
    dispatch,
    export,
    export_argo,
    export_gha,
    export_gitlab,
    export_jobs,
    project,
)
from buildlib.doit_seam import display_path
from buildlib.errors import CommandFailed, InputError
from buildlib.export import Target, Tool
from buildlib.export_jobs import Estimates
from buildlib.graph import Graph
from buildlib.options import ExportOptions, export_options
from buildlib.run import Run

# Where GitHub and GitLab look for the workflow, in the repository.
WORKFLOW_FILES = {"gha": ".github/workflows/images.yml", "gitlab": ".gitlab-ci.yml"}
UNKNOWN_DURATION = 60.0  # seconds per image when the last report.json has none
TOOL_DIR = Path(__file__).resolve().parents[1]  # the imagebake checkout running now


def write_workflow(run: Run, tool_dir: Path = TOOL_DIR) -> None:
    """Partition the selection into jobs, write the workflow, print the estimates; raises
    CommandFailed on bad variables, a path the workflow cannot name, or jobs the format
    cannot write. `tool_dir` is the imagebake checkout the jobs install."""
    proj = run.project
    try:
        options = export_options(proj, run.options)
        root = _repository_root(proj.config.root)
        sub = export_jobs.selected_graph(proj.graph, run.selection.selected)
        tool, target = _tool(root, tool_dir, proj, sub), _target(proj, options)
        _check_safe(proj, tool, target, sub)
    except InputError as err:
        raise CommandFailed(f"error: {err}") from None
    measured = dispatch.build_seconds(run.last_report)
    estimates = _estimates(sub, measured, options)
    text = _text(run, options, estimates, tool, target, sub)
    path = options.out or (root / WORKFLOW_FILES[options.format]
                           if options.format in WORKFLOW_FILES
                           else proj.build_dir / "argo-workflow.yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    count = len(estimates.chosen.jobs)
    print(f"wrote {display_path(path)}: {count} job{'s' * (count != 1)} for "
          f"{len(sub.parents)} images ({len(text.encode()) / 1024:.1f} KiB)")
    _print_estimates(estimates, options, known=sum(name in measured for name in sub.parents))


def _tool(root: Path, tool_dir: Path, proj: project.Project, sub: Graph) -> Tool:
    folder = _inside(root, proj.config.root, proj, "images.yaml")
    return export.Tool(directory=_inside(root, tool_dir, proj, "imagebake (dodo.py)"),
                       config=_config_files(root, proj),
                       lock=_inside(root, proj.lock_path, proj, "build_dir"),
                       secrets=tuple((name, tuple(build_access.engine_secrets(
                           proj.plans[name].access, folder))) for name in sub.parents),
                       extras=_extras(proj), pinned=_pinned(proj))


def _pinned(proj: project.Project) -> tuple[str, ...]:
    """The kolla release whose templates a Kolla tree of the installed package renders: a
    job installs that one (another would render other Dockerfiles, so other images)."""
    if proj.config.kolla is None or proj.config.kolla.docker != "package":
        return ()
    from importlib import metadata

    return (f"kolla=={metadata.version('kolla')}",)


def _extras(proj: project.Project) -> tuple[str, ...]:
    """The optional dependencies a job of this tree needs: signing's and verifying's
    crypto, syft for an SBOM, kolla to expand a Kolla tree."""
    settings = proj.config.settings
    return tuple(extra for extra, needed in (
        ("sign", settings.sign is not None or settings.trust is not None),
        ("sbom", bool(settings.sign and settings.sign.sbom)),
        ("kolla", proj.config.kolla is not None)) if needed)


def _target(proj: project.Project, options: ExportOptions) -> Target:
    return export.Target(proj.config.settings.registry, proj.config.settings.tls_verify,
                         runs_on=options.runs_on or (export.GHA_RUNNER
                                                     if options.format == "gha" else ()),
                         storage=options.storage, runners=options.runners,
                         signs=proj.config.settings.sign is not None,
                         verifies=proj.config.settings.trust is not None)


def _check_safe(proj: project.Project, tool: Tool, target: Target, sub: Graph) -> None:
    """Refuses a path or label that would break the workflow."""
    unsafe = export.unsafe(tool, target, sub.parents)
    if unsafe:
        raise InputError(proj.config.path, f"cannot write it into a workflow: {unsafe}",
                         fix="rename that folder (or build_dir) without `{{` and "
                         "control characters")


def _estimates(sub: Graph, measured: dict[str, float], options: ExportOptions) -> Estimates:
    durations = {name: measured.get(name, UNKNOWN_DURATION) for name in sub.parents}
    return export_jobs.partition(sub, durations, options.max_jobs, options.job_start)


def _text(run: Run, options: ExportOptions, estimates: Estimates, tool: Tool, target: Target,
          sub: Graph) -> str:
    """The workflow in its format's YAML."""
    whole = not run.selection.excluded
    platforms = {name: run.project.plans[name].platforms for name in sub.parents}
    try:
        if options.format == "argo":
            return export_argo.argo(estimates.chosen, tool, target, whole)
        exporter = {"gha": export_gha.gha, "gitlab": export_gitlab.gitlab}[options.format]
        return exporter(estimates.chosen, tool, target, whole, platforms=platforms)
    except ValueError as err:  # jobs the format cannot write
        raise CommandFailed(f"error: {run.project.config.path}: {err}; export with another "
                            "max_jobs= (or none: one job per image)") from None
    except ModuleNotFoundError as err:  # hera, for format=argo
        raise CommandFailed(f"error: format={options.format} needs {err.name}: install the "
                            "`argo` extra (`pip install '.[argo]'` in the imagebake "
                            "checkout)") from None


def _print_estimates(estimates: Estimates, options: ExportOptions, known: int) -> None:
    count = len(estimates.chosen.jobs)
    print(f"estimated makespan (job start {options.job_start:g} s; build times of {known} "
          f"images from the last report.json, {UNKNOWN_DURATION:g} s for the others):")
    for label, part in [(f"this workflow ({count} job{'s' * (count != 1)})", estimates.chosen),
                        (f"one job per image ({len(estimates.per_image.jobs)} jobs)",
                         estimates.per_image),
                        ("one job for everything", estimates.single)]:
        print(f"  {label:<32} {_duration(part.makespan)}")


def _repository_root(start: Path) -> Path:
    """The git work tree holding images.yaml (the workflow checks it out), else its folder."""
    for folder in [start, *start.parents]:
        if (folder / ".git").exists():
            return folder
    return start


def _config_files(root: Path, proj: project.Project) -> str:
    """images.yaml and the files merged on top of it, as the jobs name them (`-c A,B`); a
    --set is this run's only, never the workflow's."""
    sources = proj.config.sources
    if sources.sets:
        raise InputError(proj.config.path, f"--set {sources.sets[0]!r} is for this run only",
                         fix="put the change in images.override.yaml (or a file named by "
                         "-c) for the workflow's jobs, and export again")
    return ",".join(_inside(root, file, proj, "images.yaml") for file in sources.files)


def _inside(root: Path, path: Path, proj: project.Project, what: str) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix() or "."
    except ValueError:
        raise InputError(proj.config.path, f"{what} at {path} is outside the repository "
                         f"{root} that the workflow checks out",
                         fix="keep imagebake, images.yaml and build_dir in the repository "
                         "that the workflow runs in") from None


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
