"""Signatures and provenance in a real registry: an image pushed by buildah, signed and
attested with buildlib.signatures, then checked by an independent verifier of cosign's
format written here (plain HTTP and `cryptography`, none of the product's code)."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path

import pytest
from conftest import Tree
from registry import Registry

from buildlib import provenance, signatures, signing
from buildlib.registry import Client, Manifest

pytestmark = pytest.mark.integration

REPOSITORY = "signed/small"
PASSWORD = b"integration"


def push_small_image(tree: Tree, registry: Registry, tag: str, content: str) -> str:
    """Build a one-file image FROM scratch, push it to REPOSITORY:tag; its digest."""
    context = tree.root.parent / f"context-{tag}"
    context.mkdir()
    (context / "hello").write_text(content)
    (context / "Containerfile").write_text("FROM scratch\nCOPY hello /hello\n")
    local = f"localhost/small:{tag}"
    tree.buildah("bud", "--quiet", "--format", "oci", "--timestamp", "0", "--tag", local,
                 "-f", str(context / "Containerfile"), str(context))
    digest_file = context / "digest"
    tree.buildah("push", "--tls-verify=false", "--digestfile", str(digest_file), local,
                 f"docker://{registry.address}/{REPOSITORY}:{tag}")
    return digest_file.read_text().strip()


class CountingClient(Client):
    """The product's client, counting the HTTP requests it makes after its /v2/ check."""

    requests: list[str]

    def _request(self, method, url, data, extra):  # type: ignore[no-untyped-def]
        self.requests.append(f"{method} {url}")
        return super()._request(method, url, data, extra)


def client_for(registry: Registry) -> CountingClient:
    client = CountingClient(registry.address, tls_verify=False, authfile=None)
    client.requests = []
    client.check()
    return client


# -- the independent verifier: cosign's format from its documentation, nothing imported ----

def fetch(registry: Registry, path: str, accept: str | None = None,
          repository: str = REPOSITORY) -> bytes:
    response = registry.request("GET", f"/v2/{repository}/{path}",
                                {"Accept": accept} if accept else {})
    assert response.status == 200, f"GET {path}: {response.status} {response.body!r}"
    return response.body


def public_key(pem: bytes):  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    return load_pem_public_key(pem)


