"""Build secrets, SSH, `network:` and extra `tags:` with real buildah: a secret reaches a RUN
step and its content is in no layer, log or report; a missing one stops the run before any
build; an image with two extra tags is pushed under three tags to one digest."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest
from conftest import Tree
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from registry import Registry

pytestmark = pytest.mark.integration

FILE_SECRET = "pip-index-password-5c1f0e"
ENV_SECRET = "gitlab-token-9a7d33"
# Each secret's sha256 is written into the image: proof the step read it, without its content.
SECRETS_TEMPLATE = """FROM {{ parent_image }}
RUN --mount=type=secret,id=pip_conf sha256sum /run/secrets/pip_conf | cut -d' ' -f1 > /pip.sum
RUN --mount=type=secret,id=token sha256sum /run/secrets/token | cut -d' ' -f1 > /token.sum
"""
REFERENCE = "localhost:5000/kolla/private:latest"
SSH_TEMPLATE = """FROM {{ parent_image }}
RUN --mount=type=ssh,id=deploy test -S "$SSH_AUTH_SOCK" && echo socket > /agent
"""


def add_image(tree: Tree, name: str, template: str, **fields: object) -> None:
    (tree.root / "templates" / name).mkdir()
    (tree.root / "templates" / name / "Dockerfile.j2").write_text(template)
    tree.edit_yaml(lambda data: data["images"].update({name: {"parent": "base", **fields}}))


def add_secret_image(tree: Tree) -> Path:
    secret_file = tree.root.parent / "pip.conf"  # outside the tree, as ~/.config/pip is
    secret_file.write_text(FILE_SECRET)
    tree.settings(secrets={"pip_conf": {"file": str(secret_file)}})
    add_image(tree, "private", SECRETS_TEMPLATE, secrets={"token": {"env": "BUILD_TOKEN"}})
    return secret_file


def buds_of(tree: Tree, name: str) -> list[list[str]]:
    """The `buildah bud` calls of the last run that built this image."""
    dockerfile = str(tree.root / "build" / name / "Dockerfile")
    return [call for call in tree.buildah_calls() if "bud" in call and dockerfile in call]


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def read_in_image(tree: Tree, reference: str, *paths: str) -> list[str]:
    container = tree.buildah("from", "--pull=never", reference).strip()
    try:
        mounted = Path(tree.buildah("mount", container).strip())
        return [(mounted / path).read_text().strip() for path in paths]
    finally:
        tree.buildah("rm", container)


def layer_bytes(tree: Tree, reference: str, folder: Path) -> list[bytes]:
    """Every file's bytes (and every name) in every layer of the image, unpacked."""
    tree.buildah("push", reference, f"oci:{folder}")
    index = json.loads((folder / "index.json").read_text())
    blobs = folder / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_bytes())
    found = [(blobs / manifest["config"]["digest"].split(":")[1]).read_bytes()]
    for layer in manifest["layers"]:
        with tarfile.open(blobs / layer["digest"].split(":")[1]) as archive:
            for member in archive:
                found.append(member.name.encode())
                content = archive.extractfile(member) if member.isfile() else None
                found.append(content.read() if content else b"")
    return found


def test_a_secret_reaches_its_run_step_and_no_layer_log_or_report(
        tree: Tree, tmp_path: Path) -> None:
    add_secret_image(tree)
    result = tree.doit("build", "images=^private$", env={"BUILD_TOKEN": ENV_SECRET})

    assert tree.statuses()["private"] == "built"
    assert read_in_image(tree, REFERENCE, "pip.sum", "token.sum") == [
        sha256(FILE_SECRET), sha256(ENV_SECRET)]
    secrets = [FILE_SECRET.encode(), ENV_SECRET.encode()]
    for blob in layer_bytes(tree, REFERENCE, tmp_path / "unpacked"):
        assert not any(secret in blob for secret in secrets)
    for path in [p for p in (tree.root / "build").rglob("*") if p.is_file()]:
        assert not any(secret in path.read_bytes() for secret in secrets), path
    assert not any(secret.decode() in result.stdout + result.stderr for secret in secrets)
    [bud] = buds_of(tree, "private")
    assert "id=token,src=BUILD_TOKEN,type=env" in bud
    assert not any(secret.decode() in " ".join(bud) for secret in secrets)


def test_a_changed_secret_rebuilds_nothing(tree: Tree) -> None:
    secret_file = add_secret_image(tree)
    tree.doit("build", "images=^private$", env={"BUILD_TOKEN": ENV_SECRET})
    key = tree.report()["images"]["private"]["key"]

    secret_file.write_text("another password")
    tree.doit("build", "images=^private$", env={"BUILD_TOKEN": "another token"})
    assert tree.report()["images"]["private"]["key"] == key
    assert not [call for call in tree.buildah_calls() if "bud" in call]


def test_a_missing_secret_stops_the_run_before_any_build(tree: Tree) -> None:
    add_secret_image(tree)
    result = tree.doit("build", check=False, env={})  # (the tests' environment lacks it)
    assert result.returncode == 1
    assert "image 'private': secret 'token': environment variable BUILD_TOKEN is not set" \
        in result.stderr
    assert "fix: export BUILD_TOKEN" in result.stderr
    assert not [call for call in tree.buildah_calls() if "bud" in call]


def test_ssh_and_network_reach_buildah_bud(tree: Tree) -> None:
    key = tree.root.parent / "deploy_key"
    key.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()))
    add_image(tree, "offline", SSH_TEMPLATE, network="host", ssh=[f"deploy={key}"])
    tree.doit("build", "images=^offline$")
    assert read_in_image(tree, "localhost:5000/kolla/offline:latest", "agent") == ["socket"]

    [bud] = buds_of(tree, "offline")
    assert bud[bud.index("--network") + 1] == "host"
    assert bud[bud.index("--ssh") + 1] == f"deploy={key}"
    key_before = tree.report()["images"]["offline"]["key"]

    tree.edit_yaml(lambda data: data["images"]["offline"].pop("network"))
    tree.doit("build", "images=^offline$")
    assert tree.report()["images"]["offline"]["key"] == key_before  # not in the key
    assert tree.statuses()["offline"] == "up-to-date"


def test_two_extra_tags_push_three_tags_to_one_digest(tree: Tree, registry: Registry) -> None:
    tree.settings(registry=registry.address, tls_verify=False)
    tree.edit_yaml(lambda data: data["images"]["cron"].update(tags=["2026.1", "stable"]))
    tree.doit("push", "images=^cron$")

    digest = tree.report()["pushes"]["cron"]["digest"]
    assert {tag: registry.digest("kolla/cron", tag) for tag in ("latest", "2026.1", "stable")} \
        == dict.fromkeys(("latest", "2026.1", "stable"), digest)

    # a release tag added later: set on the pushed image, which is neither built nor pushed
    tree.edit_yaml(lambda data: data["images"]["cron"]["tags"].append("2026.1.1"))
    tree.doit("push", "images=^cron$")
    assert registry.digest("kolla/cron", "2026.1.1") == digest
    assert not [call for call in tree.buildah_calls() if "bud" in call or "push" in call]

    # resolve lists the tags that name the image's digest now: not one added since the push
    tree.edit_yaml(lambda data: data["images"]["cron"]["tags"].append("next"))
    tree.doit("resolve", "images=^cron$")
    lock = json.loads((tree.root / "build" / "images.lock.json").read_text())
    assert lock["images"]["cron"]["tags"] == [
        f"{registry.address}/kolla/cron:{tag}"
        for tag in ("latest", "2026.1", "stable", "2026.1.1")]
    assert lock["images"]["cron"]["digest"] == digest
