"""One image's push ends by `settings.push_deadline`, however the registry stalls: a stalled
blob upload (the API answers) and a registry that takes every connection and never answers
after its check. The error says how many attempts and how long."""

from __future__ import annotations

import re

import pytest
from conftest import Tree
from registry import FlakyProxy, GoesAwayRegistry, Registry

pytestmark = pytest.mark.integration

SPENT = re.compile(r"still failing after (\d+) attempts? in (\d+\.\d) s \(at most 10 attempts "
                   r"within 6 s: settings\.push_retries, push_deadline\)")


def base_only(tree: Tree, address: str) -> None:
    tree.edit_yaml(lambda data: data.update(images={"base": data["images"]["base"]}))
    tree.settings(registry=address, tls_verify=False, push_retries=10, push_deadline=6)


def failed_push(tree: Tree) -> tuple[int, float, str]:
    """A `doit push` of the built image that fails: its attempts, seconds, error."""
    result = tree.doit("push", check=False, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    entry = tree.report()["pushes"]["base"]
    assert entry["status"] == "failed"
    found = SPENT.search(entry["error"])
    assert found, entry["error"]
    assert entry["error"] in (tree.root / "build" / "base" / "base-push.log").read_text()
    return int(found[1]), float(found[2]), entry["error"]


def test_a_stalled_upload_is_killed_at_the_deadline_not_at_push_timeout(
        tree: Tree, registry: Registry) -> None:
    with FlakyProxy(registry, failure_rate=0, upload_delay=600) as stalling:
        base_only(tree, stalling.address)
        tree.settings(push_timeout=300)  # one attempt alone could take 5 minutes
        tree.doit("build")
        attempts, seconds, error = failed_push(tree)
    print(f"\nstalled upload: {error}")
    assert attempts == 1
    assert 5 <= seconds < 9  # the deadline, not push_timeout x push_retries
    assert re.search(r"timed out after [56](\.\d)? s", error), error


def test_a_registry_that_never_answers_uses_the_deadline_not_every_attempt(
        tree: Tree) -> None:
    with GoesAwayRegistry(after="hang") as hanging:
        base_only(tree, hanging.address)
        tree.settings(push_timeout=2)  # each request: 2 s, each retry: up to 15 s apart
        tree.doit("build")
        attempts, seconds, error = failed_push(tree)
    print(f"\nregistry never answers: {error}")
    assert 1 <= attempts < 10
    assert 5 <= seconds < 6 + 2 + 1  # a request already under way ends by its own timeout
    assert "timed out after 2 s" in error
