"""`doit resolve`: build/images.lock.json, each selected image's digest, key and ID in the
registry, for those who pull what this tree pushed."""

from __future__ import annotations

import json

from buildlib import cache
from buildlib.doit_seam import display_path
from buildlib.errors import CommandFailed
from buildlib.registry import RegistryError
from buildlib.run import Run


def write_lock(run: Run) -> None:
    """Write the lock of the selected images; raises CommandFailed when the registry
    cannot be asked or lacks one of them under its current key."""
    proj, lock = run.project, run.project.lock_path
    names = proj.graph.ordered(run.selection.selected)
    lookups = run.lookups or cache.Lookups(run.services.client(), run.services.budget,
                                           run.services.trusted)
    try:
        resolved = cache.resolve(proj, names, lookups, run.bases, run.warn)
    except RegistryError as err:
        raise CommandFailed(str(err)) from None
    missing = sorted(name for name, entry in resolved.items() if entry is None)
    if missing:
        raise CommandFailed(f"not in the registry for their current keys: "
                            f"{', '.join(missing)}; push them first (`doit push`)")
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"images": resolved}, indent=2, sort_keys=True) + "\n")
    print(f"wrote {display_path(lock)}: {len(resolved)} images")
