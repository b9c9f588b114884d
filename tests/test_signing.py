"""buildlib.signing: cosign's key files (ours and cosign's own test keys), the simple-signing
payload, signatures and the signature manifest, without a registry."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from conftest import Tree

from buildlib import signatures, signing

# Keys written by cosign itself, from sigstore/cosign pkg/cosign/keys_test.go (Apache-2.0),
# all encrypted with the password "hello". The first two are ECDSA P-256 in PKCS#8 under
# each label at scrypt N=32768; the third is at N=65536 (go-securesystemslib's newer default).
COSIGN_LABELLED = """-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----
eyJrZGYiOnsibmFtZSI6InNjcnlwdCIsInBhcmFtcyI6eyJOIjozMjc2OCwiciI6
OCwicCI6MX0sInNhbHQiOiJ4WWdoc09JTUxUWGNOT0RsclNIOUNKc1FlOVFnZmN1
cmUrMXlLdHh1TlkwPSJ9LCJjaXBoZXIiOnsibmFtZSI6Im5hY2wvc2VjcmV0Ym94
Iiwibm9uY2UiOiI0cS9PSlVmaXJkSUkrUjZ0ajZBMmcyQ0JqL25xdFNicCJ9LCJj
aXBoZXJ0ZXh0IjoiKzB4Q3NzcFN0WStBczdKanJpOWtsbHBWd2JhcUI4ZWJNdWto
eS9aVE1MSXRsL3B1YS9jWVJvbytLRGxMWWdmOW1kSjk4K1FnQW9oTktoYnJPMTcw
MHdBY1JTMjFDOE4zQUNJRUVZaWpOMllBNnMraGJSbkhjUnd4eGhDMDFtb2FvL0dO
Y1pmbEJheXZMV3pXblo4d2NDZ2ZpT1o1VXlRTEFJMHh0dnR6dEh3cTdDV1Vhd3V4
RlhlNDZzck9TUE9SNHN6bytabWErUGovSFE9PSJ9
-----END ENCRYPTED COSIGN PRIVATE KEY-----
"""
SIGSTORE_LABELLED = """-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----
eyJrZGYiOnsibmFtZSI6InNjcnlwdCIsInBhcmFtcyI6eyJOIjozMjc2OCwiciI6
OCwicCI6MX0sInNhbHQiOiI3T3VGd2VsbWZZNXVId2NoaURSc210anNwZ2ZlZjFG
Mk5lOGFDTjVLYVpZPSJ9LCJjaXBoZXIiOnsibmFtZSI6Im5hY2wvc2VjcmV0Ym94
Iiwibm9uY2UiOiJQNHk4OGhCb3ZTa09MbXN0bFVBaGJwdDJ0K2xTNUxQSCJ9LCJj
aXBoZXJ0ZXh0IjoiMnB1QzdyZldJOWh3bnJlQ2s4aUZDRlVwQlRrSzRJNlIvbFBF
cnBDekpXUGpJWXl4eGVIL1A2VW52cFJHdVhla1NNb3JMdGhLamdoQ1JlNy82NDVH
QWtoVm1LRC92eEF0S2EvbE1abENSQ3FlekJGUFd1dzNpeFRtZ2xhb2J1ZFVSbUVs
bmNGOGlZbzBTMVl6Y1ZOMVFwY2J2c0dNcUlYRzVlbmdteGp5dCtBcXlyZTF0Q0Y0
V01tU1BlaEljNlBqd2h1Q2xHaVpJUWRvTGc9PSJ9
-----END ENCRYPTED SIGSTORE PRIVATE KEY-----
"""
COSIGN_PASSWORD = b"hello"
DIGEST = "sha256:" + "ab" * 32
REPOSITORY = "127.0.0.1:5000/imagebake/base"


@pytest.fixture(scope="module")
def pair() -> signing.KeyPair:
    return signing.generate(b"correct horse")


@pytest.mark.parametrize("pem", [COSIGN_LABELLED, SIGSTORE_LABELLED],
                         ids=["cosign-label", "sigstore-label"])
def test_a_key_cosign_wrote_loads_and_signs(pem: str) -> None:
    key = signing.load_private(pem.encode(), COSIGN_PASSWORD)
    message = signing.payload(REPOSITORY, DIGEST)
    public = signing.load_public(signing.public_pem(key.public_key()))
    assert signing.verify(public, message, signing.sign(key, message))


def test_a_key_cosign_wrote_refuses_the_wrong_password() -> None:
    with pytest.raises(signing.SigningError, match="wrong password"):
        signing.load_private(SIGSTORE_LABELLED.encode(), b"hell0", "cosign.key")


def test_our_key_file_is_cosigns_format(pair: signing.KeyPair) -> None:
    lines = pair.private_pem.decode().splitlines()
    assert lines[0] == "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"
    assert lines[-1] == "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----"
    body = json.loads(base64.b64decode("".join(lines[1:-1])))
    assert body["kdf"]["name"] == "scrypt"
    assert body["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    assert len(base64.b64decode(body["kdf"]["salt"])) == 32
    assert body["cipher"]["name"] == "nacl/secretbox"
    assert len(base64.b64decode(body["cipher"]["nonce"])) == 24
    assert pair.public_pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")


def test_our_key_decrypts_by_hand_to_pkcs8(pair: signing.KeyPair) -> None:
    """Opened with the spec alone (scrypt, secretbox): what cosign's Go code does."""
    import nacl.secret
    from cryptography.hazmat.primitives import serialization

    lines = pair.private_pem.decode().splitlines()
    body = json.loads(base64.b64decode("".join(lines[1:-1])))
    box_key = hashlib.scrypt(b"correct horse", salt=base64.b64decode(body["kdf"]["salt"]),
                             n=32768, r=8, p=1, maxmem=64 * 1024 * 1024, dklen=32)
    der = nacl.secret.SecretBox(box_key).decrypt(base64.b64decode(body["ciphertext"]),
                                                 base64.b64decode(body["cipher"]["nonce"]))
    key = serialization.load_der_private_key(der, password=None)
    assert signing.public_pem(key.public_key()) == pair.public_pem  # type: ignore[arg-type]
    assert der[:2] == b"\x30\x81" and b"\x2a\x86\x48\xce\x3d\x02\x01" in der  # PKCS#8, EC


