"""A failed registry request or push: what it means (in words, with its fix), whether
asking again may mend it, and asking again within a budget (jittered exponential backoff,
by tenacity); and the breaker a run's pushes share, which opens when the registry is not
there. Imports nothing of buildlib: `registry`, `services` and `publish` ask it."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

BACKOFF_CAP_SECONDS = 15
BREAKER_PUSHES = 3  # pushes in a row that found the registry unreachable: the rest give up
FIX_UNREACHABLE = ("start it (for the example tree `make registry` starts one on "
                   "127.0.0.1:5000; else e.g. `docker-registry serve CONFIG`), or set "
                   "`registry:` under settings in images.yaml to a registry that runs")
FIX_HOST = "correct `registry:` under settings in images.yaml"
FIX_TLS = ("if it is a plain-HTTP or self-signed registry you trust, mark it insecure with "
           "`tls_verify: false` under settings")
T = TypeVar("T")
TRY_LINE = "# try"  # how a push log marks each try (`report` counts them)


def dropped(err: BaseException) -> bool:
    """The connection was made, then dropped: someone listens, maybe a registry in trouble."""
    import http.client

    return isinstance(root_cause(err), (ConnectionResetError, ConnectionAbortedError,
                                        BrokenPipeError, http.client.RemoteDisconnected,
                                        http.client.BadStatusLine))


def root_cause(err: BaseException) -> BaseException:
    """The socket-level error inside urllib's URLError."""
    import urllib.error

    if isinstance(err, urllib.error.URLError) and isinstance(err.reason, BaseException):
        return err.reason
    return err


def describe(err: BaseException, timeout: float) -> str:
    """A failed request in words, e.g. `connection refused`, `timed out after 15 s`."""
    import socket
    import ssl

    err = root_cause(err)
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


def fix_for(err: BaseException) -> str:
    import socket
    import ssl

    err = root_cause(err)
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


def try_line(number: int) -> str:
    """The line a push log marks its try `number` with."""
    return f"{TRY_LINE} {number}"
