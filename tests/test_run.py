"""buildlib.run, invocation and takeover: doit's argv read once, the run lock, unreadable
state; bounded log reading."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from buildlib import buildah, cli, doit_seam, processes, project, report, run, takeover


@pytest.mark.parametrize(("argv", "command", "tasks", "jobs", "locks"), [
    (["build"], "run", ("build",), None, True),
    (["-n", "4", "build"], "run", ("build",), 4, True),
    (["-f", "dodo.py", "config=x", "--process=3", "push"], "run", ("push",), 3, True),
    ([], "run", (), None, True),
    (["status", "images=nova"], "run", ("status",), None, False),
    (["graph"], "run", ("graph",), None, False),
    (["export", "format=gha"], "run", ("export",), None, False),
    (["clean"], "clean", (), None, True),
    (["forget", "build:base"], "forget", (), None, True),
    (["list", "--all"], "list", (), None, False),
    (["info", "build:base"], "info", (), None, False),
])
def test_argv_is_read_once_as_doit_reads_it(argv: list[str], command: str,
                                             tasks: tuple[str, ...], jobs: int | None,
                                             locks: bool) -> None:
    invocation = run.parse_argv(argv)
    assert (invocation.command, invocation.tasks, invocation.jobs) == (command, tasks, jobs)
    assert invocation.takes_lock is locks
    # every run but an export's lists local images (`doit list`, `info` run nothing)
    assert invocation.reads_storage is (command == "run" and tasks != ("export",))


@pytest.mark.parametrize(("argv", "may_push"), [
    (["build"], False), ([], False), (["-n", "8", "build:base", "build:cron"], False),
    (["push"], True), (["build", "push:base"], True), (["status"], True),
    (["list"], True), (["info", "push:base"], True),
])
def test_only_a_build_goes_without_push_tasks(argv: list[str], may_push: bool) -> None:
    assert run.parse_argv(argv).may_push is may_push


HOLD_LOCK = textwrap.dedent("""\
    import sys
    from pathlib import Path
    from buildlib import invocation, takeover
    takeover.lock_build_dir(Path(sys.argv[1]), invocation.parse_argv(["-n", "2", "build"]))
    print("locked", flush=True)
    sys.stdin.read()