def test_round_trip_and_wrong_password(pair: signing.KeyPair) -> None:
    key = signing.load_private(pair.private_pem, b"correct horse")
    assert signing.public_pem(key.public_key()) == pair.public_pem
    with pytest.raises(signing.SigningError, match="cosign.key: wrong password"):
        signing.load_private(pair.private_pem, b"battery staple", "cosign.key")


def test_a_file_that_is_not_a_cosign_key_is_named(tmp_path: Path, pair: signing.KeyPair) -> None:
    with pytest.raises(signing.SigningError, match="keys/cosign.pub is not a cosign private key"
                       ".*PUBLIC KEY"):
        signing.load_private(pair.public_pem, b"x", "keys/cosign.pub")
    with pytest.raises(signing.SigningError, match="not a PEM public key"):
        signing.load_public(b"nonsense")


def test_the_payload_is_cosigns_simple_signing_document() -> None:
    assert json.loads(signing.payload(REPOSITORY, DIGEST)) == {
        "critical": {"identity": {"docker-reference": REPOSITORY},
                     "image": {"docker-manifest-digest": DIGEST},
                     "type": "cosign container image signature"},
        "optional": None}
    message = signing.payload(REPOSITORY, DIGEST)
    assert signing.signed_digest(message, REPOSITORY) == DIGEST
    assert signing.signed_digest(message, "127.0.0.1:5000/other") is None
    assert signing.signed_digest(b"{}", REPOSITORY) is None


def test_a_signature_is_der_and_binds_key_and_message(pair: signing.KeyPair) -> None:
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    key = signing.load_private(pair.private_pem, b"correct horse")
    public = signing.load_public(pair.public_pem)
    message = signing.payload(REPOSITORY, DIGEST)
    signature = signing.sign(key, message)
    r, s = decode_dss_signature(base64.b64decode(signature))  # ASN.1 DER, as cosign writes
    assert r > 0 and s > 0
    assert signing.verify(public, message, signature)
    assert not signing.verify(public, signing.payload(REPOSITORY, "sha256:" + "cd" * 32),
                              signature)
    other = signing.load_public(signing.generate(b"x").public_pem)
    assert not signing.verify(other, message, signature)
    assert not signing.verify(public, message, "not base64!")


def test_the_signature_manifest_is_cosigns(pair: signing.KeyPair) -> None:
    message = signing.payload(REPOSITORY, DIGEST)
    made = signing.artifact([signing.signature_layer(message, "c2ln")])
    manifest = json.loads(made.manifest)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    [layer] = manifest["layers"]
    assert layer == {"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                     "size": len(message),
                     "digest": "sha256:" + hashlib.sha256(message).hexdigest(),
                     "annotations": {"dev.cosignproject.cosign/signature": "c2ln"}}
    config = made.blobs[manifest["config"]["digest"]]
    assert json.loads(config)["rootfs"]["diff_ids"] == [layer["digest"]]
    assert made.blobs[layer["digest"]] == message
    assert signing.layers_of(made.manifest) == [layer]


def test_tags_name_the_digest() -> None:
    assert signing.signature_tag(DIGEST) == f"sha256-{'ab' * 32}.sig"
    assert signing.attestation_tag(DIGEST) == f"sha256-{'ab' * 32}.att"
    with pytest.raises(signing.SigningError):
        signing.signature_tag("latest")


def test_write_pair_refuses_to_overwrite(tmp_path: Path) -> None:
    private, public = signing.write_pair(tmp_path, b"pw")
    assert (private.stat().st_mode & 0o777) == 0o600
    key = signing.load_private(private.read_bytes(), b"pw")
    assert signing.public_pem(key.public_key()) == public.read_bytes()
    before = private.read_bytes()
    with pytest.raises(signing.SigningError, match="already exist"):
        signing.write_pair(tmp_path, b"pw")
    assert private.read_bytes() == before


