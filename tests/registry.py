"""A real registry on loopback for push tests: `docker-registry serve` (CNCF distribution),
optionally behind htpasswd auth or a flaky HTTP proxy that fails a share of requests.

Every server listens on 127.0.0.1 with a free port and stops at fixture teardown; every wait
loop is bounded in count and time.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import random
import re
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REGISTRY_BINARY = shutil.which("docker-registry")
SKOPEO = shutil.which("skopeo")
START_TIMEOUT = 20.0  # seconds until `GET /v2/` must answer
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
HTTP_TIMEOUT = 10.0  # seconds per request the helpers make
MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])

CONFIG = """\
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: {deletion}
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: {secret}
"""

AUTH_CONFIG = """\
auth:
  htpasswd:
    realm: imagebake-test
    path: {htpasswd}
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def basic_auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class Registry:
    """A running `docker-registry serve` on 127.0.0.1; `stop()` ends it."""

    workdir: Path
    port: int
    user: str | None = None
    password: str | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)
    deletion: bool = True  # `storage: delete: enabled`: manifests may be deleted

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def log(self) -> Path:
        """The registry's own output (access log included), for debugging a failed test."""
        return self.workdir / "registry.log"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Registry:
        if REGISTRY_BINARY is None:
            pytest.fail("docker-registry is not installed: run `make test`, which installs it")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = CONFIG.format(storage=self.workdir / "storage", port=self.port,
                               secret=secrets.token_hex(16),
                               deletion=str(self.deletion).lower())
        if self.user is not None:
            import bcrypt  # the test extra; only the auth fixture needs it

            hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=6)).decode()
            htpasswd = self.workdir / "htpasswd"
            htpasswd.write_text(f"{self.user}:{hashed}\n")
            config += AUTH_CONFIG.format(htpasswd=htpasswd)
        config_path = self.workdir / "config.yml"
        config_path.write_text(config)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen([REGISTRY_BINARY, "serve", str(config_path)],
                                            stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        for _ in range(int(START_TIMEOUT / 0.05) + 1):
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited {self.process.returncode}:\n"
                                   f"{self.log.read_text(errors='replace')}")
            try:
                status = self.request("GET", "/v2/", authenticate=False).status
            except OSError:
                status = None
            # 200 without auth, 401 with: either way it serves the v2 API
            if status in (200, 401):
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry on {self.address} did not answer GET /v2/ "
                           f"within {START_TIMEOUT:g} s:\n{self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)

    # -- talking to it ---------------------------------------------------------------------

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                authenticate: bool = True) -> http.client.HTTPResponse:
        """One HTTP request to the registry (credentials added when it has them)."""
        headers = dict(headers or {})
        if authenticate and self.user is not None:
            headers["Authorization"] = f"Basic {basic_auth(self.user, self.password)}"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT)
        try:
            conn.request(method, path, headers=headers)
            response = conn.getresponse()
            response.body = response.read()
            return response
        finally:
            conn.close()

    def write_authfile(self, path: Path, address: str | None = None) -> Path:
        """An auth.json (`buildah login` format) with this registry's credentials."""
        assert self.user is not None, "only an auth registry has credentials"
        path.write_text(json.dumps(
            {"auths": {address or self.address: {"auth": basic_auth(self.user, self.password)}}}))
        return path

    def _skopeo_auth(self) -> list[str]:
        if self.user is None:
            return []
        return ["--authfile", str(self.write_authfile(self.workdir / "skopeo-auth.json"))]

    def reference(self, repository: str, tag: str) -> str:
        return f"{self.address}/{repository}:{tag}"

    def inspect(self, repository: str, tag: str) -> dict[str, Any]:
        """`skopeo inspect` of a tag (the image's config and the manifest digest)."""
        argv = [SKOPEO, "inspect", "--tls-verify=false", *self._skopeo_auth(),
                f"docker://{self.reference(repository, tag)}"]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise LookupError(f"skopeo inspect {repository}:{tag}: {result.stderr.strip()}")
        return json.loads(result.stdout)

    def digest(self, repository: str, tag: str) -> str | None:
        """The manifest digest skopeo sees for a tag, or None when the tag is absent."""
        try:
            return self.inspect(repository, tag)["Digest"]
        except LookupError as error:
            if "manifest unknown" in str(error) or "name unknown" in str(error):
                return None
            raise

    def head_digest(self, repository: str, tag: str) -> str | None:
        """Docker-Content-Digest of `HEAD /v2/<repo>/manifests/<tag>`, None on 404."""
        response = self.request("HEAD", f"/v2/{repository}/manifests/{tag}",
                                {"Accept": MANIFEST_TYPES})
        if response.status == 404:
            return None
        assert response.status == 200, f"HEAD {repository}:{tag}: {response.status}"
        return response.getheader("Docker-Content-Digest")

    def delete_tag(self, repository: str, tag: str) -> str:
        """Delete the manifest behind a tag (and so the tag); return its digest."""
        digest = self.head_digest(repository, tag)
        assert digest, f"{repository}:{tag} is not in the registry"
        response = self.request("DELETE", f"/v2/{repository}/manifests/{digest}")
        assert response.status == 202, f"DELETE {repository}@{digest}: {response.status} " \
                                       f"{response.body!r}"
        return digest

    def tags(self, repository: str) -> list[str]:
        response = self.request("GET", f"/v2/{repository}/tags/list")
        if response.status == 404:
            return []
        return json.loads(response.body).get("tags") or []

    def catalog(self) -> list[str]:
        return json.loads(self.request("GET", "/v2/_catalog").body).get("repositories") or []