def ecdsa_valid(pem: bytes, message: bytes, signature_b64: str) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        public_key(pem).verify(base64.b64decode(signature_b64), message,
                               ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def layer_of(registry: Registry, tag: str, media_type: str, repository: str = REPOSITORY,
             predicate_type: str | None = None) -> tuple[dict, bytes]:
    manifest = json.loads(fetch(registry, f"manifests/{tag}",
                                "application/vnd.oci.image.manifest.v1+json", repository))
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    fetch(registry, f"blobs/{manifest['config']['digest']}", None, repository)  # config too
    [layer] = [entry for entry in manifest["layers"] if entry["mediaType"] == media_type
               and predicate_type in (None, entry["annotations"].get("predicateType"))]
    blob = fetch(registry, f"blobs/{layer['digest']}", None, repository)
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == layer["digest"]
    return layer, blob


def cosign_verify(registry: Registry, digest: str, pub_pem: bytes,
                  repository: str = REPOSITORY) -> dict:
    """What `cosign verify --key cosign.pub` checks: the payload under the `.sig` tag is
    signed by the key and names this image's digest and repository."""
    tag = "sha256-" + digest.removeprefix("sha256:") + ".sig"
    layer, payload = layer_of(registry, tag, "application/vnd.dev.cosign.simplesigning.v1+json",
                              repository)
    assert ecdsa_valid(pub_pem, payload, layer["annotations"]["dev.cosignproject.cosign/signature"])
    critical = json.loads(payload)["critical"]
    assert critical["type"] == "cosign container image signature"
    assert critical["image"]["docker-manifest-digest"] == digest
    assert critical["identity"]["docker-reference"] == f"{registry.address}/{repository}"
    return critical


def cosign_verify_attestation(registry: Registry, digest: str, pub_pem: bytes,
                              repository: str = REPOSITORY,
                              predicate_type: str = "https://slsa.dev/provenance/v1") -> dict:
    """What `cosign verify-attestation --key cosign.pub --type slsaprovenance1` checks: the
    DSSE envelope under the `.att` tag, its signature over the PAE, the statement's subject."""
    tag = "sha256-" + digest.removeprefix("sha256:") + ".att"
    layer, sealed = layer_of(registry, tag, "application/vnd.dsse.envelope.v1+json", repository,
                             predicate_type)
    assert layer["annotations"]["predicateType"] == predicate_type
    envelope = json.loads(sealed)
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    body = base64.b64decode(envelope["payload"])
    kind = envelope["payloadType"].encode()
    pae = b"DSSEv1 " + str(len(kind)).encode() + b" " + kind + b" " + \
        str(len(body)).encode() + b" " + body
    assert any(ecdsa_valid(pub_pem, pae, entry["sig"]) for entry in envelope["signatures"])
    statement = json.loads(body)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == predicate_type
    assert statement["subject"][0]["digest"] == {"sha256": digest.removeprefix("sha256:")}
    return statement


# -- the tests ------------------------------------------------------------------------------

def a_build(registry: Registry, digest: str, parent_digest: str) -> provenance.Build:
    return provenance.Build(
        image="small", repository=f"{registry.address}/{REPOSITORY}", digest=digest,
        key="ab" * 32,
        record={"version": 2, "dockerfile": "cd" * 32, "files": {"hello": "ef" * 32}},
        stands_on=provenance.image("parent", f"{registry.address}/{REPOSITORY}:parent",
                                   parent_digest),
        dockerfile="cd" * 32, version="0.1.0",
        sources=[provenance.url_source("app", "https://example.org/app.tar.gz", "12" * 32),
                 provenance.git_source("lib", "https://example.org/lib.git", "34" * 20),
                 provenance.local_source("conf", "src/conf", "56" * 32)])


def test_a_signed_and_attested_image_passes_an_independent_verifier(
        tree: Tree, registry: Registry, tmp_path: Path) -> None:
    digest = push_small_image(tree, registry, "1", "one\n")
    parent = push_small_image(tree, registry, "parent", "parent\n")
    _, pub_path = signing.write_pair(tmp_path, PASSWORD)
    key = signing.load_private((tmp_path / "cosign.key").read_bytes(), PASSWORD)
    client = client_for(registry)
    repository = f"{registry.address}/{REPOSITORY}"

    started = time.monotonic()
    signatures.sign_image(client, repository, digest, key)
    statement = provenance.statement(a_build(registry, digest, parent))
    signatures.attest_image(client, repository, digest, statement, key)
    seconds = time.monotonic() - started
    print(f"\nsign + attest of one image on loopback: {seconds * 1000:.0f} ms, "
          f"{len(client.requests)} requests")

    cosign_verify(registry, digest, pub_path.read_bytes())
    found = cosign_verify_attestation(registry, digest, pub_path.read_bytes())
    definition = found["predicate"]["buildDefinition"]
    assert definition["externalParameters"]["keyRecord"]["files"] == {"hello": "ef" * 32}
    dependencies = {d["name"]: d for d in definition["resolvedDependencies"]}
    assert dependencies["parent"]["digest"] == {"sha256": parent.removeprefix("sha256:")}
    assert dependencies["Dockerfile"]["digest"] == {"sha256": "cd" * 32}
    assert dependencies["source:app"]["uri"] == "https://example.org/app.tar.gz"
    assert dependencies["source:lib"]["digest"] == {"gitCommit": "34" * 20}
    assert dependencies["source:conf"]["digest"] == {"sha256": "56" * 32}
    assert found["predicate"]["runDetails"]["builder"]["version"] == {"imagebake": "0.1.0"}


def test_checking_a_signature_takes_one_request_and_names_what_is_wrong(
        tree: Tree, registry: Registry) -> None:
    signed = push_small_image(tree, registry, "1", "one\n")
    unsigned = push_small_image(tree, registry, "2", "two\n")
    ours = signing.load_private(signing.generate(PASSWORD).private_pem, PASSWORD)
    theirs = signing.load_private(signing.generate(PASSWORD).private_pem, PASSWORD)
    repository = f"{registry.address}/{REPOSITORY}"
    signatures.sign_image(client_for(registry), repository, signed, ours)

    client = client_for(registry)
    assert signatures.check_signature(client, repository, signed,
                                      [theirs.public_key(), ours.public_key()]).valid
    assert len(client.requests) == 1, client.requests  # the .sig manifest; payload known
    check = signatures.check_signature(client, repository, signed, [theirs.public_key()])
    assert (check.valid, check.why) == (False, "signed by an unknown key")
    check = signatures.check_signature(client, repository, unsigned, [ours.public_key()])
    assert (check.valid, check.why) == (False, "unsigned")

    # junk layers pushed before ours cost nothing: ours is recognised by its digest
    junk = [signing.Layer(b"junk %d" % n, signing.SIMPLE_SIGNING_TYPE,
                          {signing.SIGNATURE_ANNOTATION: "AAAA"}) for n in range(40)]
    current = client.manifest(f"{repository}:{signing.signature_tag(signed)}")
    assert current is not None
    layers = signatures.pushed_layers(current)
    padded = signing.artifact([*junk, *layers])
    for blob in [padded.config, *(layer.data for layer in junk)]:
        client.put_blob(REPOSITORY, blob)
    client.put_manifest(f"{repository}:{signing.signature_tag(signed)}", Manifest(
        "sha256:" + hashlib.sha256(padded.manifest).hexdigest(), signing.OCI_MANIFEST,
        padded.manifest, None))
    client.requests.clear()
    assert signatures.check_signature(client, repository, signed, [ours.public_key()]).valid
    assert len(client.requests) == 1, client.requests
    client.requests.clear()
    check = signatures.check_signature(client, repository, signed, [theirs.public_key()])
    assert check.why == "signed by an unknown key"
    assert len(client.requests) == 1 + signatures.MOST_LAYERS_READ - 1  # at most 15 blobs

    # a signature copied onto another image does not vouch for it: the payload names the digest
    sig_tag = signing.signature_tag(signed)
    copied = client.manifest(f"{repository}:{sig_tag}")
    assert copied is not None
    client.put_manifest(f"{repository}:{signing.signature_tag(unsigned)}", copied)
    check = signatures.check_signature(client, repository, unsigned, [ours.public_key()])
    assert (check.valid, check.why) == (False, "unsigned")


def test_signing_again_adds_nothing_and_another_key_adds_a_layer(
        tree: Tree, registry: Registry) -> None:
    digest = push_small_image(tree, registry, "1", "one\n")
    ours = signing.load_private(signing.generate(PASSWORD).private_pem, PASSWORD)
    theirs = signing.load_private(signing.generate(PASSWORD).private_pem, PASSWORD)
    repository = f"{registry.address}/{REPOSITORY}"
    client = client_for(registry)
    first = signatures.sign_image(client, repository, digest, ours)
    assert signatures.sign_image(client, repository, digest, ours) == first
    signatures.sign_image(client, repository, digest, theirs)
    manifest = json.loads(fetch(registry, f"manifests/{signing.signature_tag(digest)}",
                                "application/vnd.oci.image.manifest.v1+json"))
    assert len(manifest["layers"]) == 2
    for key in (ours, theirs):
        assert signatures.check_signature(client, repository, digest, [key.public_key()]).valid


def test_provenance_is_found_by_digest_and_key(tree: Tree, registry: Registry) -> None:
    digest = push_small_image(tree, registry, "1", "one\n")
    ours = signing.load_private(signing.generate(PASSWORD).private_pem, PASSWORD)
    theirs = signing.load_private(signing.generate(PASSWORD).private_pem, PASSWORD)
    repository = f"{registry.address}/{REPOSITORY}"
    client = client_for(registry)
    assert signatures.find_provenance(client, repository, digest, [ours.public_key()]) is None
    statement = provenance.statement(a_build(registry, digest, digest))
    signatures.attest_image(client, repository, digest, statement, ours)
    client.requests.clear()
    found = signatures.find_provenance(client, repository, digest, [ours.public_key()])
    assert found == json.loads(json.dumps(statement))
    assert len(client.requests) == 2, client.requests  # the .att manifest, its envelope
    assert signatures.find_provenance(client, repository, digest, [theirs.public_key()]) is None