def test_the_password_comes_from_cosign_password() -> None:
    assert signing.password({"COSIGN_PASSWORD": "s3cret"}) == b"s3cret"
    assert signing.password({"COSIGN_PASSWORD": ""}) == b""
    with pytest.raises(signing.SigningError, match="COSIGN_PASSWORD is not set"):
        signing.password({})


def test_keygen_writes_a_pair_beside_images_yaml_once(tree: Tree,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COSIGN_PASSWORD", raising=False)
    refused = tree.doit("keygen", check=False)
    assert refused.returncode == 1 and "COSIGN_PASSWORD is not set" in refused.stdout + \
        refused.stderr
    assert not (tree.root / "cosign.key").exists()

    tree.doit("keygen", env={"COSIGN_PASSWORD": "tree password"})
    private = (tree.root / "cosign.key").read_bytes()
    key = signing.load_private(private, b"tree password")
    assert signing.public_pem(key.public_key()) == (tree.root / "cosign.pub").read_bytes()

    again = tree.doit("keygen", check=False, env={"COSIGN_PASSWORD": "other"})
    assert again.returncode == 1 and "already exist" in again.stdout + again.stderr
    assert (tree.root / "cosign.key").read_bytes() == private


def test_the_payload_is_byte_for_byte_cosigns() -> None:
    """cosign's pkg/cosign/obsolete_test.go: the exact bytes cosign signs for an image (the
    payload's digest is how a check recognises it without fetching it)."""
    digest = "sha256:4aa3054270f7a70b4528f2064ee90961788e1e1518703592ae4463de3b889dec"
    reference = signatures.docker_reference("docker.io/namespace/image")
    assert signing.payload(reference, digest) == (
        b'{"critical":{"identity":{"docker-reference":"index.docker.io/namespace/image"},'
        b'"image":{"docker-manifest-digest":"sha256:4aa3054270f7a70b4528f2064ee90961788e1e'
        b'1518703592ae4463de3b889dec"},"type":"cosign container image signature"},'
        b'"optional":null}')
    assert signatures.docker_reference("alpine") == "index.docker.io/library/alpine"
    assert signatures.docker_reference("127.0.0.1:5000/a/b") == "127.0.0.1:5000/a/b"


@pytest.mark.parametrize(("change", "said"), [
    (lambda body: body["kdf"]["params"].update(N=1024), "unsupported scrypt parameters"),
    (lambda body: body["cipher"].update(name="aes-gcm"), "unknown kdf 'scrypt' or cipher"),
    (lambda body: body.pop("ciphertext"), "is not a cosign private key"),
], ids=["weak-scrypt", "other-cipher", "no-ciphertext"])
def test_a_key_file_cosign_would_refuse_is_refused(pair: signing.KeyPair, change,  # type: ignore[no-untyped-def]
                                                   said: str) -> None:
    lines = pair.private_pem.decode().splitlines()
    body = json.loads(base64.b64decode("".join(lines[1:-1])))
    change(body)
    text = base64.b64encode(json.dumps(body).encode()).decode()
    pem = (f"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n{text}\n"
           "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n").encode()
    with pytest.raises(signing.SigningError, match=said):
        signing.load_private(pem, b"correct horse", "cosign.key")


def test_key_files_are_read_with_the_password_and_named_when_wrong(tmp_path: Path) -> None:
    private, public = signing.write_pair(tmp_path, b"pw")
    key = signing.read_private(private, {"COSIGN_PASSWORD": "pw"})
    assert signing.public_pem(signing.read_public(public)) == signing.public_pem(
        key.public_key())
    with pytest.raises(signing.SigningError, match=f"{private}: wrong password"):
        signing.read_private(private, {"COSIGN_PASSWORD": "nope"})
    with pytest.raises(signing.SigningError, match="cannot read .*missing.pub: No such file"):
        signing.read_public(tmp_path / "missing.pub")
    with pytest.raises(signing.SigningError, match=f"{public} is not a cosign private key"):
        signing.read_private(public, {"COSIGN_PASSWORD": "pw"})


def test_cosign_private_key_in_the_environment_wins_over_the_file(tmp_path: Path,
                                                                  pair: signing.KeyPair) -> None:
    """A CI job passes the key as cosign's workflows do: its PEM in COSIGN_PRIVATE_KEY."""
    environ = {"COSIGN_PRIVATE_KEY": pair.private_pem.decode(), "COSIGN_PASSWORD": "correct horse"}
    key = signing.signing_key(tmp_path / "absent.key", environ)
    assert signing.public_pem(key.public_key()) == pair.public_pem
    with pytest.raises(signing.SigningError, match="COSIGN_PRIVATE_KEY: wrong password"):
        signing.signing_key(tmp_path / "absent.key", {**environ, "COSIGN_PASSWORD": "x"})
    with pytest.raises(signing.SigningError, match="cannot read .*absent.key"):
        signing.signing_key(tmp_path / "absent.key", {"COSIGN_PASSWORD": "x"})