def start_registry(workdir: Path, auth: bool = False, deletion: bool = True) -> Registry:
    """Start a registry on a free port (retrying if another process took the port meanwhile);
    `deletion=False`: one that refuses to delete manifests (HTTP 405 UNSUPPORTED)."""
    user, password = (f"user-{secrets.token_hex(3)}", secrets.token_urlsafe(18)) if auth \
        else (None, None)
    error: Exception | None = None
    for attempt in range(3):
        registry = Registry(workdir / f"registry-{attempt}", free_port(), user, password,
                            deletion=deletion)
        try:
            return registry.start()
        except RuntimeError as exc:
            registry.stop()
            error = exc
    raise error


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    """A plain-HTTP registry without auth, `delete: enabled`."""
    server = start_registry(tmp_path / "registry")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def auth_registry(tmp_path: Path) -> Iterator[Registry]:
    """A plain-HTTP registry with htpasswd auth; `.user`, `.password` are new per test."""
    server = start_registry(tmp_path / "auth-registry", auth=True)
    try:
        yield server
    finally:
        server.stop()


# -- a flaky proxy -------------------------------------------------------------------------

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailers", "transfer-encoding", "upgrade", "proxy-connection"}
MAX_CHUNK_LINE = 1024
REPOSITORY_PATH = re.compile(r"^/v2/(.+?)/(?:blobs|manifests|tags)/")


# The registry error code (distribution's errcode) an injected status comes with; clients
# parse it from 4xx answers ("unavailable: ...", "toomanyrequests: ...").
ERROR_CODES = {401: "UNAUTHORIZED", 403: "DENIED", 404: "NAME_UNKNOWN",
               429: "TOOMANYREQUESTS", 503: "UNAVAILABLE"}


def error_body(status: int) -> bytes:
    return json.dumps({"errors": [{
        "code": ERROR_CODES.get(status, "UNKNOWN"),
        "message": f"HTTP {status} injected by the flaky test proxy"}]}).encode()


@dataclass
class ProxyCounters:
    requests: int = 0  # requests read from clients
    unavailable: int = 0  # answered 503 (or the proxy's `status`)
    dropped: int = 0  # connection closed without an answer
    forwarded: int = 0  # relayed to the registry and back
    upstream_errors: int = 0  # the registry itself could not be reached
    chunked: int = 0  # request bodies that came with Transfer-Encoding: chunked
    by_repository: dict[str, int] = field(default_factory=dict)  # failures per repository

    @property
    def failures(self) -> int:
        return self.unavailable + self.dropped


