"""What a registry holds (the digest behind a tag) and whether it can be reached at all
(the push retry policy and the breaker are `retries`').

Requests go to distribution's HTTP API with the credentials buildah uses (Basic auth, or a
Bearer token fetched with them), each with a short timeout. One `Client` per run: it asks
`GET /v2/` once before anything else (a registry that is not there ends the push phase at
once), remembers which scheme answered, and holds the circuit breaker the pushes share.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from buildlib.credentials import HelperFailed, credentials
from buildlib.reference import ImageRef
from buildlib.retries import (
    Breaker,
    Budget,
    GaveUp,
    T,
    TransientError,
    describe,
    dropped,
    fix_for,
    root_cause,
    with_retries,
)

if TYPE_CHECKING:  # imported where requests are made: a run that asks no registry skips them
    import http.client
    import urllib.request

MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])
HTTP_TIMEOUT_SECONDS = 15  # at most, per request; less when settings.push_timeout is less
TAGS_PAGE = 1000  # tags per page of a tag list
DROPPED_CHECKS = 3  # a /v2/ check whose connection is dropped is asked again, this often


@dataclass(frozen=True)
class Manifest:
    """A manifest as the registry serves it: its digest, type and bytes, and the digest
    of the image config it names (the image ID; None for an index)."""

    digest: str
    media_type: str
    body: bytes
    config_digest: str | None
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_index(self) -> bool:
        """A manifest list (OCI index): it names images, not one image's config."""
        return self.config_digest is None

    def annotated(self, extra: Mapping[str, str]) -> Manifest:
        """This manifest with more annotations (written in the same JSON spelling every
        time, so the same image and key give the same digest anywhere)."""
        document = json.loads(self.body)
        document["annotations"] = {**(document.get("annotations") or {}), **extra}
        body = json.dumps(document, indent=3).encode()
        return replace(self, digest=_sha256(body), body=body,
                       annotations=document["annotations"])

    def platform_digest(self, platform: str) -> str | None:
        """In a manifest list, the digest of the image for `os/arch[/variant]`."""
        wanted = platform.split("/")
        for entry in json.loads(self.body).get("manifests") or []:
            entry_platform = entry.get("platform") or {}
            found = [entry_platform.get("os"), entry_platform.get("architecture")]
            if entry_platform.get("variant") and len(wanted) > 2:
                found.append(entry_platform["variant"])
            if found == wanted:
                return entry.get("digest")
        return None


@dataclass(frozen=True)
class _Answer:
    headers: Any
    body: bytes

    def read(self) -> bytes:
        return self.body