""")


def test_a_second_run_stops_naming_the_first_and_a_dead_holder_leaves_no_lock(
        tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "locked\n"
    with pytest.raises(takeover.RunError) as info:
        takeover.lock_build_dir(tmp_path, run.parse_argv(["build"]))
    assert f"another run is using {tmp_path}: pid {holder.pid}, `doit -n 2 build`" \
        in str(info.value)
    holder.kill()  # as kill -9: the kernel releases the lock
    holder.wait()
    takeover.lock_build_dir(tmp_path, run.parse_argv(["build"]))
    assert json.loads((tmp_path / ".lock").read_text())["command"] == "doit build"


def doit_state(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("create table doit (task_id text not null primary key, task_data json)")
        db.execute("insert into doit values ('build:base', ?)", (json.dumps({"x": 1}),))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "bad json"])
def test_unreadable_state_is_set_aside_with_one_warning(tmp_path: Path, damage: str,
                                                        capsys: pytest.CaptureFixture) -> None:
    state = tmp_path / ".doit.db"
    doit_state(state)
    if damage == "garbage":
        state.write_bytes(b"\x00garbage" * 512)
    elif damage == "truncated":
        state.write_bytes(state.read_bytes()[:1500])
    else:
        with sqlite3.connect(state) as db:
            db.execute("update doit set task_data = '{not json'")
    aside = takeover.set_aside_unreadable_state(state)
    assert aside == tmp_path / ".doit.db.unreadable" and aside.exists()
    assert not state.exists()
    warning = capsys.readouterr().err
    assert warning.count("warning: ") == 1 and "set aside as .doit.db.unreadable" in warning


def test_readable_state_is_left_alone(tmp_path: Path) -> None:
    state = tmp_path / ".doit.db"
    doit_state(state)
    assert takeover.set_aside_unreadable_state(state) is None
    assert state.exists()


def test_a_log_is_read_from_its_end_and_its_lines_capped(tmp_path: Path) -> None:
    log = tmp_path / "x-build.log"
    with log.open("w") as f:
        f.write("early line\n" * 100_000)
        f.write("y" * 5_000_000 + "\n")
        f.write("Error: the last line\n")
    tail = report.log_tail(log)
    assert tail.splitlines()[-1] == "Error: the last line"
    assert "early line" not in tail  # the 5 MB line pushed it out of the bytes read
    assert len(tail) < report.LINE_CHARS * report.LOG_TAIL_LINES + 1000
    assert all(len(line) <= report.LINE_CHARS + len(" [...]") for line in tail.splitlines())
    assert len(processes.read_tail(log)) == processes.TAIL_BYTES


def test_echoed_lines_are_capped_across_chunks() -> None:
    first, shown = processes.capped_lines("abc\n" + "x" * 8, 0, 5)
    second, shown = processes.capped_lines("x" * 8 + "\nok", shown, 5)
    assert first + second == "abc\nxxxxx [...]\nok" and shown == 2


@pytest.mark.parametrize(("jobs", "installed"), [(1, True), (len(os.sched_getaffinity(0)) + 1,
                                                           False)])
def test_loading_a_run_installs_the_critical_path_queue_while_jobs_fit_the_cores(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        jobs: int, installed: bool) -> None:
    from test_tasks import copy_example

    config = copy_example(tmp_path, jobs=jobs)
    monkeypatch.chdir(config.parent)
    assert cli.main(["list"]) == 0  # in this process: doit reads the variables, loads the run
    assert "build every image that is out of date" in capsys.readouterr().out
    assert doit_seam.ready_queue_installed() is installed


def test_a_long_error_keeps_its_cause_at_the_end(tmp_path: Path) -> None:
    """buildah puts a request dump before the cause: a failed build's error (report.json,
    the summary) keeps both ends of such a line."""
    error = ('Error: building at STEP "RUN ln /etc/passwd /hl": copier: put: '
             + '{"Request":"PUT","Root":"/","Directory":"/"' + ",0" * 2000
             + "}: link /etc/passwd /hl: no such file or directory")
    shown = report.ends_of(error)
    assert len(shown) <= report.LINE_CHARS
    assert shown.startswith('Error: building at STEP "RUN ln /etc/passwd /hl"')
    assert shown.endswith("link /etc/passwd /hl: no such file or directory")
    log = tmp_path / "x-build.log"
    log.write_text(error + "\n")
    assert report.log_tail(log) == shown + "\n"


def test_a_stop_request_is_one_runs_own_and_its_commands_heed_it(tmp_path: Path) -> None:
    stopped, other = processes.StopControl(), processes.StopControl()
    stopped.request(signal.SIGTERM)
    with pytest.raises(processes.Interrupted):
        processes.run_logged(["true"], tmp_path / "a.log", 30, stop=stopped)
    assert not (tmp_path / "a.log").exists()  # never started
    processes.run_logged(["true"], tmp_path / "b.log", 30, stop=other)  # another run goes on
    assert buildah.Buildah().stop is not buildah.Buildah().stop


def test_the_end_of_a_run_is_its_callers_to_act_on(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from test_tasks import copy_example, run_of

    proj = project.load(copy_example(tmp_path))
    assert run_of(proj).finish() is None
    unsaved = run_of(proj)
    unsaved.state.unsaved.append(OSError(28, "No space left on device"))
    assert unsaved.finish() == 1
    assert "doit could not save this run's state" in capsys.readouterr().err
    interrupted = run_of(proj)
    interrupted.services.stop.request(signal.SIGINT)
    assert interrupted.finish() == 128 + signal.SIGINT
    ended = subprocess.run([sys.executable, "-c", "from buildlib import processes; "
                            "processes.exit_as(None); print('on'); processes.exit_as(130)"],
                           capture_output=True, text=True)
    assert (ended.returncode, ended.stdout) == (130, "on\n")


@pytest.mark.parametrize("ignored", [True, False])
def test_a_build_started_with_interrupts_ignored_leaves_them_ignored(tmp_path: Path,
                                                                     ignored: bool) -> None:
    """A build started with SIGINT ignored (a background job of a script, `nohup`) goes on
    when one comes, as make does; started with it heeded, the signal stops its builds."""
    from test_tasks import copy_example

    config = copy_example(tmp_path, buildah_args=[
        "--root", str(tmp_path / "root"), "--runroot", str(tmp_path / "runroot")])
    handler = "SIG_IGN" if ignored else "default_int_handler"
    script = (f"import signal\nsignal.signal(signal.SIGINT, signal.{handler})\n"
              "from pathlib import Path\nfrom buildlib import run\n"
              f"loaded = run.load_run(Path({str(config.parent)!r}), ['build'])\n"
              "print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN,"
              " signal.getsignal(signal.SIGINT) == loaded.services.stop.handle,"
              " signal.getsignal(signal.SIGTERM) == loaded.services.stop.handle)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=config.parent, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ([str(ignored), str(not ignored), "True"])
