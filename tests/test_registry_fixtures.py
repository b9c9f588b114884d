"""The registry fixtures are real: a tiny image pushed with plain buildah and skopeo to the
registry, the htpasswd registry and through the flaky proxy arrives with the right digest."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REAL_BUILDAH, unmount_under
from registry import FlakyProxy, Registry

pytestmark = pytest.mark.integration

BUSYBOX = shutil.which("busybox") or "/bin/busybox"


@dataclass
class Storage:
    """Private buildah storage holding one tiny image, `tiny:1`."""

    root: Path

    def argv(self, *args: str) -> list[str]:
        return [REAL_BUILDAH, "--root", str(self.root / "root"), "--runroot",
                str(self.root / "run"), "--storage-driver", "overlay", *args]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=120,
                              check=check, stdin=subprocess.DEVNULL)

    def push(self, destination: str, *options: str) -> tuple[subprocess.CompletedProcess, str]:
        """`buildah push tiny:1 docker://destination`; the result and the digest it wrote."""
        digestfile = self.root / "digest"
        digestfile.unlink(missing_ok=True)
        result = self.run("push", *options, "--digestfile", str(digestfile), "tiny:1",
                          f"docker://{destination}", check=False)
        return result, digestfile.read_text().strip() if digestfile.exists() else ""


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storage]:
    if REAL_BUILDAH is None:
        pytest.fail("buildah is not installed: run `make test`, which installs it")
    tmp = tmp_path_factory.mktemp("tiny")
    store = Storage(tmp)
    container = store.run("from", "scratch").stdout.strip()
    (tmp / "hello").write_text("hello registry\n")
    store.run("copy", container, BUSYBOX, "/bin/busybox")
    store.run("copy", container, str(tmp / "hello"), "/hello")
    store.run("config", "--cmd", '["/bin/busybox", "cat", "/hello"]', container)
    store.run("commit", "--format", "docker", container, "tiny:1")
    store.run("rm", container)
    yield store
    unmount_under(tmp)


def test_registry_push_inspect_delete(registry: Registry, storage: Storage) -> None:
    assert registry.request("GET", "/v2/").status == 200
    result, pushed = storage.push(registry.reference("kolla/tiny", "latest"),
                                  "--tls-verify=false")
    assert result.returncode == 0, result.stderr
    assert pushed.startswith("sha256:")
    assert registry.digest("kolla/tiny", "latest") == pushed
    assert registry.head_digest("kolla/tiny", "latest") == pushed
    assert registry.tags("kolla/tiny") == ["latest"]
    assert registry.catalog() == ["kolla/tiny"]

    assert registry.delete_tag("kolla/tiny", "latest") == pushed
    assert registry.digest("kolla/tiny", "latest") is None
    assert registry.head_digest("kolla/tiny", "latest") is None
    assert registry.tags("kolla/tiny") == []

    result, again = storage.push(registry.reference("kolla/tiny", "latest"),
                                 "--tls-verify=false")
    assert result.returncode == 0, result.stderr
    assert again == pushed == registry.digest("kolla/tiny", "latest")


def test_plain_http_registry_needs_tls_verify_false(registry: Registry,
                                                    storage: Storage) -> None:
    result, _ = storage.push(registry.reference("kolla/tiny", "latest"))
    assert result.returncode != 0
    assert "server gave HTTP response to HTTPS client" in result.stderr
    assert registry.digest("kolla/tiny", "latest") is None


def test_auth_registry(auth_registry: Registry, storage: Storage, tmp_path: Path) -> None:
    assert auth_registry.request("GET", "/v2/", authenticate=False).status == 401
    assert auth_registry.request("GET", "/v2/").status == 200
    reference = auth_registry.reference("kolla/tiny", "latest")

    result, _ = storage.push(reference, "--tls-verify=false")
    assert result.returncode != 0
    assert "authentication required" in result.stderr

    authfile = auth_registry.write_authfile(tmp_path / "auth.json")
    entry = json.loads(authfile.read_text())["auths"][auth_registry.address]
    assert set(entry) == {"auth"}
    result, pushed = storage.push(reference, "--tls-verify=false", "--authfile", str(authfile))
    assert result.returncode == 0, result.stderr
    assert auth_registry.digest("kolla/tiny", "latest") == pushed
    assert auth_registry.password not in result.stdout + result.stderr


def test_proxy_forwards_everything_when_it_injects_nothing(registry: Registry,
                                                           storage: Storage) -> None:
    with FlakyProxy(registry, failure_rate=0) as proxy:
        result, pushed = storage.push(f"{proxy.address}/kolla/tiny:latest", "--tls-verify=false")
        assert result.returncode == 0, result.stderr
        # skopeo reads it back through the proxy too (GETs with redirect-free relaying)
        copy = subprocess.run(
            ["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
             f"docker://{proxy.address}/kolla/tiny:latest",
             f"docker://{proxy.address}/kolla/copied:1"],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert copy.returncode == 0, copy.stderr
    counters = proxy.counters
    assert counters.failures == 0 and counters.upstream_errors == 0
    assert counters.forwarded == counters.requests > 5
    assert counters.chunked > 0  # blob uploads stream their bodies chunked
    assert registry.digest("kolla/tiny", "latest") == pushed
    assert registry.digest("kolla/copied", "1") == pushed
    # the registry saw the client's Host (the proxy), so upload Locations point at the proxy
    assert f'http.request.host="{proxy.address}"' in registry.log.read_text()


def test_proxy_answers_503_drops_and_stops_at_its_cap(registry: Registry) -> None:
    def curl(url: str) -> tuple[int, str]:
        result = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                                 "--max-time", "10", url],
                                capture_output=True, text=True, timeout=30)
        return result.returncode, result.stdout

    with FlakyProxy(registry, failure_rate=1, drop_share=0, max_failures=2) as proxy:
        assert [curl(f"{proxy.url}/v2/") for _ in range(3)] == [(0, "503"), (0, "503"),
                                                                 (0, "200")]
    assert (proxy.counters.unavailable, proxy.counters.forwarded) == (2, 1)

    with FlakyProxy(registry, failure_rate=1, drop_share=1, max_failures=1) as proxy:
        assert curl(f"{proxy.url}/v2/") == (52, "000")  # curl: empty reply from server
        assert curl(f"{proxy.url}/v2/") == (0, "200")
    assert (proxy.counters.dropped, proxy.counters.forwarded) == (1, 1)

    with FlakyProxy(registry, failure_rate=1, max_failures=10, max_per_repository=1) as proxy:
        codes = [curl(f"{proxy.url}/v2/{repo}/tags/list")[1]
                 for repo in ("a", "a", "b", "b")]
    assert codes[1] == codes[3] == "404"  # each repository failed once, then forwarded
    assert proxy.counters.by_repository == {"a": 1, "b": 1}


def test_push_through_flaky_proxy_gets_through_with_retries(registry: Registry,
                                                            storage: Storage) -> None:
    """Plain buildah, retried by hand a bounded number of times, ends with the right image."""
    with FlakyProxy(registry, failure_rate=0.5, max_failures=6, seed=7) as proxy:
        for attempt in range(1, 12):  # noqa: B007 (read after the loop)
            result, pushed = storage.push(f"{proxy.address}/kolla/flaky:latest",
                                          "--tls-verify=false")
            if result.returncode == 0:
                break
        else:
            pytest.fail(f"no push got through: {proxy.figures()}\n{result.stderr}")
    print(f"\n{proxy.figures()}; buildah push processes: {attempt}")
    assert proxy.counters.failures == 6
    assert attempt > 1
    assert registry.digest("kolla/flaky", "latest") == pushed
    # what the registry stored is whole: skopeo reads every blob back through no proxy
    copy = subprocess.run(["skopeo", "copy", "--src-tls-verify=false",
                           f"docker://{registry.address}/kolla/flaky:latest",
                           f"dir:{storage.root / 'copied'}"],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert copy.returncode == 0, copy.stderr


def test_flaky_registry_fixture_counts_every_request(flaky_registry: FlakyProxy) -> None:
    outcomes = []
    for _ in range(20):
        result = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                                 "--max-time", "10", f"{flaky_registry.url}/v2/"],
                                capture_output=True, text=True, timeout=30)
        outcomes.append(result.stdout)
    counters = flaky_registry.counters
    assert counters.requests == 20 == counters.forwarded + counters.failures
    assert outcomes.count("200") == counters.forwarded
    assert outcomes.count("503") == counters.unavailable
    assert outcomes.count("000") == counters.dropped
    assert 0 < counters.failures <= flaky_registry.max_failures
    assert flaky_registry.digest("kolla/none", "latest") is None
