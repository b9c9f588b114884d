"""Image references as containers/image reads them: `[domain/]path[:tag][@digest]`.

One rule for every place that takes a reference apart: a first component is a registry
(domain) only when it holds a `.` or a `:` or is `localhost`; otherwise the name is short
and docker.io's (with `library/` for one-component names). Names are lowercased nowhere:
an invalid reference is the config's to refuse.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_DOMAIN = "docker.io"
DEFAULT_TAG = "latest"
LOCAL_DOMAIN = "localhost"  # where buildah puts short names it tags or builds


@dataclass(frozen=True)
class ImageRef:
    """`domain/path:tag` or `domain/path@sha256:...`; `short` when no domain was written."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None
    short: bool = False

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        name, _, digest = text.partition("@")
        slash = name.rfind("/")
        colon = name.rfind(":")
        tag = None
        if colon > slash:
            name, tag = name[:colon], name[colon + 1:]
        first, _, rest = name.partition("/")
        if rest and ("." in first or ":" in first or first == LOCAL_DOMAIN):
            return cls(first, rest, tag, digest or None)
        return cls(DEFAULT_DOMAIN, name, tag, digest or None, short=True)

    @property
    def api_host(self) -> str:
        """Where the registry's API answers (docker.io's is elsewhere)."""
        return "registry-1.docker.io" if self.domain == DEFAULT_DOMAIN else self.domain

    @property
    def repository(self) -> str:
        """`domain/path`, with docker.io's `library/` where a short name needs it."""
        return f"{self.domain}/{self.registry_path}"

    @property
    def registry_path(self) -> str:
        """The repository's path as the registry's API names it (`/v2/<path>/...`)."""
        if self.domain == DEFAULT_DOMAIN and "/" not in self.path:
            return f"library/{self.path}"
        return self.path

    @property
    def reference(self) -> str:
        """The tag or the digest: what `/v2/<path>/manifests/<reference>` asks for."""
        return self.digest or self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        if self.digest:
            return f"{self.repository}@{self.digest}"
        return f"{self.repository}:{self.tag or DEFAULT_TAG}"

    def storage_names(self) -> list[str]:
        """The names local storage may hold this image under: the full name, and for a
        short name the one buildah gives what it tags or builds (`localhost/...`) first."""
        full = str(self)
        if not self.short or self.digest:
            return [full]
        return [f"{LOCAL_DOMAIN}/{self.path}:{self.tag or DEFAULT_TAG}", full]
