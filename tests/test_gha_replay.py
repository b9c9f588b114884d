"""The replay harness itself, on workflows of stand-in shell commands (no imagebake)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import actionlint
from gha_replay import Replay, Unsupported

# `fan` waits (bounded) until both of its children have started, which only happens if the
# harness runs them at the same time; `left` and `right` read the parent's output.
WORKFLOW = """\
name: stand-in
on: workflow_dispatch
env:
  GREETING: hello
jobs:
  root:
    runs-on: ubuntu-latest
    outputs:
      token: ${{ steps.make.outputs.token }}
      many: ${{ steps.make.outputs.many }}
    steps:
      - uses: actions/checkout@v5
      - id: make
        env:
          SECRET: ${{ secrets.TOKEN }}
        run: |
          test -f checked-out
          echo "token=$SECRET-$GREETING" >> "$GITHUB_OUTPUT"
          printf 'many<<EOF\\nline 1\\nline 2\\nEOF\\n' >> "$GITHUB_OUTPUT"
  left:
    needs: root
    runs-on: ubuntu-latest
    steps:
      - env:
          GOT: ${{ needs.root.outputs.token }}
        run: |
          touch "$MEETING/left"
          for i in $(seq 30); do test -e "$MEETING/right" && break; sleep 0.1; done
          test -e "$MEETING/right"
          echo "$GOT" > got
          ls "$RUNNER_TEMP" > /dev/null
  right:
    needs: [root]
    runs-on: ubuntu-latest
    steps:
      - run: |
          touch "$MEETING/right"
          for i in $(seq 30); do test -e "$MEETING/left" && break; sleep 0.1; done
          test -e "$MEETING/left"
          echo '${{ needs.root.outputs.many }}' > got
  broken:
    needs: [left, right]
    runs-on: ubuntu-latest
    steps:
      - run: |
          echo "$PWD" > where
          exit 3
      - run: touch never
  after-broken:
    needs: broken
    runs-on: ubuntu-latest
    steps:
      - run: touch ran
"""


def replay(tmp_path: Path, text: str, **options) -> dict:
    workflow = tmp_path / "workflow.yml"
    workflow.write_text(text)
    meeting = tmp_path / "meeting"
    meeting.mkdir(exist_ok=True)
    return Replay.of(workflow, tmp_path / "runners",
                     setup={"actions/checkout@v5": lambda ws: (ws / "checked-out").touch()},
                     runner_env=lambda runner: {"MEETING": str(meeting)}, **options).run()


def test_jobs_run_after_their_needs_with_outputs_secrets_and_env(tmp_path: Path) -> None:
    jobs = replay(tmp_path, WORKFLOW, secrets={"TOKEN": "s3cret"})
    assert {n: j.status for n, j in jobs.items()} == {
        "root": "success", "left": "success", "right": "success", "broken": "failure",
        "after-broken": "skipped"}, jobs["broken"].text
    assert jobs["root"].outputs == {"token": "s3cret-hello", "many": "line 1\nline 2"}
    assert (jobs["left"].workspace / "got").read_text() == "s3cret-hello\n"
    assert (jobs["right"].workspace / "got").read_text() == "line 1\nline 2\n"
    for child in ("left", "right"):
        assert jobs[child].started >= jobs["root"].finished
    # each job in its own runner directory; the failed step stops its job
    assert (jobs["broken"].workspace / "where").read_text().strip() == \
        str(jobs["broken"].workspace)
    assert not (jobs["broken"].workspace / "never").exists()
    assert not (jobs["root"].workspace / "got").exists()
    assert not jobs["after-broken"].workspace.exists()


def test_siblings_run_at_the_same_time(tmp_path: Path) -> None:
    """With one worker, `left` waits for `right` in vain: the meeting fails."""
    jobs = replay(tmp_path, WORKFLOW, parallel=1)
    assert {jobs["left"].status, jobs["right"].status} == {"failure", "success"}


@pytest.mark.parametrize("job, problem", [
    ({"runs-on": "x", "steps": [{"run": "echo ${{ github.sha }}"}]}, "replays only"),
    ({"runs-on": "x", "steps": [{"uses": "actions/cache@v4"}]}, "no run: and no mapping"),
    ({"runs-on": "x", "if": "always()", "steps": []}, "not replayed"),
    ({"runs-on": "x", "steps": [{"run": "true", "shell": "sh"}]}, "not replayed"),
    ({"runs-on": "x", "steps": [{"run": "echo ${{ needs.other.outputs.x }}"}]},
     "not in this job's needs"),
])
def test_what_it_cannot_replay_is_an_error(tmp_path: Path, job: dict, problem: str) -> None:
    with pytest.raises(Unsupported, match=problem):
        replay(tmp_path, yaml.safe_dump({"on": "push", "jobs": {"only": job}}))


def test_the_stand_in_workflow_passes_actionlint(tmp_path: Path) -> None:
    """The harness's own example is a valid workflow, so it replays what GitHub would run."""
    path = tmp_path / "workflow.yml"
    path.write_text(WORKFLOW)
    assert actionlint(path) == []
