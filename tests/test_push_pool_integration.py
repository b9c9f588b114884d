"""Pushes run in their own pool (`settings.push_jobs`) and never hold one of doit's job
slots: with `-n 1` and a slow registry link, builds go on while images are pushed."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from conftest import Tree
from registry import FlakyProxy, Registry

pytestmark = pytest.mark.integration

EXAMPLE = {"base", "openstack-base", "nova-base", "nova-api", "nova-conductor", "neutron-base",
           "neutron-dhcp-agent", "multipathd", "cron"}


def most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


@pytest.mark.slow
def test_builds_go_on_while_a_slow_push_runs_and_still_run_n_at_a_time(
        tree: Tree, registry: Registry) -> None:
    with FlakyProxy(registry, failure_rate=0, upload_delay=0.7) as proxy:
        tree.settings(registry=proxy.address, tls_verify=False, push_jobs=2)
        result = tree.doit("-n", "1", "push")
    report = tree.report()
    builds = {name: (e["start"], e["end"]) for name, e in report["images"].items()}
    pushes = {name: (e["start"], e["end"]) for name, e in report["pushes"].items()}
    assert {e["status"] for e in report["pushes"].values()} == {"pushed"}, result.stdout
    assert set(pushes) == EXAMPLE
    # a build started while a push was on: the push held no job slot
    assert any(p_start < b_start < p_end for b_start, _ in builds.values()
               for p_start, p_end in pushes.values()), (builds, pushes)
    assert most_at_once(list(builds.values())) == 1  # -n 1: one build at a time
    assert most_at_once(list(pushes.values())) <= 2  # push_jobs: 2
    assert "pushes: 9 pushed" in result.stdout
    for name in EXAMPLE:
        assert registry.digest(f"kolla/{name}", "latest") is not None


def test_interrupt_stops_pooled_pushes_and_the_report_says_so(tree: Tree,
                                                              registry: Registry) -> None:
    tree.edit_yaml(lambda data: data.update(images={"base": data["images"]["base"],
                                                   "cron": data["images"]["cron"],
                                                   "multipathd": data["images"]["multipathd"]}))
    with FlakyProxy(registry, failure_rate=0, upload_delay=3) as proxy:
        tree.settings(registry=proxy.address, tls_verify=False, push_jobs=1)
        proc = subprocess.Popen(tree.argv("-n", "2", "push"), cwd=tree.root, env=tree.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        pushing = tree.root / "build" / "base" / "base-push.log"
        deadline = time.monotonic() + 120
        while "$ buildah" not in (pushing.read_text() if pushing.exists() else "") \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in out + err
    pushes = tree.report()["pushes"]
    assert pushes["base"]["status"] == "failed" and pushes["base"]["error"] == "interrupted"
    assert {pushes[n]["status"] for n in ("cron", "multipathd")} <= {"blocked", "failed"}
    assert "interrupted (SIGINT)" in out
