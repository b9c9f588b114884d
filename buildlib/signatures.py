"""cosign's signatures and attestations of a pushed image, written to and read from its
registry: the `sha256-<hex>.sig` and `sha256-<hex>.att` manifests beside the image.

Narrow on purpose: each function takes the run's registry client, the image's reference
(its repository and the pushed manifest digest) and a key, and nothing of the build. The
formats are signing.py's and provenance.py's.

What it costs: signing uploads two blobs (a POST and a PUT each) and one manifest after one
GET of the existing signatures; an attestation the same. Checking a signature is one GET
of the `.sig` manifest when the payload is the one imagebake and cosign write (its bytes
are known, so its digest is compared instead of fetching it), one more GET per other
simple-signing layer it has to read. Finding the provenance is the `.att` GET and one GET
per envelope.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from buildlib import provenance, signing
from buildlib.reference import DEFAULT_DOMAIN, ImageRef
from buildlib.registry import Client, Manifest

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import (
        EllipticCurvePrivateKey,
        EllipticCurvePublicKey,
    )

COSIGN_DOCKER_DOMAIN = "index.docker.io"  # how cosign names docker.io in a payload
# Whoever can push can add layers to a `.sig` or `.att` manifest: a check reads at most
# this many of them, and no signature payload bigger than a payload can be.
MOST_LAYERS_READ = 16
MOST_PAYLOAD_BYTES = 64 * 1024


def docker_reference(repository: str) -> str:
    """The repository as cosign names it in a payload: `registry/path`, no tag."""
    ref = ImageRef.parse(repository)
    domain = COSIGN_DOCKER_DOMAIN if ref.domain == DEFAULT_DOMAIN else ref.domain
    return f"{domain}/{ref.registry_path}"


@dataclass(frozen=True)
class Check:
    """What a signature check found: `valid`, and in words why (for `not cached: ...`)."""

    valid: bool
    why: str


UNSIGNED = Check(False, "unsigned")
UNKNOWN_KEY = Check(False, "signed by an unknown key")
SIGNED = Check(True, "signed")


def sign_image(client: Client, repository: str, digest: str,
               key: EllipticCurvePrivateKey) -> str:
    """Sign the image `digest` in `repository` cosign's way; the `.sig` manifest's digest.
    A signature by this key already there is kept and none is added."""
    message = signing.payload(docker_reference(repository), digest)
    tag = signing.signature_tag(digest)
    existing = client.manifest(f"{repository}:{tag}")
    layers = pushed_layers(existing)
    if existing and any(layer.digest == _digest(message) and signing.verify(
            key.public_key(), message, layer.annotations.get(signing.SIGNATURE_ANNOTATION, ""))
            for layer in layers):
        return existing.digest
    layers.append(signing.signature_layer(message, signing.sign(key, message)))
    return _push(client, repository, tag, layers, {_digest(message): message})


def attest_image(client: Client, repository: str, digest: str, statement: Mapping[str, Any],
                 key: EllipticCurvePrivateKey) -> str:
    """Attach `statement` (its subject: this digest) as a signed DSSE attestation, after the
    ones already there; the `.att` manifest's digest."""
    sealed = provenance.envelope(statement, key)
    tag = signing.attestation_tag(digest)
    layers = pushed_layers(client.manifest(f"{repository}:{tag}"))
    layers.append(provenance.attestation_layer(
        sealed, str(statement.get("predicateType") or provenance.PREDICATE_TYPE)))
    return _push(client, repository, tag, layers, {_digest(sealed): sealed})


def check_signature(client: Client, repository: str, digest: str,
                    keys: Sequence[EllipticCurvePublicKey]) -> Check:
    """Whether the image `digest` in `repository` carries a valid cosign signature by one
    of `keys` for this repository and digest."""
    found = client.manifest(f"{repository}:{signing.signature_tag(digest)}")
    expected = signing.payload(docker_reference(repository), digest)
    layers = [layer for layer in pushed_layers(found)
              if layer.media_type == signing.SIMPLE_SIGNING_TYPE
              and _size(layer) <= MOST_PAYLOAD_BYTES]
    if not layers:
        return UNSIGNED
    path = ImageRef.parse(repository).registry_path
    named = False  # some payload there vouches for this digest in this repository
    ours_first = sorted(layers, key=lambda layer: layer.digest != _digest(expected))
    for layer in ours_first[:MOST_LAYERS_READ]:
        message = (expected if layer.digest == _digest(expected)
                   else client.blob(path, layer.digest))
        if message is None or signing.signed_digest(
                message, docker_reference(repository)) != digest:
            continue
        named = True
        signature = layer.annotations.get(signing.SIGNATURE_ANNOTATION, "")
        if any(signing.verify(key, message, signature) for key in keys):
            return SIGNED
    return UNKNOWN_KEY if named else UNSIGNED


def find_provenance(client: Client, repository: str, digest: str,
                    keys: Sequence[EllipticCurvePublicKey],
                    predicate_type: str = provenance.PREDICATE_TYPE) -> dict[str, Any] | None:
    """The newest statement about `digest` signed by one of `keys` whose predicate is of
    `predicate_type` (by default the SLSA provenance; the SPDX SBOM is attached so too)."""
    found = client.manifest(f"{repository}:{signing.attestation_tag(digest)}")
    path = ImageRef.parse(repository).registry_path
    for layer in list(reversed(pushed_layers(found)))[:MOST_LAYERS_READ]:
        if (layer.media_type != provenance.ENVELOPE_TYPE or layer.annotations.get(
                provenance.PREDICATE_ANNOTATION) != predicate_type):
            continue
        sealed = client.blob(path, layer.digest)
        statement = provenance.opened(sealed, keys) if sealed else None
        if (statement and statement.get("predicateType") == predicate_type
                and digest in provenance.subject_digests(statement)):
            return statement
    return None


@dataclass(frozen=True)
class _Pushed(signing.Layer):
    """A layer already in the registry: known by its descriptor, its bytes not fetched."""

    known: Mapping[str, Any] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return str(self.known.get("digest"))

    def descriptor(self) -> dict[str, Any]:
        return dict(self.known)


def pushed_layers(found: Manifest | None) -> list[signing.Layer]:
    """The layers of a `.sig` or `.att` manifest read from the registry ([] for none)."""
    if found is None:
        return []
    return [_Pushed(b"", str(layer.get("mediaType")),
                    {str(k): str(v) for k, v in (layer.get("annotations") or {}).items()},
                    layer) for layer in signing.layers_of(found.body)]


def _size(layer: signing.Layer) -> int:
    size = layer.descriptor().get("size")
    return size if isinstance(size, int) else MOST_PAYLOAD_BYTES + 1


def _push(client: Client, repository: str, tag: str, layers: Sequence[signing.Layer],
          new: Mapping[str, bytes]) -> str:
    """Upload the config and the new layers' blobs, then the manifest under `tag`."""
    made = signing.artifact(layers)
    path = ImageRef.parse(repository).registry_path
    config_digest = _digest(made.config)
    for blob in [made.config, *new.values()]:
        client.put_blob(path, blob)
    manifest = Manifest(_digest(made.manifest), signing.OCI_MANIFEST, made.manifest,
                        config_digest)
    client.put_manifest(f"{repository}:{tag}", manifest)
    return manifest.digest


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
