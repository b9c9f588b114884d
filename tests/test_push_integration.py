"""`doit push` of the example tree to a real registry on loopback (docker-registry), as a user
runs it: plain, behind a flaky proxy, with htpasswd auth, and with TLS verification on."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import DODO, DOIT, Tree
from registry import FlakyProxy, Registry, basic_auth

pytestmark = pytest.mark.integration

EXAMPLE = {"base", "openstack-base", "nova-base", "nova-api", "nova-conductor", "neutron-base",
           "neutron-dhcp-agent", "multipathd", "cron"}
NOVA_API_CHAIN = {"base", "openstack-base", "nova-base", "nova-api"}
DEFAULT_RETRIES = 10
MAX_BACKOFF = 15
FAST = 20  # seconds: a push step that fails at once takes far less than 10 attempts would
RETRY_LINE = re.compile(r"^retry (\d+)/(\d+) after (\d+(?:\.\d+)?) s: (\S.*)$")


def pushes(tree: Tree) -> dict[str, dict[str, Any]]:
    return tree.report()["pushes"]


def push_statuses(tree: Tree) -> dict[str, str]:
    return {name: entry["status"] for name, entry in pushes(tree).items()}


def push_calls(tree: Tree) -> list[list[str]]:
    """The `buildah push` processes of the last doit run."""
    return [call for call in tree.buildah_calls() if "push" in call]


def destination(call: list[str]) -> str:
    return next(arg for arg in call if arg.startswith("docker://"))


def reference(address: str, name: str) -> str:
    return f"{address}/kolla/{name}:latest"


def push_log(tree: Tree, name: str) -> str:
    return (tree.root / "build" / name / f"{name}-push.log").read_text()


def retry_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("retry")]


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def assert_in_registry(registry: Registry, tree: Tree, names: set[str]) -> None:
    """Each image's tag is in the registry with the digest report.json gives."""
    for name in names:
        entry = pushes(tree)[name]
        assert entry["digest"].startswith("sha256:"), entry
        assert registry.digest(f"kolla/{name}", "latest") == entry["digest"], name


def assert_no_secret(tree: Tree, secrets: list[str], *results: subprocess.CompletedProcess) \
        -> None:
    """No credential in any file under build/, doit's output or a buildah command line."""
    for path in (tree.root / "build").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in secrets:
                assert secret.encode() not in data, f"a credential is in {path}"
    for result in results:
        for secret in secrets:
            assert secret not in output(result), "a credential is in doit's output"
    for call in tree.buildah_calls():
        assert not any(secret in arg for arg in call for secret in secrets), call


def test_push_builds_then_pushes_every_image(tree: Tree, registry: Registry) -> None:
    tree.settings(registry=registry.address, tls_verify=False)
    result = tree.doit("push")
    report = tree.report()
    assert report["command"] == "push"
    assert tree.statuses() == dict.fromkeys(EXAMPLE, "built")
    assert push_statuses(tree) == dict.fromkeys(EXAMPLE, "pushed")
    assert_in_registry(registry, tree, EXAMPLE)
    assert sorted(registry.catalog()) == sorted(f"kolla/{name}" for name in EXAMPLE)

    # each image goes up once, to the tag of its key; its tag then names that manifest
    calls = {destination(call).partition(":ib-")[0]: call for call in push_calls(tree)}
    assert len(calls) == len(push_calls(tree)) == len(EXAMPLE)
    for name, entry in report["pushes"].items():
        ref = reference(registry.address, name)
        key_tag = destination(calls[f"docker://{ref.rpartition(':')[0]}"]).rpartition(":")[2]
        assert registry.digest(f"kolla/{name}", key_tag) == entry["digest"]
        assert entry["image"] == ref
        assert entry["error"] is None and entry["attempts"] == 1
        assert report["images"][name]["end"] <= entry["start"] <= entry["end"]
        assert entry["log"] == f"build/{name}/{name}-push.log"
        log = push_log(tree, name)
        command = next(line for line in log.splitlines() if line.startswith("$ "))
        # the log's command is exactly the process that ran, and doit printed it
        call = calls[f"docker://{ref.rpartition(':')[0]}"]
        assert command == f"$ {shlex.join(['buildah', *call])}"
        assert command[2:] in result.stdout
        assert "--digestfile" in call
        assert "--tls-verify=false" in call
        assert retry_lines(log) == []


def test_second_push_pushes_nothing(tree: Tree, registry: Registry) -> None:
    tree.settings(registry=registry.address, tls_verify=False)
    tree.doit("push")
    first = pushes(tree)

    tree.doit("push")
    assert tree.statuses() == dict.fromkeys(EXAMPLE, "up-to-date")
    assert push_statuses(tree) == dict.fromkeys(EXAMPLE, "up-to-date")
    assert push_calls(tree) == []
    for name, entry in pushes(tree).items():
        assert entry["digest"] == first[name]["digest"]
        assert entry["attempts"] == 0 and entry["error"] is None
    assert_in_registry(registry, tree, EXAMPLE)


