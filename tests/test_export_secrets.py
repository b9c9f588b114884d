"""Build secrets in exported workflows: each job that builds an image with `secrets:` gets
them from the engine's secret store (GitHub `secrets.X`, GitLab CI variables, an Argo
Kubernetes secret), a file secret written to its file before the build; no secret's content
is in the file."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO, Tree, actionlint
from gha_replay import Replay
from test_export import HOSTILE, clone, run_argo_script, stub_cache, stubs, tree_in

from buildlib import export, export_argo, signing
from buildlib.build_access import EngineSecret

FILE_CONTENT = "[global]\nindex-url = https://user:pw-3f9a@pypi.example/simple\n"
TOKEN = "glpat-secret-77e1"
FILE_VARIABLE = "IMAGEBAKE_SECRET_PIP_CONF"


def tree_with_secrets(tmp_path: Path) -> Tree:
    """The example tree (in a folder whose name is shell) where nova-base reads a file
    secret and a token; the secret's file exists on this machine only."""
    tree = tree_in(tmp_path / "repo" / HOSTILE, tmp_path / "storage")
    (tree.root / "pip.conf").write_text(FILE_CONTENT)
    tree.edit_yaml(lambda data: data["images"]["nova-base"].update(secrets={
        "pip_conf": {"file": "pip.conf"}, "token": {"env": "GITLAB_TOKEN"}}))
    return tree


def test_gha_jobs_get_their_images_secrets_and_write_the_file(tmp_path: Path) -> None:
    tree = tree_with_secrets(tmp_path)
    tree.doit("export", "format=gha")
    workflow = tmp_path / "repo" / ".github" / "workflows" / "images.yml"
    text = workflow.read_text()
    assert FILE_CONTENT.splitlines()[1] not in text and TOKEN not in text
    assert actionlint(workflow) == []
    jobs = yaml.safe_load(text)["jobs"]
    build = jobs["nova-base"]["steps"][3]
    assert build["env"]["GITLAB_TOKEN"] == "${{ secrets.GITLAB_TOKEN }}"
    assert build["env"][FILE_VARIABLE] == f"${{{{ secrets.{FILE_VARIABLE} }}}}"
    assert build["env"]["IMAGEBAKE_SECRET_FILES"] == f"{FILE_VARIABLE}={HOSTILE}/pip.conf"
    assert "GITLAB_TOKEN" not in jobs["nova-api"]["steps"][3]["env"]  # only who builds it

    bin_dir = stubs(tmp_path / "stubs")
    cache = stub_cache(tmp_path / "cache", bin_dir)
    path = f"{bin_dir}:{os.environ['PATH']}"
    runs = Replay.of(workflow, tmp_path / "runners",
                     secrets={FILE_VARIABLE: FILE_CONTENT, "GITLAB_TOKEN": TOKEN},
                     runner_env=lambda runner: {"PATH": path, "STUB_LOG": str(runner / "log"),
                                                "IMAGEBAKE_CACHE": str(cache)},
                     setup={"actions/checkout@v5": clone(tmp_path / "repo")}).run()
    assert runs["nova-base"].status == "success", runs["nova-base"].text
    written = runs["nova-base"].workspace / HOSTILE / "pip.conf"
    assert written.read_text() == FILE_CONTENT
    assert stat.S_IMODE(written.stat().st_mode) == 0o600


