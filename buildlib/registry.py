"""What a registry holds (the digest behind a tag) and the push retry policy.

The digest is read with one HTTP HEAD of the manifest (distribution's API), with the
credentials buildah would use: Basic auth, or a Bearer token fetched with them.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import tenacity

MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])
HTTP_TIMEOUT_SECONDS = 15
BACKOFF_CAP_SECONDS = 15


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str

    @classmethod
    def parse(cls, reference: str) -> Reference:
        """`host[:port]/repo/path:tag` (the references this project composes)."""
        name, _, tag = reference.rpartition(":")
        registry, _, repository = name.partition("/")
        return cls(registry, repository, tag)


def default_authfile() -> Path | None:
    """The authfile buildah reads when given no --authfile, if it exists."""
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    candidates = [
        os.environ.get("REGISTRY_AUTH_FILE"),
        f"{runtime_dir}/containers/auth.json" if runtime_dir
        else f"/run/containers/{os.getuid()}/auth.json",
        os.path.expanduser("~/.docker/config.json"),
    ]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def credentials(registry: str, authfile: Path | None) -> str | None:
    """The base64 `user:password` an authfile holds for this registry, if any."""
    if authfile is None:
        return None
    try:
        auths = json.loads(authfile.read_text()).get("auths", {})
    except (OSError, ValueError):
        return None
    for key, entry in auths.items():
        host = re.sub(r"^https?://", "", key).split("/")[0]
        if host == registry and isinstance(entry, dict) and entry.get("auth"):
            return entry["auth"]
    return None


class RegistryError(Exception):
    """The registry could not be asked (unreachable, refused our credentials, ...)."""


def remote_digest(reference: str, *, tls_verify: bool, authfile: Path | None) -> str | None:
    """The manifest digest the registry serves for this tag; None when it has no such tag."""
    ref = Reference.parse(reference)
    schemes = ["https"] if tls_verify else ["https", "http"]
    if _SCHEME_THAT_WORKED.get(ref.registry) in schemes:
        schemes = [_SCHEME_THAT_WORKED[ref.registry]]
    last_error: Exception | None = None
    for scheme in schemes:
        url = f"{scheme}://{ref.registry}/v2/{ref.repository}/manifests/{ref.tag}"
        try:
            digest = _head_digest(url, tls_verify, credentials(ref.registry, authfile))
        except (ssl.SSLError, urllib.error.URLError, ConnectionError) as err:
            last_error = err
            continue
        _SCHEME_THAT_WORKED[ref.registry] = scheme
        return digest
    raise RegistryError(f"cannot ask {ref.registry} for {reference}: {last_error}")


# Like buildah with --tls-verify=false: try HTTPS, fall back to HTTP; remember which worked.
_SCHEME_THAT_WORKED: dict[str, str] = {}


@functools.cache
def _ssl_context(tls_verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not tls_verify:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def _head_digest(url: str, tls_verify: bool, basic: str | None) -> str | None:
    context = _ssl_context(tls_verify)
    headers = {"Accept": MANIFEST_TYPES}
    if basic:
        headers["Authorization"] = f"Basic {basic}"
    for _ in range(2):  # once as is, once with a Bearer token if the registry asks for one
        request = urllib.request.Request(url, method="HEAD", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS,
                                        context=context) as response:
                return response.headers.get("Docker-Content-Digest")
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            challenge = err.headers.get("WWW-Authenticate", "")
            if err.code != 401 or not challenge.lower().startswith("bearer"):
                raise RegistryError(f"HEAD {url}: HTTP {err.code}") from None
            headers["Authorization"] = f"Bearer {_token(challenge, basic, context)}"
    raise RegistryError(f"HEAD {url}: credentials refused")


def _token(challenge: str, basic: str | None, context: ssl.SSLContext) -> str:
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    realm = params.pop("realm", "")
    url = f"{realm}?{urllib.parse.urlencode(params)}"
    headers = {"Authorization": f"Basic {basic}"} if basic else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS,
                                    context=context) as response:
            body = json.loads(response.read())
    except (urllib.error.URLError, ValueError) as err:
        raise RegistryError(f"token from {realm}: {err}") from None
    return body.get("token") or body.get("access_token") or ""


def basic_auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


# How a failed `buildah push` reads; anything not named permanent is worth a retry.
PERMANENT = [
    (re.compile(r"server gave HTTP response to HTTPS client|certificate|x509", re.I),
     "the registry does not speak verified TLS; if it is a plain-HTTP or self-signed "
     "registry you trust, mark it insecure with `tls_verify: false` under settings"),
    (re.compile(r"\b401\b|unauthorized|authentication required|no basic auth credentials",
                re.I),
     "authentication failed: give credentials in an authfile (`authfile:` under settings, "
     "or REGISTRY_AUTH_FILE), e.g. made by `buildah login --authfile FILE REGISTRY`"),
    (re.compile(r"\b403\b|denied|forbidden", re.I),
     "the registry refused access: check the account's rights on this repository"),
    (re.compile(r"image not known|invalid reference|repository name must", re.I),
     "the local image or the reference is wrong: build the image first (`doit build`)"),
]


def permanent_cause(output: str) -> str | None:
    """The explanation of a failure that no retry will mend, or None if it may pass."""
    for pattern, explanation in PERMANENT:
        if pattern.search(output):
            return explanation
    return None


class TransientPushError(Exception):
    """A push failure that may pass: connection refused/reset, timeout, HTTP 5xx or 429."""


T = TypeVar("T")


def with_retries(attempt: Callable[[], T], attempts: int,
                 on_retry: Callable[[int, float, BaseException], None]) -> T:
    """Call `attempt` until it succeeds, it raises a non-transient error, or `attempts`
    are used; jittered exponential backoff capped at BACKOFF_CAP_SECONDS between calls."""
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_random_exponential(multiplier=0.5, max=BACKOFF_CAP_SECONDS),
        retry=tenacity.retry_if_exception_type(TransientPushError),
        before_sleep=lambda state: on_retry(state.attempt_number, state.upcoming_sleep,
                                            state.outcome.exception()),
        reraise=True,
    )
    return retrying(attempt)
