"""`doit merge`: each multi-arch image's manifest list made of the lists its platforms'
runs pushed (`push platform=P`, then `merge parts=NAME@sha256:...,...`)."""

from __future__ import annotations

from buildlib import cache, publish
from buildlib.errors import CommandFailed, InputError
from buildlib.options import merge_parts
from buildlib.registry import RegistryError
from buildlib.run import Run


def merge_lists(run: Run) -> None:
    """Each image's platforms' lists in one list, under its key's tag and the user's tag;
    raises CommandFailed when a part is not in the registry or the merge fails."""
    proj = run.project
    lookups = run.lookups or cache.Lookups(run.services.client(), run.services.budget,
                                           run.services.trusted)
    try:
        for name, digests in merge_parts(proj, run.options).items():
            repository = cache.repository_of(proj.plans[name].reference)
            found = [lookups.find(f"{repository}@{digest}") for digest in digests]
            absent = [d for d, f in zip(digests, found, strict=True) if f is None]
            if absent:
                raise CommandFailed(f"error: {repository} has no {', '.join(absent)}")
            index = publish.merge(proj, run.services, name, [f for f in found if f is not None])
            print(f"merged {proj.plans[name].reference}: {index.digest} "
                  f"({', '.join(proj.plans[name].platforms)})")
    except (InputError, RegistryError) as err:
        raise CommandFailed(f"error: {err}") from None
