"""settings.sign and settings.trust against a loopback registry: the example tree pushed
signed (checked by the independent verifier of cosign's format in
test_signing_integration), a fresh machine that trusts the key builds nothing, a forged or
foreign-signed key tag is rebuilt with one warning, and `verify` says which image fails."""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Tree, unmount_under
from gha_replay import Replay
from registry import Registry
from test_build_integration import EXAMPLE, built, ids
from test_export_replay_integration import (
    checkout,
    export,
    link_venv,
    prepare,
    repository,
    runner_env,
)
from test_platforms_integration import copy_only  # noqa: F401  (a fixture)
from test_signing_integration import cosign_verify, cosign_verify_attestation
from test_trust_integration import key_tag, plant

from buildlib import signatures, signing
from buildlib.registry import Client

pytestmark = pytest.mark.integration

PASSWORD = "integration"
ENV = {"COSIGN_PASSWORD": PASSWORD}


def signing_machines(machines: tuple[Tree, Tree]) -> tuple[Tree, Tree]:
    """A signs its pushes and trusts its key; B trusts A's public key, has no private key."""
    machine_a, machine_b = machines
    machine_a.doit("keygen", env=ENV)
    machine_a.settings(sign={"key": "cosign.key"}, trust={"keys": ["cosign.pub"]})
    shutil.copy(machine_a.root / "cosign.pub", machine_b.root / "cosign.pub")
    machine_b.settings(trust={"keys": ["cosign.pub"]})
    return machine_a, machine_b


def forge(registry: Registry, tree: Tree, name: str, key: str) -> str:
    """Over `name`'s key tag: another image whose manifest carries the annotation of `key`
    (what someone allowed to push can do); the forged manifest's digest."""
    tag = key_tag(tree, name)
    plant(tree, registry, f"kolla/{name}:planted", None)
    response = registry.request("GET", f"/v2/kolla/{name}/manifests/planted",
                                {"Accept": "application/vnd.oci.image.manifest.v1+json"})
    document = json.loads(response.body)
    document["annotations"] = {"org.imagebake.key": key}
    body = json.dumps(document).encode()
    conn = http.client.HTTPConnection("127.0.0.1", registry.port, timeout=30)
    conn.request("PUT", f"/v2/kolla/{name}/manifests/{tag}", body,
                 {"Content-Type": document["mediaType"]})
    answer = conn.getresponse()
    assert answer.status == 201, answer.read()
    digest = answer.getheader("Docker-Content-Digest")
    conn.close()
    return digest


def test_a_signed_tree_is_verified_reused_and_a_forgery_rebuilt(
        machines: tuple[Tree, Tree], registry: Registry) -> None:
    machine_a, machine_b = signing_machines(machines)
    machine_a.doit("build")
    started = time.monotonic()
    machine_a.doit("push", env=ENV)
    print(f"\nsigned push of {len(EXAMPLE)} images: {time.monotonic() - started:.2f} s")
    public = (machine_a.root / "cosign.pub").read_bytes()
    report = machine_a.report()
    digests = {name: registry.digest(f"kolla/{name}", "latest") for name in EXAMPLE}
    for name in EXAMPLE:
        cosign_verify(registry, digests[name], public, f"kolla/{name}")
        statement = cosign_verify_attestation(registry, digests[name], public, f"kolla/{name}")
        parameters = statement["predicate"]["buildDefinition"]
        assert parameters["externalParameters"]["key"] == report["images"][name]["key"]
        parent = {"base": None, "cron": "base", "nova-api": "nova-base"}.get(name)
        if name in ("base", "cron", "nova-api"):
            named = [d for d in parameters["resolvedDependencies"] if d["name"] == "parent"]
            assert named == ([{"name": "parent", "digest": {
                "sha256": digests[parent].removeprefix("sha256:")},
                "uri": f"oci://{registry.address}/kolla/{parent}:latest"}] if parent else [])

    # a fresh machine that trusts the key builds nothing, warns of nothing
    run_b = machine_b.doit("build", "cache=registry")
    assert built(machine_b) == set(), run_b.stdout
    assert "warning" not in run_b.stderr
    verified = machine_b.doit("verify", "cache=registry")  # as an exported job runs it
    assert verified.stdout.count(" ok") >= len(EXAMPLE), verified.stdout

    # an unsigned image carrying base's key: not taken, rebuilt, one warning; verify fails
    forged = forge(registry, machine_a, "base", report["images"]["base"]["key"])
    for each in (machine_b.root / "build",):
        shutil.rmtree(each)
    machine_b.buildah("rmi", "--all", "--force")
    run_b = machine_b.doit("build", "cache=registry", "images=^base$")
    assert run_b.stderr.count("not cached: unsigned") == 1, run_b.stderr
    assert forged in run_b.stderr
    assert built(machine_b) == {"base"}
    assert ids(machine_b)["base"] == report["images"]["base"]["id"]
    failed = machine_b.doit("verify", check=False)
    assert failed.returncode == 1
    assert "verify failed for base" in failed.stdout + failed.stderr
    assert "unsigned" in failed.stdout


