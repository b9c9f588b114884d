"""`doit keygen`: a new cosign signing key pair beside images.yaml."""

from __future__ import annotations

from pathlib import Path

from buildlib.doit_seam import display_path
from buildlib.errors import CommandFailed


def write_key_pair(folder: Path) -> None:
    """cosign.key, encrypted with COSIGN_PASSWORD, and cosign.pub; never overwrites a key.
    Raises CommandFailed without the `sign` extra or when a key is there already."""
    from buildlib import signing  # its crypto libraries load only when a key is made

    try:
        private, public = signing.write_pair(folder, signing.password())
    except ImportError as err:
        raise CommandFailed(f"error: imagebake keygen needs the `sign` extra ({err.name} is "
                            "missing): pip install 'buildlib[sign]'") from None
    except signing.SigningError as err:
        raise CommandFailed(f"error: {err}") from None
    print(f"wrote {display_path(private)} (secret: keep it out of the repository) "
          f"and {display_path(public)} (commit it: `cosign verify --key` reads it)")
