"""What a registry holds (the digest behind a tag), whether it can be reached at all, and
the push retry policy.

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
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from buildlib.credentials import HelperFailed, credentials
from buildlib.reference import ImageRef

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
BACKOFF_CAP_SECONDS = 15
BREAKER_PUSHES = 3  # pushes in a row that found the registry unreachable: the rest give up
TAGS_PAGE = 1000  # tags per page of a tag list
DROPPED_CHECKS = 3  # a /v2/ check whose connection is dropped is asked again, this often

FIX_UNREACHABLE = ("start it (for the example tree `make registry` starts one on "
                   "127.0.0.1:5000; else e.g. `docker-registry serve CONFIG`), or set "
                   "`registry:` under settings in images.yaml to a registry that runs")
FIX_HOST = "correct `registry:` under settings in images.yaml"
FIX_TLS = ("if it is a plain-HTTP or self-signed registry you trust, mark it insecure with "
           "`tls_verify: false` under settings")


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


def _dropped(err: BaseException) -> bool:
    """The connection was made, then dropped: someone listens, maybe a registry in trouble."""
    import http.client

    return isinstance(_cause(err), (ConnectionResetError, ConnectionAbortedError,
                                    BrokenPipeError, http.client.RemoteDisconnected,
                                    http.client.BadStatusLine))


def _cause(err: BaseException) -> BaseException:
    """The socket-level error inside urllib's URLError."""
    import urllib.error

    if isinstance(err, urllib.error.URLError) and isinstance(err.reason, BaseException):
        return err.reason
    return err


def describe(err: BaseException, timeout: float) -> str:
    """A failed request in words, e.g. `connection refused`, `timed out after 15 s`."""
    import socket
    import ssl

    err = _cause(err)
    if isinstance(err, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused (nothing listens there)"
    if isinstance(err, socket.gaierror):
        return f"unknown host ({err.strerror})"
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"its TLS certificate is not trusted ({err.verify_message})"
    if isinstance(err, ssl.SSLError):
        return f"the TLS handshake failed ({err.reason or err}): it may speak plain HTTP"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror[0].lower() + err.strerror[1:]
    return str(err) or type(err).__name__


def _fix_for(err: BaseException) -> str:
    import socket
    import ssl

    err = _cause(err)
    if isinstance(err, ssl.SSLError):
        return FIX_TLS
    if isinstance(err, socket.gaierror):
        return FIX_HOST
    return FIX_UNREACHABLE


class Breaker:
    """Shared by a run's pushes: once BREAKER_PUSHES different pushes in a row found the
    registry unreachable (refused, timed out), it opens, and the pushes still waiting give
    up with that cause instead of each spending its own attempts. An answer closes the row."""

    def __init__(self, host: str, threshold: int = BREAKER_PUSHES) -> None:
        self.host, self.threshold = host, threshold
        self._lock = threading.Lock()
        self._row: dict[str, str] = {}  # image -> what its last attempt found, in order
        self.cause: str | None = None  # set when open; it stays open for the run

    def unreachable(self, image: str, what: str) -> None:
        with self._lock:
            self._row.pop(image, None)
            self._row[image] = what
            if self.cause is None and len(self._row) >= self.threshold:
                names = ", ".join(self._row)
                self.cause = (f"not pushed: registry {self.host} was unreachable for "
                              f"{len(self._row)} pushes in a row ({names}): {what}; "
                              f"{FIX_UNREACHABLE}")

    def answered(self) -> None:
        with self._lock:
            self._row.clear()


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
            if not isinstance(_cause(error), ssl.SSLError):
                break  # only a failed TLS handshake is worth asking in plain HTTP
        return (f"registry {self.host} is not reachable: {describe(error, self.timeout)} "
                f"(GET {url}); {_fix_for(error)}")

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
                if not _dropped(err):
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
            what, cause = describe(err, self.timeout), _cause(err)
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


# How `buildah push` says it never reached the registry (after its own 3 tries).
UNREACHABLE = re.compile(r"connect: connection refused|no such host|i/o timeout|"
                         r"TLS handshake timeout|no route to host|network is unreachable",
                         re.I)


def unreachable(output: str) -> str | None:
    """How a failed `buildah push` found no registry to talk to (for the breaker), e.g.
    `connect: connection refused`; None when it reached one."""
    match = UNREACHABLE.search(output)
    return match.group(0) if match else None


def permanent_cause(output: str) -> str | None:
    """The explanation of a failure that no retry will mend, or None if it may pass."""
    for pattern, explanation in PERMANENT:
        if pattern.search(output):
            return explanation
    return None


class TransientError(Exception):
    """A push or pull failure that may pass: connection refused/reset, timeout, HTTP 5xx
    or 429."""


T = TypeVar("T")


@dataclass
class Budget:
    """What one push (or pull) may spend, from its start: `attempts` tries, all within
    `seconds` (the overall deadline, so a registry that takes the connection and stalls
    cannot hold one image for push_retries x push_timeout)."""

    attempts: int
    seconds: float
    started: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    def timeout(self, per_attempt: float) -> float:
        """The time one attempt may take: its own limit, cut to what is left (1 s at least)."""
        return max(1.0, round(min(per_attempt, self.left()), 1))


class GaveUp(Exception):
    """Every attempt was used, or the deadline came: says how many, how long, the last error."""


def with_retries(attempt: Callable[[], T], budget: Budget,
                 on_retry: Callable[[int, float, BaseException], None]) -> T:
    """Call `attempt` until it succeeds or raises a non-transient error; jittered
    exponential backoff capped at BACKOFF_CAP_SECONDS between calls. Raises GaveUp once
    `budget.attempts` are used or the next attempt would start after its deadline."""
    import tenacity

    made = 0

    def counted() -> T:
        nonlocal made
        made += 1
        return attempt()

    retrying = tenacity.Retrying(
        stop=(tenacity.stop_after_attempt(budget.attempts)
              | tenacity.stop_before_delay(max(0.0, budget.left()))),
        wait=tenacity.wait_random_exponential(multiplier=0.5, max=BACKOFF_CAP_SECONDS),
        retry=tenacity.retry_if_exception_type(TransientError),
        before_sleep=lambda state: on_retry(state.attempt_number, state.upcoming_sleep,
                                            state.outcome.exception()),
        reraise=True,
    )
    try:
        return retrying(counted)
    except TransientError as err:
        spent = time.monotonic() - budget.started
        raise GaveUp(f"still failing after {made} attempt{'s' * (made != 1)} in {spent:.1f} s "
                     f"(at most {budget.attempts} attempts within {budget.seconds:g} s: "
                     f"settings.push_retries, push_deadline): {err}") from None


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

