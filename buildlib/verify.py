"""`imagebake verify`: whether each selected image's pushed tag is what a consumer may
trust: signed by one of settings.trust's keys, its provenance attached and signed, naming
the key the tag's manifest carries, and the image of the image's current key (as the
registry resolves the tree, parents first). A table; any failure fails the task."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from buildlib import cache, keys, provenance, push_signing, signatures
from buildlib.errors import CommandFailed
from buildlib.registry import RegistryError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

    from buildlib.plan import ImagePlan
    from buildlib.run import Run
    from buildlib.settled import Settled

OK = "ok"


@dataclass(frozen=True)
class Row:
    """One image's line of the table: what was checked and the first problem, if any."""

    name: str
    digest: str
    signature: str
    provenance: str
    sbom: str
    problem: str | None

    def cells(self) -> tuple[str, ...]:
        return (self.name, self.digest[:19] if self.digest else "-", self.signature,
                self.provenance, self.sbom, self.problem or OK)


HEADER = ("IMAGE", "DIGEST", "SIGNATURE", "PROVENANCE", "SBOM", "RESULT")


def verify(run: Run, names: Sequence[str]) -> list[Row]:
    """Each image's row, parents first. Raises RegistryError when the registry cannot be
    asked."""
    trusted = run.services.trusted
    lookups = cache.Lookups(run.services.client(), run.services.budget)  # checked here
    current = cache.current(run.project, list(names), lookups, run.bases, lambda _: None)
    sign = run.project.config.settings.sign
    return [_row(run.project.plans[name], lookups, trusted, current.get(name),
                 bool(sign and sign.sbom)) for name in names]


def _row(plan: ImagePlan, lookups: cache.Lookups, trusted: Sequence[EllipticCurvePublicKey],
         current: Settled | None, wants_sbom: bool) -> Row:
    client, repository = lookups.client, cache.repository_of(plan.reference)
    tagged = lookups.find(plan.reference)
    if tagged is None:
        return Row(plan.name, "", "-", "-", "-", f"{plan.reference} is not in the registry")
    digest = tagged.manifest.digest
    signed = signatures.check_signature(client, repository, digest, trusted)
    statement = signatures.find_provenance(client, repository, digest, trusted)
    problems = []
    if not signed.valid:
        problems.append(f"{plan.reference} is {signed.why}")
    if statement is None:
        problems.append(f"{plan.reference} has no provenance signed by a trusted key")
    elif push_signing.provenance_key(statement) != tagged.key:
        problems.append("its provenance names another key than its manifest")
    sbom = "-"
    if wants_sbom:  # (of a multi-arch image: each platform's image carries its own)
        images = [digest] if not tagged.manifest.is_index else [
            d for p in plan.platforms if (d := tagged.manifest.platform_digest(p))]
        found = [signatures.find_provenance(client, repository, each, trusted,
                                            provenance.SBOM_PREDICATE_TYPE) for each in images]
        sbom = "signed" if all(found) else "none"
        if not all(found):
            problems.append("no SPDX SBOM signed by a trusted key")
    problems += _current_problem(plan, lookups, trusted, digest, current)
    return Row(plan.name, digest, signed.why, "signed" if statement else "none", sbom,
               "; ".join(problems) or None)


def _current_problem(plan: ImagePlan, lookups: cache.Lookups,
                     trusted: Sequence[EllipticCurvePublicKey], digest: str,
                     current: Settled | None) -> list[str]:
    """Why the tag is not the trusted image of the image's current key."""
    if current is None:
        return ["the registry holds no image of its current key (or of its parent's)"]
    if current.digest == digest:
        return []
    key_tag = f"{cache.repository_of(plan.reference)}:{keys.key_tag(current.key)}"
    signed = signatures.check_signature(lookups.client, cache.repository_of(plan.reference),
                                        current.digest, trusted)
    return [f"{plan.reference} names {digest}, but its key's tag {key_tag} names "
            f"{current.digest} ({signed.why})"]


def table(rows: Sequence[Row]) -> str:
    """The rows as aligned columns under HEADER."""
    lines = [HEADER, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER) - 1)]
    return "\n".join("  ".join([*(cell.ljust(width) for cell, width in zip(
        line, widths, strict=False)), line[-1]]) for line in lines)


def failed(rows: Sequence[Row]) -> str | None:
    """The task's failure: the images that did not pass, or None."""
    bad = [row.name for row in rows if row.problem]
    return f"verify failed for {', '.join(bad)}" if bad else None


def no_keys(run: Run) -> str | None:
    """Why verify cannot start: no settings.trust keys to check with."""
    if run.services.trusted:
        return None
    return (f"{run.project.config.path}: verify needs settings.trust's keys "
            "(e.g. `trust: {keys: [cosign.pub]}` under settings)")


def verify_command(run: Run) -> None:
    """`doit verify`: the table of each selected image's checks; raises CommandFailed
    without trusted keys, when the registry cannot be asked, or when a check fails."""
    problem = no_keys(run)
    if problem:
        raise CommandFailed(f"error: {problem}")
    try:
        rows = verify(run, run.project.graph.ordered(run.selection.selected))
    except RegistryError as err:
        raise CommandFailed(f"error: {err}") from None
    print(table(rows))
    failure = failed(rows)
    if failure:
        raise CommandFailed(failure)
