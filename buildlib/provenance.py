"""Where a pushed image came from, as the standard tools read it: an in-toto Statement v1
with an SLSA provenance v1 predicate, in a DSSE envelope signed with the signing key.

It travels as cosign's attestation (`cosign attest --type slsaprovenance1` writes the same):
a manifest under the tag `sha256-<hex>.att` beside the image, one layer of media type
`application/vnd.dsse.envelope.v1+json` per attestation, annotated with its predicateType.
`cosign verify-attestation --key cosign.pub --type slsaprovenance1` reads it. (The OCI
referrer with the tag-schema fallback was the other choice; cosign's `.att` is what cosign
and policy-controller read today, and it needs no referrers API.)

Pure: the caller hands in the facts (digests, key record, sources, version).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from buildlib import signing

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import (
        EllipticCurvePrivateKey,
        EllipticCurvePublicKey,
    )

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
SBOM_PREDICATE_TYPE = "https://spdx.dev/Document"  # `cosign attest --type spdxjson`'s
PAYLOAD_TYPE = "application/vnd.in-toto+json"
ENVELOPE_TYPE = "application/vnd.dsse.envelope.v1+json"
# URNs, not web addresses: the project publishes no page that could describe them.
BUILD_TYPE = "urn:imagebake:buildtype:buildah-bud:v1"
BUILDER_ID = "urn:imagebake:builder"
PREDICATE_ANNOTATION = "predicateType"


@dataclass(frozen=True)
class Material:
    """One thing the image was made from: an SLSA ResourceDescriptor."""

    name: str
    digest: Mapping[str, str]  # algorithm -> hex, e.g. {"sha256": ...} or {"gitCommit": ...}
    uri: str | None = None

    def as_dict(self) -> dict[str, Any]:
        described: dict[str, Any] = {"name": self.name, "digest": dict(self.digest)}
        if self.uri:
            described["uri"] = self.uri
        return described


def image(name: str, reference: str, digest: str) -> Material:
    """The image it is built FROM (`name`: `parent` or `base`) at its pushed digest."""
    return Material(name, _split(digest), f"oci://{reference}")


def url_source(name: str, url: str, sha256: str) -> Material:
    """A downloaded source archive, checked against its sha256."""
    return Material(f"source:{name}", {"sha256": _hex(sha256)}, url)


def git_source(name: str, repository: str, commit: str) -> Material:
    """A git source at the commit it was archived from."""
    return Material(f"source:{name}", {"gitCommit": commit}, f"git+{repository}@{commit}")


def local_source(name: str, path: str, sha256: str) -> Material:
    """A local folder, by the digest of its normalised archive."""
    return Material(f"source:{name}", {"sha256": _hex(sha256)}, f"file:{path}")


@dataclass(frozen=True)
class Build:
    """The facts about one pushed image that its provenance states."""

    image: str  # its name in images.yaml
    repository: str  # registry/path, as the signature's docker-reference
    digest: str  # the pushed manifest's digest: the subject
    key: str  # its content key
    record: Mapping[str, Any]  # the full key record (keys.Record.as_dict())
    stands_on: Material | None  # the parent's or base's pushed digest
    dockerfile: str  # sha256 of the rendered Dockerfile
    version: str  # imagebake's version
    sources: Sequence[Material] = field(default_factory=tuple)
    platform: str | None = None


def statement(build: Build) -> dict[str, Any]:
    """The in-toto Statement v1 with the SLSA provenance v1 predicate for `build`."""
    dependencies = [build.stands_on] if build.stands_on else []
    dependencies += [Material("Dockerfile", {"sha256": _hex(build.dockerfile)}),
                     *build.sources]
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": build.repository, "digest": _split(build.digest)}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"image": build.image, "key": build.key,
                                       "platform": build.platform,
                                       "keyRecord": dict(build.record)},
                "internalParameters": {"imagebakeVersion": build.version},
                "resolvedDependencies": [d.as_dict() for d in dependencies],
            },
            "runDetails": {"builder": {"id": BUILDER_ID,
                                       "version": {"imagebake": build.version}}},
        },
    }


def sbom_statement(repository: str, digest: str, document: Mapping[str, Any]) -> dict[str, Any]:
    """An in-toto Statement v1 whose predicate is the SPDX SBOM `document` of the image."""
    return {"_type": STATEMENT_TYPE,
            "subject": [{"name": repository, "digest": _split(digest)}],
            "predicateType": SBOM_PREDICATE_TYPE, "predicate": dict(document)}


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what is signed, not the payload alone."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(body), body)


def envelope(document: Mapping[str, Any], key: EllipticCurvePrivateKey) -> bytes:
    """`document` in a DSSE envelope signed with `key` (ECDSA P-256/SHA-256 over the PAE)."""
    body = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
    return json.dumps({
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(body).decode(),
        "signatures": [{"keyid": "", "sig": signing.sign(key, pae(PAYLOAD_TYPE, body))}],
    }, separators=(",", ":")).encode()


def opened(sealed: bytes, keys: Sequence[EllipticCurvePublicKey]) -> dict[str, Any] | None:
    """The statement in a DSSE envelope when one of its signatures is by one of `keys`;
    None when it is no envelope, of another payload type, or not signed by them."""
    try:
        document = json.loads(sealed)
        payload_type, body = document["payloadType"], base64.b64decode(document["payload"])
        signatures = [entry["sig"] for entry in document["signatures"]]
    except (ValueError, KeyError, TypeError):
        return None
    if payload_type != PAYLOAD_TYPE:
        return None
    encoded = pae(payload_type, body)
    if not any(signing.verify(key, encoded, sig) for key in keys for sig in signatures):
        return None
    try:
        found = json.loads(body)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def subject_digests(found: Mapping[str, Any]) -> list[str]:
    """The `sha256:...` digests a statement is about."""
    return [f"sha256:{subject['digest']['sha256']}" for subject in found.get("subject") or []
            if isinstance(subject, dict) and "sha256" in (subject.get("digest") or {})]


def attestation_layer(sealed: bytes, predicate_type: str = PREDICATE_TYPE) -> signing.Layer:
    """The layer `cosign attest` writes for a DSSE envelope (its signature annotation is
    empty: the signature is inside the envelope)."""
    return signing.Layer(sealed, ENVELOPE_TYPE, {signing.SIGNATURE_ANNOTATION: "",
                                                 PREDICATE_ANNOTATION: predicate_type})


def _split(digest: str) -> dict[str, str]:
    algorithm, _, hexdigest = digest.partition(":")
    return {algorithm: hexdigest}


def _hex(sha256: str) -> str:
    return sha256.removeprefix("sha256:")
