"""`doit push` when the registry is not there, or goes away mid-run, with real buildah: the
push phase ends in seconds with one message, every image stays built, no traceback."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, Tree, make_tree, unmount_under
from registry import SKOPEO, GoesAwayRegistry, SilentSocket, free_port

pytestmark = pytest.mark.integration

EXAMPLE = {"base", "openstack-base", "nova-base", "nova-api", "nova-conductor", "neutron-base",
           "neutron-dhcp-agent", "multipathd", "cron"}
MORE = {"nova-compute": {"parent": "nova-base", "template": "nova-conductor/Dockerfile.j2"},
        "neutron-l3-agent": {"parent": "neutron-base",
                             "template": "neutron-dhcp-agent/Dockerfile.j2"},
        "openstack-client": {"parent": "openstack-base", "template": "cron/Dockerfile.j2"}}
TWELVE = EXAMPLE | set(MORE)


@dataclass
class Down:
    """The example tree plus three images (12), pushed to a port nothing listens on; later
    runs of this module bind their servers to that same port, so nothing is rebuilt."""

    tree: Tree
    port: int
    first: subprocess.CompletedProcess
    seconds: float

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def down(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Down]:
    tmp_path = tmp_path_factory.mktemp("down")
    tree = make_tree(tmp_path)
    tree.edit_yaml(lambda data: data["images"].update(MORE))
    port = free_port()
    tree.settings(registry=f"127.0.0.1:{port}", tls_verify=False)
    started = time.monotonic()
    first = tree.doit("push", check=False, timeout=300)
    yield Down(tree, port, first, time.monotonic() - started)
    unmount_under(tmp_path)


def push_run(down: Down, **settings: object) -> tuple[str, str]:
    """Another `doit push` of the built tree: (all of doit's output, its summary)."""
    down.tree.settings(**{"push_retries": 10, "push_timeout": 300, **settings})
    return check_failed(down.tree, down.tree.doit("push", check=False, timeout=120),
                        "up-to-date")


def check_failed(tree: Tree, result: subprocess.CompletedProcess,
                 build_status: str) -> tuple[str, str]:
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "Traceback" not in out
    assert tree.statuses() == dict.fromkeys(TWELVE, build_status)  # builds are not affected
    assert {entry["status"] for entry in tree.report()["pushes"].values()} == {"failed"}
    return out, out[out.index("\nbuilds: "):]


def push_attempts(tree: Tree) -> dict[str, int]:
    """Tries of each push: the registry's requests and, where it lacks the image, a
    `buildah push` (report.json counts them, and each is a `# try` line in its log)."""
    return {name: tree.report()["pushes"][name]["attempts"] for name in TWELVE}


def buildah_pushes(tree: Tree) -> list[list[str]]:
    return [call for call in tree.buildah_calls() if "push" in call]


def failures(summary: str) -> list[str]:
    return [line for line in summary.splitlines() if line.startswith("FAILED")]


def test_refused_port_ends_the_push_phase_with_one_message(down: Down) -> None:
    tree = down.tree
    out, summary = check_failed(tree, down.first, "built")
    print(f"\ndead registry: 12 images built, push phase failed; {down.seconds:.1f} s in all"
          f"{summary}")
    assert push_attempts(tree) == dict.fromkeys(TWELVE, 0)
    assert buildah_pushes(tree) == []  # not one `buildah push`
    assert {entry["attempts"] for entry in tree.report()["pushes"].values()} == {0}
    assert "builds: 12 built" in summary and "pushes: 12 failed" in summary
    [failure] = failures(summary)
    assert failure.startswith("FAILED push of 12 images")
    assert f"registry {down.address} is not reachable: connection refused" in failure
    assert "make registry" in failure
    assert out.count("connection refused") == 2  # as it happened, and in the summary


def test_registry_gone_after_the_check_trips_the_breaker(down: Down) -> None:
    with GoesAwayRegistry(after="refuse", port=down.port):
        _, summary = push_run(down)
    attempts = push_attempts(down.tree)
    print(f"\nregistry gone after the check: buildah push per image {attempts}{summary}")
    # the breaker opens once 3 pushes in a row were refused: the 8 running (-n 8) stop
    # instead of spending their 10 attempts each, the 4 waiting never start buildah
    assert len([name for name, count in attempts.items() if count]) >= 3
    assert max(attempts.values()) <= 3, attempts
    assert len([name for name, count in attempts.items() if not count]) >= 12 - 8, attempts
    tripped = [line for line in failures(summary) if "pushes in a row" in line]
    assert len(tripped) == 1, summary
    assert f"registry {down.address} was unreachable for 3 pushes in a row" in tripped[0]
    assert "connection refused; start it" in tripped[0]
    for line in failures(summary):  # buildah's error, not its progress lines
        assert "Copying blob" not in line
    assert "   | Copying blob" not in summary


def test_silent_registry_times_out_after_push_timeout(down: Down) -> None:
    with SilentSocket(port=down.port):
        _, summary = push_run(down, push_timeout=2)
    assert push_attempts(down.tree) == dict.fromkeys(TWELVE, 0)
    [failure] = failures(summary)
    assert f"registry {down.address} is not reachable: timed out after 2 s" in failure


def test_push_that_hangs_is_killed_after_push_timeout(down: Down) -> None:
    with GoesAwayRegistry(after="hang", port=down.port):
        _, summary = push_run(down, push_timeout=2, push_retries=2)
    attempts = push_attempts(down.tree)
    print(f"\nregistry hangs after the check: buildah push per image {attempts}{summary}")
    assert 1 <= max(attempts.values()) <= 2, attempts
    pushes = down.tree.report()["pushes"]
    assert all("timed out after 2 s" in entry["error"] for entry in pushes.values()), pushes
    assert "Copying blob" not in "\n".join(failures(summary))


def make(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(["make", "-s", "-C", str(REPO), *args], env=env, timeout=300,
                            capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_make_push_starts_a_local_registry_and_make_registry_stop_ends_it(
        tree: Tree, tmp_path: Path) -> None:
    port = free_port()  # not 5000: a developer's own registry stays untouched
    tree.settings(registry=f"127.0.0.1:{port}")  # the example's tls_verify: false stays
    workdir = tmp_path / "local-registry"
    env = {**tree.env, "MAKEFLAGS": ""}
    options = [f"REGISTRY_PORT={port}", f"REGISTRY_DIR={workdir}",
               f"DOIT_ARGS=config={tree.config}"]
    try:
        first = make("push", *options, env=env)
        assert f"started docker-registry on 127.0.0.1:{port}" in first.stdout
        pid = int(workdir.with_suffix(".pid").read_text())
        assert tree.statuses() == dict.fromkeys(EXAMPLE, "built")
        assert {e["status"] for e in tree.report()["pushes"].values()} == {"pushed"}
        for name in EXAMPLE:
            inspect = subprocess.run([SKOPEO, "inspect", "--tls-verify=false",
                                      f"docker://127.0.0.1:{port}/kolla/{name}:latest"],
                                     capture_output=True, text=True, timeout=60)
            assert inspect.returncode == 0, inspect.stderr
        assert (workdir / "data" / "docker").is_dir()  # its data where the Makefile says

        tree.calls_log.unlink()
        second = make("push", *options, env=env)
        assert "already answers" in second.stdout
        assert [call for call in tree.buildah_calls() if "push" in call] == []
        assert {e["status"] for e in tree.report()["pushes"].values()} == {"up-to-date"}
    finally:  # a failed assertion leaves no registry behind either
        make("registry-stop", *options, env=env)
    assert not workdir.with_suffix(".pid").exists()
    assert not Path(f"/proc/{pid}").exists() or \
        b"docker-registry" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