def _sha256(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


class RegistryError(Exception):
    """The registry could not be asked (unreachable, refused our credentials, ...).
    `transient`: asking again may work (no answer, a dropped connection, HTTP 5xx/429);
    `unreachable`: what showed the registry is not there (refused, timed out), if so."""

    def __init__(self, message: str, transient: bool = False,
                 unreachable: str | None = None) -> None:
        super().__init__(message)
        self.transient, self.unreachable = transient, unreachable


class DeletionRefused(RegistryError):
    """The registry does not allow deleting manifests (HTTP 405 UNSUPPORTED)."""


class Unreachable(RegistryError):
    """The registry is not there: refused, unknown host, no TLS where TLS is asked, timeout."""


class Client:
    """One registry as a run talks to it: checked once, then asked for digests."""

    def __init__(self, host: str, *, tls_verify: bool, authfile: Path | None,
                 timeout: float = HTTP_TIMEOUT_SECONDS) -> None:
        self.host, self.tls_verify, self.authfile = host, tls_verify, authfile
        self.timeout = min(timeout, HTTP_TIMEOUT_SECONDS)
        self.breaker = Breaker(host)
        self._lock = threading.Lock()
        self._checked = False
        self._problem: str | None = None
        self._scheme: str | None = None  # the scheme that answered
        self._basic: tuple[str] | None = None  # the credentials, once resolved
        import ssl

        self._context = ssl.create_default_context()
        if not tls_verify:
            self._context.check_hostname, self._context.verify_mode = False, ssl.CERT_NONE

    def prefetch_check(self) -> None:
        """Check in the background now, while doit loads tasks and reads its state."""
        threading.Thread(target=self._check_once, daemon=True).start()

    def check(self) -> None:
        """Raise Unreachable (one message: which registry, what happened, what to do)
        unless `GET /v2/` answered, with any status. Asked once per run."""
        self._check_once()
        if self._problem:
            raise Unreachable(self._problem)

    def _check_once(self) -> None:
        with self._lock:
            if not self._checked:
                self._problem = self._ask_v2()
                self._checked = True

    def _schemes(self) -> list[str]:
        # Like buildah with --tls-verify=false: HTTPS first, plain HTTP when TLS fails.
        if self._scheme:
            return [self._scheme]
        return ["https"] if self.tls_verify else ["https", "http"]

    def _ask_v2(self) -> str | None:
        """None when the registry answered; else what happened and what to do."""
        import ssl

        error: BaseException | None = None
        for scheme in self._schemes():
            url = f"{scheme}://{self.host}/v2/"
            error = self._get(url)
            if error is None:
                self._scheme = scheme
                return None
            if not isinstance(root_cause(error), ssl.SSLError):
                break  # only a failed TLS handshake is worth asking in plain HTTP
        return (f"registry {self.host} is not reachable: {describe(error, self.timeout)} "
                f"(GET {url}); {fix_for(error)}")

    def _get(self, url: str) -> BaseException | None:
        """None when `url` answered with any HTTP status, or dropped the connection each
        time (someone listens: the pushes and their retries will tell); else the error."""
        import http.client
        import urllib.error
        import urllib.request

        for _ in range(DROPPED_CHECKS):
            try:
                self._open(urllib.request.Request(url)).close()
            except urllib.error.HTTPError:  # 401 and the like: it answers
                pass
            except (OSError, http.client.HTTPException) as err:
                if not dropped(err):
                    return err
                continue
            return None
        return None

    def digest(self, reference: str) -> str | None:
        """The manifest digest the registry serves for this tag; None when it has no such
        tag. Raises RegistryError when it cannot be asked."""
        found = self._ask("HEAD", reference)
        return found.headers.get("Docker-Content-Digest") if found else None

    def manifest(self, reference: str) -> Manifest | None:
        """The manifest served for `repo:tag` or `repo@sha256:...`; None when there is
        none. One GET. Raises RegistryError when the registry cannot be asked."""
        found = self._ask("GET", reference)
        if found is None:
            return None
        body = found.read()
        digest = found.headers.get("Docker-Content-Digest") or _sha256(body)
        media_type = found.headers.get("Content-Type", "").split(";")[0]
        try:
            document = json.loads(body)
            config = (document.get("config") or {}).get("digest")
            annotations = {str(k): str(v) for k, v in (document.get("annotations") or {}).items()}
        except (ValueError, AttributeError):
            config, annotations = None, {}
        return Manifest(digest, media_type, body, config, annotations)

    def put_manifest(self, reference: str, manifest: Manifest) -> None:
        """Tag `reference` with an existing manifest (no image data moves)."""
        self._ask("PUT", reference, manifest.body, {"Content-Type": manifest.media_type})

    def blob(self, repository: str, digest: str) -> bytes | None:
        """The blob `digest` of `repository` (path without the host), checked against its
        digest; None when the registry has none. One GET."""
        answer = self._blob_request("GET", repository, f"blobs/{digest}", None)
        if answer is None:
            return None
        if _sha256(answer.body) != digest:
            raise RegistryError(f"{self.host} served blob {digest} of {repository} with "
                                "other bytes")
        return answer.body

    def put_blob(self, repository: str, data: bytes) -> str:
        """Upload `data` as a blob of `repository` (a POST, then one PUT of all of it);
        its digest."""
        import urllib.parse

        digest = _sha256(data)
        started = self._blob_request("POST", repository, "blobs/uploads/", b"")
        location = started.headers.get("Location", "") if started else ""
        if not location:
            raise RegistryError(f"{self.host} started no upload for {repository}")
        base = f"{self._schemes()[0]}://{self.host}"
        url = urllib.parse.urljoin(base, location)
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"digest": digest})
        self._blob_request("PUT", repository, url, data,
                           {"Content-Type": "application/octet-stream"})
        return digest

    def _blob_request(self, method: str, repository: str, where: str, data: bytes | None,
                      headers: dict[str, str] | None = None) -> _Answer | None:
        """`where` under /v2/<repository>/, or a full URL (an upload's Location)."""
        import http.client

        self.check()
        url = (where if "://" in where
               else f"{self._schemes()[0]}://{self.host}/v2/{repository}/{where}")
        try:
            return self._request(method, url, data, headers or {})
        except (OSError, http.client.HTTPException) as err:
            raise RegistryError(f"cannot {method} {url}: {describe(err, self.timeout)}",
                                transient=True) from None

    def tags(self, repository: str) -> list[str]:
        """Every tag of `repository` (path without the host; [] when it has none), following
        the registry's pages. Raises RegistryError when it cannot be asked."""
        import http.client
        import urllib.parse

        self.check()
        base = f"{self._schemes()[0]}://{self.host}"
        url: str | None = f"{base}/v2/{repository}/tags/list?n={TAGS_PAGE}"
        tags: list[str] = []
        while url:
            try:
                answer = self._request("GET", url, None, {"Accept": "application/json"})
            except (OSError, http.client.HTTPException) as err:
                raise RegistryError(f"cannot list the tags of {repository} on {self.host}: "
                                    f"{describe(err, self.timeout)}", transient=True) from None
            if answer is None:
                return tags
            tags += json.loads(answer.body or b"{}").get("tags") or []
            link = re.match(r'\s*<([^>]+)>\s*;\s*rel="next"', answer.headers.get("Link") or "")
            url = urllib.parse.urljoin(base, link.group(1)) if link else None
        return tags

    def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete one manifest by digest, and with it every tag that names it. Raises
        DeletionRefused when the registry does not allow deletion, RegistryError else."""
        import http.client

        self.check()
        url = f"{self._schemes()[0]}://{self.host}/v2/{repository}/manifests/{digest}"
        try:
            self._request("DELETE", url, None, {})
        except RegistryError as err:
            if re.search(r"HTTP 405$", str(err)):
                raise DeletionRefused(
                    f"registry {self.host} does not allow deleting manifests (HTTP 405, "
                    "UNSUPPORTED); enable deletion in its configuration (docker-registry: "
                    "`storage: delete: enabled: true`, or REGISTRY_STORAGE_DELETE_ENABLED="
                    "true) and prune again") from None
            raise
        except (OSError, http.client.HTTPException) as err:
            raise RegistryError(f"cannot delete {repository}@{digest} on {self.host}: "
                                f"{describe(err, self.timeout)}", transient=True) from None

    def _ask(self, method: str, reference: str, data: bytes | None = None,
             headers: dict[str, str] | None = None) -> _Answer | None:
        import http.client

        self.check()
        ref = ImageRef.parse(reference)
        url = (f"{self._schemes()[0]}://{self.host}/v2/{ref.registry_path}/manifests/"
               f"{ref.reference}")
        try:
            return self._request(method, url, data, headers or {})
        except (OSError, http.client.HTTPException) as err:
            what, cause = describe(err, self.timeout), root_cause(err)
            not_there = ("connection refused" if isinstance(cause, ConnectionRefusedError)
                         else what if isinstance(cause, TimeoutError) else None)
            raise RegistryError(f"cannot ask {self.host} for {reference}: {what}",
                                transient=True, unreachable=not_there) from None

    def _open(self, request: urllib.request.Request) -> http.client.HTTPResponse:
        import urllib.request

        return urllib.request.urlopen(request, timeout=self.timeout, context=self._context)

    def _request(self, method: str, url: str, data: bytes | None,
                 extra: dict[str, str]) -> _Answer | None:
        """The answer (None for a 404), with our credentials, or a Bearer token fetched
        with them when the registry asks for one."""
        import urllib.error
        import urllib.request

        basic = self._credentials()
        headers = {"Accept": MANIFEST_TYPES, **extra}
        if basic:
            headers["Authorization"] = f"Basic {basic}"
        for _ in range(2):  # once as is, once with a Bearer token if the registry asks
            request = urllib.request.Request(url, method=method, headers=headers, data=data)
            try:
                with self._open(request) as response:
                    return _Answer(response.headers, response.read())
            except urllib.error.HTTPError as err:
                if err.code == 404:
                    return None
                challenge = err.headers.get("WWW-Authenticate", "")
                if err.code != 401 or not challenge.lower().startswith("bearer"):
                    raise RegistryError(f"{method} {url}: HTTP {err.code}",
                                        transient=err.code >= 500 or err.code == 429) from None
                headers["Authorization"] = f"Bearer {self._token(challenge, basic)}"
        raise RegistryError(f"{method} {url}: credentials refused")

    def _credentials(self) -> str | None:
        """Resolved once per client: a credential helper runs once per run."""
        with self._lock:
            if self._basic is None:
                try:
                    self._basic = (credentials(self.host, self.authfile) or "",)
                except HelperFailed as err:
                    raise RegistryError(str(err)) from None
            return self._basic[0] or None

    def _token(self, challenge: str, basic: str | None) -> str:
        import http.client
        import urllib.parse
        import urllib.request

        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", "")
        url = f"{realm}?{urllib.parse.urlencode(params)}"
        headers = {"Authorization": f"Basic {basic}"} if basic else {}
        try:
            with self._open(urllib.request.Request(url, headers=headers)) as response:
                body = json.loads(response.read())
        except (OSError, http.client.HTTPException, ValueError) as err:
            raise RegistryError(f"token from {realm}: {describe(err, self.timeout)}") from None
        return body.get("token") or body.get("access_token") or ""


def asked_again(request: Callable[[], T], budget: Budget) -> T:
    """A registry request, asked again while it fails in a way that may pass (HTTP 5xx or
    429, a dropped connection), within `budget`; at once when the registry is not there
    (refused, timed out: the check and the breaker say so). Raises RegistryError."""
    def attempt() -> T:
        try:
            return request()
        except RegistryError as err:
            if err.transient and not err.unreachable:
                raise TransientError(str(err)) from None
            raise

    try:
        return with_retries(attempt, budget, lambda *_: None)
    except GaveUp as err:
        raise RegistryError(str(err)) from None