class FlakyProxy:
    """A reverse proxy on 127.0.0.1 in front of a registry that fails a share of requests
    (and, with `upload_delay`, holds each blob upload a while: a slow link).

    For each request a seeded RNG decides: answer 503, drop the connection without an answer
    (after reading the request), or forward it (method, path, headers incl. Host, body) and
    relay the answer. At most `max_failures` failures are injected in all, and at most
    `max_per_repository` for the requests of one repository (`/v2/<repo>/...`; the `/v2/`
    ping and the catalog count as repository ""), so a client that retries gets through: with
    a cap of k per repository, one image's push fails at most 2k attempts. `repositories`,
    when given, limits failures to the requests of those repositories.
    """

    def __init__(self, upstream: Registry, failure_rate: float = 0.3,
                 drop_share: float = 0.5, max_failures: int = 30,
                 max_per_repository: int | None = None,
                 repositories: set[str] | None = None, status: int = 503,
                 seed: int = 4, upload_delay: float = 0.0) -> None:
        assert 0 <= failure_rate <= 1 and 0 <= drop_share <= 1
        self.upstream = upstream
        self.failure_rate, self.drop_share, self.max_failures = (failure_rate, drop_share,
                                                                 max_failures)
        self.max_per_repository = max_per_repository
        self.repositories = repositories
        self.status = status  # what a failed request is answered with (not dropped)
        # seconds each blob upload request (PATCH/PUT .../blobs/uploads/...) waits before it
        # goes on: a slow link, for pushes that take a while
        self.upload_delay = upload_delay
        self.random = random.Random(seed)
        self.counters = ProxyCounters()
        self.lock = threading.Lock()
        self.log: list[str] = []  # "METHOD path -> outcome", in order
        self.server: ThreadingHTTPServer | None = None
        self._port = 0  # known from start() on, kept after stop()
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def decide(self, method: str, path: str) -> str:
        """'503', 'drop' or 'forward' for the next request; counts it."""
        match = REPOSITORY_PATH.match(path)
        repository = match.group(1) if match else ""
        with self.lock:
            self.counters.requests += 1
            outcome = "forward"
            so_far = self.counters.by_repository.get(repository, 0)
            if ((self.repositories is None or repository in self.repositories)
                    and self.counters.failures < self.max_failures
                    and (self.max_per_repository is None or so_far < self.max_per_repository)
                    and self.random.random() < self.failure_rate):
                outcome = "drop" if self.random.random() < self.drop_share else "503"
                self.counters.by_repository[repository] = so_far + 1
            if outcome == "503":
                self.counters.unavailable += 1
            elif outcome == "drop":
                self.counters.dropped += 1
            else:
                self.counters.forwarded += 1
            self.log.append(f"{method} {path} -> {outcome}")
            return outcome

    def figures(self) -> str:
        c = self.counters
        return (f"proxy: {c.requests} requests, {c.failures} failures injected "
                f"({c.unavailable} x {self.status}, {c.dropped} dropped), {c.forwarded} forwarded")

    def start(self) -> FlakyProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 60  # an idle or stalled client connection is closed after this

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def handle_one(self) -> None:
                body = self.read_body()
                outcome = proxy.decide(self.command, self.path)
                if outcome == "drop":
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if outcome == "503":
                    self.reply(proxy.status, [("Content-Type", "application/json")],
                               error_body(proxy.status), close=True)
                    return
                if (proxy.upload_delay and self.command in ("PATCH", "PUT")
                        and "/blobs/uploads/" in self.path):
                    time.sleep(proxy.upload_delay)
                self.forward(body)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_one

            def read_body(self) -> bytes | None:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    return self.read_chunked()
                length = self.headers.get("Content-Length")
                if length is None:
                    return None
                return self.rfile.read(int(length))

            def read_chunked(self) -> bytes:
                with proxy.lock:
                    proxy.counters.chunked += 1
                parts = []
                while True:
                    line = self.rfile.readline(MAX_CHUNK_LINE)
                    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        # trailers, up to the empty line
                        while self.rfile.readline(MAX_CHUNK_LINE) not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(parts)
                    parts.append(self.rfile.read(size))
                    self.rfile.readline(MAX_CHUNK_LINE)  # the CRLF after each chunk

            def forward(self, body: bytes | None) -> None:
                # a list, not a dict: clients send several Accept headers, each one counts
                headers = [(key, value) for key, value in self.headers.items()
                           if key.lower() not in HOP_BY_HOP and key.lower() != "content-length"]
                if body is not None:
                    headers.append(("Content-Length", str(len(body))))
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream.port,
                                                  timeout=120)
                try:
                    # skip_host: the client's own Host header goes through as it came
                    conn.putrequest(self.command, self.path, skip_host=True,
                                    skip_accept_encoding=True)
                    for key, value in headers:
                        conn.putheader(key, value)
                    conn.endheaders(body)
                    response = conn.getresponse()
                    payload = response.read()
                except OSError as error:
                    with proxy.lock:
                        proxy.counters.upstream_errors += 1
                    self.reply(502, [("Content-Type", "text/plain")],
                               f"flaky proxy: upstream failed: {error}".encode())
                    return
                finally:
                    conn.close()
                relayed = [(key, value) for key, value in response.getheaders()
                           if key.lower() not in HOP_BY_HOP and key.lower() != "content-length"]
                self.reply(response.status, relayed, payload,
                           length=response.getheader("Content-Length"))

            def reply(self, status: int, headers: list[tuple[str, str]], payload: bytes,
                      length: str | None = None, close: bool = False) -> None:
                self.send_response_only(status)
                for key, value in headers:
                    self.send_header(key, value)
                # a HEAD answer keeps the Content-Length the registry gave, without a body
                self.send_header("Content-Length", length if self.command == "HEAD" and length
                                 else str(len(payload)))
                if close:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                self.wfile.flush()

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self._port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.1}, daemon=True,
                                       name=f"flaky-proxy-{self.port}")
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(timeout=STOP_TIMEOUT)
            self.server = None

    def __enter__(self) -> FlakyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def digest(self, repository: str, tag: str) -> str | None:
        """What the real registry behind the proxy holds for a tag."""
        return self.upstream.digest(repository, tag)


