"""buildlib.provenance: the SLSA provenance statement, its DSSE envelope, and an envelope
that cosign signed."""

from __future__ import annotations

import base64
import json

import pytest

from buildlib import provenance, signing

# `cosign attest-blob` output from sigstore/cosign cmd/cosign/cli/verify/
# verify_blob_attestation_test.go (Apache-2.0): a DSSE envelope over an SLSA statement about
# the blob "some-payload", and the public key that signed it.
COSIGN_PUBLIC_KEY = b"""-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAESF79b1ToAtoakhBOHEU5UjnEiihV
gZPFIp557+TOoDxf14FODWc+sIPETk0OgCplAk60doVXbCv33IU4rXZHrg==
-----END PUBLIC KEY-----
"""
COSIGN_ENVELOPE = base64.b64decode(
    "eyJwYXlsb2FkVHlwZSI6ImFwcGxpY2F0aW9uL3ZuZC5pbi10b3RvK2pzb24iLCJwYXlsb2FkIjoiZXlKZmRI"
    "bHdaU0k2SW1oMGRIQnpPaTh2YVc0dGRHOTBieTVwYnk5VGRHRjBaVzFsYm5RdmRqQXVNU0lzSW5CeVpXUnBZ"
    "MkYwWlZSNWNHVWlPaUpvZEhSd2N6b3ZMM05zYzJFdVpHVjJMM0J5YjNabGJtRnVZMlV2ZGpBdU1pSXNJbk4x"
    "WW1wbFkzUWlPbHQ3SW01aGJXVWlPaUppYkc5aUlpd2laR2xuWlhOMElqcDdJbk5vWVRJMU5pSTZJalkxT0Rj"
    "NE1XTmtOR1ZrT1dKallUWXdaR0ZqWkRBNVpqZGlZamt4TkdKaU5URTFNREpsT0dJMVpEWXhPV1kxTjJZek9X"
    "RXhaRFkxTWpVNU5tTmpNalFpZlgxZExDSndjbVZrYVdOaGRHVWlPbnNpWW5WcGJHUmxjaUk2ZXlKcFpDSTZJ"
    "aklpZlN3aVluVnBiR1JVZVhCbElqb2llQ0lzSW1sdWRtOWpZWFJwYjI0aU9uc2lZMjl1Wm1sblUyOTFjbU5s"
    "SWpwN2ZYMTlmUT09Iiwic2lnbmF0dXJlcyI6W3sia2V5aWQiOiIiLCJzaWciOiJNRVVDSUE4S2pacWtydDkw"
    "ZnpCb2pTd3d0ajNCcWI0MUU2cnV4UWs5N1RMbnB6ZFlBaUVBek9Bak9Uenl2VEhxYnBGREFuNnpocmc2RVp2"
    "N2t4SzVmYVJvVkdZTWgyYz0ifV19"
)
SOME_PAYLOAD_SHA256 = "658781cd4ed9bca60dacd09f7bb914bb51502e8b5d619f57f39a1d652596cc24"
DIGEST = "sha256:" + "ab" * 32
PARENT = "sha256:" + "cd" * 32


def test_an_envelope_cosign_signed_opens_with_its_key_only() -> None:
    key = signing.load_public(COSIGN_PUBLIC_KEY)
    found = provenance.opened(COSIGN_ENVELOPE, [key])
    assert found is not None
    assert provenance.subject_digests(found) == [f"sha256:{SOME_PAYLOAD_SHA256}"]
    other = signing.load_public(signing.generate(b"x").public_pem)
    assert provenance.opened(COSIGN_ENVELOPE, [other]) is None


def test_pae_is_dsse_v1() -> None:
    assert provenance.pae("http://example.com/HelloWorld", b"hello world") == \
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"  # DSSE's own example


@pytest.fixture(scope="module")
def key():  # type: ignore[no-untyped-def]
    return signing.load_private(signing.generate(b"pw").private_pem, b"pw")


def a_build() -> provenance.Build:
    return provenance.Build(
        image="nova-api", repository="registry.example:5000/kolla/nova-api", digest=DIGEST,
        key="ef" * 32, record={"version": 2, "dockerfile": "12" * 32, "parent_id": "x"},
        stands_on=provenance.image("parent", "registry.example:5000/kolla/nova-base:ib-1",
                                   PARENT),
        dockerfile="12" * 32, version="0.1.0", platform="linux/amd64",
        sources=[provenance.git_source("nova", "https://opendev.org/openstack/nova",
                                       "34" * 20)])


def test_the_statement_is_slsa_provenance_v1_about_the_digest() -> None:
    statement = provenance.statement(a_build())
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert statement["subject"] == [{"name": "registry.example:5000/kolla/nova-api",
                                     "digest": {"sha256": "ab" * 32}}]
    definition = statement["predicate"]["buildDefinition"]
    assert definition["externalParameters"]["keyRecord"]["parent_id"] == "x"
    assert definition["resolvedDependencies"] == [
        {"name": "parent", "digest": {"sha256": "cd" * 32},
         "uri": "oci://registry.example:5000/kolla/nova-base:ib-1"},
        {"name": "Dockerfile", "digest": {"sha256": "12" * 32}},
        {"name": "source:nova", "digest": {"gitCommit": "34" * 20},
         "uri": f"git+https://opendev.org/openstack/nova@{'34' * 20}"}]


def test_an_envelope_round_trips_and_a_changed_payload_fails(key) -> None:  # type: ignore[no-untyped-def]
    statement = provenance.statement(a_build())
    sealed = provenance.envelope(statement, key)
    assert provenance.opened(sealed, [key.public_key()]) == statement
    document = json.loads(sealed)
    changed = json.loads(base64.b64decode(document["payload"]))
    changed["subject"][0]["digest"]["sha256"] = "00" * 32
    document["payload"] = base64.b64encode(json.dumps(changed).encode()).decode()
    assert provenance.opened(json.dumps(document).encode(), [key.public_key()]) is None
    assert provenance.opened(b"not json", [key.public_key()]) is None


def test_the_attestation_layer_is_cosigns(key) -> None:  # type: ignore[no-untyped-def]
    sealed = provenance.envelope(provenance.statement(a_build()), key)
    layer = provenance.attestation_layer(sealed).descriptor()
    assert layer["mediaType"] == "application/vnd.dsse.envelope.v1+json"
    assert layer["annotations"] == {"dev.cosignproject.cosign/signature": "",
                                    "predicateType": "https://slsa.dev/provenance/v1"}