@pytest.mark.parametrize("change", ["deleted", "overwritten"])
def test_tag_deleted_or_overwritten_in_the_registry_is_pushed_again(
        tree: Tree, registry: Registry, change: str) -> None:
    tree.settings(registry=registry.address, tls_verify=False)
    tree.doit("push")
    first = pushes(tree)
    if change == "deleted":
        assert registry.delete_tag("kolla/cron", "latest") == first["cron"]["digest"]
        assert registry.digest("kolla/cron", "latest") is None
    else:  # another image under the same tag
        copy = subprocess.run(
            ["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
             f"docker://{reference(registry.address, 'multipathd')}",
             f"docker://{reference(registry.address, 'cron')}"],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert copy.returncode == 0, copy.stderr
        assert registry.digest("kolla/cron", "latest") == first["multipathd"]["digest"]

    tree.doit("push")
    assert push_statuses(tree) == {**dict.fromkeys(EXAMPLE, "up-to-date"), "cron": "pushed"}
    assert tree.statuses() == dict.fromkeys(EXAMPLE, "up-to-date")
    # deleting a tag deletes its manifest, the key's tag with it: the image goes up again;
    # a tag moved to another image is moved back, no image data sent
    key_tag = f"docker://{reference(registry.address, 'cron').rpartition(':')[0]}:ib-"
    assert [destination(call)[:len(key_tag)] for call in push_calls(tree)] == (
        [key_tag] if change == "deleted" else [])
    assert_in_registry(registry, tree, EXAMPLE)
    assert pushes(tree)["cron"]["digest"] == first["cron"]["digest"]  # the same image again


def test_push_one_image_builds_its_ancestors_and_pushes_it_alone(tree: Tree,
                                                                 registry: Registry) -> None:
    tree.settings(registry=registry.address, tls_verify=False)
    tree.doit("push:nova-api")
    assert tree.statuses() == dict.fromkeys(NOVA_API_CHAIN, "built")
    assert push_statuses(tree) == {"nova-api": "pushed"}
    assert_in_registry(registry, tree, {"nova-api"})
    assert registry.catalog() == ["kolla/nova-api"]
    assert len(push_calls(tree)) == 1

    tree.doit("push:nova-api")
    assert push_statuses(tree) == {"nova-api": "up-to-date"}
    assert push_calls(tree) == []


def test_flaky_registry_gets_every_image_with_retries(tree: Tree, registry: Registry,
                                                      flaky_registry: FlakyProxy) -> None:
    proxy = flaky_registry
    tree.settings(registry=proxy.address, tls_verify=False)
    tree.doit("build")  # builds do not talk to the registry: the pushes all start together
    assert proxy.counters.requests == 0
    # 30% of requests fail, half 503 and half dropped; at most 4 failures per repository and
    # 4 on the ping, so no image can fail all 10 attempts, and 40 failures in all
    proxy.failure_rate, proxy.drop_share = 0.3, 0.5
    proxy.max_failures, proxy.max_per_repository = 40, 4

    started = time.monotonic()
    result = tree.doit("push", timeout=600)
    elapsed = time.monotonic() - started
    assert push_statuses(tree) == dict.fromkeys(EXAMPLE, "pushed"), output(result)
    assert_in_registry(registry, tree, EXAMPLE)  # the real registry, not through the proxy

    retries: dict[str, list[str]] = {}
    for name, entry in pushes(tree).items():
        log = push_log(tree, name)
        retries[name] = retry_lines(log)
        assert entry["attempts"] == 1 + len(retries[name]), (name, log)
        assert sum(line.startswith("# try ") for line in log.splitlines()) == entry["attempts"]
        assert entry["error"] is None
        numbers = []
        for line in retries[name]:
            match = RETRY_LINE.match(line)
            assert match, f"{name}: retry line not `retry k/n after s s: cause`: {line!r}"
            numbers.append(int(match.group(1)))
            assert int(match.group(2)) == DEFAULT_RETRIES
            assert float(match.group(3)) <= MAX_BACKOFF
        assert numbers == sorted(set(numbers)), (name, retries[name])
    all_retries = [line for lines in retries.values() for line in lines]
    # a try is the registry's requests and, unless it holds the image, one `buildah push`
    assert len(push_calls(tree)) <= sum(entry["attempts"] for entry in pushes(tree).values())

    print(f"\nflaky registry: {proxy.figures()}; "
          f"{len(all_retries)} retries logged, {len(push_calls(tree))} buildah push processes, "
          f"{sum(s == 'pushed' for s in push_statuses(tree).values())}/{len(EXAMPLE)} images "
          f"pushed with correct digests in {elapsed:.1f} s")
    for name, lines in sorted(retries.items()):
        for line in lines:
            print(f"  {name}: {line[:160]}")

    assert proxy.counters.failures > 0 and proxy.counters.upstream_errors == 0
    assert all_retries, "the proxy failed requests, yet no push was retried"
    assert any("503" in line for line in all_retries), all_retries


def test_failed_push_fails_the_run_after_push_retries_and_others_still_push(
        tree: Tree, registry: Registry) -> None:
    # every request about kolla/cron answers 503, for ever; everything else goes through
    with FlakyProxy(registry, failure_rate=1, drop_share=0, max_failures=1000,
                    repositories={"kolla/cron"}) as proxy:
        tree.settings(registry=proxy.address, tls_verify=False, push_retries=3)
        result = tree.doit("push", check=False)
    assert result.returncode != 0
    statuses = push_statuses(tree)
    assert statuses == {**dict.fromkeys(EXAMPLE, "pushed"), "cron": "failed"}
    cron = pushes(tree)["cron"]
    assert cron["attempts"] == 3
    assert "503" in cron["error"]
    lines = retry_lines(push_log(tree, "cron"))
    assert len(lines) == 2 and all("503" in line for line in lines), lines
    assert all(int(RETRY_LINE.match(line).group(2)) == 3 for line in lines)
    assert cron["log"] in output(result)
    assert "Traceback" not in output(result)
    assert_in_registry(registry, tree, EXAMPLE - {"cron"})
    assert registry.digest("kolla/cron", "latest") is None


def doit_from(cwd: Path, tree: Tree, *args: str) -> subprocess.CompletedProcess:
    """doit run from another directory than the tree's, as `doit config=... push` allows."""
    env = {**os.environ, "PATH": f"{tree.wrapper_dir}:{os.environ['PATH']}"}
    tree.calls_log.unlink(missing_ok=True)
    return subprocess.run([str(DOIT), "-f", str(DODO), f"config={tree.config}", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_auth_registry_with_authfile_setting(tree: Tree, auth_registry: Registry,
                                             tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    (tree.root / "secrets").mkdir()
    auth_registry.write_authfile(tree.root / "secrets" / "auth.json")
    # relative to images.yaml's directory, not to where doit runs
    tree.settings(registry=auth_registry.address, tls_verify=False,
                  authfile="secrets/auth.json")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = doit_from(elsewhere, tree, "push")
    assert result.returncode == 0, output(result)
    assert push_statuses(tree) == dict.fromkeys(EXAMPLE, "pushed")
    assert_in_registry(auth_registry, tree, EXAMPLE)
    secrets = [auth_registry.password, basic_auth(auth_registry.user, auth_registry.password)]
    assert_no_secret(tree, secrets, result)


def test_auth_registry_without_credentials_fails_fast_then_env_authfile_works(
        tree: Tree, auth_registry: Registry, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    tree.settings(registry=auth_registry.address, tls_verify=False)
    tree.doit("build")
    secrets = [auth_registry.password, basic_auth(auth_registry.user, auth_registry.password)]

    started = time.monotonic()
    failed = tree.doit("push", check=False)
    elapsed = time.monotonic() - started
    assert failed.returncode != 0
    assert elapsed < FAST, f"a push without credentials took {elapsed:.1f} s"
    assert push_statuses(tree) == dict.fromkeys(EXAMPLE, "failed")
    for name, entry in pushes(tree).items():
        assert entry["attempts"] == 1, name
        assert "authentication" in entry["error"] and "authfile" in entry["error"], entry
    assert "authentication" in output(failed) and "authfile" in output(failed)
    assert "Traceback" not in output(failed)
    assert auth_registry.catalog() == []

    # the environment variable buildah itself reads, instead of the setting
    authfile = auth_registry.write_authfile(tmp_path / "env-auth.json")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(authfile))
    pushed = tree.doit("push")
    assert push_statuses(tree) == dict.fromkeys(EXAMPLE, "pushed")
    assert_in_registry(auth_registry, tree, EXAMPLE)
    assert_no_secret(tree, secrets, failed, pushed)


def test_tls_verify_is_on_by_default(tree: Tree, registry: Registry) -> None:
    # a plain-HTTP registry, tls_verify not set (the example sets it for its local registry)
    tree.edit_yaml(lambda data: data["settings"].pop("tls_verify", None))
    tree.settings(registry=registry.address)
    tree.doit("build")
    started = time.monotonic()
    result = tree.doit("push", check=False)
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert elapsed < FAST, f"a push to a plain-HTTP registry took {elapsed:.1f} s to fail"
    assert push_statuses(tree) == dict.fromkeys(EXAMPLE, "failed")
    for name, entry in pushes(tree).items():
        assert "tls_verify: false" in entry["error"], (name, entry["error"])
        assert entry["attempts"] == 0, name  # the registry's check found it out
    assert "tls_verify: false" in output(result)
    assert "Traceback" not in output(result)
    for call in push_calls(tree):
        assert "--tls-verify=false" not in [arg.lower() for arg in call], call
    assert registry.catalog() == []