# -- registries that are not there ---------------------------------------------------------

class SilentSocket:
    """A port that accepts connections (the kernel completes them) and never answers."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.create_server(("127.0.0.1", port), backlog=128)
        self.port = self.sock.getsockname()[1]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> SilentSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


class GoesAwayRegistry:
    """Answers the first plain-HTTP `GET /v2/` (a registry's check) with 200, and a TLS
    hello with a plain 400 (so that a client falls back to HTTP), then, by `after`:
    "refuse": closes its port, so every later connection is refused;
    "hang": accepts every later connection and never answers."""

    def __init__(self, after: str, port: int = 0) -> None:
        assert after in ("refuse", "hang")
        self.after = after
        self.sock = socket.create_server(("127.0.0.1", port), backlog=128)
        self.port = self.sock.getsockname()[1]
        self.checked = False
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            if self.checked:
                self.held.append(conn)  # "hang": never read, never answered
                continue
            conn.settimeout(HTTP_TIMEOUT)
            with contextlib.suppress(OSError), conn:
                request = conn.recv(4096)
                if request.startswith(b"GET /v2/ "):
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
                    self.checked = True
                    if self.after == "refuse":
                        self.sock.close()
                        return
                else:
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")

    def __enter__(self) -> GoesAwayRegistry:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the serving thread
        self.sock.close()
        for conn in self.held:
            conn.close()
        self.thread.join(timeout=STOP_TIMEOUT)


@pytest.fixture
def flaky_registry(registry: Registry) -> Iterator[FlakyProxy]:
    """`registry` behind a FlakyProxy: 30% of requests fail (half 503, half dropped), at most
    30 in all. Tune it per test through the attributes before the first request."""
    with FlakyProxy(registry) as proxy:
        yield proxy


__all__ = ["FlakyProxy", "GoesAwayRegistry", "ProxyCounters", "Registry", "SilentSocket",
           "auth_registry", "basic_auth", "flaky_registry", "free_port", "registry",
           "start_registry"]