def test_a_key_tag_signed_by_another_key_is_refused(machines: tuple[Tree, Tree],
                                                    registry: Registry) -> None:
    machine_a, machine_b = signing_machines(machines)
    machine_a.doit("push", "images=^cron$", env=ENV)  # base and cron
    key = machine_a.report()["images"]["base"]["key"]
    forged = forge(registry, machine_a, "base", key)
    other = signing.load_private(signing.generate(b"other").private_pem, b"other")
    client = Client(registry.address, tls_verify=False, authfile=None)
    signatures.sign_image(client, f"{registry.address}/kolla/base", forged, other)
    run_b = machine_b.doit("build", "cache=registry", "images=^base$")
    assert run_b.stderr.count("not cached: signed by an unknown key") == 1, run_b.stderr
    assert built(machine_b) == {"base"}

    # pinned, it is used for the run by its digest only, under no key
    pinned = machine_b.doit("build", "images=^cron$", f"pin=base@{forged}")
    assert "signed by an unknown key (settings.trust): used by its digest only" in pinned.stderr
    assert built(machine_b) == {"cron"}

    # machine A's next push puts its own signed image back under the key's tag
    machine_a.doit("push", "images=^cron$", env=ENV)
    assert registry.digest("kolla/base", key_tag(machine_a, "base")) != forged
    assert machine_b.doit("verify", "images=^cron$").stdout.count(" ok") == 2


def test_signing_needs_the_password_before_any_build(machines: tuple[Tree, Tree]) -> None:
    machine_a, _ = signing_machines(machines)
    run = machine_a.doit("push", check=False, env={"COSIGN_PASSWORD": "wrong"})
    assert run.returncode == 1 and "settings.sign/trust" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    assert not (machine_a.root / "build" / "base" / "base-build.log").exists()
    (machine_a.root / "cosign.key").rename(machine_a.root / "elsewhere.key")
    run = machine_a.doit("push", check=False, env=ENV)
    assert run.returncode == 1 and "cosign.key: No such file" in run.stderr, run.stderr
    assert "imagebake keygen" in run.stderr and "Traceback" not in run.stderr
    machine_a.doit("build", "images=^base$")  # a build signs nothing: no key, no password


def test_an_sbom_is_attached_signed_when_asked_for(machines: tuple[Tree, Tree],
                                                  registry: Registry) -> None:
    machine_a, _ = signing_machines(machines)
    machine_a.settings(sign={"key": "cosign.key", "sbom": True})
    machine_a.doit("push", "images=^cron$", env=ENV)
    public = (machine_a.root / "cosign.pub").read_bytes()
    for name in ("base", "cron"):
        digest = registry.digest(f"kolla/{name}", "latest")
        statement = cosign_verify_attestation(registry, digest, public, f"kolla/{name}",
                                              "https://spdx.dev/Document")
        assert statement["predicate"]["spdxVersion"].startswith("SPDX-")
        assert isinstance(statement["predicate"].get("packages"), list)
        cosign_verify_attestation(registry, digest, public, f"kolla/{name}")  # still one
    verified = machine_a.doit("verify", "images=^cron$")
    assert "SBOM" in verified.stdout and verified.stdout.count("signed") >= 4, verified.stdout
    machine_a.doit("push", "images=^cron$", env=ENV)  # again: nothing attached twice
    digest = registry.digest("kolla/cron", "latest")
    cosign_verify_attestation(registry, digest, public, "kolla/cron", "https://spdx.dev/Document")


