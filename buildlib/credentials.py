"""A registry's credentials, found as containers/image finds them: the one authfile of a
run (for `buildah push --authfile` and our own requests alike), then in it the registry's
`credHelpers` helper, its `auths` entry, or the `credsStore` helper (docker's catch-all).
A helper is `docker-credential-NAME` on PATH, asked `get` with the registry on stdin."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any


class HelperFailed(Exception):
    """A credential helper the authfile names could not run, or failed: the message says
    which, for which registry, and what to do."""


def find_authfile(registry: str, named: str | None, root: Path) -> Path | None:
    """The one authfile of a run, for `buildah push --authfile` and our own requests alike:
    `named` (settings.authfile, relative to `root`) if that file exists, else
    REGISTRY_AUTH_FILE (a CI job's login: the checkout lacks the named file), else `named`
    (missing: config_load.load says so), else the first of buildah's default places that names
    this registry (in `auths` or `credHelpers`)."""
    from_env = os.environ.get("REGISTRY_AUTH_FILE")
    if named and ((root / named).is_file() or not from_env):
        return root / named
    if from_env:
        return root / from_env
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    defaults = [
        f"{runtime_dir}/containers/auth.json" if runtime_dir
        else f"/run/containers/{os.getuid()}/auth.json",
        f"{config_home}/containers/auth.json",
        os.path.expanduser("~/.docker/config.json"),
    ]
    return next((Path(d) for d in defaults if _names(registry, Path(d))), None)


HELPER_TIMEOUT_SECONDS = 30  # a credential helper may ask a keyring or a cloud's API
NOT_FOUND = "credentials not found"  # how docker-credential-helpers say "none stored"


def _authfile(authfile: Path | None) -> dict[str, Any]:
    """The authfile's JSON ({} when there is none or it cannot be read)."""
    try:
        document = json.loads(authfile.read_text()) if authfile is not None else {}
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def _host(key: str) -> str:
    return re.sub(r"^https?://", "", key).split("/")[0]


def _names(registry: str, authfile: Path) -> bool:
    """The authfile has an entry of its own for this registry (`auths` or `credHelpers`)."""
    document = _authfile(authfile)
    return bool(_auths_entry(registry, document)) or registry in (document.get("credHelpers") or {})


def _auths_entry(registry: str, document: dict[str, Any]) -> str | None:
    for key, entry in (document.get("auths") or {}).items():
        if _host(key) == registry and isinstance(entry, dict) and entry.get("auth"):
            return entry["auth"]
    return None


def credentials(registry: str, authfile: Path | None) -> str | None:
    """The base64 `user:password` for this registry, resolved as containers/image does in
    one authfile: its `credHelpers` entry for the registry (that helper alone answers),
    else its `auths` entry, else (as docker does) its `credsStore` helper. A helper that has
    none stored gives None; one that fails raises HelperFailed."""
    document = _authfile(authfile)
    helper = (document.get("credHelpers") or {}).get(registry)
    if helper:
        return _from_helper(helper, registry, authfile)
    found = _auths_entry(registry, document)
    if found or not document.get("credsStore"):
        return found
    return _from_helper(str(document["credsStore"]), registry, authfile)


def _from_helper(helper: str, registry: str, authfile: Path | None) -> str | None:
    """`docker-credential-<helper> get`, with the registry on stdin: its JSON
    {ServerURL, Username, Secret} as base64 `user:password`; None when it has none."""
    import base64
    import subprocess

    program = f"docker-credential-{helper}"
    where = f"credential helper {program} (named in {authfile})"
    fix = (f"install {program} on PATH and log in to {registry} with it, or remove it "
           f"from {authfile}")
    try:
        done = subprocess.run([program, "get"], input=registry, capture_output=True,
                              text=True, timeout=HELPER_TIMEOUT_SECONDS, check=False)
    except OSError as err:
        raise HelperFailed(f"{where} cannot run: {err.strerror or err}; {fix}") from None
    except subprocess.TimeoutExpired:
        raise HelperFailed(f"{where} gave no answer in {HELPER_TIMEOUT_SECONDS} s; "
                           f"{fix}") from None
    said = done.stdout.strip() or done.stderr.strip()
    if done.returncode != 0:
        if NOT_FOUND in said.lower():
            return None
        raise HelperFailed(f"{where} failed for {registry} (exit {done.returncode}): "
                           f"{said[-300:] or 'no output'}; {fix}")
    try:
        answer = json.loads(done.stdout)
        user, secret = str(answer["Username"]), str(answer["Secret"])
    except (ValueError, KeyError, TypeError):  # (its words are not repeated: a secret)
        raise HelperFailed(f"{where} answered for {registry} with no JSON "
                           f"{{ServerURL, Username, Secret}}; {fix}") from None
    if user == "<token>":  # an identity token: a registry's OAuth, not user:password
        return None
    return base64.b64encode(f"{user}:{secret}".encode()).decode()