def test_a_job_without_its_secret_stops_before_the_build(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text(export.Tool.write_secrets([EngineSecret(FILE_VARIABLE, "x/pip.conf")])
                      + "echo built\n")
    done = subprocess.run(["bash", "-e", str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={
                              **os.environ, "IMAGEBAKE_DIR": str(Path.cwd()),
                              "IMAGEBAKE_SECRET_FILES": f"{FILE_VARIABLE}=x/pip.conf"})
    assert done.returncode == 1 and "built" not in done.stdout
    assert f"the secret {FILE_VARIABLE} is not set or empty" in done.stderr
    assert not (tmp_path / "x" / "pip.conf").exists()


def test_gitlab_and_argo_jobs_get_their_secrets(tmp_path: Path) -> None:
    tree = tree_with_secrets(tmp_path)
    tree.doit("export", "format=gitlab")
    tree.doit("export", "format=argo")
    gitlab = yaml.safe_load((tmp_path / "repo" / ".gitlab-ci.yml").read_text())
    assert gitlab["nova-base"]["variables"] == {
        "IMAGEBAKE_SECRET_FILES": f"{FILE_VARIABLE}={HOSTILE}/pip.conf".replace("$", "$$")}
    assert gitlab["nova-base"]["script"][0] == 'sh "$IMAGEBAKE_DIR/buildlib/ci_secrets.sh"'
    assert "variables" not in gitlab["nova-api"]

    argo_file = tree.root / "build" / "argo-workflow.yaml"
    assert FILE_CONTENT.splitlines()[1] not in argo_file.read_text()
    argo = yaml.safe_load(argo_file.read_text())
    assert export_argo.argo_problems(argo) == []
    [template] = [t for t in argo["spec"]["templates"] if t["name"] == "nova-base"]
    env = {item["name"]: item for item in template["script"]["env"]}
    assert env["GITLAB_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": export_argo.ARGO_BUILD_SECRETS, "key": "GITLAB_TOKEN", "optional": True}
    assert env[FILE_VARIABLE]["valueFrom"]["secretKeyRef"]["key"] == FILE_VARIABLE

    bin_dir = stubs(tmp_path / "stubs")
    pod = tmp_path / "pod"
    source = template["script"]
    source["env"].append({"name": FILE_VARIABLE, "value": FILE_CONTENT})  # as k8s gives it
    run_argo_script(source, pod, f"{bin_dir}:{os.environ['PATH']}", clone(tmp_path / "repo"),
                    stub_cache(tmp_path / "cache", bin_dir))
    assert (pod / "exit").read_text().startswith("0\n"), (pod / "exit").read_text()
    assert (pod / "src" / HOSTILE / "pip.conf").read_text() == FILE_CONTENT


def test_a_job_installs_the_extras_its_tree_needs(tmp_path: Path) -> None:
    """A tree that signs or verifies needs signing's crypto on the runner (pyproject.toml's
    `sign` extra), one with an SBOM syft too: the jobs' install adds them, and no more."""
    tree = tree_in(tmp_path / "repo" / "tree", tmp_path / "storage")

    def exported_extras() -> str | None:
        tree.doit("export", "format=gitlab")
        return yaml.safe_load((tmp_path / "repo" / ".gitlab-ci.yml").read_text())[
            "variables"].get("IMAGEBAKE_EXTRAS")

    assert exported_extras() is None
    signing.write_pair(tree.root, b"password")
    tree.settings(trust={"keys": ["cosign.pub"]})
    assert exported_extras() == "sign"
    tree.settings(sign={"key": "cosign.key", "sbom": True}, trust={"keys": ["cosign.pub"]})
    assert exported_extras() == "sign sbom"


def test_a_job_gets_the_ssh_keys_of_the_images_it_builds(tmp_path: Path) -> None:
    """`ssh: [default]`: a key for an agent the job starts (IMAGEBAKE_SSH_KEYS names it);
    `ID=PATH,...`: a key per path, written there as a file secret is."""
    tree = tree_in(tmp_path / "repo" / "tree", tmp_path / "storage")
    tree.edit_yaml(lambda data: data["images"]["nova-base"].update(
        ssh=["default", "deploy=keys/one,~/.ssh/two"]))
    tree.doit("export", "format=gha")
    jobs = yaml.safe_load((tmp_path / "repo" / ".github" / "workflows" / "images.yml")
                          .read_text())["jobs"]
    build = jobs["nova-base"]["steps"][3]
    variables = ("IMAGEBAKE_SSH_DEFAULT", "IMAGEBAKE_SSH_DEPLOY_1", "IMAGEBAKE_SSH_DEPLOY_2")
    assert {name: build["env"][name] for name in variables} == {
        name: f"${{{{ secrets.{name} }}}}" for name in variables}
    assert build["env"]["IMAGEBAKE_SSH_KEYS"] == "IMAGEBAKE_SSH_DEFAULT"
    assert build["env"]["IMAGEBAKE_SECRET_FILES"].splitlines() == [
        "IMAGEBAKE_SSH_DEPLOY_1=tree/keys/one", "IMAGEBAKE_SSH_DEPLOY_2=~/.ssh/two"]
    assert build["run"].splitlines()[:2] == ['sh "$IMAGEBAKE_DIR/buildlib/ci_secrets.sh"',
                                             '. "$IMAGEBAKE_DIR/buildlib/ci_ssh.sh"']
    assert not any("SSH" in name for name in jobs["nova-api"]["steps"][3]["env"])
    workflow = yaml.safe_load((tmp_path / "repo" / ".github" / "workflows" / "images.yml")
                              .read_text())
    assert workflow["env"]["IMAGEBAKE_SSH_AGENT"] == "1"  # the install adds openssh-client


def test_a_kolla_trees_jobs_install_the_kolla_release_it_was_exported_with(
        tmp_path: Path) -> None:
    """Kolla's templates are the images' Dockerfiles: a job installs the kolla extra at
    the release the export found installed (another would build other images)."""
    from importlib import metadata

    tree = tree_in(tmp_path / "repo" / "tree", tmp_path / "storage")
    tree.edit_yaml(lambda data: (data.__setitem__("kolla", {"base": "debian"}),
                                 data.__setitem__("images", {})))
    tree.doit("export", "format=gitlab", "images=^cron$")
    variables = yaml.safe_load((tmp_path / "repo" / ".gitlab-ci.yml").read_text())["variables"]
    assert variables["IMAGEBAKE_EXTRAS"] == "kolla"
    assert variables["IMAGEBAKE_PINNED"] == f"kolla=={metadata.version('kolla')}"


@pytest.mark.real  # a virtualenv installed from the package index (about 15 s)
def test_the_install_step_takes_the_extras_and_what_is_pinned(tmp_path: Path) -> None:
    """buildlib/ci_install.sh as a job sources it: the dependencies, the extras the export
    named (sign: cryptography) and what it pinned, exactly that version."""
    workspace = tmp_path / "job"
    workspace.mkdir()
    env = {**os.environ, "IMAGEBAKE_DIR": str(REPO), "IMAGEBAKE_CACHE": str(tmp_path / "cache"),
           "IMAGEBAKE_EXTRAS": "sign", "IMAGEBAKE_PINNED": "tenacity==8.5.0"}
    subprocess.run(["bash", "-c", '. "$IMAGEBAKE_DIR/buildlib/ci_install.sh"'], cwd=workspace,
                   env=env, check=True, timeout=600)
    found = subprocess.run(
        [str(workspace / ".venv" / "bin" / "python"), "-c",
         "import cryptography, nacl, importlib.metadata as m; print(m.version('tenacity'))"],
        capture_output=True, text=True, check=True).stdout.strip()
    assert found == "8.5.0"