def test_a_multi_arch_push_signs_the_list_and_each_platform_image(
        copy_only: Tree, registry: Registry) -> None:  # noqa: F811
    tree = copy_only
    signing.write_pair(tree.root, PASSWORD.encode())
    tree.settings(sign={"key": "cosign.key"}, trust={"keys": ["cosign.pub"]})
    tree.doit("push", env=ENV)
    public = (tree.root / "cosign.pub").read_bytes()
    lists = {name: registry.digest(f"multi/{name}", "latest") for name in ("root", "child")}
    for name, digest in lists.items():
        repository = f"multi/{name}"
        cosign_verify(registry, digest, public, repository)
        index = json.loads(registry.request("GET", f"/v2/{repository}/manifests/{digest}", {
            "Accept": "application/vnd.oci.image.index.v1+json"}).body)
        for entry in index["manifests"]:
            cosign_verify(registry, entry["digest"], public, repository)
            statement = cosign_verify_attestation(registry, entry["digest"], public, repository)
            platform = statement["predicate"]["buildDefinition"]["externalParameters"]
            assert platform["platform"] == f"{entry['platform']['os']}/" \
                                           f"{entry['platform']['architecture']}"
    statement = cosign_verify_attestation(registry, lists["child"], public, "multi/child")
    [parent] = [d for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]
                if d["name"] == "parent"]
    assert parent["digest"] == {"sha256": lists["root"].removeprefix("sha256:")}
    assert "ok" in tree.doit("verify").stdout


def test_an_exported_workflow_signs_with_the_secret_and_verifies(tree: Tree, registry: Registry,
                                                                tmp_path: Path) -> None:
    """The GHA export replayed job by job (tests/gha_replay.py): the key is no file of the
    checkout, only the COSIGN_PRIVATE_KEY secret; each job verifies what it pushed."""
    prepare(tree, registry, "ci")
    signing.write_pair(tree.root, PASSWORD.encode())
    with (tree.root / ".gitignore").open("a") as ignore:
        ignore.write("cosign.key\n")
    tree.settings(sign={"key": "cosign.key"}, trust={"keys": ["cosign.pub"]})
    workflow = export(tree, "images=^(base|openstack-base|nova-base)$", "max_jobs=3")
    secrets = {"COSIGN_PRIVATE_KEY": (tree.root / "cosign.key").read_text(),
               "COSIGN_PASSWORD": PASSWORD}
    jobs = Replay.of(workflow, tmp_path / "replay", parallel=3, runner_env=runner_env,
                     secrets=secrets,
                     setup={"actions/checkout@v5": checkout(repository(tree)),
                            "install imagebake": link_venv}).run()
    try:
        failed = [job for job in jobs.values() if job.status != "success"]
        assert not failed, "\n\n".join(f"== {job.name}\n{job.text}" for job in failed)
        public = (tree.root / "cosign.pub").read_bytes()
        for name in ("base", "openstack-base", "nova-base"):
            digest = registry.digest(f"ci/{name}", "latest")
            cosign_verify(registry, digest, public, f"ci/{name}")
            cosign_verify_attestation(registry, digest, public, f"ci/{name}")
        for job in jobs.values():
            assert not (job.workspace / "cosign.key").exists()
            verify = job.text[job.text.index("## verify"):]
            assert "verify failed" not in job.text and " ok" in verify, job.text
    finally:
        unmount_under(tmp_path / "replay")


def test_the_provenance_names_each_git_sources_commit(machines: tuple[Tree, Tree],
                                                      registry: Registry) -> None:
    """A `git:` source is a resolved dependency at the commit its archive (so the key) holds,
    as a download is at its sha256."""
    machine_a, _ = signing_machines(machines)
    repository = machine_a.root.parent / "app"
    repository.mkdir()
    (repository / "app.txt").write_text("one\n")
    git = ["git", "-C", str(repository), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    machine_a.edit_yaml(lambda d: d["images"]["cron"].update(
        sources={"app": {"git": str(repository), "ref": "main"}}))
    machine_a.edit("templates/cron/Dockerfile.j2", "{% block footer %}",
                   "{% block footer %}\nADD app-archive /app/")
    machine_a.doit("push", "images=^(base|cron)$", env=ENV)
    digest = registry.digest("kolla/cron", "latest")
    statement = cosign_verify_attestation(registry, digest,
                                          (machine_a.root / "cosign.pub").read_bytes(),
                                          "kolla/cron")
    [source] = [d for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]
                if d["name"] == "source:app"]
    assert source == {"name": "source:app", "digest": {"gitCommit": commit},
                      "uri": f"git+{repository}@{commit}"}
