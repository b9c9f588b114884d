"""secrets:, ssh:, network: and tags: in images.yaml: checked when loaded, merged per image,
each missing source one clear error, and buildah's options naming where, never what."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_config import load_error, write

from buildlib import build_access, buildah, config, config_load
from buildlib.errors import InputError


def load(tmp_path: Path, text: str) -> config.Config:
    return config_load.load(write(tmp_path, text))


TREE = """\
    settings:
      secrets:
        pip_conf: {file: pip.conf}
        token: {env: OLD_TOKEN}
      ssh: [default]
    images:
      base:
        secrets: {token: {env: GITLAB_TOKEN}}
        ssh: ["deploy=keys/id_ed25519,keys/other"]
        tags: ["2026.1"]
      child: {parent: base}
    """


def test_an_image_has_settings_secrets_and_ssh_under_its_own(tmp_path: Path) -> None:
    cfg = load(tmp_path, TREE)
    base, child = (build_access.access_of(cfg, name) for name in ("base", "child"))
    assert base.secret_sources(cfg.root) == {"pip_conf": ("file", str(cfg.root / "pip.conf")),
                                             "token": ("env", "GITLAB_TOKEN")}
    assert child.secret_sources(cfg.root)["token"] == ("env", "OLD_TOKEN")
    assert base.ssh_sources(cfg.root) == [
        "default", f"deploy={cfg.root}/keys/id_ed25519,{cfg.root}/keys/other"]
    assert child.ssh_sources(cfg.root) == ["default"]
    assert cfg.images["base"].tags == ["2026.1"]


def test_a_second_load_from_the_note_gives_the_same_secrets(tmp_path: Path) -> None:
    (tmp_path / "build").mkdir()
    first = load(tmp_path, TREE)
    again = load(tmp_path, TREE)  # made from the note of the first, without pydantic
    assert again.settings.secrets == first.settings.secrets
    assert again.images["base"].secrets == {"token": config.Secret(env="GITLAB_TOKEN")}


def test_what_a_run_lacks_is_named_with_its_fix(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load(tmp_path, TREE)
    monkeypatch.delenv("GITLAB_TOKEN", raising=False)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    missing = build_access.access_of(cfg, "base").missing(cfg.root)
    assert [problem for problem, _ in missing] == [
        f"secret 'pip_conf': file {cfg.root}/pip.conf does not exist",
        "secret 'token': environment variable GITLAB_TOKEN is not set",
        "ssh 'default': SSH_AUTH_SOCK is not set (no SSH agent)",
        f"ssh 'deploy': {cfg.root}/keys/id_ed25519 does not exist",
        f"ssh 'deploy': {cfg.root}/keys/other does not exist"]
    with pytest.raises(InputError) as info:
        build_access.check(cfg, [("base", build_access.access_of(cfg, "base"))])
    assert "image 'base': secret 'pip_conf'" in str(info.value)
    assert "fix: create it" in str(info.value)

    (tmp_path / "pip.conf").write_text("[global]\n")
    (tmp_path / "keys").mkdir()
    for key in ("id_ed25519", "other"):
        (tmp_path / "keys" / key).write_text("key\n")
    monkeypatch.setenv("GITLAB_TOKEN", "t")
    monkeypatch.setenv("SSH_AUTH_SOCK", "/run/agent")
    assert build_access.access_of(cfg, "base").missing(cfg.root) == []


def test_a_secret_file_in_the_home_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = load(tmp_path, "settings: {secrets: {pip: {file: ~/.pip.conf}}}\nimages: {base: }\n")
    assert build_access.access_of(cfg, "base").secret_sources(cfg.root) == {
        "pip": ("file", str(tmp_path / "home" / ".pip.conf"))}


def test_buildah_is_told_where_each_secret_is_never_its_value() -> None:
    options = buildah.access_options({"token": ("env", "GITLAB_TOKEN"),
                                      "pip": ("file", "/home/u/pip.conf")},
                                     ["default", "deploy=/k"], "host")
    assert options == ["--secret", "id=pip,src=/home/u/pip.conf",
                       "--secret", "id=token,src=GITLAB_TOKEN,type=env",
                       "--ssh", "default", "--ssh", "deploy=/k", "--network", "host"]
    assert buildah.access_options({}, [], None) == []


@pytest.mark.parametrize(("secret", "given"), [
    ("{file: a, env: B}", "file and env given"), ("{}", "nothing given")])
def test_a_secret_names_one_source(tmp_path: Path, secret: str, given: str) -> None:
    message = load_error(tmp_path, f"images:\n  base:\n    secrets: {{tok: {secret}}}\n")
    assert f"images.base.secrets.tok: {given}" in message
    assert "line 3" in message


@pytest.mark.parametrize("secret", ["{'a,b': {env: X}}", "{tok: {file: 'a,b'}}",
                                    "{tok: {env: 'X Y'}}"])
def test_buildah_can_read_each_secret(tmp_path: Path, secret: str) -> None:
    message = load_error(tmp_path, f"images:\n  base:\n    secrets: {secret}\n")
    assert "an id, file or variable buildah cannot take" in message


def test_a_secret_has_no_other_key(tmp_path: Path) -> None:
    message = load_error(tmp_path, "settings: {secrets: {tok: {path: a}}}\nimages: {base: }\n")
    assert "unknown key 'settings.secrets.tok.path'" in message
    assert "allowed here: file, env" in message


def test_an_extra_tag_must_be_a_tag(tmp_path: Path) -> None:
    message = load_error(tmp_path, "images:\n  base: {tags: [ok, -bad]}\n")
    assert "images.base.tags: invalid tag '-bad'" in message


@pytest.mark.parametrize(("isolation", "network", "said"), [
    ("oci", "wifi", "'wifi' is not a network buildah knows"),
    ("chroot", "none", "none needs a network namespace")])
def test_network_is_one_buildah_can_give(tmp_path: Path, isolation: str, network: str,
                                         said: str) -> None:
    message = load_error(tmp_path, f"settings: {{isolation: {isolation}}}\n"
                                   f"images:\n  base: {{network: {network}}}\n")
    assert f"images.base.network: {said}" in message


def test_network_loads(tmp_path: Path) -> None:
    cfg = load(tmp_path, "settings: {isolation: oci}\nimages: {base: {network: none}}\n")
    assert build_access.access_of(cfg, "base").network == "none"


def test_a_job_of_an_exported_workflow_gets_each_secret_from_the_engine(tmp_path: Path) -> None:
    cfg = load(tmp_path, """\
        settings: {secrets: {pip.conf: {file: pip.conf}, home: {file: ~/.netrc}}}
        images: {base: {secrets: {token: {env: GITLAB_TOKEN}, abs: {file: /etc/x}}}}
        """)
    assert build_access.engine_secrets(build_access.access_of(cfg, "base"), "ci/tree") == [
        build_access.EngineSecret("IMAGEBAKE_SECRET_ABS", "/etc/x"),
        build_access.EngineSecret("IMAGEBAKE_SECRET_HOME", "~/.netrc"),
        build_access.EngineSecret("IMAGEBAKE_SECRET_PIP_CONF", "ci/tree/pip.conf"),
        build_access.EngineSecret("GITLAB_TOKEN")]


@pytest.mark.parametrize(("tasks", "builds"), [
    ((), True), (("build",), True), (("push:nova-api",), True), (("resolve",), False),
    (("prune", "clean"), False), (("resolve", "build:base"), True)])
def test_only_a_run_that_may_build_needs_the_secrets(tasks: tuple[str, ...],
                                                      builds: bool) -> None:
    assert build_access.builds_images(tasks) is builds
