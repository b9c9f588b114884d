"""buildlib.registry against real sockets on loopback (no buildah): the check before pushes,
timeouts of registry requests, the circuit breaker, the authfile; buildah's error lines."""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from registry import GoesAwayRegistry, SilentSocket, free_port

from buildlib import buildah, credentials, registry, retries, run


class Answers(BaseHTTPRequestHandler):
    """A plain-HTTP server that answers every request with `status`; counts requests."""

    status = 200
    requests: list[str]

    def do_GET(self) -> None:  # noqa: N802
        self.requests.append(f"GET {self.path}")
        self.send_response(self.status)
        if self.status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="test"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def serve(status: int) -> Iterator[tuple[str, list[str]]]:
    requests: list[str] = []
    handler = type("Handler", (Answers,), {"status": status, "requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def plain_http() -> Iterator[tuple[str, list[str]]]:
    yield from serve(200)


@pytest.fixture
def wants_login() -> Iterator[tuple[str, list[str]]]:
    yield from serve(401)


def client(address: str, tls_verify: bool = False, timeout: float = 1) -> registry.Client:
    return registry.Client(address, tls_verify=tls_verify, authfile=None, timeout=timeout)


def unreachable_message(checked: registry.Client) -> str:
    with pytest.raises(registry.Unreachable) as caught:
        checked.check()
    return str(caught.value)


def test_refused_port_is_one_message_naming_the_registry_and_what_to_do() -> None:
    address = f"127.0.0.1:{free_port()}"
    message = unreachable_message(client(address))
    assert f"registry {address} is not reachable: connection refused" in message
    assert "make registry" in message and "`registry:` under settings" in message


def test_silent_registry_times_out_after_the_request_timeout() -> None:
    with SilentSocket() as silent:
        message = unreachable_message(client(silent.address, timeout=1))
    assert f"registry {silent.address} is not reachable: timed out after 1 s" in message


def test_request_timeout_is_push_timeout_capped_for_requests() -> None:
    assert client("r:1", timeout=2).timeout == 2
    assert client("r:1", timeout=300).timeout == registry.HTTP_TIMEOUT_SECONDS


def test_plain_http_registry_with_tls_verified_says_tls_verify_false(plain_http) -> None:
    address, requests = plain_http
    message = unreachable_message(client(address, tls_verify=True))
    assert f"registry {address} is not reachable" in message
    assert "tls_verify: false" in message
    assert requests == []  # no plain-HTTP request when TLS is to be verified


def test_check_is_asked_once_and_a_login_prompt_is_an_answer(wants_login) -> None:
    address, requests = wants_login
    checked = client(address)
    for _ in range(3):
        checked.check()
    assert requests == ["GET /v2/"]  # HTTPS failed, plain HTTP answered 401: once per run


def test_head_of_a_registry_that_stops_answering_is_a_registry_error() -> None:
    with GoesAwayRegistry(after="hang") as hanging:
        asking = client(hanging.address, timeout=1)
        asking.check()
        with pytest.raises(registry.RegistryError) as caught:
            asking.digest(f"{hanging.address}/kolla/base:latest")
    assert f"cannot ask {hanging.address} for {hanging.address}/kolla/base:latest: " \
           "timed out after 1 s" == str(caught.value)


def test_digest_of_an_unreachable_registry_is_the_check_message() -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(registry.Unreachable, match="connection refused"):
        client(address).digest(f"{address}/kolla/base:latest")


def test_breaker_opens_after_several_pushes_in_a_row_not_one_push_retrying() -> None:
    breaker = retries.Breaker("r:5000", threshold=3)
    for _ in range(5):
        breaker.unreachable("base", "connection refused")
    breaker.unreachable("cron", "connection refused")
    assert breaker.cause is None  # two pushes so far, however many attempts
    breaker.answered()
    breaker.unreachable("nova-api", "connection refused")
    breaker.unreachable("multipathd", "connection refused")
    assert breaker.cause is None  # an answer in between starts a new row
    breaker.unreachable("cron", "connection refused")
    assert breaker.cause == (
        "not pushed: registry r:5000 was unreachable for 3 pushes in a row (nova-api, "
        f"multipathd, cron): connection refused; {retries.FIX_UNREACHABLE}")
    breaker.answered()
    assert breaker.cause is not None  # open for the rest of the run


def write_auth(path: Path, registry_host: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": {registry_host: {"auth": "dXNlcjpwdw=="}}}))
    return path


def test_one_authfile_for_buildah_and_requests(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    root = tmp_path / "tree"
    assert credentials.find_authfile("r:5000", None, root) is None
    # buildah's default places, in its order; only a file with this registry's credentials
    write_auth(tmp_path / "run" / "containers" / "auth.json", "other:5000")
    docker = write_auth(tmp_path / "home" / ".docker" / "config.json", "r:5000")
    assert credentials.find_authfile("r:5000", None, root) == docker
    config = write_auth(tmp_path / "config" / "containers" / "auth.json", "r:5000")
    assert credentials.find_authfile("r:5000", None, root) == config
    # REGISTRY_AUTH_FILE, then settings.authfile (relative to images.yaml's folder) win
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "env.json"))
    assert credentials.find_authfile("r:5000", None, root) == tmp_path / "env.json"
    # ... the setting while its file exists; a CI checkout lacks it: REGISTRY_AUTH_FILE
    assert credentials.find_authfile("r:5000", "auth.json", root) == tmp_path / "env.json"
    write_auth(root / "auth.json", "r:5000")
    assert credentials.find_authfile("r:5000", "auth.json", root) == root / "auth.json"
    assert credentials.credentials("r:5000", config) == "dXNlcjpwdw=="


def test_error_lines_of_a_push_log_leave_out_progress() -> None:
    log = ("$ buildah push x docker://r/x\nGetting image source signatures\n"
           "Copying blob sha256:5f70bf18a086\n"
           'time="..." level=warning msg="Failed, retrying in 2s ... (1/3). Error: ..."\n'
           "Error: pushing image: connect: connection refused\n"
           "retry 2/10 after 0.4 s: Error: pushing image: connect: connection refused\n"
           "Copying blob sha256:5f70bf18a086\n"
           "Error: pushing image: connect: connection refused\n")
    assert buildah.error_lines(log) == ["Error: pushing image: connect: connection refused"]
    assert buildah.error_lines("$ buildah push\nCopying blob sha256:1\nCopying config sha256:2\n"
                               "Writing manifest to image destination\n") == []
    assert buildah.error_lines("Copying blob sha256:1\nsomething odd\nCopying blob sha256:2\n") \
        == ["something odd"]


@pytest.mark.parametrize(("argv", "pushes"), [
    (["push"], True), (["-n", "4", "push:nova-api"], True), (["config=x.yaml", "push"], True),
    (["build", "push"], True), ([], False), (["build"], False), (["-n", "4", "build"], False),
    (["list"], False), (["info", "push:cron"], False), (["clean", "push"], False),
])
def test_only_a_push_run_checks_the_registry(argv: list[str], pushes: bool) -> None:
    assert run.parse_argv(argv).pushes is pushes


def test_retries_end_at_the_deadline_and_say_how_many_and_how_long() -> None:
    timeouts: list[float] = []

    def attempt() -> None:
        budget_left = budget.timeout(300)
        timeouts.append(budget_left)
        raise retries.TransientError("HTTP 503")

    budget = retries.Budget(attempts=50, seconds=1.5)
    with pytest.raises(retries.GaveUp) as gave_up:
        retries.with_retries(attempt, budget, lambda *_: None)
    said = str(gave_up.value)
    assert 1 < len(timeouts) < 50  # the deadline ended it, not the attempts
    assert f"still failing after {len(timeouts)} attempts in " in said
    assert "(at most 50 attempts within 1.5 s" in said and said.endswith(": HTTP 503")
    assert budget.left() > -0.5  # no sleep went past the deadline
    assert all(1.0 <= timeout <= 1.5 for timeout in timeouts)  # cut to what was left


def test_retries_end_when_the_attempts_are_used() -> None:
    calls = []

    def attempt() -> None:
        calls.append(1)
        raise retries.TransientError("connection reset")

    budget = retries.Budget(attempts=2, seconds=60)
    with pytest.raises(retries.GaveUp, match=r"still failing after 2 attempts in \d"):
        retries.with_retries(attempt, budget, lambda *_: None)
    assert len(calls) == 2


def test_credential_helpers_answer_as_containers_image_asks_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """credHelpers[registry] alone answers for its registry; else `auths`; else credsStore.
    A helper with no login gives none; one that fails is one error naming it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, login in (("stub", "helper"), ("store", "store")):
        helper = bin_dir / f"docker-credential-{name}"
        helper.write_text(
            "#!/bin/sh\nread -r server\n"
            f'[ "$server" = "r:5000" ] || {{ echo "credentials not found"; exit 1; }}\n'
            f'printf \'{{"ServerURL": "r:5000", "Username": "{login}", "Secret": "pw"}}\'\n')
        helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    authfile = tmp_path / "auth.json"

    def resolved(document: dict, host: str = "r:5000") -> str | None:
        authfile.write_text(json.dumps(document))
        found = credentials.credentials(host, authfile)
        return found and base64.b64decode(found).decode()

    auths = {"auths": {"r:5000": {"auth": base64.b64encode(b"file:pw").decode()}}}
    assert resolved({**auths, "credHelpers": {"r:5000": "stub"}, "credsStore": "store"}) \
        == "helper:pw"
    assert resolved({**auths, "credsStore": "store"}) == "file:pw"
    assert resolved({"credsStore": "store"}) == "store:pw"
    assert resolved({"credsStore": "store"}, "other:5000") is None
    assert resolved({"credHelpers": {"other:5000": "stub"}}) is None
    with pytest.raises(credentials.HelperFailed, match="docker-credential-gone.*cannot run"):
        resolved({"credHelpers": {"r:5000": "gone"}})


@pytest.fixture
def unavailable() -> Iterator[tuple[str, list[str]]]:
    yield from serve(503)


def test_a_lookup_is_asked_again_while_the_registry_answers_503(
        unavailable: tuple[str, list[str]]) -> None:
    """A registry in trouble (HTTP 503) is asked again within the budget; the run's
    lookups then say what the last answer was, after every attempt."""
    from buildlib import cache

    address, requests = unavailable
    reference = f"{address}/kolla/base:latest"
    lookups = cache.Lookups(client(address), lambda: retries.Budget(3, 30))
    with pytest.raises(registry.RegistryError, match=r"3 attempts.*HTTP 503"):
        lookups.find(reference)
    assert requests.count("GET /v2/kolla/base/manifests/latest") == 3
    once = cache.Lookups(client(address))  # no budget: asked once
    with pytest.raises(registry.RegistryError, match="HTTP 503"):
        once.find(reference)
    assert requests.count("GET /v2/kolla/base/manifests/latest") == 4
