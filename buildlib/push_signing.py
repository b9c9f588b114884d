"""A push that signs (settings.sign): each manifest it writes signed cosign's way (the
image; of a multi-arch image, the list and each platform's image) and its SLSA provenance
attached, before the user's tag is set to it. The formats and the registry requests are
signatures.py's; this module says what is signed and what the provenance states."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from buildlib import cache, keys, provenance, registry, retries, signatures, sources
from buildlib.errors import InputError
from buildlib.settled import How, Settled

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

    from buildlib.config import Config
    from buildlib.plan import ImagePlan
    from buildlib.project import Project
    from buildlib.services import Services

PARENT_POLL_SECONDS = 1.0  # how often a child's push looks for its parent's signed image


def version() -> str:
    """imagebake's version, as its provenance states it."""
    from importlib import metadata

    try:
        return metadata.version("buildlib")
    except metadata.PackageNotFoundError:
        return "unknown"


def unsigned(services: Services, found: cache.Found) -> str | None:
    """With settings.sign, why the registry's image is not signed by the signing key (its
    push signs it), else None."""
    key = services.signing_key
    if key is None:
        return None
    check = signatures.check_signature(services.client(found.repository), found.repository,
                                       found.manifest.digest, [key.public_key()])
    return None if check.valid else f"is {check.why} by settings.sign's key"


def sign_pushed(project: Project, services: Services, name: str, built: Settled,
                content: registry.Manifest, parent: Settled | None,
                budget: retries.Budget) -> None:
    """Sign the pushed manifest `content` (and each image a list names) and attach the
    provenance of each; what is signed already by this key is not signed again. Raises
    RegistryError (a transient one is tried again with the push)."""
    key = services.signing_key
    if key is None:
        return
    plan = project.plans[name]
    client, repository = services.client(), cache.repository_of(plan.reference)
    stands_on = _stands_on(project, services, plan, parent, budget)
    materials = _sources(project.config, name)
    images = {None: (content.digest, built)}
    for platform, values in (built.platforms or {}).items():
        digest = content.platform_digest(platform)
        if digest is None:
            raise registry.RegistryError(f"{plan.reference}: the pushed list names no "
                                         f"image for {platform}")
        images[platform] = (digest, values)
    sign = project.config.settings.sign
    for platform, (digest, values) in images.items():
        signatures.sign_image(client, repository, digest, key)
        if sign and sign.sbom and (platform or not plan.platforms):  # images, not a list
            _attach_sbom(services, repository, digest, key, budget)
        record = values.record or (platform is None and built.platforms and {
            "manifest_list": {p: v.key for p, v in built.platforms.items()}})
        if not record or _attested(client, repository, digest, key, values.key):
            continue  # (an image found in the registry: signed, its record is not known)
        signatures.attest_image(client, repository, digest, provenance.statement(
            provenance.Build(image=name, repository=signatures.docker_reference(repository),
                             digest=digest, key=values.key or "", record=record,
                             stands_on=stands_on,
                             dockerfile=(values.record or {}).get("dockerfile", ""),
                             version=version(), sources=materials, platform=platform)),
            key)


def _sources(config: Config, name: str) -> list[provenance.Material]:
    """The image's downloads with their sha256, and its git sources at their commits."""
    found = []
    for source_name, source in config.images[name].sources.items():
        if source.url and source.sha256:
            found.append(provenance.url_source(source_name, source.url, source.sha256))
        elif source.git:
            try:
                repository, commit = sources.git_commit(config, name, source_name, source)
            except InputError:  # (gone since the build: the key record holds its archive)
                continue
            found.append(provenance.git_source(source_name, repository, commit))
    return found


def _attach_sbom(services: Services, repository: str, digest: str,
                 key: EllipticCurvePrivateKey, budget: retries.Budget) -> None:
    """syft's SPDX SBOM of the image, attached signed (unless this key attached one)."""
    from buildlib import sbom

    client = services.client()
    if signatures.find_provenance(client, repository, digest, [key.public_key()],
                                  provenance.SBOM_PREDICATE_TYPE):
        return
    try:
        document = sbom.spdx_of(f"{repository}@{digest}", tls_verify=services.settings.tls_verify,
                                authfile=services.authfile(),
                                timeout=budget.timeout(services.settings.push_timeout))
    except sbom.SbomError as err:
        raise registry.RegistryError(str(err)) from None  # (fails the push: not retried)
    signatures.attest_image(client, repository, digest, provenance.sbom_statement(
        signatures.docker_reference(repository), digest, document), key)


def _attested(client: registry.Client, repository: str, digest: str,
              key: EllipticCurvePrivateKey, image_key: str | None) -> bool:
    """Whether `digest` carries this key's provenance for `image_key` already."""
    found = signatures.find_provenance(client, repository, digest, [key.public_key()])
    return bool(found) and provenance_key(found) == image_key


def provenance_key(statement: Mapping[str, Any]) -> str | None:
    """The content key a provenance statement names."""
    parameters = (statement.get("predicate") or {}).get("buildDefinition") or {}
    return (parameters.get("externalParameters") or {}).get("key")


def _stands_on(project: Project, services: Services, plan: ImagePlan,
               parent: Settled | None,
               budget: retries.Budget) -> provenance.Material | None:
    """The image it is built on at its pushed digest: the parent's signed image under its
    key's tag (waiting, within the push's deadline, while this run pushes it), or the
    base's manifest in its registry (None when that cannot be asked)."""
    if plan.parent is None:
        return _base(services, plan.base)
    parent_plan = project.plans[plan.parent]
    if parent and parent.how is How.REGISTRY and parent.digest:  # or pinned
        return provenance.image("parent", parent_plan.reference, parent.digest)
    if not parent or not parent.key:
        raise registry.RegistryError(f"the provenance of {plan.name} names its parent "
                                     f"{plan.parent}, which this run has not built")
    reference = parent_plan.key_reference(parent.key)
    while True:
        found = services.client().manifest(reference)
        if found and found.annotations.get(keys.KEY_ANNOTATION) == parent.key and \
                not unsigned(services, cache.Found(cache.repository_of(reference), found)):
            return provenance.image("parent", parent_plan.reference, found.digest)
        if plan.parent in services.failed_pushes:
            raise registry.RegistryError(f"the push of {plan.parent} failed: the provenance "
                                         f"of {plan.name} cannot name its parent's digest")
        if budget.left() < PARENT_POLL_SECONDS:
            raise registry.RegistryError(
                f"{reference} is not its signed image yet: the provenance of {plan.name} "
                f"names its parent's pushed digest; push {plan.parent} too")
        time.sleep(PARENT_POLL_SECONDS)


def _base(services: Services, base: str | None) -> provenance.Material | None:
    if base is None:
        return None
    try:
        found = services.client(base).manifest(base)
    except registry.RegistryError:
        return None
    return provenance.image("base", base, found.digest) if found else None
