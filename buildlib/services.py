"""What a run talks to, made once per run and passed to whoever asks: its stop request
(set by its signal handlers), buildah, the authfile
of each registry, and one registry client per registry host (lookups, base images, pulls,
pushes and prune share it, with its /v2/ check, credentials and circuit breaker).

The one pull of an image from a registry (a root's base, an image a build reads, a parent
the run found in the registry) is here too, with the push's retries and deadline."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from buildlib import (
    buildah,
    config,
    credentials,
    dockerfile,
    processes,
    registry,
    retries,
    storagelock,
)
from buildlib.errors import InputError
from buildlib.reference import ImageRef

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import (
        EllipticCurvePrivateKey,
        EllipticCurvePublicKey,
    )

STORE_NOTE = ".image-store.json"  # where buildah keeps its list of images


class Services:
    """A run's buildah and registry clients. `home` is a reference in the tree's registry
    (where it pushes): `client()` without a reference is that registry's."""

    def __init__(self, cfg: config.Config, home: str | None = None) -> None:
        self.settings, self.root, self.config_path = cfg.settings, cfg.root, cfg.path
        self.stop = processes.StopControl()  # the run's signals; every command heeds it
        self.signing_key: EllipticCurvePrivateKey | None = None  # settings.sign's, opened
        self.trusted: tuple[EllipticCurvePublicKey, ...] = ()  # settings.trust's keys
        self.failed_pushes: set[str] = set()  # images whose push failed for good this run
        self.buildah = buildah.Buildah(tuple(cfg.settings.buildah_args),
                                       store_note=cfg.build_dir / STORE_NOTE, stop=self.stop)
        self.storage_lock = storagelock.StorageLock(self.buildah)  # shared by the run
        self.home = home
        self.base_triggers = BaseTriggers(self.buildah)
        self._lock = threading.Lock()
        self._authfiles: dict[str, Path | None] = {}
        self._clients: dict[str, registry.Client] = {}

    def authfile(self, domain: str | None = None) -> Path | None:
        """The credentials `buildah push/pull` and our own requests use for a registry
        (`credentials.find_authfile`; by default, settings.registry's)."""
        domain = domain or self.settings.registry
        with self._lock:
            if domain not in self._authfiles:
                self._authfiles[domain] = credentials.find_authfile(
                    domain, self.settings.authfile, self.root)
            return self._authfiles[domain]

    def client(self, reference: str | None = None) -> registry.Client:
        """The one client of the registry that serves `reference` (None: the tree's)."""
        ref = ImageRef.parse(reference or self.home or f"{self.settings.registry}/x")
        authfile = self.authfile(ref.domain)
        with self._lock:
            if ref.api_host not in self._clients:
                self._clients[ref.api_host] = registry.Client(
                    ref.api_host, tls_verify=self.settings.tls_verify, authfile=authfile,
                    timeout=self.settings.push_timeout)
            return self._clients[ref.api_host]

    def open_keys(self, signs: bool) -> None:
        """Read settings.trust's public keys and, for a run that `signs` (it pushes),
        settings.sign's private key with COSIGN_PASSWORD: before any build, one error
        (InputError) when one cannot be read."""
        trust, sign = self.settings.trust, self.settings.sign
        if not (trust and trust.keys) and not (signs and sign):
            return
        from buildlib import signing  # its crypto libraries load only for a tree with keys

        try:
            self.trusted = tuple(signing.read_public(self.root / key)
                                 for key in (trust.keys if trust else []))
            if signs and sign:
                self.signing_key = signing.signing_key(self.root / sign.key)
        except signing.SigningError as err:
            raise InputError(self.config_path, f"settings.sign/trust: {err}",
                             fix="check the key files (`imagebake keygen` makes a pair) and "
                             "COSIGN_PASSWORD") from None

    def budget(self) -> retries.Budget:
        """The attempts and the overall time one image's push (or pull) may take, from now."""
        return retries.Budget(self.settings.push_retries, self.settings.push_deadline)

    def pull(self, reference: str, anew: bool = False,
             on_retry: Callable[[int, float, BaseException], None] = lambda *_: None) -> str:
        """`buildah pull` (TLS and credentials as settings say) when storage lacks the image
        or `anew`, retried as a push is; its ID. Raises BuildahError: why it failed for good,
        or what the last attempt said once the attempts or the deadline are spent."""
        ref, budget = ImageRef.parse(reference), self.budget()

        def attempt() -> str:
            try:
                return self.buildah.pull(str(ref), tls_verify=self.settings.tls_verify,
                                         authfile=self.authfile(ref.domain), anew=anew,
                                         timeout=budget.timeout(self.settings.push_timeout))
            except buildah.BuildahError as err:
                if retries.permanent_cause(err.output):
                    raise
                raise retries.TransientError(str(err)) from None

        try:
            return retries.with_retries(attempt, budget, on_retry)
        except retries.GaveUp as err:
            raise buildah.BuildahError(str(err)) from None


class BaseTriggers:
    """The ONBUILD triggers of base images, as local storage holds them (asked once each;
    None: storage lacks the image, until `pulled`)."""

    def __init__(self, buildah_: buildah.Buildah) -> None:
        self.buildah = buildah_
        self.known: dict[str, tuple[dockerfile.Instruction, ...] | None] = {}

    def __call__(self, reference: str) -> tuple[dockerfile.Instruction, ...] | None:
        if reference not in self.known:
            lines = self.buildah.onbuild_triggers(reference)
            self.known[reference] = None if lines is None else dockerfile.config_triggers(lines)
        return self.known[reference]

    def pulled(self, reference: str) -> None:
        """Storage holds the image now: its triggers are asked again."""
        self.known.pop(reference, None)
